#pragma once
// The evaluation transforms users run on PIL images, as data: an optional
// resize (to an exact size or of the short side), an optional center crop,
// then torchvision ToTensor (x / 255) and Normalize ((x - mean) / std), both
// in float32 in the same order, so the tensor matches torchvision's exactly
// when the resampled pixels do.
//
//   auto pp = Preprocess::from_json(info.preprocess);   // or a preset
//   to_tensor(load_image(path), pp, input, 224, 224);
//
// JSON form (the lemevit.preprocess metadata written by the Python tools):
//   {"resize": [H, W], "interp": "bilinear", "mean": [...], "std": [...]}
//   {"resize_short": 256, "crop": 224, "interp": "bicubic", ...}
// "resize" follows torchvision's Resize: a list is (height, width), as
// tools/export_imagefolder.py reads it; a single number is the short side.
#include <array>
#include <cmath>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lemevit/error.hpp"
#include "lemevit/image/image.hpp"
#include "lemevit/image/resize.hpp"
#include "lemevit/io/json.hpp"

namespace lemevit::image {

inline constexpr std::array<float, 3> kImagenetMean{0.485f, 0.456f, 0.406f};
inline constexpr std::array<float, 3> kImagenetStd{0.229f, 0.224f, 0.225f};
inline constexpr std::array<float, 3> kHalf{0.5f, 0.5f, 0.5f};

struct Preprocess {
  std::optional<std::pair<int, int>> resize_wh;  // exact (width, height)
  int resize_short = 0;                          // short side, 0 = none
  int crop = 0;                                  // square center crop, 0 = none
  Interp interp = Interp::Bilinear;
  std::array<float, 3> mean{0.0f, 0.0f, 0.0f}, std{1.0f, 1.0f, 1.0f};

  // The seed user: Resize((size, size)) bilinear, Normalize(0.5, 0.5).
  static Preprocess seed_user(int size = 224) {
    Preprocess p;
    p.resize_wh = {size, size};
    p.interp = Interp::Bilinear;
    p.mean = kHalf;
    p.std = kHalf;
    return p;
  }
  // timm's eval transform: Resize(floor(size / crop_pct)) + CenterCrop(size).
  static Preprocess timm(int size, double crop_pct, std::array<float, 3> mean, std::array<float, 3> std,
                         Interp interp = Interp::Bicubic) {
    Preprocess p;
    p.resize_short = int(std::floor(size / crop_pct));
    p.crop = size;
    p.interp = interp;
    p.mean = mean;
    p.std = std;
    return p;
  }
  // timm 0.9 validate.py: crop_pct 0.875 (224 -> 256), bicubic, ImageNet statistics.
  static Preprocess timm_eval(int size = 224) { return timm(size, 0.875, kImagenetMean, kImagenetStd); }
  // Older timm reading the model's default_cfg: crop_pct 0.9 (224 -> 248), mean = std = 0.5.
  static Preprocess timm_legacy(int size = 224) { return timm(size, 0.9, kHalf, kHalf); }

  static Preprocess from_json(std::string_view text, const std::string& where = "preprocess");

  void validate(const std::string& where = "preprocess") const {
    auto bad = [&](const std::string& what) { throw Error(where + ": " + what); };
    if (resize_wh && resize_short) bad("both an exact resize and a short-side resize are set");
    if (resize_wh && (resize_wh->first <= 0 || resize_wh->second <= 0)) bad("resize size must be positive");
    if (resize_short < 0) bad("resize_short must be positive");
    if (crop < 0) bad("crop must be positive");
    for (int c = 0; c < 3; ++c)
      if (!(std[std::size_t(c)] != 0.0f) || !std::isfinite(std[std::size_t(c)]) || !std::isfinite(mean[std::size_t(c)]))
        bad("std must be finite and nonzero, mean finite");
  }

  // The (width, height) of a w x h image after the resize step.
  std::pair<int, int> resized_wh(int w, int h) const {
    if (resize_wh) return *resize_wh;
    if (resize_short) return short_side_size(w, h, resize_short);
    return {w, h};
  }

  // The (width, height) the pipeline yields for an input image of w x h.
  std::pair<int, int> output_wh(int w, int h) const {
    const auto resized = resized_wh(w, h);
    return crop ? std::pair{crop, crop} : resized;
  }

  // Resize and crop, the uint8 part of the pipeline. With a crop, only the
  // pixels the crop keeps are resampled (the same pixels as resizing first).
  Image apply(const Image& img) const {
    validate();
    detail::check_sizes(img, 1, 1, "preprocess");
    const auto [out_w, out_h] = output_wh(img.width, img.height);
    if (std::int64_t(out_w) * out_h > kDefaultMaxPixels)
      throw Error("preprocess: a " + std::to_string(img.width) + "x" + std::to_string(img.height) +
                  " image would become " + std::to_string(out_w) + "x" + std::to_string(out_h) +
                  " pixels; refused");
    const auto [w, h] = resized_wh(img.width, img.height);
    if (crop) return detail::resize_center_crop(img, w, h, interp, crop, crop);
    return resize(img, w, h, interp);
  }
};

namespace detail {

inline Interp parse_interp(const std::string& s, const std::string& where) {
  if (s == "bilinear") return Interp::Bilinear;
  if (s == "bicubic") return Interp::Bicubic;
  if (s == "nearest") return Interp::Nearest;
  throw Error(where + ": interp '" + s + "' is not one of bilinear, bicubic, nearest");
}

inline int json_size(const json::Value& v, const std::string& where, const char* key) {
  if (v.type != json::Value::Type::Number || v.number != std::floor(v.number) || v.number < 1 ||
      v.number > 1e6)
    throw Error(where + ": " + key + " must be a positive integer");
  return int(v.number);
}

inline std::array<float, 3> json_triple(const json::Value& v, const std::string& where, const char* key) {
  if (v.type == json::Value::Type::Number) {
    const float x = float(v.number);
    return {x, x, x};
  }
  if (v.type != json::Value::Type::Array || v.array.size() != 3)
    throw Error(where + ": " + key + " must be a list of 3 numbers");
  std::array<float, 3> out{};
  for (std::size_t i = 0; i < 3; ++i) {
    if (v.array[i].type != json::Value::Type::Number) throw Error(where + ": " + key + " must be a list of 3 numbers");
    out[i] = float(v.array[i].number);  // double -> float, as torch.tensor(list) rounds
  }
  return out;
}

}  // namespace detail

inline Preprocess Preprocess::from_json(std::string_view text, const std::string& where) {
  json::Value root;
  try {
    root = json::parse(text);
  } catch (const Error& e) {
    throw Error(where + ": " + e.what());
  }
  if (root.type != json::Value::Type::Object) throw Error(where + ": expected a JSON object");
  Preprocess p;
  for (const auto& [key, v] : root.object) {
    if (key == "resize") {
      if (v.type == json::Value::Type::Array) {
        if (v.array.size() != 2) throw Error(where + ": resize must be [height, width] or one number");
        p.resize_wh = {detail::json_size(v.array[1], where, "resize"), detail::json_size(v.array[0], where, "resize")};
      } else {
        p.resize_short = detail::json_size(v, where, "resize");
      }
    } else if (key == "resize_short") {
      p.resize_short = detail::json_size(v, where, "resize_short");
    } else if (key == "crop") {
      p.crop = detail::json_size(v, where, "crop");
    } else if (key == "interp") {
      if (v.type != json::Value::Type::String) throw Error(where + ": interp must be a string");
      p.interp = detail::parse_interp(v.string, where);
    } else if (key == "mean") {
      p.mean = detail::json_triple(v, where, "mean");
    } else if (key == "std") {
      p.std = detail::json_triple(v, where, "std");
    } else {
      throw Error(where + ": unknown key '" + key +
                  "' (expected resize, resize_short, crop, interp, mean, std)");
    }
  }
  p.validate(where);
  return p;
}

// ToTensor + Normalize of an image already at the model's size: CHW float32,
// (x / 255 - mean) / std with each step rounded to float as torch does.
inline void normalize_chw(const Image& img, const std::array<float, 3>& mean, const std::array<float, 3>& std,
                          float* out_chw) {
  const std::size_t plane = std::size_t(img.width) * std::size_t(img.height);
  for (std::size_t c = 0; c < 3; ++c) {
    const float m = mean[c], s = std[c];
    float* o = out_chw + c * plane;
    for (std::size_t i = 0; i < plane; ++i) {
      const float x = float(img.rgb[3 * i + c]) / 255.0f;
      o[i] = (x - m) / s;
    }
  }
}

// The whole pipeline into 3 x input_h x input_w floats at out_chw. Throws
// when the pipeline does not produce the model's input size.
inline void to_tensor(const Image& img, const Preprocess& pp, float* out_chw, int input_h, int input_w) {
  pp.validate();
  const auto [w, h] = pp.output_wh(img.width, img.height);
  if (w != input_w || h != input_h)
    throw Error("preprocess: a " + std::to_string(img.width) + "x" + std::to_string(img.height) +
                " image becomes " + std::to_string(w) + "x" + std::to_string(h) + " (width x height), but the model takes " +
                std::to_string(input_w) + "x" + std::to_string(input_h));
  const Image ready = pp.apply(img);
  normalize_chw(ready, pp.mean, pp.std, out_chw);
}

inline std::vector<float> to_tensor(const Image& img, const Preprocess& pp, int input_h, int input_w) {
  std::vector<float> out(std::size_t(3) * std::size_t(input_h) * std::size_t(input_w));
  to_tensor(img, pp, out.data(), input_h, input_w);
  return out;
}

}  // namespace lemevit::image
