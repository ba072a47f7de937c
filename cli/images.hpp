#pragma once
// What the image commands (classify, evaluate, attention, features) share:
// the default weights, class names from metadata, and preprocessing flags.
#include <cstdlib>
#include <string>
#include <vector>

#include <lemevit/any_model.hpp>
#include <lemevit/image/preprocess.hpp>
#include <lemevit/io/json.hpp>

#include "args.hpp"
#include "frontend.hpp"

namespace cli {

// The preprocessing flags every image command accepts.
inline const std::set<std::string> kPreprocessFlags = {"--resize", "--resize-short", "--crop",
                                                        "--interp", "--mean", "--std", "--preset"};
constexpr const char* kPreprocessHelp =
    "preprocessing (default: what the weights' metadata says):\n"
    "  --preset P         seed (Resize((H, W)) bilinear, mean = std = 0.5),\n"
    "                     timm (short side 256 bicubic, center crop 224, ImageNet mean/std),\n"
    "                     timm-legacy (crop_pct 0.9, mean = std = 0.5)\n"
    "  --resize WxH       resize to exactly W x H (like torchvision Resize((H, W)))\n"
    "  --resize-short S   resize the short side to S ... \n"
    "  --crop C           ... then center-crop C x C\n"
    "  --interp I         bilinear or bicubic (PIL's antialiased filters)\n"
    "  --mean a,b,c       normalisation mean (after scaling to [0, 1])\n"
    "  --std a,b,c        normalisation std\n";

// --weights, else $LEMEVIT_WEIGHTS, else the bundled Fashion-MNIST model.
inline std::string weights_path(const Args& args) {
  if (args.has("--weights")) return args.get("--weights");
  if (const char* env = std::getenv("LEMEVIT_WEIGHTS"); env && *env) return env;
  return LEMEVIT_DEFAULT_WEIGHTS;
}

inline std::array<float, 3> parse_triple(const Args& args, const std::string& flag) {
  const std::string v = args.get(flag);
  std::array<float, 3> out{};
  std::size_t at = 0;
  for (int i = 0; i < 3; ++i) {
    const std::size_t end = v.find(',', at);
    const std::string item = v.substr(at, end == std::string::npos ? std::string::npos : end - at);
    try {
      std::size_t used = 0;
      out[std::size_t(i)] = std::stof(item, &used);
      if (used != item.size()) throw 0;
    } catch (...) {
      args.fail(flag + " must be three comma-separated numbers, got '" + v + "'");
    }
    if ((end == std::string::npos) != (i == 2)) args.fail(flag + " must be three comma-separated numbers, got '" + v + "'");
    at = end + 1;
  }
  return out;
}

inline int parse_positive(const Args& args, const std::string& flag, const std::string& text) {
  try {
    std::size_t used = 0;
    const int n = std::stoi(text, &used);
    if (used == text.size() && n > 0 && n <= 65536) return n;
  } catch (...) {
  }
  args.fail(flag + ": '" + text + "' is not a positive size");
}

inline int parse_index(const Args& args, const std::string& flag, const std::string& text) {
  try {
    std::size_t used = 0;
    const int n = std::stoi(text, &used);
    if (used == text.size() && n >= 0) return n;
  } catch (...) {
  }
  args.fail(flag + ": '" + text + "' is not a non-negative integer");
}

// Preprocessing: the model's default, then the flags (see make_preprocess).
inline lemevit::image::Preprocess preprocessing(const Args& args, const lemevit::AnyModel& m) {
  PreprocessChoice c;
  if (args.has("--preset")) c.preset = args.get("--preset");
  if (args.has("--resize")) {
    const std::string v = args.get("--resize");
    const auto x = v.find('x');
    if (x == std::string::npos) args.fail("--resize must be WxH, got '" + v + "'");
    c.resize = {parse_positive(args, "--resize", v.substr(0, x)), parse_positive(args, "--resize", v.substr(x + 1))};
  }
  if (args.has("--resize-short")) c.resize_short = parse_positive(args, "--resize-short", args.get("--resize-short"));
  if (args.has("--crop")) c.crop = parse_positive(args, "--crop", args.get("--crop"));
  if (args.has("--interp")) c.interp = args.get("--interp");
  if (args.has("--mean")) c.mean = parse_triple(args, "--mean");
  if (args.has("--std")) c.std = parse_triple(args, "--std");
  return make_preprocess(c, m, "--");
}

}  // namespace cli
