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

// Class names from lemevit.class_names; empty when the file has none (or
// not one per class).
inline std::vector<std::string> metadata_class_names(const lemevit::AnyModel& m) {
  std::vector<std::string> names;
  if (!m.info().class_names.empty()) {
    const auto v = lemevit::json::parse(m.info().class_names);
    if (v.type == lemevit::json::Value::Type::Array)
      for (const auto& n : v.array) names.push_back(n.type == lemevit::json::Value::Type::String ? n.string : "?");
  }
  if (int(names.size()) != m.num_classes()) names.clear();
  return names;
}

// Class names from lemevit.class_names, or "class <i>".
inline std::vector<std::string> class_names(const lemevit::AnyModel& m) {
  std::vector<std::string> names = metadata_class_names(m);
  for (int i = int(names.size()); i < m.num_classes(); ++i) names.push_back("class " + std::to_string(i));
  return names;
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

// Preprocessing: the metadata's pipeline (or the seed user's at the model's
// size when the file has none), then any flags on top.
inline lemevit::image::Preprocess preprocessing(const Args& args, const lemevit::AnyModel& m) {
  using lemevit::image::Preprocess;
  Preprocess p;
  const int size = m.height();
  if (args.has("--preset")) {
    const std::string s = args.get("--preset");
    if (s == "seed") p = Preprocess::seed_user(size);
    else if (s == "timm") p = Preprocess::timm_eval(size);
    else if (s == "timm-legacy") p = Preprocess::timm_legacy(size);
    else args.fail("--preset must be seed, timm or timm-legacy, got '" + s + "'");
  } else if (!m.info().preprocess.empty()) {
    p = Preprocess::from_json(m.info().preprocess, "lemevit.preprocess metadata");
  } else {
    p = Preprocess::seed_user(size);
    p.resize_wh = {m.width(), m.height()};
  }
  if (args.has("--resize")) {
    const std::string v = args.get("--resize");
    const auto x = v.find('x');
    if (x == std::string::npos) args.fail("--resize must be WxH, got '" + v + "'");
    p.resize_wh = {parse_positive(args, "--resize", v.substr(0, x)), parse_positive(args, "--resize", v.substr(x + 1))};
    p.resize_short = 0;
    p.crop = 0;
  }
  if (args.has("--resize-short")) {
    p.resize_short = parse_positive(args, "--resize-short", args.get("--resize-short"));
    p.resize_wh.reset();
  }
  if (args.has("--crop")) p.crop = parse_positive(args, "--crop", args.get("--crop"));
  if (args.has("--interp")) p.interp = lemevit::image::detail::parse_interp(args.get("--interp"), "--interp");
  if (args.has("--mean")) p.mean = parse_triple(args, "--mean");
  if (args.has("--std")) p.std = parse_triple(args, "--std");
  p.validate("preprocessing");
  return p;
}

}  // namespace cli
