#pragma once
// What the `lemevit` tool and the Python module share beyond the models:
// preprocessing chosen by preset and overrides, class names, top-K classes,
// the evaluation loop and its JSON result. Flag parsing stays in the tool
// (images.hpp); values arrive here parsed.
#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <limits>
#include <numeric>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <lemevit/any_model.hpp>
#include <lemevit/evaluation.hpp>
#include <lemevit/image/image.hpp>
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

// predict_images without a per-image hook.
struct NoRows {
  void operator()(std::size_t, int, const float*) const {}
};

// Predicts the class of samples[i] for each i in `indices` (of an ImageFolder
// under `root`) into predicted[i], `max_batch` images at a time, each batch
// decoded in parallel; an unreadable image becomes -2 and is passed to
// skipped(message) (an error under `strict`). forward(input, n, logits) runs
// the model; row(i, j, logits of sample i) follows it for each image, j its
// place in the batch; done(count) follows each batch.
template <class Forward, class Skipped, class Done, class Row = NoRows>
void predict_images(const lemevit::AnyModel& m, const std::string& root,
                    const std::vector<lemevit::evaluation::Sample>& samples, const std::vector<std::size_t>& indices,
                    const lemevit::image::Preprocess& pp, int max_batch, bool strict, std::vector<int>& predicted,
                    Forward&& forward, Skipped&& skipped, Done&& done, Row&& row = Row{}) {
  const std::size_t image = std::size_t(m.channels()) * m.height() * m.width();
  const int k = m.num_classes();
  std::vector<float> input(image * std::size_t(max_batch)), logits(std::size_t(max_batch) * k);
  for (std::size_t start = 0; start < indices.size(); start += std::size_t(max_batch)) {
    const int n = int(std::min<std::size_t>(std::size_t(max_batch), indices.size() - start));
    std::vector<std::string> errors(static_cast<std::size_t>(n));
#pragma omp parallel for schedule(dynamic)
    for (int b = 0; b < n; ++b) {
      try {
        const auto path = std::filesystem::path(root) / samples[indices[start + std::size_t(b)]].path;
        lemevit::image::to_tensor(lemevit::image::load_image(path.string()), pp, input.data() + std::size_t(b) * image,
                                  m.height(), m.width());
      } catch (const std::exception& e) {
        errors[std::size_t(b)] = e.what();
      }
    }
    // Unreadable images are compacted away before the forward pass.
    std::vector<int> slot;
    for (int b = 0; b < n; ++b) {
      if (errors[std::size_t(b)].empty()) {
        if (int(slot.size()) != b)
          std::copy_n(input.data() + std::size_t(b) * image, image, input.data() + slot.size() * image);
        slot.push_back(b);
        continue;
      }
      if (strict) throw lemevit::Error(errors[std::size_t(b)]);
      skipped(errors[std::size_t(b)]);
      predicted[indices[start + std::size_t(b)]] = -2;
    }
    if (!slot.empty()) forward(input.data(), int(slot.size()), logits.data());
    for (std::size_t j = 0; j < slot.size(); ++j) {
      const float* l = logits.data() + j * std::size_t(k);
      const std::size_t i = indices[start + std::size_t(slot[j])];
      predicted[i] = int(std::max_element(l, l + k) - l);
      row(i, int(j), l);
    }
    done(start + std::size_t(n));
  }
}

// The metrics of an evaluation over the classes its folders hold; predicted[i]
// < 0 marks an image that was not evaluated.
inline lemevit::evaluation::Metrics score_folder(const std::string& root, const lemevit::evaluation::ImageFolder& folder,
                                                 const std::vector<int>& predicted, int k) {
  if (std::none_of(predicted.begin(), predicted.end(), [](int p) { return p >= 0; }))
    throw lemevit::Error(root + ": no readable images");
  std::vector<int> labels;
  for (const auto& s : folder.samples) labels.push_back(s.label);
  return lemevit::evaluation::score(labels, predicted, k, folder.classes());
}

// "fp32", "bf16" or "int8"; `what` names the option in the error.
inline lemevit::Precision parse_precision(const std::string& p, const std::string& what) {
  if (p == "fp32") return lemevit::Precision::Fp32;
  if (p == "bf16") return lemevit::Precision::Bf16;
  if (p == "int8") return lemevit::Precision::Int8;
  throw lemevit::Error(what + " must be fp32, bf16 or int8, got '" + p + "'");
}

// The same images in a reference precision (`lemevit evaluate --compare`),
// entries < 0 where an image was not evaluated.
struct Comparison {
  std::string precision;      // the reference's
  std::vector<int> predicted;  // its predictions
  std::vector<double> error;   // logit_error of each image against it
};

// One image's logits against the reference's: max |got - ref| / max |ref|,
// the relative error the README's precision tables and tests bound; infinite
// where either is not finite (then nothing can be compared).
inline double logit_error(const float* got, const float* ref, int k) {
  double diff = 0, scale = 0;
  for (int c = 0; c < k; ++c) {
    if (!std::isfinite(got[c]) || !std::isfinite(ref[c])) return std::numeric_limits<double>::infinity();
    diff = std::max(diff, std::fabs(double(got[c]) - double(ref[c])));
    scale = std::max(scale, std::fabs(double(ref[c])));
  }
  return scale > 0 ? diff / scale : (diff > 0 ? std::numeric_limits<double>::infinity() : 0.0);
}

// The reference model beside predict_images: forward(x, n) after each pass of
// the evaluated model (the same input), row(i, j, logits) for each image.
class Comparer {
 public:
  Comparer(lemevit::AnyModel& reference, std::size_t samples, int max_batch)
      : ref_(reference), k_(reference.num_classes()), logits_(std::size_t(max_batch) * std::size_t(k_)) {
    result.precision = reference.precision();
    result.predicted.assign(samples, -1);
    result.error.assign(samples, -1.0);
  }
  void forward(const float* x, int n) { ref_.forward(x, n, logits_.data()); }
  void row(std::size_t i, int j, const float* logits) {
    const float* ref = logits_.data() + std::size_t(j) * std::size_t(k_);
    result.predicted[i] = int(std::max_element(ref, ref + k_) - ref);
    result.error[i] = logit_error(logits, ref, k_);
  }
  Comparison result;

 private:
  lemevit::AnyModel& ref_;
  int k_;
  std::vector<float> logits_;
};

// A Comparison's figures over the images evaluated in both precisions.
struct ComparisonSummary {
  const Comparison* of = nullptr;  // the per-image results summarised
  long images = 0, differ = 0;  // evaluated in both; with another top-1 class
  double agreement = 0;         // 1 - differ / images
  double median = 0, p99 = 0, max = 0;  // of the logit errors (nearest rank)
  lemevit::evaluation::Metrics metrics;  // the reference's
};

inline ComparisonSummary summarize(const std::string& root, const lemevit::evaluation::ImageFolder& folder,
                                   const std::vector<int>& predicted, const Comparison& c, int k) {
  ComparisonSummary s;
  s.of = &c;
  s.metrics = score_folder(root, folder, c.predicted, k);
  std::vector<double> errors;
  for (std::size_t i = 0; i < predicted.size(); ++i) {
    if (predicted[i] < 0 || c.predicted[i] < 0) continue;
    ++s.images;
    s.differ += predicted[i] != c.predicted[i];
    errors.push_back(c.error[i]);
  }
  if (errors.empty()) throw lemevit::Error(root + ": no image was evaluated in both precisions");
  s.agreement = 1.0 - double(s.differ) / double(s.images);
  std::sort(errors.begin(), errors.end());
  const auto rank = [&](double q) { return errors[std::size_t(std::ceil(q * double(errors.size()))) - 1]; };
  s.median = rank(0.5);
  s.p99 = rank(0.99);
  s.max = errors.back();
  return s;
}

// The folder holding each of the k classes ("" for classes without one).
inline std::vector<std::string> folder_of_class(const lemevit::evaluation::ImageFolder& folder, int k) {
  std::vector<std::string> of(static_cast<std::size_t>(k));
  for (std::size_t f = 0; f < folder.folders.size(); ++f) of[std::size_t(folder.folder_class[f])] = folder.folders[f];
  return of;
}

// `lemevit evaluate --json`: metrics, per-class scores, confusion matrix,
// per-image predictions, unreadable images and warnings; with a comparison,
// its summary and each image's reference prediction and logit error.
inline std::string evaluation_json(const lemevit::evaluation::ImageFolder& folder, const std::vector<int>& predicted,
                                   const lemevit::evaluation::Metrics& m, const std::vector<std::string>& names,
                                   int ranks, const std::string& precision,
                                   const ComparisonSummary* summary = nullptr) {
  const Comparison* cmp = summary ? summary->of : nullptr;
  using lemevit::json::number;
  using lemevit::json::quote;
  const int k = int(names.size());
  const auto& samples = folder.samples;
  const auto folder_of = folder_of_class(folder, k);
  std::ostringstream j;
  j << std::setprecision(8) << "{\"accuracy\": " << m.accuracy << ", \"macro_precision\": " << m.macro_precision
    << ", \"macro_recall\": " << m.macro_recall << ", \"macro_f1\": " << m.macro_f1 << ", \"images\": " << m.images
    << ", \"skipped\": " << (long(samples.size()) - m.images) << ", \"ranks\": " << ranks
    << ", \"precision\": " << quote(precision)
    << ", \"class_map\": \"" << (folder.by_name ? "names" : "sorted") << "\", \"classes\": [";
  for (std::size_t i = 0; i < m.per_class.size(); ++i) {
    const auto& s = m.per_class[i];
    j << (i ? ", " : "") << "{\"index\": " << s.index << ", \"folder\": " << quote(folder_of[std::size_t(s.index)])
      << ", \"name\": " << quote(names[std::size_t(s.index)]) << ", \"precision\": " << s.precision
      << ", \"recall\": " << s.recall << ", \"f1\": " << s.f1 << ", \"support\": " << s.support << "}";
  }
  j << "], \"confusion\": [";
  for (int r = 0; r < k; ++r) {
    j << (r ? ", " : "") << "[";
    for (int c = 0; c < k; ++c) j << (c ? ", " : "") << m.confusion[std::size_t(r)][std::size_t(c)];
    j << "]";
  }
  j << "], \"predictions\": [";
  bool first = true;
  for (std::size_t i = 0; i < samples.size(); ++i) {
    if (predicted[i] < 0) continue;
    j << (first ? "" : ", ") << "{\"path\": " << quote(samples[i].path) << ", \"predicted\": " << predicted[i]
      << ", \"predicted_name\": " << quote(names[std::size_t(predicted[i])]) << ", \"label\": " << samples[i].label
      << ", \"label_name\": " << quote(names[std::size_t(samples[i].label)]);
    if (cmp && cmp->predicted[i] >= 0)
      j << ", \"compare_predicted\": " << cmp->predicted[i] << ", \"logit_error\": " << number(cmp->error[i]);
    j << "}";
    first = false;
  }
  j << "], \"unreadable\": [";
  first = true;
  for (std::size_t i = 0; i < samples.size(); ++i)
    if (predicted[i] == -2) {
      j << (first ? "" : ", ") << quote(samples[i].path);
      first = false;
    }
  j << "], \"warnings\": [";
  for (std::size_t i = 0; i < folder.warnings.size(); ++i) j << (i ? ", " : "") << quote(folder.warnings[i]);
  j << "]";
  if (summary)
    j << ", \"compare\": {\"precision\": " << quote(cmp->precision) << ", \"images\": " << summary->images
      << ", \"agreement\": " << summary->agreement << ", \"differ\": " << summary->differ
      << ", \"accuracy\": " << summary->metrics.accuracy << ", \"macro_f1\": " << summary->metrics.macro_f1
      << ", \"logit_error\": {\"median\": " << number(summary->median) << ", \"p99\": " << number(summary->p99)
      << ", \"max\": " << number(summary->max) << "}}";
  j << "}\n";
  return j.str();
}

}  // namespace cli
