// lemevit features: the backbone's per-stage feature maps (timm's
// features_only) of one or more images, as float32 .npy files.
#include <filesystem>
#include <iostream>

#include <lemevit/io/npy.hpp>

#include "common.hpp"
#include "images.hpp"
#include "models.hpp"

namespace cli {

namespace {
constexpr const char* kHelp =
    "usage: lemevit features [--weights W.safetensors] [preprocessing flags] IMAGE... -o DIR\n"
    "                        [--stages i,j,...] [--threads N] [--precision P]\n"
    "\n"
    "Writes DIR/stage<i>.npy for each stage: float32 N x C_i x H_i x W_i, the image\n"
    "tokens after stage i (N = number of images), for detection/segmentation heads.\n"
    "  --stages  which stages (default: all)\n";
}  // namespace

int features(int argc, char** argv) {
  auto valued = kPreprocessFlags;
  valued.insert({"--weights", "-o", "--output", "--stages", "--threads", "--dca-scale", "--device", "--precision"});
  Args args("features", argc, argv, valued, {"--help"});
  if (args.has("--help")) {
    std::cout << kHelp << kPrecisionHelp << "\n" << kPreprocessHelp;
    return 0;
  }
  const auto& paths = args.positional();
  if (paths.empty()) args.fail("no images given");
  const std::string dir = args.has("-o") ? args.get("-o") : args.required("--output");
  set_threads(args);
  auto model = open_model(args, weights_path(args));
  const auto pp = preprocessing(args, *model);
  std::vector<bool> wanted(model->num_stages(), !args.has("--stages"));
  if (args.has("--stages")) {
    std::string list = args.get("--stages") + ",";
    for (std::size_t at = 0, end; (end = list.find(',', at)) != std::string::npos; at = end + 1) {
      const int s = parse_index(args, "--stages", list.substr(at, end - at));
      if (s >= model->num_stages())
        args.fail("--stages: this model has stages 0.." + std::to_string(model->num_stages() - 1));
      wanted[s] = true;
    }
  }
  const int n = int(paths.size());
  const std::size_t image = std::size_t(model->channels()) * model->height() * model->width();
  std::vector<float> input(image * n);
  for (int i = 0; i < n; ++i)
    lemevit::image::to_tensor(lemevit::image::load_image(paths[i]), pp, input.data() + i * image, model->height(),
                              model->width());
  std::vector<std::vector<float>> maps(model->num_stages());
  std::vector<float*> out(model->num_stages(), nullptr);
  for (int s = 0; s < model->num_stages(); ++s) {
    if (!wanted[s]) continue;
    const auto [c, h, w] = model->stage_shape(s);
    maps[s].resize(std::size_t(n) * c * h * w);
    out[s] = maps[s].data();
  }
  model->features(input.data(), n, out);
  std::filesystem::create_directories(dir);
  for (int s = 0; s < model->num_stages(); ++s) {
    if (!wanted[s]) continue;
    const auto [c, h, w] = model->stage_shape(s);
    const std::string file = (std::filesystem::path(dir) / ("stage" + std::to_string(s) + ".npy")).string();
    lemevit::io::write_npy(file, {n, c, h, w}, maps[s].data());
    std::cout << file << ": " << n << " x " << c << " x " << h << " x " << w << "\n";
  }
  return 0;
}

}  // namespace cli
