#pragma once
// Floating-point operations of one forward pass (2 per multiply-add), counted
// from the static shapes: convolutions, projections, MLPs and the attention
// products. Norms and activations are left out, as FLOP counters usually do.
#include "lemevit/arch.hpp"
#include "lemevit/layers/stage.hpp"

namespace lemevit {

constexpr double flops_per_image(const ArchSpec& a, int height, int width, int channels,
                                 int classes = 1000) {
  const double c0 = a.dims[0];
  const double h1 = conv_s2(height), w1 = conv_s2(width);
  double f = 2.0 * h1 * w1 * 9 * channels * (c0 / 2);
  f += 2.0 * layers::stage_extent(a, height, 0) * layers::stage_extent(a, width, 0) * 9 * (c0 / 2) * c0;
  const double m = a.meta_tokens;
  for (int i = 0; i < a.num_stages; ++i) {
    const double n = double(layers::stage_extent(a, height, i)) * layers::stage_extent(a, width, i);
    const double c = a.dims[i], cin = i ? a.dims[i - 1] : c0, r = a.mlp_ratio;
    if (i > 0 && a.downsamples_before(i)) f += 2.0 * n * 9 * cin * c;
    if (i > 0) f += 2.0 * m * (cin * 4 * cin + 4 * cin * c);  // stage 0's runs at load time
    double block = 2.0 * 9 * n * c;                             // pos_embed
    switch (a.kinds[i]) {
      case Kind::C:
        block += 2.0 * n * c * 2 * c + 2.0 * m * c * c * 2 + 4.0 * m * n * c + 4.0 * r * m * c * c;
        break;
      case Kind::D:
      case Kind::D2: {
        const double fused = a.kinds[i] == Kind::D ? 3 : 2;
        block += 2.0 * (n + m) * c * fused * c + 8.0 * n * m * c + 2.0 * (n + m) * c * c +
                 4.0 * r * (n + m) * c * c;
        break;
      }
      case Kind::S:
        for (double t : {n, m}) block += 8.0 * t * c * c + 4.0 * t * t * c + 4.0 * r * t * c * c;
        break;
    }
    f += a.depths[i] * block;
  }
  return f + 2.0 * a.last_dim() * classes;
}

}  // namespace lemevit
