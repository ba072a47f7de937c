#pragma once
// Runtime choice among compiled-in model types, for programs (like the
// `lemevit` tool) that learn the architecture from a weights file:
//
//   using Known = lemevit::Registry<Model<variants::Tiny, Input<224,224>, Classes<Dynamic>>, ...>;
//   std::unique_ptr<lemevit::AnyModel> m = Known::load("w.safetensors");
//
// Each registered type is still fully static; only the choice is dynamic.
#include <array>
#include <memory>
#include <optional>
#include <string>

#include "lemevit/error.hpp"
#include "lemevit/metadata.hpp"
#include "lemevit/model.hpp"
#include "lemevit/observer.hpp"
#include "lemevit/profile.hpp"

namespace lemevit {

class AnyModel {
 public:
  virtual ~AnyModel() = default;
  virtual const ModelInfo& info() const = 0;
  virtual std::string description() const = 0;
  virtual int num_classes() const = 0;
  // "fp32", "bf16" or "int8", and where the matrix products run ("avx512bw",
  // "avx512_bf16", "avx512_vnni", "fallback", ...; "unspecified" for backends
  // that do not say).
  virtual const char* precision() const = 0;
  virtual const char* gemm_path() const = 0;
  // Where attention's two products run: "fp32", or "avx512_bf16" /
  // "neon_bfdot" for the bf16/int8 precisions on AVX512_BF16 / ARM's
  // FEAT_BF16 ("unspecified" as above).
  virtual const char* attention_path() const = 0;
  virtual DcaScale dca_scale() const = 0;
  virtual int height() const = 0;
  virtual int width() const = 0;
  virtual int channels() const = 0;
  virtual std::size_t activation_bytes_per_image() const = 0;
  virtual double flops_per_image() const = 0;
  // Geometry of stage i's feature map.
  virtual int num_stages() const = 0;
  virtual std::array<int, 3> stage_shape(int stage) const = 0;  // channels, height, width
  // Grows the owned workspace when needed (the only allocation), then runs;
  // logits may be null (backbone only), observer may be null.
  virtual void forward(const float* input, int batch, float* logits, Observer* observer = nullptr) = 0;
  // The same, timed per layer kind into `profile` (Model::forward with a Profile).
  virtual void forward(const float* input, int batch, float* logits, Profile& profile) = 0;
  // Stage maps, NCHW, one pointer per stage (null: not wanted).
  virtual void features(const float* input, int batch, std::span<float* const> out) = 0;

  // The same with the caller's workspace (batch <= its capacity), so that
  // threads can share one model, each with its own workspace.
  virtual Workspace make_workspace(int max_batch) const = 0;
  virtual void forward(const float* input, int batch, float* logits, Workspace& ws) const = 0;
  virtual void features(const float* input, int batch, std::span<float* const> out, Workspace& ws) const = 0;
  // The batch a forward pass runs at once (see Model::images_per_pass).
  virtual int images_per_pass() const = 0;
};

template <class Net>
class ModelAdapter final : public AnyModel {
 public:
  ModelAdapter(const std::string& path, LoadOptions options) : net_(Net::load(path, options)) {}
  const ModelInfo& info() const override { return net_.info(); }
  std::string description() const override {
    return describe(Net::arch) + ", input " + std::to_string(Net::channels) + "x" +
           std::to_string(Net::height) + "x" + std::to_string(Net::width);
  }
  int num_classes() const override { return net_.num_classes(); }
  const char* precision() const override {
    if constexpr (requires { Kernels<typename Net::Backend>::precision; })
      return precision_name(Kernels<typename Net::Backend>::precision);
    else
      return "fp32";
  }
  const char* gemm_path() const override {
    if constexpr (requires { Kernels<typename Net::Backend>::gemm_path(); })
      return Kernels<typename Net::Backend>::gemm_path();
    else
      return "unspecified";
  }
  const char* attention_path() const override {
    if constexpr (requires { Kernels<typename Net::Backend>::attention_path(); })
      return Kernels<typename Net::Backend>::attention_path();
    else
      return "unspecified";
  }
  DcaScale dca_scale() const override { return net_.dca_scale(); }
  int height() const override { return Net::height; }
  int width() const override { return Net::width; }
  int channels() const override { return Net::channels; }
  std::size_t activation_bytes_per_image() const override { return Net::activation_bytes_per_image; }
  double flops_per_image() const override {  // the head the file has (Net::flops counts a Dynamic one as 1000)
    return lemevit::flops_per_image(Net::arch, Net::height, Net::width, Net::channels, net_.num_classes());
  }
  int num_stages() const override { return Net::num_stages; }
  std::array<int, 3> stage_shape(int i) const override {
    if (i < 0 || i >= Net::num_stages) throw Error("stage " + std::to_string(i) + " does not exist");
    return {Net::stage_channels(i), Net::stage_height(i), Net::stage_width(i)};
  }
  void forward(const float* input, int batch, float* logits, Observer* observer) override {
    net_.forward(input, batch, logits, workspace(batch), observer);
  }
  void forward(const float* input, int batch, float* logits, Profile& profile) override {
    net_.forward(input, batch, logits, workspace(batch), profile);
  }
  void features(const float* input, int batch, std::span<float* const> out) override {
    net_.features(input, batch, out, workspace(batch));
  }
  Workspace make_workspace(int max_batch) const override { return net_.make_workspace(max_batch); }
  void forward(const float* input, int batch, float* logits, Workspace& ws) const override {
    net_.forward(input, batch, logits, ws);
  }
  void features(const float* input, int batch, std::span<float* const> out, Workspace& ws) const override {
    net_.features(input, batch, out, ws);
  }
  int images_per_pass() const override { return Net::images_per_pass; }
  const Net& model() const { return net_; }

 private:
  Workspace& workspace(int batch) {
    if (!ws_ || ws_->capacity() < batch) ws_.emplace(net_.make_workspace(batch));
    return *ws_;
  }

  Net net_;
  std::optional<Workspace> ws_;
};

template <class... Nets>
struct Registry {
  // What this program can run, one line per type (for error messages).
  static std::string list() {
    std::string s;
    ((s += "  " + describe(Nets::arch) + ", input " + std::to_string(Nets::channels) + "x" +
           std::to_string(Nets::height) + "x" + std::to_string(Nets::width) + "\n"),
     ...);
    return s;
  }

  static std::unique_ptr<AnyModel> load(const std::string& path, LoadOptions options = {}) {
    ModelInfo info;
    {
      io::SafetensorsFile f(path);
      info = read_model_info(f);
    }
    if (!info.has_arch)
      throw Error(path + ": no lemevit.* architecture metadata; convert the checkpoint with "
                         "tools/convert.py first");
    std::unique_ptr<AnyModel> out;
    ((!out && arch_differences(info, Nets::arch).empty() && info.in_chans == Nets::channels &&
              (Nets::classes == Dynamic || Nets::classes == info.num_classes)
          ? (out = std::make_unique<ModelAdapter<Nets>>(path, options), 0)
          : 0),
     ...);
    if (!out)
      throw Error(path + ": holds a " + info.variant + " model (depths " +
                  detail::join(info.depths) + ", dims " + detail::join(info.dims) + ", kinds " +
                  detail::join(info.kinds) + ", mlp_ratio " + std::to_string(info.mlp_ratio) +
                  ", head_dim " + std::to_string(info.head_dim) + ", meta_tokens " +
                  std::to_string(info.meta_tokens) + ", in_chans " + std::to_string(info.in_chans) +
                  ") that this program does not compile in. Compiled in:\n" + list());
    return out;
  }
};

}  // namespace lemevit
