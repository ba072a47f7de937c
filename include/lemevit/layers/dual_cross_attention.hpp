#pragma once
// Dual cross attention (kinds D and D2): image tokens x and meta tokens c
// attend to each other, O(N*M*C) instead of O(N^2*C).
//
//  D  (DualCrossAttention):   qkv1 on x, qkv2 on c; x attends to c's k/v,
//                             c attends to x's k/v.
//  D2 (DualCrossAttentionV2): qv1 on x -> (q, v1), kv2 on c -> (k, v2);
//                             x: softmax(q k^T) v2, c: softmax(k q^T) v1.
// Both use the DCA scales of SPEC.md, not 1/sqrt(head_dim) (see dca_scales).
#include <string>

#include "lemevit/layers/attention_common.hpp"
#include "lemevit/layers/linear.hpp"
#include "lemevit/observer.hpp"
#include "lemevit/profile.hpp"

namespace lemevit::layers {

// Projections and wiring of D and D2; `Fused` is the width of each fused
// projection (3 for q,k,v; 2 for q,v / k,v).
template <class B, int Dim, int HeadDim, int Tokens, int MetaTokens, bool V2>
class DualCrossAttentionT {
 public:
  static constexpr int heads = Dim / HeadDim;
  static constexpr int fused = V2 ? 2 : 3;
  static constexpr std::size_t x_scratch = std::size_t(Tokens) * (fused + 1) * Dim;
  static constexpr std::size_t c_scratch = std::size_t(MetaTokens) * (fused + 1) * Dim;
  static_assert(Tokens > 1, "dual cross attention needs more than one image token (ln N = 0)");

  void load(WeightLoader& w, const std::string& prefix) {
    x_in_.load(w, prefix + (V2 ? ".qv1" : ".qkv1"));
    c_in_.load(w, prefix + (V2 ? ".kv2" : ".qkv2"));
    proj_x_.load(w, prefix + ".proj_x");
    proj_c_.load(w, prefix + ".proj_c");
  }

  // x += proj_x(x branch), c += proj_c(c branch); both branches read only
  // the normalised inputs xn, cn.
  template <class P = NoProfile>
  void operator()(const float* xn, const float* cn, float* x, float* c, int batch, float* xbuf,
                  float* cbuf, DcaScale policy, Probe probe = {}, int height = 0, int width = 0,
                  P&& prof = P{}) const {
    constexpr int ld = fused * Dim;
    const std::size_t xs = std::size_t(Tokens) * ld, cs = std::size_t(MetaTokens) * ld;
    const int xrows = batch * Tokens, crows = batch * MetaTokens;
    timed<B>(prof, Part::Projections, x_in_.flops(xrows) + c_in_.flops(crows), [&] {
      x_in_(xn, xrows, xbuf);
      c_in_(cn, crows, cbuf);
    });
    float* out_x = xbuf + std::size_t(batch) * xs;
    float* out_c = cbuf + std::size_t(batch) * cs;
    const DcaScales s = dca_scales(policy, Tokens, MetaTokens, Dim, HeadDim);
    // Column offsets of each operand inside the fused projections.
    Operand xq{xbuf, ld, xs}, cq{cbuf, ld, cs};
    Operand xk{xbuf + Dim, ld, xs}, xv{xbuf + (V2 ? Dim : 2 * Dim), ld, xs};
    Operand ck{cbuf + (V2 ? 0 : Dim), ld, cs}, cv{cbuf + (V2 ? Dim : 2 * Dim), ld, cs};
    // x: queries q (x side), keys and values from c. c: queries q2 (D) or k
    // (D2) from c, keys k1 (D) or q (D2) and values v1 from x.
    const Operand qc = V2 ? ck : cq, kx = V2 ? xq : xk;
    timed<B>(prof, Part::Attention, 2 * attention_flops(batch, Tokens, MetaTokens, Dim), [&] {
      multi_head_attention<B>(batch, xq, Tokens, ck, cv, MetaTokens, heads, HeadDim, s.x, out_x, Dim);
      multi_head_attention<B>(batch, qc, MetaTokens, kx, xv, Tokens, heads, HeadDim, s.c, out_c, Dim);
    });
    if (probe.observer && Kernels<B>::host_memory)  // the maps are read on the host
      probe.observer->meta_attention({probe.stage, probe.block, V2 ? Kind::D2 : Kind::D, batch, heads,
                                      HeadDim, MetaTokens, height, width, s.c, qc.data, kx.data, ld, ld,
                                      cs, xs});
    timed<B>(prof, Part::OutProjection, proj_x_.flops(xrows) + proj_c_.flops(crows), [&] {
      proj_x_(out_x, xrows, x, Epilogue::Accumulate);
      proj_c_(out_c, crows, c, Epilogue::Accumulate);
    });
  }

 private:
  Linear<B, Dim, fused * Dim> x_in_, c_in_;
  Linear<B, Dim, Dim> proj_x_, proj_c_;
};

template <class B, int Dim, int HeadDim, int Tokens, int MetaTokens>
using DualCrossAttention = DualCrossAttentionT<B, Dim, HeadDim, Tokens, MetaTokens, false>;
template <class B, int Dim, int HeadDim, int Tokens, int MetaTokens>
using DualCrossAttentionV2 = DualCrossAttentionT<B, Dim, HeadDim, Tokens, MetaTokens, true>;

}  // namespace lemevit::layers
