// `lemevit`: run LeMeViT checkpoints converted by tools/convert.py.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "args.hpp"
#include "models.hpp"

namespace {

constexpr const char* kUsage =
    "usage: lemevit <command> [flags]\n"
    "\n"
    "commands:\n"
    "  infer   run a model on a preprocessed float32 .npy batch (N x C x H x W)\n"
    "\n"
    "`lemevit <command> --help` describes a command's flags.\n";

constexpr const char* kInferHelp =
    "usage: lemevit infer --weights W.safetensors --input X.npy --output Y.npy\n"
    "                     [--threads N] [--dca-scale official|head_dim] [--verbose]\n"
    "\n"
    "  --weights    weights converted by tools/convert.py (architecture, classes and\n"
    "               attention-scale policy come from its metadata)\n"
    "  --input      float32 array N x C x H x W, already preprocessed\n"
    "  --output     where to write the float32 logits, N x classes\n"
    "  --threads    OpenMP threads (default: all cores)\n"
    "  --dca-scale  override the dual-cross-attention scale recorded in the file\n"
    "  --verbose    print the model, its activation memory and the timing to stderr\n";

void set_threads(const cli::Args& args) {
  const int threads = args.integer("--threads", 0, 1, 1024);
#ifdef _OPENMP
  if (threads > 0) omp_set_num_threads(threads);
#else
  (void)threads;
#endif
}

lemevit::LoadOptions load_options(const cli::Args& args) {
  lemevit::LoadOptions o;
  if (args.has("--dca-scale")) {
    const std::string s = args.get("--dca-scale");
    if (s == "official") o.dca_scale = lemevit::DcaScale::Official;
    else if (s == "head_dim") o.dca_scale = lemevit::DcaScale::HeadDim;
    else args.fail("--dca-scale must be official or head_dim, got '" + s + "'");
  }
  return o;
}

int infer(int argc, char** argv) {
  cli::Args args("infer", argc, argv,
                 {"--weights", "--input", "--output", "--threads", "--dca-scale"},
                 {"--verbose", "--help"});
  if (args.has("--help")) {
    std::cout << kInferHelp;
    return 0;
  }
  if (!args.positional().empty()) args.fail("unexpected argument '" + args.positional()[0] + "'");
  const std::string weights = args.required("--weights");
  const std::string input = args.required("--input");
  const std::string output = args.required("--output");
  set_threads(args);
  auto model = cli::KnownModels::load(weights, load_options(args));
  const auto x = lemevit::io::read_npy(input);
  const std::vector<std::int64_t> want{model->channels(), model->height(), model->width()};
  if (x.shape.size() != 4 || x.shape[0] < 1 || x.shape[0] > (1 << 20) ||
      std::vector<std::int64_t>(x.shape.begin() + 1, x.shape.end()) != want)
    throw lemevit::Error(input + ": input has shape " + lemevit::io::shape_str(x.shape) +
                         ", expected [N, " + std::to_string(want[0]) + ", " +
                         std::to_string(want[1]) + ", " + std::to_string(want[2]) + "]");
  const int batch = int(x.shape[0]);
  std::vector<float> logits(std::size_t(batch) * model->num_classes());
  const auto t0 = std::chrono::steady_clock::now();
  model->forward(x.data.data(), batch, logits.data());
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  lemevit::io::write_npy(output, {batch, model->num_classes()}, logits.data());
  if (args.has("--verbose")) {
    std::cerr << "model: " << model->description() << ", " << model->num_classes() << " classes, "
              << (model->info().dca_scale == lemevit::DcaScale::Official ? "official" : "head_dim")
              << " DCA scale\n"
              << "activation memory: " << model->activation_bytes_per_image() / 1024.0 / 1024.0
              << " MiB per image, " << batch * model->activation_bytes_per_image() / 1024.0 / 1024.0
              << " MiB for this batch\n"
              << "forward: " << ms << " ms for " << batch << " image(s)\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  try {
    if (command == "infer") return infer(argc - 2, argv + 2);
    std::cerr << "lemevit: unknown command '" << command << "'\n\n" << kUsage;
    return 2;
  } catch (const lemevit::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
