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
#include <sstream>

#ifdef LEMEVIT_HAVE_MPI
#include <mpi.h>
#endif

#include "common.hpp"
#include "images.hpp"
#include "models.hpp"

namespace cli {

namespace {
namespace fs = std::filesystem;

constexpr const char* kHelp =
    "usage: lemevit evaluate [--weights W.safetensors] --data DIR [preprocessing flags]\n"
    "                        [--batch B] [--threads T] [--strict] [--json FILE|-]\n"
    "\n"
    "Evaluates a model over an ImageFolder tree: DIR/<class>/.../<image>, classes in\n"
    "sorted folder-name order (as torchvision's ImageFolder). Prints accuracy, macro\n"
    "precision, recall and F1, a per-class report and the confusion matrix.\n"
    "  --weights  default: $LEMEVIT_WEIGHTS, else the bundled Fashion-MNIST model\n"
    "  --batch    images per forward pass (default 32)\n"
    "  --strict   fail on the first unreadable image (default: report it and skip it)\n"
    "  --json     write accuracy, metrics and per-image predictions to FILE or stdout ('-')\n"
    "Under mpirun (built with OpenMPI), each rank evaluates every size-th image and rank 0\n"
    "gathers and reports the same metrics as one process.\n";

// torchvision's IMG_EXTENSIONS.
bool is_image(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  for (const char* e : {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"})
    if (ext == e) return true;
  return false;
}

struct Sample {
  std::string path;  // relative to DIR
  int label;
};

std::vector<Sample> scan(const std::string& root, std::vector<std::string>& classes) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) throw lemevit::Error(root + ": not a directory");
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory()) classes.push_back(e.path().filename().string());
  std::sort(classes.begin(), classes.end());
  std::vector<Sample> samples;
  for (std::size_t c = 0; c < classes.size(); ++c) {
    std::vector<std::string> files;
    for (const auto& e : fs::recursive_directory_iterator(fs::path(root) / classes[c],
                                                          fs::directory_options::follow_directory_symlink))
      if (e.is_regular_file() && is_image(e.path())) files.push_back(fs::relative(e.path(), root).string());
    std::sort(files.begin(), files.end());
    for (auto& f : files) samples.push_back({f, int(c)});
  }
  return samples;
}

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
  void gather_max(std::vector<int>& v) const {
#ifdef LEMEVIT_HAVE_MPI
    if (!mpi) return;
    std::vector<int> out(v.size());
    MPI_Reduce(v.data(), out.data(), int(v.size()), MPI_INT, MPI_MAX, 0, MPI_COMM_WORLD);
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
  World world;
  auto valued = kPreprocessFlags;
  valued.insert({"--weights", "--data", "--batch", "--threads", "--json", "--dca-scale", "--device"});
  Args args("evaluate", argc, argv, valued, {"--strict", "--help"});
  if (args.has("--help")) {
    if (world.rank == 0) std::cout << kHelp << "\n" << kPreprocessHelp;
    return 0;
  }
  if (!args.positional().empty()) args.fail("unexpected argument '" + args.positional()[0] + "'");
  const std::string root = args.required("--data");
  const int max_batch = args.integer("--batch", 32, 1, 4096);
  const bool strict = args.has("--strict");
  set_threads(args);
  auto model = open_model(args, weights_path(args));
  const auto pp = preprocessing(args, *model);
  std::vector<std::string> classes;
  const auto samples = scan(root, classes);
  if (samples.empty()) throw lemevit::Error(root + ": no images found in class sub-folders");
  if (int(classes.size()) != model->num_classes())
    throw lemevit::Error(root + ": has " + std::to_string(classes.size()) + " class folders but the model has " +
                         std::to_string(model->num_classes()) + " classes");
  const auto names = class_names(*model);

  // predicted[i]: class index, -2 unreadable, -1 another rank's image.
  std::vector<int> predicted(samples.size(), -1);
  std::vector<std::size_t> mine;
  for (std::size_t i = world.rank; i < samples.size(); i += world.size) mine.push_back(i);
  const std::size_t image = std::size_t(model->channels()) * model->height() * model->width();
  std::vector<float> input(image * max_batch), logits(std::size_t(max_batch) * model->num_classes());
  const bool show = world.rank == 0 && isatty(STDERR_FILENO);
  const auto t0 = std::chrono::steady_clock::now();
  for (std::size_t start = 0; start < mine.size(); start += max_batch) {
    const int n = int(std::min<std::size_t>(max_batch, mine.size() - start));
    std::vector<std::string> errors(n);
#pragma omp parallel for schedule(dynamic)
    for (int b = 0; b < n; ++b) {
      try {
        lemevit::image::to_tensor(lemevit::image::load_image((fs::path(root) / samples[mine[start + b]].path).string()),
                                  pp, input.data() + b * image, model->height(), model->width());
      } catch (const std::exception& e) {
        errors[b] = e.what();
      }
    }
    // Unreadable images are compacted away before the forward pass.
    std::vector<int> slot;
    for (int b = 0; b < n; ++b) {
      if (errors[b].empty()) {
        if (int(slot.size()) != b)
          std::copy_n(input.data() + b * image, image, input.data() + slot.size() * image);
        slot.push_back(b);
        continue;
      }
      if (strict) throw lemevit::Error(errors[b]);
      if (show) std::cerr << "\n";
      std::cerr << "skipped: " << errors[b] << "\n";
      predicted[mine[start + b]] = -2;
    }
    if (!slot.empty()) model->forward(input.data(), int(slot.size()), logits.data());
    for (std::size_t j = 0; j < slot.size(); ++j) {
      const float* l = logits.data() + j * model->num_classes();
      predicted[mine[start + slot[j]]] = int(std::max_element(l, l + model->num_classes()) - l);
    }
    if (show)
      progress(start + n, mine.size(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  if (show) std::cerr << "\n";
  world.gather_max(predicted);
  if (world.rank != 0) return 0;

  const int k = model->num_classes();
  std::vector<std::vector<long>> confusion(k, std::vector<long>(k, 0));
  long correct = 0, total = 0, skipped = 0;
  for (std::size_t i = 0; i < samples.size(); ++i) {
    if (predicted[i] < 0) {
      ++skipped;
      continue;
    }
    ++confusion[samples[i].label][predicted[i]];
    correct += predicted[i] == samples[i].label;
    ++total;
  }
  if (total == 0) throw lemevit::Error(root + ": no readable images");
  // Per-class precision/recall/F1, 0 where undefined (scikit-learn's zero_division=0).
  std::vector<double> precision(k), recall(k), f1(k);
  std::vector<long> support(k);
  double macro_p = 0, macro_r = 0, macro_f = 0;
  for (int c = 0; c < k; ++c) {
    long tp = confusion[c][c], predicted_c = 0;
    for (int r = 0; r < k; ++r) predicted_c += confusion[r][c];
    for (int p = 0; p < k; ++p) support[c] += confusion[c][p];
    precision[c] = predicted_c ? double(tp) / predicted_c : 0.0;
    recall[c] = support[c] ? double(tp) / support[c] : 0.0;
    f1[c] = precision[c] + recall[c] > 0 ? 2 * precision[c] * recall[c] / (precision[c] + recall[c]) : 0.0;
    macro_p += precision[c] / k;
    macro_r += recall[c] / k;
    macro_f += f1[c] / k;
  }
  const double accuracy = double(correct) / total;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  std::ostream& out = args.get("--json") == "-" ? std::cerr : std::cout;
  out << std::fixed << std::setprecision(4) << "images: " << total << " evaluated, " << skipped << " skipped, "
      << classes.size() << " classes, " << std::setprecision(1) << seconds << " s"
      << (world.size > 1 ? " on " + std::to_string(world.size) + " MPI ranks" : "") << "\n"
      << std::setprecision(4) << "accuracy:        " << accuracy << "\nmacro precision: " << macro_p
      << "\nmacro recall:    " << macro_r << "\nmacro F1:        " << macro_f << "\n\n";
  std::size_t w = 12;
  for (auto& n : names) w = std::max(w, n.size() + 2);
  out << std::left << std::setw(int(w)) << "class" << std::right << std::setw(10) << "precision" << std::setw(10)
      << "recall" << std::setw(10) << "f1" << std::setw(10) << "support" << "\n";
  for (int c = 0; c < k; ++c)
    out << std::left << std::setw(int(w)) << names[c] << std::right << std::setw(10) << precision[c]
        << std::setw(10) << recall[c] << std::setw(10) << f1[c] << std::setw(10) << support[c] << "\n";
  out << "\nconfusion matrix (rows: true class, columns: predicted)\n";
  for (int r = 0; r < k; ++r) {
    for (int c = 0; c < k; ++c) out << std::setw(7) << confusion[r][c];
    out << "   " << names[r] << "\n";
  }

  if (args.has("--json")) {
    std::ostringstream j;
    j << std::setprecision(8) << "{\"accuracy\": " << accuracy << ", \"macro_precision\": " << macro_p
      << ", \"macro_recall\": " << macro_r << ", \"macro_f1\": " << macro_f << ", \"images\": " << total
      << ", \"skipped\": " << skipped << ", \"ranks\": " << world.size << ", \"classes\": [";
    for (int c = 0; c < k; ++c)
      j << (c ? ", " : "") << "{\"folder\": " << lemevit::json::quote(classes[c]) << ", \"name\": "
        << lemevit::json::quote(names[c]) << ", \"precision\": " << precision[c] << ", \"recall\": " << recall[c]
        << ", \"f1\": " << f1[c] << ", \"support\": " << support[c] << "}";
    j << "], \"confusion\": [";
    for (int r = 0; r < k; ++r) {
      j << (r ? ", " : "") << "[";
      for (int c = 0; c < k; ++c) j << (c ? ", " : "") << confusion[r][c];
      j << "]";
    }
    j << "], \"predictions\": [";
    bool first = true;
    for (std::size_t i = 0; i < samples.size(); ++i) {
      if (predicted[i] < 0) continue;
      j << (first ? "" : ", ") << "{\"path\": " << lemevit::json::quote(samples[i].path)
        << ", \"predicted\": " << predicted[i] << ", \"label\": " << samples[i].label << "}";
      first = false;
    }
    j << "], \"unreadable\": [";
    first = true;
    for (std::size_t i = 0; i < samples.size(); ++i)
      if (predicted[i] == -2) {
        j << (first ? "" : ", ") << lemevit::json::quote(samples[i].path);
        first = false;
      }
    j << "]}\n";
    const std::string target = args.get("--json");
    if (target == "-") std::cout << j.str();
    else if (!(std::ofstream(target) << j.str())) throw lemevit::Error(target + ": cannot write the JSON result");
  }
  return 0;
}

}  // namespace cli
