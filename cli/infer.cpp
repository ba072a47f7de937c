// lemevit infer: a preprocessed float32 .npy batch in, logits .npy out.
#include <chrono>
#include <iostream>

#include <lemevit/io/npy.hpp>

#include "common.hpp"
#include "models.hpp"

namespace cli {

namespace {
constexpr const char* kHelp =
    "usage: lemevit infer --weights W.safetensors --input X.npy --output Y.npy\n"
    "                     [--threads N] [--precision P] [--dca-scale official|head_dim] [--verbose]\n"
    "\n"
    "  --weights    weights converted by tools/convert.py (architecture, classes and\n"
    "               attention-scale policy come from its metadata)\n"
    "  --input      float32 array N x C x H x W, already preprocessed\n"
    "  --output     where to write the float32 logits, N x classes\n"
    "  --threads    OpenMP threads (default: all cores)\n"
    "  --device     cpu (default) or cuda (when built with the CUDA backend)\n"
    "  --dca-scale  override the dual-cross-attention scale recorded in the file\n"
    "  --verbose    print the model, its activation memory and the timing to stderr\n";
}  // namespace

int infer(int argc, char** argv) {
  Args args("infer", argc, argv, {"--weights", "--input", "--output", "--threads", "--dca-scale", "--device", "--precision"},
            {"--verbose", "--help"});
  if (args.has("--help")) {
    std::cout << kHelp << kPrecisionHelp;
    return 0;
  }
  if (!args.positional().empty()) args.fail("unexpected argument '" + args.positional()[0] + "'");
  const std::string weights = args.required("--weights");
  const std::string input = args.required("--input");
  const std::string output = args.required("--output");
  set_threads(args);
  auto model = open_model(args, weights);
  const auto x = lemevit::io::read_npy(input);
  const std::vector<std::int64_t> want{std::int64_t(model->channels()), std::int64_t(model->height()), std::int64_t(model->width())};
  if (x.shape.size() != 4 || x.shape[0] < 1 || x.shape[0] > (1 << 20) ||
      std::vector<std::int64_t>(x.shape.begin() + 1, x.shape.end()) != want)
    throw lemevit::Error(input + ": input has shape " + lemevit::io::shape_str(x.shape) +
                         ", expected [N, " + std::to_string(want[0]) + ", " +
                         std::to_string(want[1]) + ", " + std::to_string(want[2]) + "]");
  const int batch = int(x.shape[0]);
  std::vector<float> logits(std::size_t(batch) * model->num_classes());
  const auto t0 = std::chrono::steady_clock::now();
  model->forward(x.data.data(), batch, logits.data());
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  lemevit::io::write_npy(output, {std::int64_t(batch), std::int64_t(model->num_classes())}, logits.data());
  if (args.has("--verbose")) {
    const double mib = model->activation_bytes_per_image() / 1024.0 / 1024.0;
    std::cerr << "model: " << model->description() << ", " << model->precision() << " ("
              << model->gemm_path() << "), " << model->num_classes()
              << " classes, " << scale_name(model->dca_scale()) << " DCA scale\n"
              << "activation memory (planned at compile time): " << mib << " MiB per image, "
              << batch * mib << " MiB for this batch\n"
              << "forward: " << ms << " ms for " << batch << " image(s)\n";
  }
  return 0;
}

}  // namespace cli
