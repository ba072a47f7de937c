// lemevit attention: where the meta tokens look (the paper's Figure 4). The
// image as the model saw it, with a heat map of the meta tokens' attention in
// the last dual cross-attention layer laid over it.
#include <algorithm>
#include <cmath>
#include <iostream>

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>

#include <lemevit/image/resize.hpp>
#include <lemevit/observer.hpp>

#include "common.hpp"
#include "images.hpp"
#include "models.hpp"

namespace cli {

namespace {
constexpr const char* kHelp =
    "usage: lemevit attention [--weights W.safetensors] [preprocessing flags] IMAGE -o MAP.png\n"
    "                         [--meta-tokens all|i,j,...] [--block STAGE.BLOCK] [--size S] [--alpha A]\n"
    "\n"
    "Writes IMAGE (as the model saw it, after preprocessing) with a heat map of the\n"
    "meta tokens' attention over the image tokens, averaged over heads and the chosen\n"
    "meta tokens, in the last dual cross-attention (D/D2) block.\n"
    "  --meta-tokens  which meta tokens to average (default: all)\n"
    "  --block        another block instead, e.g. 1.0 (stage 1, block 0; C, D or D2 kinds)\n"
    "  --size         output size of the longer side in pixels (default 448)\n"
    "  --alpha        heat-map opacity in [0, 1] (default 0.5)\n";

// A perceptually ordered blue -> cyan -> yellow -> red ramp.
std::array<float, 3> heat(float t) {
  static const float stops[5][3] = {{0.05f, 0.05f, 0.45f}, {0.1f, 0.55f, 0.95f}, {0.3f, 0.9f, 0.55f},
                                    {0.98f, 0.85f, 0.15f}, {0.85f, 0.1f, 0.05f}};
  t = std::clamp(t, 0.0f, 1.0f) * 4.0f;
  const int i = std::min(int(t), 3);
  const float f = t - float(i);
  return {stops[i][0] + f * (stops[i + 1][0] - stops[i][0]), stops[i][1] + f * (stops[i + 1][1] - stops[i][1]),
          stops[i][2] + f * (stops[i + 1][2] - stops[i][2])};
}

// Bilinear sample of a h x w grid at continuous position (y, x), pixel centres at +0.5.
float sample(const std::vector<float>& g, int h, int w, float y, float x) {
  y = std::clamp(y - 0.5f, 0.0f, float(h - 1));
  x = std::clamp(x - 0.5f, 0.0f, float(w - 1));
  const int y0 = int(y), x0 = int(x), y1 = std::min(y0 + 1, h - 1), x1 = std::min(x0 + 1, w - 1);
  const float fy = y - y0, fx = x - x0;
  return (1 - fy) * ((1 - fx) * g[y0 * w + x0] + fx * g[y0 * w + x1]) + fy * ((1 - fx) * g[y1 * w + x0] + fx * g[y1 * w + x1]);
}
}  // namespace

int attention(int argc, char** argv) {
  auto valued = kPreprocessFlags;
  valued.insert({"--weights", "-o", "--output", "--meta-tokens", "--block", "--size", "--alpha", "--threads",
                 "--dca-scale", "--device", "--precision"});
  Args args("attention", argc, argv, valued, {"--help"});
  if (args.has("--help")) {
    std::cout << kHelp << kPrecisionHelp << "\n" << kPreprocessHelp;
    return 0;
  }
  if (args.positional().size() != 1) args.fail("give exactly one image");
  const std::string path = args.positional()[0];
  const std::string output = args.has("-o") ? args.get("-o") : args.required("--output");
  const int size = args.integer("--size", 448, 16, 8192);
  const float alpha = args.real("--alpha", 0.5f, 0.0f, 1.0f, "--alpha must be a number in [0, 1]");
  set_threads(args);
  if (device(args) != Device::Cpu)
    args.fail("attention maps are read on the host: use --device cpu (the default)");
  auto model = open_model(args, weights_path(args));
  const auto pp = preprocessing(args, *model);

  lemevit::AttentionMaps maps;
  if (args.has("--block")) {
    const std::string b = args.get("--block");
    const auto dot = b.find('.');
    if (dot == std::string::npos) args.fail("--block must be STAGE.BLOCK, e.g. 1.0");
    maps = lemevit::AttentionMaps(parse_index(args, "--block", b.substr(0, dot)),
                                  parse_index(args, "--block", b.substr(dot + 1)));
  }
  const auto img = lemevit::image::load_image(path);
  const auto seen = pp.apply(img);  // the pixels the model saw
  std::vector<float> input(std::size_t(model->channels()) * model->height() * model->width());
  lemevit::image::to_tensor(img, pp, input.data(), model->height(), model->width());
  model->forward(input.data(), 1, nullptr, &maps);
  if (!maps.recorded())
    throw lemevit::Error(args.has("--block") ? "block " + args.get("--block") + " is not a C, D or D2 block of this model"
                                             : std::string("this model has no cross-attention block"));
  std::vector<int> tokens;
  if (args.has("--meta-tokens") && args.get("--meta-tokens") != "all") {
    std::string list = args.get("--meta-tokens") + ",";
    for (std::size_t at = 0, end; (end = list.find(',', at)) != std::string::npos; at = end + 1) {
      const int m = parse_index(args, "--meta-tokens", list.substr(at, end - at));
      if (m < 0 || m >= maps.info().meta_tokens)
        args.fail("--meta-tokens: this model has meta tokens 0.." + std::to_string(maps.info().meta_tokens - 1));
      tokens.push_back(m);
    }
  }
  auto grid = maps.mean_map(0, tokens);
  const auto [lo, hi] = std::minmax_element(grid.begin(), grid.end());
  const float range = std::max(*hi - *lo, 1e-12f), low = *lo;
  for (auto& v : grid) v = (v - low) / range;

  // Output: the seen image scaled so its longer side is `size`, heat map on top.
  const double scale = double(size) / std::max(seen.width, seen.height);
  const int ow = std::max(1, int(std::lround(seen.width * scale))), oh = std::max(1, int(std::lround(seen.height * scale)));
  const auto base = lemevit::image::resize(seen, ow, oh, lemevit::image::Interp::Bicubic);
  const int gh = maps.info().height, gw = maps.info().width;
  std::vector<std::uint8_t> png(std::size_t(ow) * oh * 3);
  for (int y = 0; y < oh; ++y)
    for (int x = 0; x < ow; ++x) {
      const auto c = heat(sample(grid, gh, gw, (y + 0.5f) * gh / oh, (x + 0.5f) * gw / ow));
      for (int ch = 0; ch < 3; ++ch) {
        const std::size_t at = (std::size_t(y) * ow + x) * 3 + ch;
        png[at] = std::uint8_t(std::lround((1 - alpha) * base.rgb[at] + alpha * 255.0f * c[ch]));
      }
    }
  if (!stbi_write_png(output.c_str(), ow, oh, 3, png.data(), ow * 3))
    throw lemevit::Error(output + ": cannot write the PNG");
  const auto& info = maps.info();
  std::cout << "wrote " << output << ": meta-token attention of stage " << info.stage << " block " << info.block
            << " (" << lemevit::kind_name(info.kind) << ", " << info.meta_tokens << " meta tokens over " << gh << "x"
            << gw << " image tokens, " << info.heads << " heads)\n";
  return 0;
}

}  // namespace cli
