#pragma once
// Convolutions of LeMeViT on NHWC token maps:
//  - ConditionalPositionEncoding: `pos_embed`, x + depthwise 3x3 conv (with bias);
//  - ConvBn3x3s2: a 3x3 stride-2 conv followed by eval-mode BatchNorm, folded
//    into one product over im2col patches (stem and downsample layers).
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "lemevit/arch.hpp"
#include "lemevit/backend.hpp"
#include "lemevit/layers/linear.hpp"
#include "lemevit/weights.hpp"

namespace lemevit::layers {

template <class B, int H, int W, int Dim>
class ConditionalPositionEncoding {
 public:
  static constexpr int tokens = H * W;

  void load(WeightLoader& w, const std::string& prefix) {
    auto weight = w.floats(prefix + ".weight", {Dim, 1, 3, 3});
    auto bias = w.floats(prefix + ".bias", {Dim});
    // (C, 1, 3, 3) -> (3*3, C): taps outer, channels contiguous for NHWC.
    std::vector<float> taps(9 * Dim);
    for (int c = 0; c < Dim; ++c)
      for (int t = 0; t < 9; ++t) taps[t * Dim + c] = weight[c * 9 + t];
    weight_ = Kernels<B>::make_params(taps.data(), taps.size());
    bias_ = Kernels<B>::make_params(bias.data(), Dim);
  }

  static constexpr double flops_per_image = 2.0 * 9 * tokens * Dim;  // the residual add not counted

  // y = x + dwconv(x) for each of `batch` maps.
  void operator()(const float* x, int batch, float* y) const {
    for (int b = 0; b < batch; ++b)
      Kernels<B>::depthwise_conv3x3_residual(x + std::size_t(b) * tokens * Dim, H, W, Dim,
                                             Kernels<B>::data(weight_), Kernels<B>::data(bias_),
                                             y + std::size_t(b) * tokens * Dim);
  }

 private:
  typename Kernels<B>::Params weight_, bias_;
};

// Folds eval-mode BatchNorm (running statistics) into the preceding conv,
// or into an identity (weight 1, bias 0: the final norm's scale and shift).
// A fold that is not finite (a negative running_var, or finite values whose
// product overflows) would give NaN logits in fp32 and undefined int8
// quantisation: refused at load instead.
inline void fold_batch_norm(WeightLoader& w, const std::string& bn, int channels, float* weight,
                            int per_channel, float* bias) {
  auto g = w.floats(bn + ".weight", {channels});
  auto beta = w.floats(bn + ".bias", {channels});
  auto mean = w.floats(bn + ".running_mean", {channels});
  auto var = w.floats(bn + ".running_var", {channels});
  for (int c = 0; c < channels; ++c) {
    const float v = var[c] + 1e-5f;  // nn.BatchNorm's default eps
    const float s = g[c] / std::sqrt(v);
    bool finite = true;
    for (int i = 0; i < per_channel; ++i) finite &= std::isfinite(weight[c * per_channel + i] *= s);
    bias[c] = (bias[c] - mean[c]) * s + beta[c];
    if (!finite || !std::isfinite(bias[c]))
      throw Error(w.source() + ": BatchNorm '" + bn + "' does not fold to finite values at channel " +
                  std::to_string(c) +
                  (v < 0.0f ? " (" + bn + ".running_var is " + std::to_string(var[c]) +
                                  ": a variance cannot be negative)"
                            : " (its scale, weight and statistics overflow float)"));
  }
}

template <class B0, int H, int W, int Cin, int Cout>
class ConvBn3x3s2 {
  // The stem's first conv (RGB: 27-value patch rows) stays fp32 in a bf16 or
  // int8 model: converting a row that short costs more than its fp32 product
  // (int8: 2.5x the fp32 time at 112x112x27 -> 32), and it is 1.5% of the FLOPs.
  using B = std::conditional_t<(Cin <= 3), typename Fp32Of<B0>::type, B0>;

 public:
  static constexpr int out_h = conv_s2(H), out_w = conv_s2(W);
  static constexpr int in_tokens = H * W, out_tokens = out_h * out_w;
  // Whether the backend runs the convolution itself (Kernels::conv3x3_s2),
  // with the scratch it asks for; else the patches are written out by
  // im2col into `cols`, then multiplied.
  static constexpr bool in_backend = requires { Kernels<B>::conv3x3_s2_scratch(H, W, Cin); };
  static constexpr std::size_t scratch_floats = [] {
    if constexpr (in_backend)
      return Kernels<B>::conv3x3_s2_scratch(H, W, Cin);
    else
      return std::size_t(out_tokens) * 9 * Cin;
  }();

  void load(WeightLoader& w, const std::string& conv, const std::string& bn) {
    auto weight = w.floats(conv + ".weight", {Cout, Cin, 3, 3});
    auto bias = w.floats(conv + ".bias", {Cout});
    // (Cout, Cin, ky, kx) -> (Cout, ky, kx, Cin), the im2col patch order.
    std::vector<float> wt(static_cast<std::size_t>(Cout) * 9 * Cin);
    std::vector<float> bs(bias.begin(), bias.end());
    for (int o = 0; o < Cout; ++o)
      for (int i = 0; i < Cin; ++i)
        for (int t = 0; t < 9; ++t) wt[(std::size_t(o) * 9 + t) * Cin + i] = weight[(std::size_t(o) * Cin + i) * 9 + t];
    fold_batch_norm(w, bn, Cout, wt.data(), 9 * Cin, bs.data());
    gemm_.set(wt.data(), bs.data());
  }

  double flops(int batch) const { return gemm_.flops(batch * out_tokens); }

  // x: batch NHWC maps (H x W x Cin) -> y: batch maps (out_h x out_w x Cout).
  // `cols` holds batch * scratch_floats.
  void operator()(const float* x, int batch, float* y, float* cols,
                  Epilogue e = Epilogue::Store) const {
    if constexpr (in_backend) {
      Kernels<B>::conv3x3_s2(x, batch, H, W, Cin, gemm_.prepared(), y, cols, e);
    } else {
      Kernels<B>::im2col_3x3_s2(x, batch, H, W, Cin, cols);
      gemm_(cols, batch * out_tokens, y, e);
    }
  }

 private:
  Linear<B, 9 * Cin, Cout> gemm_;
};

}  // namespace lemevit::layers
