#pragma once
// One LeMeViT block (pre-norm form), the same skeleton for every attention
// kind (SPEC.md "Block"):
//   x' = x + pos_embed(x)
//   C : c += attn(norm1(x'), norm1(c)); c += mlp(norm2(c)); x unchanged
//   D*: (dx, dc) = attn(norm1(x'), norm1(c)); x' += dx; x' += mlp(norm2(x'));
//       c += dc; c += mlp(norm2(c))
//   S : x' += attn(norm1(x')); x' += mlp(norm2(x')); the same for c
// norm1, norm2 and mlp are shared by x and c.
#include <algorithm>
#include <string>
#include <type_traits>
#include <utility>

#include "lemevit/arch.hpp"
#include "lemevit/layers/conv.hpp"
#include "lemevit/layers/cross_attention.hpp"
#include "lemevit/layers/dual_cross_attention.hpp"
#include "lemevit/layers/layer_norm.hpp"
#include "lemevit/layers/mlp.hpp"
#include "lemevit/layers/self_attention.hpp"
#include "lemevit/profile.hpp"

namespace lemevit::layers {

// Where a block finds its activations (all owned by the model's Workspace).
// x / x2 swap roles whenever a block produces a new x.
struct Activations {
  float* x;     // image tokens, batch x N x C
  float* x2;    // the other x buffer
  float* t;     // normalised image tokens
  float* xbuf;  // projection / MLP hidden scratch for x
  float* c;     // meta tokens, batch x M x C
  float* cn;    // normalised meta tokens
  float* cbuf;  // projection / MLP hidden scratch for c
};

template <class B, Kind K, int Dim, int H, int W, int HeadDim, int MetaTokens, int MlpRatio>
class Block {
 public:
  static constexpr int tokens = H * W;
  static constexpr int hidden = MlpRatio * Dim;
  using Attention = std::conditional_t<
      K == Kind::C, CrossAttention<B, Dim, HeadDim, tokens, MetaTokens>,
      std::conditional_t<K == Kind::D, DualCrossAttention<B, Dim, HeadDim, tokens, MetaTokens>,
                         std::conditional_t<K == Kind::D2,
                                            DualCrossAttentionV2<B, Dim, HeadDim, tokens, MetaTokens>,
                                            SelfAttention<B, Dim, HeadDim>>>>;

  // Scratch floats per image.
  static constexpr std::size_t x_scratch() {
    if constexpr (K == Kind::S)
      return std::max(Attention::scratch(tokens), std::size_t(tokens) * hidden);
    else if constexpr (K == Kind::C)
      return Attention::x_scratch;  // the MLP never runs on x in a C block
    else
      return std::max(Attention::x_scratch, std::size_t(tokens) * hidden);
  }
  static constexpr std::size_t c_scratch() {
    if constexpr (K == Kind::S)
      return std::max(Attention::scratch(MetaTokens), std::size_t(MetaTokens) * hidden);
    else
      return std::max(Attention::c_scratch, std::size_t(MetaTokens) * hidden);
  }

  void load(WeightLoader& w, const std::string& prefix) {
    pos_embed_.load(w, prefix + ".pos_embed");
    norm1_.load(w, prefix + ".norm1");
    norm2_.load(w, prefix + ".norm2");
    attn_.load(w, prefix + ".attn");
    mlp_.load(w, prefix + ".mlp");
  }

  template <class P = NoProfile>
  void operator()(Activations& a, int batch, DcaScale policy, Probe probe = {}, P&& prof = P{}) const {
    const int xrows = batch * tokens, crows = batch * MetaTokens;
    timed<B>(prof, Part::PosEmbed, batch * pos_embed_.flops_per_image, [&] { pos_embed_(a.x, batch, a.x2); });
    timed<B>(prof, Part::LayerNorm, 0.0, [&] {
      norm1_(a.x2, xrows, a.t);
      norm1_(a.c, crows, a.cn);
    });
    if constexpr (K == Kind::S) {
      attn_(a.t, tokens, a.x2, batch, a.xbuf, prof);
      attn_(a.cn, MetaTokens, a.c, batch, a.cbuf, prof);
    } else if constexpr (K == Kind::C) {
      attn_(a.t, a.cn, a.c, batch, a.xbuf, a.cbuf, policy, probe, H, W, prof);
    } else {
      attn_(a.t, a.cn, a.x2, a.c, batch, a.xbuf, a.cbuf, policy, probe, H, W, prof);
    }
    if constexpr (K != Kind::C) {
      timed<B>(prof, Part::LayerNorm, 0.0, [&] { norm2_(a.x2, xrows, a.t); });
      timed<B>(prof, Part::Mlp, mlp_.flops(xrows), [&] { mlp_.residual(a.t, xrows, a.xbuf, a.x2); });
      std::swap(a.x, a.x2);  // x' becomes x; a C block drops it instead
    }
    timed<B>(prof, Part::LayerNorm, 0.0, [&] { norm2_(a.c, crows, a.cn); });
    timed<B>(prof, Part::Mlp, mlp_.flops(crows), [&] { mlp_.residual(a.cn, crows, a.cbuf, a.c); });
  }

 private:
  ConditionalPositionEncoding<B, H, W, Dim> pos_embed_;
  BlockNorm<B, Dim> norm1_, norm2_;
  Attention attn_;
  Mlp<B, Dim, hidden> mlp_;
};

}  // namespace lemevit::layers
