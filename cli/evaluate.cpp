// lemevit evaluate: the seed article's evaluation over an ImageFolder tree
// (accuracy, macro precision/recall/F1, per-class report, confusion matrix),
// optionally sharded over MPI ranks.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <optional>
#include <type_traits>

#ifdef LEMEVIT_HAVE_MPI
#include <mpi.h>
#endif

#include <lemevit/evaluation.hpp>

#include "common.hpp"
#include "images.hpp"
#include "models.hpp"

namespace cli {

namespace {
constexpr const char* kHelp =
    "usage: lemevit evaluate [--weights W.safetensors] --data DIR [preprocessing flags]\n"
    "                        [--class-map auto|names|sorted] [--batch B] [--threads T]\n"
    "                        [--precision P] [--compare P] [--strict] [--json FILE|-]\n"
    "\n"
    "Evaluates a model over an ImageFolder tree, DIR/<class>/.../<image>. Prints accuracy,\n"
    "macro precision, recall and F1, a per-class report and the confusion matrix.\n"
    "  --class-map  which model class each folder holds (default auto):\n"
    "               names: folders named after the model's classes (case, ' ', '_', '-', '/'\n"
    "                 alike), in any order; they may be a subset of the classes, and the\n"
    "                 metrics then average over the classes present;\n"
    "               sorted: sorted folder order = class index (torchvision's ImageFolder);\n"
    "               auto: names when every folder names a class, else sorted, refused when\n"
    "                 some folders are named after classes of other indices\n"
    "  --weights    default: $LEMEVIT_WEIGHTS, else the bundled Fashion-MNIST model\n"
    "  --batch      images per forward pass (default 32)\n"
    "  --strict     fail on the first unreadable image (default: report it and skip it)\n"
    "  --json       write accuracy, metrics and per-image predictions to FILE or stdout ('-')\n"
    "  --compare    also run the model in this precision (e.g. fp32 beside --precision int8)\n"
    "               on the same images and report how often the two agree on the top-1\n"
    "               class, both accuracies and each image's logit error against it,\n"
    "               max |logit - reference| / max |reference| (median, 99th percentile, max)\n"
    "Symbolic links to folders are followed; a link loop is reported and skipped.\n"
    "Under mpirun (built with OpenMPI), each rank evaluates every size-th image and rank 0\n"
    "gathers and reports the same metrics as one process.\n";

// MPI when launched by mpirun; a single process otherwise.
struct World {
  int rank = 0, size = 1;
  bool mpi = false;
  World() {
#ifdef LEMEVIT_HAVE_MPI
    if (std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMI_SIZE") || std::getenv("PMIX_RANK")) {
      MPI_Init(nullptr, nullptr);
      MPI_Comm_rank(MPI_COMM_WORLD, &rank);
      MPI_Comm_size(MPI_COMM_WORLD, &size);
      mpi = true;
    }
#endif
  }
  ~World() {
#ifdef LEMEVIT_HAVE_MPI
    if (mpi) MPI_Finalize();
#endif
  }
  // Element-wise max over ranks onto rank 0 (entries a rank did not own are -1).
  template <class T>
  void gather_max(std::vector<T>& v) const {
#ifdef LEMEVIT_HAVE_MPI
    if (!mpi) return;
    static_assert(std::is_same_v<T, int> || std::is_same_v<T, double>);
    std::vector<T> out(v.size());
    MPI_Reduce(v.data(), out.data(), int(v.size()), std::is_same_v<T, int> ? MPI_INT : MPI_DOUBLE, MPI_MAX, 0,
               MPI_COMM_WORLD);
    if (rank == 0) v = std::move(out);
#else
    (void)v;
#endif
  }
};

void progress(std::size_t done, std::size_t total, double seconds) {
  constexpr int width = 30;
  const int filled = total ? int(width * done / total) : width;
  std::cerr << "\r[" << std::string(filled, '=') << std::string(width - filled, ' ') << "] " << done << "/"
            << total << " images, " << std::fixed << std::setprecision(0) << (done / std::max(seconds, 1e-9))
            << " img/s" << std::flush;
}
}  // namespace

int evaluate(int argc, char** argv) {
  namespace ev = lemevit::evaluation;
  World world;
  auto valued = kPreprocessFlags;
  valued.insert({"--weights", "--data", "--batch", "--threads", "--json", "--dca-scale", "--device", "--class-map", "--precision",
                 "--compare"});
  Args args("evaluate", argc, argv, valued, {"--strict", "--help"});
  if (args.has("--help")) {
    if (world.rank == 0) std::cout << kHelp << kPrecisionHelp << "\n" << kPreprocessHelp;
    return 0;
  }
  if (!args.positional().empty()) args.fail("unexpected argument '" + args.positional()[0] + "'");
  const std::string root = args.required("--data");
  const int max_batch = args.integer("--batch", 32, 1, 4096);
  const bool strict = args.has("--strict");
  ev::ClassMap class_map = ev::ClassMap::Auto;
  try {
    class_map = ev::parse_class_map(args.get("--class-map", "auto"), "--class-map");
  } catch (const lemevit::Error& e) {
    args.fail(e.what());
  }
  const lemevit::Precision own = precision(args);
  std::optional<lemevit::Precision> reference;
  if (args.has("--compare")) {
    reference = precision(args, "--compare");
    if (*reference == own)
      args.fail("--compare " + args.get("--compare") + " is the precision being evaluated: compare with another");
  }
  set_threads(args);
  auto model = open_model(args, weights_path(args));
  // The reference model: the same weights in the other precision.
  const auto other = reference ? open_model(args, weights_path(args), *reference) : nullptr;
  const auto pp = preprocessing(args, *model);
  const int k = model->num_classes();
  const auto folder = ev::scan_image_folder(root, metadata_class_names(*model), k, class_map);
  if (world.rank == 0)
    for (const auto& w : folder.warnings) std::cerr << "warning: " << w << "\n";
  const auto& samples = folder.samples;
  const auto names = class_names(*model);

  // predicted[i]: class index, -2 unreadable, -1 another rank's image.
  std::vector<int> predicted(samples.size(), -1);
  std::optional<Comparer> compare;
  if (other) compare.emplace(*other, samples.size(), max_batch);
  std::vector<std::size_t> mine;
  for (std::size_t i = world.rank; i < samples.size(); i += world.size) mine.push_back(i);
  const bool show = world.rank == 0 && isatty(STDERR_FILENO);
  const auto t0 = std::chrono::steady_clock::now();
  predict_images(
      *model, root, samples, mine, pp, max_batch, strict, predicted,
      [&](const float* x, int n, float* logits) {
        model->forward(x, n, logits);
        if (compare) compare->forward(x, n);
      },
      [&](const std::string& error) { std::cerr << (show ? "\n" : "") << "skipped: " << error << "\n"; },
      [&](std::size_t done) {
        if (show)
          progress(done, mine.size(), std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      },
      [&](std::size_t i, int j, const float* logits) {
        if (compare) compare->row(i, j, logits);
      });
  if (show) std::cerr << "\n";
  world.gather_max(predicted);
  if (compare) {
    world.gather_max(compare->result.predicted);
    world.gather_max(compare->result.error);
  }
  if (world.rank != 0) return 0;

  const auto classes = folder.classes();
  const auto m = score_folder(root, folder, predicted, k);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto folder_of = folder_of_class(folder, k);

  std::ostream& out = args.get("--json") == "-" ? std::cerr : std::cout;
  out << "images: " << m.images << " evaluated, " << (long(samples.size()) - m.images) << " skipped, "
      << classes.size() << (int(classes.size()) == k ? "" : " of " + std::to_string(k)) << " classes, "
      << std::fixed << std::setprecision(1) << seconds << " s"
      << (world.size > 1 ? " on " + std::to_string(world.size) + " MPI ranks" : "") << "\n"
      << "class map: "
      << (folder.by_name ? "folders matched to the model's class names"
                         : "sorted folder order = class index (torchvision ImageFolder)")
      << "\n" << std::setprecision(4) << "accuracy:        " << m.accuracy << "\nmacro precision: " << m.macro_precision
      << "\nmacro recall:    " << m.macro_recall << "\nmacro F1:        " << m.macro_f1
      << (int(classes.size()) == k ? "" : "  (means over the classes present)") << "\n\n";
  std::optional<ComparisonSummary> summary;
  if (compare) {
    const Comparison& cmp = compare->result;
    summary = summarize(root, folder, predicted, cmp, k);
    const auto& s = *summary;
    out << model->precision() << " against " << cmp.precision << " on the same " << s.images << " images:\n"
        << "top-1 agreement: " << s.agreement << " (" << s.differ << " images differ)\n"
        << cmp.precision << " accuracy:   " << s.metrics.accuracy << " (" << model->precision() << " "
        << std::showpos << std::setprecision(2) << 100.0 * (m.accuracy - s.metrics.accuracy) << std::noshowpos
        << " points)\n"
        << std::scientific << std::setprecision(2) << "logit error:     median " << s.median << ", 99th percentile "
        << s.p99 << ", max " << s.max << " (max |logit - " << cmp.precision << "| / max |" << cmp.precision
        << " logit|)\n\n"
        << std::fixed << std::setprecision(4);
  }
  // A row's label: the model's name, and the folder where it is not that name.
  const auto label = [&](int c) {
    const std::string& f = folder_of[std::size_t(c)];
    return ev::class_key(f) == ev::class_key(names[std::size_t(c)]) ? names[std::size_t(c)]
                                                                     : names[std::size_t(c)] + " [" + f + "]";
  };
  std::size_t w = 12;
  for (int c : classes) w = std::max(w, label(c).size() + 2);
  out << std::left << std::setw(int(w)) << "class" << std::right << std::setw(10) << "precision" << std::setw(10)
      << "recall" << std::setw(10) << "f1" << std::setw(10) << "support" << "\n";
  for (const auto& s : m.per_class)
    out << std::left << std::setw(int(w)) << label(s.index) << std::right << std::setw(10) << s.precision
        << std::setw(10) << s.recall << std::setw(10) << s.f1 << std::setw(10) << s.support << "\n";
  out << "\nconfusion matrix (rows: true class, columns: predicted class 0.." << k - 1 << ")\n";
  for (int r : classes) {
    for (int c = 0; c < k; ++c) out << std::setw(7) << m.confusion[std::size_t(r)][std::size_t(c)];
    out << "   " << names[std::size_t(r)] << "\n";
  }

  if (args.has("--json")) {
    const std::string json = evaluation_json(folder, predicted, m, names, world.size, model->precision(),
                                             summary ? &*summary : nullptr);
    const std::string target = args.get("--json");
    if (target == "-") std::cout << json;
    else if (!(std::ofstream(target) << json)) throw lemevit::Error(target + ": cannot write the JSON result");
  }
  return 0;
}

}  // namespace cli
