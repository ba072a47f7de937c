#pragma once
// What the `lemevit` tool and the Python module share beyond the models:
// preprocessing chosen by preset and overrides, class names, top-K classes.
// Flag parsing stays in the tool (images.hpp); values arrive here parsed.
#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <lemevit/any_model.hpp>
#include <lemevit/image/preprocess.hpp>
#include <lemevit/io/json.hpp>

namespace cli {

// The preprocessing options (the tool's flags, the module's keyword arguments);
// unset ones keep the model's default.
struct PreprocessChoice {
  std::optional<std::string> preset;         // seed, timm, timm-legacy
  std::optional<std::pair<int, int>> resize;  // exact (width, height)
  std::optional<int> resize_short, crop;
  std::optional<std::string> interp;  // bilinear, bicubic
  std::optional<std::array<float, 3>> mean, std;
};

// The metadata's pipeline (or the seed user's at the model's size when the
// file has none), or a preset, then the overrides. `prefix` starts the option
// names in messages ("--" for the tool's flags).
inline lemevit::image::Preprocess make_preprocess(const PreprocessChoice& c, const lemevit::AnyModel& m,
                                                  const std::string& prefix) {
  using lemevit::image::Preprocess;
  auto positive = [&](const char* name, std::optional<int> v) {
    if (v && *v <= 0) throw lemevit::Error(prefix + name + " must be positive, got " + std::to_string(*v));
  };
  positive("resize", c.resize ? std::optional(std::min(c.resize->first, c.resize->second)) : std::nullopt);
  positive("resize_short", c.resize_short);
  positive("crop", c.crop);
  Preprocess p;
  const int size = m.height();
  if (c.preset) {
    if (*c.preset == "seed") p = Preprocess::seed_user(size);
    else if (*c.preset == "timm") p = Preprocess::timm_eval(size);
    else if (*c.preset == "timm-legacy") p = Preprocess::timm_legacy(size);
    else throw lemevit::Error(prefix + "preset must be seed, timm or timm-legacy, got '" + *c.preset + "'");
  } else if (!m.info().preprocess.empty()) {
    p = Preprocess::from_json(m.info().preprocess, "lemevit.preprocess metadata");
  } else {
    p = Preprocess::seed_user(size);
    p.resize_wh = {m.width(), m.height()};
  }
  if (c.resize) {
    p.resize_wh = c.resize;
    p.resize_short = 0;
    p.crop = 0;
  }
  if (c.resize_short) {
    p.resize_short = *c.resize_short;
    p.resize_wh.reset();
  }
  if (c.crop) p.crop = *c.crop;
  if (c.interp) p.interp = lemevit::image::detail::parse_interp(*c.interp, prefix + "interp");
  if (c.mean) p.mean = *c.mean;
  if (c.std) p.std = *c.std;
  p.validate("preprocessing");
  return p;
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

// The k most probable classes of one image's logits, most probable first,
// softmax in double (probabilities that sum to 1 to print precision).
inline std::vector<std::pair<int, double>> top_classes(const float* logits, int n, int k) {
  std::vector<double> p(logits, logits + n);
  const double mx = *std::max_element(p.begin(), p.end());
  double sum = 0;
  for (auto& v : p) sum += (v = std::exp(v - mx));
  for (auto& v : p) v /= sum;
  std::vector<int> order(p.size());
  std::iota(order.begin(), order.end(), 0);
  k = std::min(k, n);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int a, int c) { return p[a] > p[c]; });
  std::vector<std::pair<int, double>> top;
  for (int j = 0; j < k; ++j) top.emplace_back(order[j], p[order[j]]);
  return top;
}

}  // namespace cli
