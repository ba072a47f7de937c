#pragma once
// Standard multi-head self attention (kind S), the "standard ViT attention":
// the same weights are applied to the image tokens and, separately, to the
// meta tokens. Scale 1/sqrt(head_dim).
#include <string>

#include "lemevit/layers/attention_common.hpp"
#include "lemevit/layers/linear.hpp"
#include "lemevit/profile.hpp"

namespace lemevit::layers {

template <class B, int Dim, int HeadDim>
class SelfAttention {
 public:
  static constexpr int heads = Dim / HeadDim;
  static constexpr std::size_t scratch(int tokens) { return std::size_t(tokens) * 4 * Dim; }

  void load(WeightLoader& w, const std::string& prefix) {
    qkv_.load(w, prefix + ".qkv");
    proj_.load(w, prefix + ".proj");
  }

  // x (batch x tokens x Dim) += proj(attn(qkv(xn))); `buf` holds scratch(tokens) per image.
  template <class P = NoProfile>
  void operator()(const float* xn, int tokens, float* x, int batch, float* buf, P&& prof = P{}) const {
    constexpr int ld = 3 * Dim;
    const std::size_t stride = std::size_t(tokens) * ld;
    const int rows = batch * tokens;
    timed<B>(prof, Part::Projections, qkv_.flops(rows), [&] { qkv_(xn, rows, buf); });
    float* out = buf + std::size_t(batch) * stride;
    timed<B>(prof, Part::Attention, attention_flops(batch, tokens, tokens, Dim), [&] {
      multi_head_attention<B>(batch, {buf, ld, stride}, tokens, {buf + Dim, ld, stride},
                              {buf + 2 * Dim, ld, stride}, tokens, heads, HeadDim,
                              head_dim_scale(HeadDim), out, Dim);
    });
    timed<B>(prof, Part::OutProjection, proj_.flops(rows), [&] { proj_(out, rows, x, Epilogue::Accumulate); });
  }

 private:
  Linear<B, Dim, 3 * Dim> qkv_;
  Linear<B, Dim, Dim> proj_;
};

}  // namespace lemevit::layers
