#pragma once
// lemevit::Model — a whole LeMeViT variant as one type:
//
//   using Net = lemevit::Model<lemevit::variants::Tiny, lemevit::Input<224, 224, 3>,
//                              lemevit::Classes<4>, lemevit::backend::Simd<>>;
//   auto net = Net::load("tiny.safetensors");
//   auto ws = net.make_workspace(8);           // all activation memory, once
//   net.forward(images, 8, logits, ws);        // allocates nothing
//
// Every shape is a constant expression; a loaded model is immutable, so any
// number of threads may run it at once, each with its own Workspace.
#include <algorithm>
#include <cstdlib>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "lemevit/arch.hpp"
#include "lemevit/backend.hpp"
#include "lemevit/default_backend.hpp"
#include "lemevit/error.hpp"
#include "lemevit/flops.hpp"
#include "lemevit/layers/stage.hpp"
#include "lemevit/metadata.hpp"
#include "lemevit/observer.hpp"
#include "lemevit/profile.hpp"
#include "lemevit/workspace.hpp"

// The activation bytes of one CPU pass (see Model::images_per_pass): about a
// last-level cache. A program may define it before including the library
// (the same value in every file that instantiates a model).
#ifndef LEMEVIT_PASS_BYTES
#define LEMEVIT_PASS_BYTES (std::size_t(8) << 20)
#endif

namespace lemevit {

namespace detail {
// Readable compile errors for invalid configurations.
constexpr bool depths_positive(const ArchSpec& a) {
  for (int i = 0; i < a.num_stages; ++i)
    if (a.depths[i] < 1) return false;
  return true;
}
constexpr bool dims_multiple_of_head_dim(const ArchSpec& a) {
  for (int i = 0; i < a.num_stages; ++i)
    if (a.dims[i] < a.head_dim || a.dims[i] % a.head_dim != 0) return false;
  return true;
}
constexpr bool width_kept_after_cross_attention(const ArchSpec& a) {
  for (int i = 1; i < a.num_stages; ++i)
    if (a.kinds[i - 1] == Kind::C && a.dims[i] != a.dims[i - 1]) return false;
  return true;
}
constexpr std::size_t round_up(std::size_t n) { return (n + 15) / 16 * 16; }  // 64-byte regions
}  // namespace detail

template <ArchSpec A, class In = Input<224, 224, 3>, class Cls = Classes<1000>,
          class B = backend::Default>
class Model {
  static_assert(A.num_stages >= 1 && A.num_stages <= kMaxStages,
                "a LeMeViT has between 1 and 8 stages");
  static_assert(A.head_dim >= 1, "head_dim must be positive");
  static_assert(A.meta_tokens >= 1, "there must be at least one meta token");
  static_assert(A.mlp_ratio >= 1, "mlp_ratio must be at least 1");
  static_assert(detail::depths_positive(A), "every stage needs at least one block (depth >= 1)");
  static_assert(detail::dims_multiple_of_head_dim(A),
                "every stage width (dims) must be a positive multiple of head_dim");
  static_assert(A.dims[0] % 2 == 0, "the stem's first conv has dims[0]/2 channels: dims[0] must be even");
  static_assert(detail::width_kept_after_cross_attention(A),
                "the downsample after a cross-attention (C) stage is an identity, so the next "
                "stage must have the same width");

 public:
  static constexpr ArchSpec arch = A;
  static constexpr int height = In::height, width = In::width, channels = In::channels;
  static constexpr int classes = Cls::value;  // Dynamic: chosen by the weights file
  static constexpr int meta_tokens = A.meta_tokens;
  static constexpr int last_dim = A.last_dim();
  using Backend = B;

 private:
  static constexpr int stem_h = conv_s2(height), stem_w = conv_s2(width);
  static constexpr int h0 = conv_s2(stem_h), w0 = conv_s2(stem_w);
  using Stem1 = layers::ConvBn3x3s2<B, height, width, channels, A.dims[0] / 2>;
  using Stem2 = layers::ConvBn3x3s2<B, stem_h, stem_w, A.dims[0] / 2, A.dims[0]>;

  template <int I>
  using StageAt = layers::Stage<B, A, I, layers::stage_extent(A, height, I == 0 ? 0 : I - 1),
                                layers::stage_extent(A, width, I == 0 ? 0 : I - 1)>;
  template <std::size_t... I>
  static auto stages_of(std::index_sequence<I...>) -> std::tuple<StageAt<int(I)>...>;
  using Stages = decltype(stages_of(std::make_index_sequence<A.num_stages>{}));
  using Last = std::tuple_element_t<A.num_stages - 1, Stages>;

  template <class F>
  static constexpr std::size_t max_over_stages(F f) {
    return [&]<std::size_t... I>(std::index_sequence<I...>) {
      return std::max({f(std::type_identity<std::tuple_element_t<I, Stages>>{})...});
    }(std::make_index_sequence<A.num_stages>{});
  }

  static constexpr int max_dim() {
    int m = 0;
    for (int i = 0; i < A.num_stages; ++i) m = std::max(m, A.dims[i]);
    return m;
  }

 public:
  // Geometry of each stage's token map.
  static constexpr int stage_height(int i) { return layers::stage_extent(A, height, i); }
  static constexpr int stage_width(int i) { return layers::stage_extent(A, width, i); }

  // Activation memory per image, planned from the static shapes: the x/c
  // buffers live for the whole pass, the scratch regions are reused by every
  // layer (their contents die at each layer's end).
  struct Plan {
    static constexpr std::size_t tokens = detail::round_up(std::max(
        {std::size_t(height) * width * channels, std::size_t(stem_h) * stem_w * (A.dims[0] / 2),
         std::size_t(2) * last_dim,
         max_over_stages([](auto s) { return decltype(s)::type::tokens_floats; })}));
    static constexpr std::size_t x_scratch = detail::round_up(
        std::max({Stem1::scratch_floats, Stem2::scratch_floats,
                  max_over_stages([](auto s) { return decltype(s)::type::x_scratch; })}));
    static constexpr std::size_t meta = detail::round_up(std::size_t(A.meta_tokens) * max_dim());
    static constexpr std::size_t c_scratch = detail::round_up(
        max_over_stages([](auto s) { return decltype(s)::type::c_scratch; }));
    static constexpr std::size_t floats_per_image = 3 * tokens + x_scratch + 2 * meta + c_scratch;
  };
  static constexpr std::size_t activation_bytes_per_image = Plan::floats_per_image * sizeof(float);
  // Multiply-adds x 2 of one image's forward pass (a Dynamic head counted as 1000 classes).
  static constexpr double flops = flops_per_image(A, height, width, channels, classes == Dynamic ? 1000 : classes);

  // Loads a safetensors file written by tools/convert.py (or any file with
  // the official state-dict names). Throws lemevit::Error naming the problem.
  static Model load(const std::string& path, LoadOptions options = {}) {
    auto file = std::make_shared<const io::SafetensorsFile>(path);
    Model m;
    m.load_from(*file, options);
    return m;
  }

  // A model with seeded random weights (benchmarks, smoke tests).
  static Model random(std::uint64_t seed, int num_classes = classes == Dynamic ? 1000 : classes) {
    if (classes != Dynamic && num_classes != classes)
      throw Error("random: class count " + std::to_string(num_classes) + " differs from the type's " +
                  std::to_string(classes));
    Model m;
    WeightLoader w = WeightLoader::random(seed);
    m.load_weights(w, num_classes);
    return m;
  }

  Workspace make_workspace(int max_batch) const {
    return Workspace(Plan::floats_per_image, max_batch, &Kernels<B>::allocate, &Kernels<B>::release);
  }

  int num_classes() const { return head_.out_features(); }
  DcaScale dca_scale() const { return dca_scale_; }
  const ModelInfo& info() const { return info_; }

  // input: batch x channels x height x width (NCHW, preprocessed);
  // logits: batch x num_classes(), or nullptr to run the backbone only.
  // `observer` (optional) sees stage outputs and meta-token attention.
  void forward(const float* input, int batch, float* logits, Workspace& ws,
               Observer* observer = nullptr) const {
    NoProfile none;
    run(input, batch, logits, ws, observer, none);
  }

  // The same forward pass, the same logits, with the wall time and FLOPs of
  // each layer kind added to `profile` (see profile.hpp). The plain forward
  // above contains no timing code.
  void forward(const float* input, int batch, float* logits, Workspace& ws, Profile& profile) const {
    run(input, batch, logits, ws, nullptr, profile);
  }

  // Images that go through the network together. On the CPU a larger batch
  // runs in passes of this many images, so that one pass's activations stay
  // in a last-level cache (LEMEVIT_PASS_BYTES of them, 8 MiB unless defined
  // before the include): Tiny at batch 8 ran 14% slower per image in one pass
  // than image by image. Logits do not depend on it (every kernel computes an
  // image's rows the same way whatever the batch). With an observer, the
  // whole batch is one pass. GPUs take the whole batch.
  static constexpr int images_per_pass =
      Kernels<B>::host_memory ? int(std::max<std::size_t>(1, std::size_t(LEMEVIT_PASS_BYTES) / activation_bytes_per_image))
                              : std::numeric_limits<int>::max();

  // Backbone features like timm's features_only: stage i's map, NCHW
  // (batch x stage_channels(i) x stage_height(i) x stage_width(i)), written
  // to out[i] for each of the num_stages pointers that is not null.
  static constexpr int num_stages = A.num_stages;
  static constexpr int stage_channels(int i) { return A.dims[i]; }
  void features(const float* input, int batch, std::span<float* const> out, Workspace& ws,
                float* logits = nullptr) const {
    if (out.size() != std::size_t(num_stages))
      throw Error("features: expected " + std::to_string(num_stages) + " output pointers, got " +
                  std::to_string(out.size()));
    // Device backends convert into a scratch buffer, then download.
    struct Collect final : Observer {
      std::span<float* const> out;
      float* device_scratch;
      void stage_output(int stage, const float* x, int b, int h, int w, int c) override {
        if (!out[stage]) return;
        const std::size_t n = std::size_t(b) * h * w * c;
        float* dst = Kernels<B>::host_memory ? out[stage] : device_scratch;
        Kernels<B>::nhwc_to_nchw(x, b, h, w, c, dst);
        if (!Kernels<B>::host_memory) Kernels<B>::download(out[stage], dst, n);
      }
    } collect;
    collect.out = out;
    std::optional<Workspace> extra;
    if constexpr (!Kernels<B>::host_memory) extra.emplace(make_workspace(batch));
    collect.device_scratch = extra ? extra->data() : nullptr;
    forward(input, batch, logits, ws, &collect);
  }

 private:
  ModelInfo info_;
  DcaScale dca_scale_ = DcaScale::Official;
  Stem1 stem1_;
  Stem2 stem2_;
  typename Kernels<B>::Params meta0_;  // meta tokens after meta_token_downsample.0 (input-independent)
  Stages stages_;
  typename Kernels<B>::Params norm_scale_, norm_shift_;  // final BatchNorm, folded
  layers::TorchNorm<B, last_dim> norm_c_;
  // The classifier stays fp32 in a bf16 or int8 model (README, "Precision"):
  // its outputs are the logits, so rounding its operands shows there in full.
  layers::Linear<typename Fp32Of<B>::type, last_dim, classes> head_;

  Model() = default;

  void load_from(const io::SafetensorsFile& file, const LoadOptions& options) {
    info_ = read_model_info(file);
    check_model_info<A>(file.path(), info_, channels, classes);
    dca_scale_ = options.dca_scale.value_or(info_.dca_scale);
    WeightLoader w(std::shared_ptr<const io::SafetensorsFile>(&file, [](auto*) {}));
    int head_rows = classes;
    if constexpr (classes == Dynamic) {
      const auto& shape = w.shape_of("head.weight");
      if (shape.size() != 2 || shape[0] < 1 || shape[0] > (1 << 24))
        throw Error(file.path() + ": tensor 'head.weight' has shape " + io::shape_str(shape) +
                    ", expected [classes, " + std::to_string(last_dim) + "]");
      head_rows = int(shape[0]);
    }
    load_weights(w, head_rows);
    w.check_all_used();
  }

  void load_weights(WeightLoader& w, int head_rows) {
    // Before any kernel runs: a missing instruction-set extension is an error, not SIGILL.
    if constexpr (requires { Kernels<B>::check_cpu(); }) Kernels<B>::check_cpu();
    stem1_.load(w, "downsample_layers.0.0", "downsample_layers.0.1");
    stem2_.load(w, "downsample_layers.0.3", "downsample_layers.0.4");
    std::apply([&](auto&... s) { (s.load(w), ...); }, stages_);
    // Meta tokens are the same for every image: run stage 0's downsample now.
    {
      auto tokens = w.floats("meta_tokens", {A.meta_tokens, A.dims[0]});
      constexpr std::size_t n = std::size_t(A.meta_tokens) * A.dims[0];
      Workspace scratch(n * 6, 1, &Kernels<B>::allocate, &Kernels<B>::release);  // in, out, 4x hidden
      Kernels<B>::upload(scratch.data(), tokens.data(), n);
      std::get<0>(stages_).meta()(scratch.data(), A.meta_tokens, scratch.data() + n, scratch.data() + 2 * n);
      std::vector<float> host(n);
      Kernels<B>::download(host.data(), scratch.data() + n, n);
      meta0_ = Kernels<B>::make_params(host.data(), n);
    }
    // Final BatchNorm, applied after pooling (it is affine per channel).
    std::vector<float> scale(last_dim, 1.0f), shift(last_dim, 0.0f);
    layers::fold_batch_norm(w, "norm", last_dim, scale.data(), 1, shift.data());
    norm_scale_ = Kernels<B>::make_params(scale.data(), last_dim);
    norm_shift_ = Kernels<B>::make_params(shift.data(), last_dim);
    norm_c_.load(w, "norm_c");
    head_.load(w, "head", head_rows);
  }

  template <class P>
  void run(const float* input, int batch, float* logits, Workspace& ws, Observer* observer, P& prof) const {
    check_workspace(ws, batch);
    if (observer || batch <= images_per_pass) {
      forward_pass(input, batch, logits, ws.data(), observer, prof);
      return;
    }
    int b0 = 0;
    // Whole passes side by side, one per thread, each pass's kernels then
    // single-threaded: no fork/join per layer and no core left idle by the
    // small layers (meta tokens, LayerNorm) that do not split. Each runs in
    // its own slot of the workspace (the batch has room for them). Logits are
    // bitwise the same: a kernel's rows do not depend on the thread count.
    // A Profile is timed the same way (one per thread, merged after), since
    // one pass at a time on all threads is not what a batch runs: its fork/
    // join per layer and idle threads inflated the small parts 1.5-2x.
    using Prof = std::remove_const_t<P>;
    constexpr bool plain = std::is_same_v<Prof, NoProfile>, profiled = std::is_same_v<Prof, Profile>;
    if constexpr (requires { Kernels<B>::concurrent_passes(); } && (plain || profiled)) {
      const int full = batch / images_per_pass;
      const int slots = std::min(Kernels<B>::concurrent_passes(), full);
      if (slots > 1) {
        const int passes = full / slots * slots;
        std::vector<Profile> own(profiled ? slots : 0);  // profiled runs only: no allocation otherwise
        Kernels<B>::run_concurrently(passes, slots, [&](int slot, int i) {
          const std::size_t first = std::size_t(i) * images_per_pass;
          NoProfile none;
          auto& timer = [&]() -> auto& {
            if constexpr (profiled) return own[slot]; else return none;
          }();
          forward_pass(input + first * height * width * channels, images_per_pass,
                       logits ? logits + first * num_classes() : nullptr,
                       ws.data() + std::size_t(slot) * images_per_pass * Plan::floats_per_image,
                       nullptr, timer);
        });
        if constexpr (profiled) {
          // Averaged over the threads that ran passes: on a busy machine one
          // may have taken them all (they are handed out dynamically).
          const auto took_passes = [](const Profile& p) { return p.seconds() > 0.0; };
          const int ran = int(std::count_if(own.begin(), own.end(), took_passes));
          for (const Profile& p : own) prof.merge(p, std::max(ran, 1));
        }
        b0 = passes * images_per_pass;
      }
    }
    for (; b0 < batch; b0 += images_per_pass) {
      const int n = std::min(images_per_pass, batch - b0);
      forward_pass(input + std::size_t(b0) * height * width * channels, n,
                   logits ? logits + std::size_t(b0) * num_classes() : nullptr, ws.data(), nullptr, prof);
    }
  }

  // One pass over `batch` images whose activations live at `memory`.
  template <class P>
  void forward_pass(const float* input, int batch, float* logits, float* memory, Observer* observer,
                    P& prof) const {
    layers::Activations a = bind(memory, batch);
    run_backbone(input, batch, a, observer, prof);
    if (logits) head(a, batch, logits, prof);
    Kernels<B>::synchronize();
  }

  void check_workspace(const Workspace& ws, int batch) const {
    if (batch < 1) throw Error("forward: batch must be at least 1");
    if (ws.floats_per_image() != Plan::floats_per_image)
      throw Error("forward: this workspace was made for a different model type");
    if (batch > ws.capacity())
      throw Error("forward: batch " + std::to_string(batch) + " exceeds the workspace capacity " +
                  std::to_string(ws.capacity()));
  }

  layers::Activations bind(float* memory, int batch) const {
    float* p = memory;
    auto take = [&](std::size_t per_image) {
      float* r = p;
      p += per_image * std::size_t(batch);
      return r;
    };
    layers::Activations a{};
    a.x = take(Plan::tokens);
    a.x2 = take(Plan::tokens);
    a.t = take(Plan::tokens);
    a.xbuf = take(Plan::x_scratch);
    a.c = take(Plan::meta);
    a.cn = take(Plan::meta);
    a.cbuf = take(Plan::c_scratch);
    return a;
  }

  template <class P>
  void run_backbone(const float* input, int batch, layers::Activations& a, Observer* observer, P& prof) const {
    enter_stage(prof, Profile::kOutside);
    timed<B>(prof, Part::Stem, stem1_.flops(batch) + stem2_.flops(batch), [&] {
      // Host backends read the caller's images in place; device ones upload
      // them into the (still unused) x scratch first.
      const float* images = input;
      if constexpr (!Kernels<B>::host_memory) {
        Kernels<B>::upload(a.xbuf, input, std::size_t(batch) * height * width * channels);
        images = a.xbuf;
      }
      Kernels<B>::nchw_to_nhwc(images, batch, channels, height, width, a.x2);
      stem1_(a.x2, batch, a.x, a.xbuf, Epilogue::Gelu);  // conv -> BN -> GELU
      stem2_(a.x, batch, a.x2, a.xbuf);                  // conv -> BN
    });
    std::swap(a.x, a.x2);
    timed<B>(prof, Part::MetaDownsample, 0.0, [&] {
      Kernels<B>::broadcast_rows(Kernels<B>::data(meta0_), std::size_t(A.meta_tokens) * A.dims[0], batch, a.c);
    });
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (std::get<I>(stages_)(a, batch, dca_scale_, I == 0, observer, prof), ...);
    }(std::make_index_sequence<A.num_stages>{});
  }

  // logits = head(BN(mean_hw x) + mean_M(norm_c(c)))
  template <class P>
  void head(layers::Activations& a, int batch, float* logits, P& prof) const {
    constexpr int n = Last::tokens, m = A.meta_tokens;
    enter_stage(prof, Profile::kOutside);
    timed<B>(prof, Part::Head, head_.flops(batch), [&] {
      norm_c_(a.c, batch * m, a.cn);
      float* pooled = a.t;
      Kernels<B>::pool_head(a.x, batch, n, a.cn, m, last_dim, Kernels<B>::data(norm_scale_),
                            Kernels<B>::data(norm_shift_), pooled);
      if constexpr (Kernels<B>::host_memory) {
        head_(pooled, batch, logits);
      } else {
        head_(pooled, batch, a.xbuf);
        Kernels<B>::download(logits, a.xbuf, std::size_t(batch) * head_.out_features());
      }
    });
  }
};

}  // namespace lemevit
