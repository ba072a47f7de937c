// lemevit classify: images in, class names and probabilities out.
#include <algorithm>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "common.hpp"
#include "images.hpp"
#include "models.hpp"

namespace cli {

namespace {
constexpr const char* kHelp =
    "usage: lemevit classify [--weights W.safetensors] [preprocessing flags] [--top-k K]\n"
    "                        [--batch B] [--threads N] [--precision P] [--json FILE|-] IMAGE...\n"
    "\n"
    "Prints the top-K classes and probabilities of each image (JPEG, PNG, BMP, ...).\n"
    "  --weights  default: $LEMEVIT_WEIGHTS, else the bundled Fashion-MNIST model\n"
    "  --top-k    classes to show per image (default 3)\n"
    "  --batch    images per forward pass (default 16)\n"
    "  --json     also write the results as JSON to FILE, or to stdout with '-'\n";

}  // namespace

int classify(int argc, char** argv) {
  auto valued = kPreprocessFlags;
  valued.insert({"--weights", "--top-k", "--batch", "--threads", "--json", "--dca-scale", "--device", "--precision"});
  Args args("classify", argc, argv, valued, {"--help"});
  if (args.has("--help")) {
    std::cout << kHelp << kPrecisionHelp << "\n" << kPreprocessHelp;
    return 0;
  }
  const auto& paths = args.positional();
  if (paths.empty()) args.fail("no images given");
  set_threads(args);
  auto model = open_model(args, weights_path(args));
  const auto pp = preprocessing(args, *model);
  const auto names = class_names(*model);
  const int k = std::min(args.integer("--top-k", 3, 1, 1 << 20), model->num_classes());
  const int max_batch = args.integer("--batch", 16, 1, 4096);
  const std::size_t image = std::size_t(model->channels()) * model->height() * model->width();
  if (model->channels() != 3) args.fail("the model takes " + std::to_string(model->channels()) + " channels; images are RGB");

  std::ostringstream json;
  json << "{\"weights\": " << lemevit::json::quote(weights_path(args)) << ", \"results\": [";
  bool first_json = true;
  int failures = 0;
  std::vector<float> batch_in(image * max_batch), logits(std::size_t(max_batch) * model->num_classes());
  for (std::size_t start = 0; start < paths.size(); start += max_batch) {
    std::vector<std::string> ok;
    for (std::size_t i = start; i < std::min(paths.size(), start + max_batch); ++i) {
      try {
        lemevit::image::to_tensor(lemevit::image::load_image(paths[i]), pp, batch_in.data() + ok.size() * image,
                                  model->height(), model->width());
        ok.push_back(paths[i]);
      } catch (const lemevit::Error& e) {
        std::cerr << "error: " << e.what() << "\n";
        ++failures;
      }
    }
    if (ok.empty()) continue;
    model->forward(batch_in.data(), int(ok.size()), logits.data());
    for (std::size_t b = 0; b < ok.size(); ++b) {
      const auto top = top_classes(logits.data() + b * model->num_classes(), model->num_classes(), k);
      std::cout << ok[b] << ":";
      json << (first_json ? "" : ", ") << "{\"path\": " << lemevit::json::quote(ok[b]) << ", \"top\": [";
      first_json = false;
      for (std::size_t j = 0; j < top.size(); ++j) {
        const auto [c, p] = top[j];
        std::cout << (j ? "," : "") << " " << names[c] << " " << std::fixed << std::setprecision(3) << p;
        json << (j ? ", " : "") << "{\"class\": " << c << ", \"name\": " << lemevit::json::quote(names[c])
             << ", \"probability\": " << std::setprecision(6) << p << "}";
      }
      std::cout << "\n";
      json << "]}";
    }
  }
  json << "], \"failed\": " << failures << "}\n";
  if (args.has("--json")) {
    const std::string target = args.get("--json");
    if (target == "-") std::cout << json.str();
    else if (!(std::ofstream(target) << json.str())) throw lemevit::Error(target + ": cannot write the JSON result");
  }
  return failures ? 1 : 0;
}

}  // namespace cli
