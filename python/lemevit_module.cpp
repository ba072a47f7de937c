// The Python module `lemevit`: converted LeMeViT weights run on NumPy arrays
// (or anything with __array__, such as torch tensors).
//
//   m = lemevit.load("model.safetensors")
//   logits = m(x)                      # N x C x H x W float32 -> N x classes
//
// The model types are those of the `lemevit` tool (cli/models.cpp, linked,
// not compiled again); preprocessing, class names and top-K are the tool's.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <lemevit/image/image.hpp>
#include <lemevit/image/preprocess.hpp>

#include "frontend.hpp"
#include "models.hpp"

namespace py = pybind11;

namespace {

using lemevit::Error;

// The calling thread's OpenMP thread count for one call, restored afterwards
// (each Python thread is an OS thread with its own setting).
class ThreadScope {
 public:
  explicit ThreadScope(std::optional<int> threads) {
#ifdef _OPENMP
    if (threads) {
      saved_ = omp_get_max_threads();
      omp_set_num_threads(*threads);
    }
#else
    (void)threads;
#endif
  }
  ~ThreadScope() {
#ifdef _OPENMP
    if (saved_) omp_set_num_threads(*saved_);
#endif
  }
  ThreadScope(const ThreadScope&) = delete;
  ThreadScope& operator=(const ThreadScope&) = delete;

 private:
  std::optional<int> saved_;
};

using Floats = py::array_t<float, py::array::c_style | py::array::forcecast>;

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

class Model {
 public:
  Model(std::unique_ptr<lemevit::AnyModel> m, std::optional<int> threads, std::string path,
        lemevit::LoadOptions options)
      : m_(std::move(m)), threads_(threads), path_(std::move(path)), options_(options),
        names_(cli::class_names(*m_)) {}

  const std::vector<std::string>& classes() const { return names_; }

  py::dict info() const {
    const auto& i = m_->info();
    py::dict d;
    d["architecture"] = i.variant;
    d["description"] = m_->description();
    d["depths"] = i.depths;
    d["dims"] = i.dims;
    d["kinds"] = i.kinds;
    d["mlp_ratio"] = i.mlp_ratio;
    d["head_dim"] = i.head_dim;
    d["meta_tokens"] = i.meta_tokens;
    d["input_shape"] = py::make_tuple(m_->channels(), m_->height(), m_->width());
    d["num_classes"] = m_->num_classes();
    d["dca_scale"] = m_->dca_scale() == lemevit::DcaScale::Official ? "official" : "head_dim";
    d["precision"] = m_->precision();
    d["gemm_path"] = m_->gemm_path();
    d["attention_path"] = m_->attention_path();
    const auto p = cli::make_preprocess({}, *m_, "");
    py::dict pp;
    if (p.resize_wh) pp["resize"] = py::make_tuple(p.resize_wh->first, p.resize_wh->second);
    if (p.resize_short) pp["resize_short"] = p.resize_short;
    if (p.crop) pp["crop"] = p.crop;
    pp["interp"] = p.interp == lemevit::image::Interp::Bicubic ? "bicubic" : "bilinear";
    pp["mean"] = p.mean;
    pp["std"] = p.std;
    d["preprocess"] = pp;
    return d;
  }

  std::string repr() const {
    return "<lemevit.Model " + m_->description() + ", " + std::to_string(m_->num_classes()) + " classes, " +
           m_->precision() + ", '" + path_ + "'>";
  }

  // N x C x H x W float32 -> N x classes logits.
  py::array_t<float> call(py::handle x) {
    const Floats in = input(x);
    const int n = int(in.shape(0)), k = m_->num_classes();
    py::array_t<float> out({py::ssize_t(n), py::ssize_t(k)});
    const float* src = in.data();
    float* dst = out.mutable_data();
    {
      py::gil_scoped_release unlocked;
      in_passes(n, [&](int b0, int b, lemevit::Workspace& ws) {
        m_->forward(src + b0 * image_floats(), b, dst + std::size_t(b0) * k, ws);
      });
    }
    return out;
  }

  // Each stage's feature map (N x C_i x H_i x W_i), all stages or those listed.
  py::list features(py::handle x, std::optional<std::vector<int>> stages) {
    const Floats in = input(x);
    const int n = int(in.shape(0)), count = m_->num_stages();
    if (!stages) {
      stages.emplace();
      for (int s = 0; s < count; ++s) stages->push_back(s);
    }
    std::map<int, py::array_t<float>> maps;  // a stage listed twice is computed once
    std::vector<float*> base(std::size_t(count), nullptr);
    std::vector<std::size_t> per_image(std::size_t(count), 0);
    for (int s : *stages) {
      if (s < 0 || s >= count)
        throw Error("stage " + std::to_string(s) + " does not exist: this model has stages 0.." +
                    std::to_string(count - 1));
      if (maps.count(s)) continue;
      const auto [c, h, w] = m_->stage_shape(s);
      maps.emplace(s, py::array_t<float>({py::ssize_t(n), py::ssize_t(c), py::ssize_t(h), py::ssize_t(w)}));
      base[std::size_t(s)] = maps.at(s).mutable_data();
      per_image[std::size_t(s)] = std::size_t(c) * h * w;
    }
    const float* src = in.data();
    {
      py::gil_scoped_release unlocked;
      in_passes(n, [&](int b0, int b, lemevit::Workspace& ws) {
        std::vector<float*> out(std::size_t(count), nullptr);
        for (std::size_t s = 0; s < out.size(); ++s)
          if (base[s]) out[s] = base[s] + std::size_t(b0) * per_image[s];
        m_->features(src + b0 * image_floats(), b, out, ws);
      });
    }
    py::list result;
    for (int s : *stages) result.append(maps.at(s));
    return result;
  }

  // The `lemevit classify --json` results: per image, the top-K classes.
  py::list classify(const std::vector<std::filesystem::path>& paths, int top_k, int batch,
                    const cli::PreprocessChoice& choice) {
    if (top_k < 1) throw Error("top_k must be at least 1, got " + std::to_string(top_k));
    if (batch < 1) throw Error("batch must be at least 1, got " + std::to_string(batch));
    if (m_->channels() != 3)
      throw Error("the model takes " + std::to_string(m_->channels()) + " channels; images are RGB");
    const auto pp = cli::make_preprocess(choice, *m_, "");
    const int k = m_->num_classes(), total = int(paths.size());
    std::vector<std::vector<std::pair<int, double>>> top(paths.size());
    {
      py::gil_scoped_release unlocked;
      std::vector<float> in(image_floats() * std::size_t(std::min(batch, std::max(total, 1))));
      std::vector<float> logits(std::size_t(batch) * k);
      for (int start = 0; start < total; start += batch) {
        const int n = std::min(batch, total - start);
        load_images(paths.data() + start, n, pp, in.data());
        in_passes(n, [&](int b0, int b, lemevit::Workspace& ws) {
          m_->forward(in.data() + b0 * image_floats(), b, logits.data() + std::size_t(b0) * k, ws);
        });
        for (int i = 0; i < n; ++i) top[std::size_t(start + i)] = cli::top_classes(logits.data() + std::size_t(i) * k, k, top_k);
      }
    }
    py::list result;
    for (std::size_t i = 0; i < paths.size(); ++i) {
      py::list classes;
      for (const auto& [c, p] : top[i])
        classes.append(py::dict(py::arg("class") = c, py::arg("name") = names_[std::size_t(c)],
                                py::arg("probability") = p));
      result.append(py::dict(py::arg("path") = paths[i].string(), py::arg("top") = classes));
    }
    return result;
  }

  // `lemevit evaluate --json [--compare P]` over an ImageFolder tree, as a dict.
  py::object evaluate(const std::filesystem::path& root, int batch, bool strict, const std::string& class_map,
                      const cli::PreprocessChoice& choice, const std::optional<std::string>& compare) {
    namespace ev = lemevit::evaluation;
    if (batch < 1) throw Error("batch must be at least 1, got " + std::to_string(batch));
    const auto map = ev::parse_class_map(class_map, "class_map");
    const auto pp = cli::make_preprocess(choice, *m_, "");
    const std::string dir = root.string();
    std::string json;
    {
      py::gil_scoped_release unlocked;
      ThreadScope threads(threads_);
      // The reference: the same weights in the precision `compare` names.
      std::unique_ptr<lemevit::AnyModel> other;
      if (compare) {
        const auto p = cli::parse_precision(*compare, "compare");
        if (*compare == m_->precision())
          throw Error("compare='" + *compare + "' is the precision being evaluated: compare with another");
        other = cli::load_model(path_, options_, cli::Device::Cpu, p);
      }
      const int k = m_->num_classes();
      const auto folder = ev::scan_image_folder(dir, cli::metadata_class_names(*m_), k, map);
      std::vector<int> predicted(folder.samples.size(), -1);
      std::vector<std::size_t> all(folder.samples.size());
      std::iota(all.begin(), all.end(), std::size_t(0));
      std::optional<cli::Comparer> cmp;
      if (other) cmp.emplace(*other, folder.samples.size(), batch);
      cli::predict_images(
          *m_, dir, folder.samples, all, pp, batch, strict, predicted,
          [&](const float* x, int n, float* logits) {
            in_passes(n, [&](int b0, int b, lemevit::Workspace& ws) {
              m_->forward(x + b0 * image_floats(), b, logits + std::size_t(b0) * k, ws);
            });
            if (cmp) cmp->forward(x, n);
          },
          [](const std::string&) {}, [](std::size_t) {},  // unreadable images are listed in the result
          [&](std::size_t i, int j, const float* logits) {
            if (cmp) cmp->row(i, j, logits);
          });
      const auto metrics = cli::score_folder(dir, folder, predicted, k);
      std::optional<cli::ComparisonSummary> summary;
      if (cmp) summary = cli::summarize(dir, folder, predicted, cmp->result, k);
      json = cli::evaluation_json(folder, predicted, metrics, names_, 1, m_->precision(),
                                  summary ? &*summary : nullptr);
    }
    return py::module_::import("json").attr("loads")(json);
  }

 private:
  std::unique_ptr<lemevit::AnyModel> m_;
  std::optional<int> threads_;
  std::string path_;
  lemevit::LoadOptions options_;  // as loaded, for a reference model (evaluate's compare)
  std::vector<std::string> names_;
  // Workspaces of finished calls, reused by the next ones: concurrent calls
  // (Python threads, GIL released) each take their own.
  std::mutex pool_mutex_;
  std::vector<std::unique_ptr<lemevit::Workspace>> pool_;

  std::size_t image_floats() const { return std::size_t(m_->channels()) * m_->height() * m_->width(); }

  // x as a C-contiguous float32 N x C x H x W array (copied only when x is not one).
  Floats input(py::handle x) const {
    py::array a = py::array::ensure(x);
    if (!a) throw Error("expected an N x C x H x W float32 array, got " + std::string(py::str(py::type::of(x))));
    if (!py::isinstance<py::array_t<float>>(a))
      throw Error("expected float32 values, got " + std::string(py::str(a.dtype())) +
                  " (convert with x.astype(numpy.float32))");
    if (a.ndim() != 4 || a.shape(1) != m_->channels() || a.shape(2) != m_->height() || a.shape(3) != m_->width())
      throw Error("expected input of shape (N, " + std::to_string(m_->channels()) + ", " +
                  std::to_string(m_->height()) + ", " + std::to_string(m_->width()) + "), got " + shape_str(a));
    if (a.shape(0) > std::numeric_limits<int>::max()) throw Error("batch too large: " + shape_str(a));
    return Floats::ensure(a);
  }

  // Runs `run(first, count, workspace)` over the batch in the model's passes,
  // on a workspace of this call's own and with the model's thread count.
  template <class Run>
  void in_passes(int n, Run&& run) {
    if (n == 0) return;
    const int pass = std::min(n, m_->images_per_pass());
    std::unique_ptr<lemevit::Workspace> ws;
    {
      std::lock_guard lock(pool_mutex_);
      for (auto& w : pool_)
        if (w->capacity() >= pass) {
          ws = std::move(w);
          w = std::move(pool_.back());
          pool_.pop_back();
          break;
        }
    }
    if (!ws) ws = std::make_unique<lemevit::Workspace>(m_->make_workspace(pass));
    {
      ThreadScope threads(threads_);
      for (int b0 = 0; b0 < n; b0 += pass) run(b0, std::min(pass, n - b0), *ws);
    }
    std::lock_guard lock(pool_mutex_);
    pool_.push_back(std::move(ws));
  }

  // Decodes and preprocesses n images into `out` (n x C x H x W), in parallel;
  // the first unreadable one is an error naming it.
  void load_images(const std::filesystem::path* paths, int n, const lemevit::image::Preprocess& pp,
                   float* out) const {
    std::vector<std::string> errors(static_cast<std::size_t>(n));
    ThreadScope threads(threads_);
#pragma omp parallel for schedule(dynamic)
    for (int i = 0; i < n; ++i) {
      try {
        lemevit::image::to_tensor(lemevit::image::load_image(paths[i].string()), pp, out + i * image_floats(),
                                  m_->height(), m_->width());
      } catch (const std::exception& e) {
        errors[std::size_t(i)] = e.what();
      }
    }
    for (const auto& e : errors)
      if (!e.empty()) throw Error(e);
  }
};

std::unique_ptr<Model> load(const std::filesystem::path& path, const std::string& precision,
                            std::optional<int> threads, std::optional<std::string> dca_scale) {
  const lemevit::Precision p = cli::parse_precision(precision, "precision");
  if (threads && *threads < 1) throw Error("threads must be at least 1, got " + std::to_string(*threads));
  lemevit::LoadOptions options;
  if (dca_scale) {
    if (*dca_scale == "official") options.dca_scale = lemevit::DcaScale::Official;
    else if (*dca_scale == "head_dim") options.dca_scale = lemevit::DcaScale::HeadDim;
    else throw Error("dca_scale must be 'official' or 'head_dim', got '" + *dca_scale + "'");
  }
  std::unique_ptr<lemevit::AnyModel> m;
  {
    py::gil_scoped_release unlocked;
    m = cli::load_model(path.string(), options, cli::Device::Cpu, p);
  }
  return std::make_unique<Model>(std::move(m), threads, path.string(), options);
}

}  // namespace

PYBIND11_MODULE(lemevit, mod) {
  mod.doc() = "LeMeViT inference (the lemevit C++ library): load converted weights, run NumPy batches.";
  py::register_exception<Error>(mod, "Error", PyExc_RuntimeError);

  py::class_<Model>(mod, "Model", "A loaded model; see lemevit.load.")
      .def("__call__", &Model::call, py::arg("x"),
           "Logits (N x classes, float32) of a float32 N x C x H x W batch, preprocessed.\n"
           "Any array-like (NumPy, torch tensor via __array__); the GIL is released while it runs.")
      .def("features", &Model::features, py::arg("x"), py::arg("stages") = py::none(),
           "Each stage's feature map (N x C_i x H_i x W_i float32) of a batch, like timm's features_only;\n"
           "`stages`: the stage indices wanted (default: all).")
      .def(
          "classify",
          [](Model& m, const std::vector<std::filesystem::path>& paths, int top_k, int batch,
             std::optional<std::string> preset, std::optional<std::pair<int, int>> resize,
             std::optional<int> resize_short, std::optional<int> crop, std::optional<std::string> interp,
             std::optional<std::array<float, 3>> mean, std::optional<std::array<float, 3>> std) {
            return m.classify(paths, top_k, batch, {preset, resize, resize_short, crop, interp, mean, std});
          },
          py::arg("paths"), py::arg("top_k") = 5, py::arg("batch") = 16, py::kw_only(),
          py::arg("preset") = py::none(), py::arg("resize") = py::none(), py::arg("resize_short") = py::none(),
          py::arg("crop") = py::none(), py::arg("interp") = py::none(), py::arg("mean") = py::none(),
          py::arg("std") = py::none(),
          "Top-K classes of image files, as `lemevit classify --json`: a list of\n"
          "{'path', 'top': [{'class', 'name', 'probability'}, ...]}. Preprocessing as the\n"
          "tool's flags: preset ('seed', 'timm', 'timm-legacy'), resize=(width, height),\n"
          "resize_short, crop, interp ('bilinear', 'bicubic'), mean, std.")
      .def(
          "evaluate",
          [](Model& m, const std::filesystem::path& data_dir, int batch, bool strict, const std::string& class_map,
             std::optional<std::string> preset, std::optional<std::pair<int, int>> resize,
             std::optional<int> resize_short, std::optional<int> crop, std::optional<std::string> interp,
             std::optional<std::array<float, 3>> mean, std::optional<std::array<float, 3>> std,
             std::optional<std::string> compare) {
            return m.evaluate(data_dir, batch, strict, class_map,
                              {preset, resize, resize_short, crop, interp, mean, std}, compare);
          },
          py::arg("data_dir"), py::arg("batch") = 32, py::arg("strict") = false, py::arg("class_map") = "auto",
          py::kw_only(), py::arg("preset") = py::none(), py::arg("resize") = py::none(),
          py::arg("resize_short") = py::none(), py::arg("crop") = py::none(), py::arg("interp") = py::none(),
          py::arg("mean") = py::none(), py::arg("std") = py::none(), py::arg("compare") = py::none(),
          "Evaluates over an ImageFolder tree (data_dir/<class>/.../<image>) as `lemevit evaluate\n"
          "--json`: a dict with accuracy, macro_precision, macro_recall, macro_f1, classes\n"
          "(per-class scores), confusion, predictions ({'path', 'predicted', 'label', ...}),\n"
          "unreadable, warnings, precision. class_map: 'auto', 'names' or 'sorted' (--class-map);\n"
          "strict: an unreadable image is an error instead of being skipped; preprocessing as\n"
          "classify; compare: 'fp32', 'bf16' or 'int8' also runs the weights in that precision\n"
          "(--compare): the dict gains 'compare' (agreement, differ, accuracy, logit_error) and\n"
          "each prediction 'compare_predicted' and 'logit_error'.")
      .def_property_readonly("classes", &Model::classes, "Class names (from the weights' metadata).")
      .def_property_readonly("info", &Model::info, "Architecture, input shape and default preprocessing.")
      .def("__repr__", &Model::repr);

  mod.def("load", &load, py::arg("path"), py::arg("precision") = "fp32", py::arg("threads") = py::none(),
          py::arg("dca_scale") = py::none(),
          "Loads a weights file converted by tools/convert.py into the compiled-in model type its\n"
          "metadata names. precision: 'fp32', 'bf16' or 'int8' (the matrix products' arithmetic,\n"
          "as `lemevit --precision`); threads: OpenMP threads per call (default: OpenMP's);\n"
          "dca_scale: 'official' or 'head_dim' overrides the file's attention-scale policy.");
}
