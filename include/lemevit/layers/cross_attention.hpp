#pragma once
// Cross attention (kind C): only the meta tokens are updated. Queries come
// from c (`q`), keys and values from the image tokens x (`kv`), scaled by
// 1/sqrt(head_dim).
#include <string>

#include "lemevit/layers/attention_common.hpp"
#include "lemevit/layers/linear.hpp"
#include "lemevit/observer.hpp"
#include "lemevit/profile.hpp"

namespace lemevit::layers {

template <class B, int Dim, int HeadDim, int Tokens, int MetaTokens>
class CrossAttention {
 public:
  static constexpr int heads = Dim / HeadDim;
  // Scratch per image: x side kv (N x 2C); c side q and output (2 x M x C).
  static constexpr std::size_t x_scratch = std::size_t(Tokens) * 2 * Dim;
  static constexpr std::size_t c_scratch = std::size_t(MetaTokens) * 2 * Dim;

  void load(WeightLoader& w, const std::string& prefix) {
    q_.load(w, prefix + ".q");
    kv_.load(w, prefix + ".kv");
    proj_.load(w, prefix + ".proj");
  }

  // c += proj(attn(q(cn), kv(xn))) for `batch` images.
  template <class P = NoProfile>
  void operator()(const float* xn, const float* cn, float* c, int batch, float* xbuf, float* cbuf,
                  DcaScale, Probe probe = {}, int height = 0, int width = 0, P&& prof = P{}) const {
    const int xrows = batch * Tokens, crows = batch * MetaTokens;
    timed<B>(prof, Part::Projections, kv_.flops(xrows) + q_.flops(crows), [&] {
      kv_(xn, xrows, xbuf);
      q_(cn, crows, cbuf);
    });
    float* out = cbuf + std::size_t(batch) * MetaTokens * Dim;
    const std::size_t kv_stride = std::size_t(Tokens) * 2 * Dim;
    timed<B>(prof, Part::Attention, attention_flops(batch, MetaTokens, Tokens, Dim), [&] {
      multi_head_attention<B>(batch, {cbuf, Dim, std::size_t(MetaTokens) * Dim}, MetaTokens,
                              {xbuf, 2 * Dim, kv_stride}, {xbuf + Dim, 2 * Dim, kv_stride}, Tokens,
                              heads, HeadDim, head_dim_scale(HeadDim), out, Dim);
    });
    if (probe.observer && Kernels<B>::host_memory)  // the maps are read on the host
      probe.observer->meta_attention({probe.stage, probe.block, Kind::C, batch, heads, HeadDim, MetaTokens,
                                      height, width, head_dim_scale(HeadDim), cbuf, xbuf, Dim, 2 * Dim,
                                      std::size_t(MetaTokens) * Dim, kv_stride});
    timed<B>(prof, Part::OutProjection, proj_.flops(crows), [&] { proj_(out, crows, c, Epilogue::Accumulate); });
  }

 private:
  Linear<B, Dim, Dim> q_;
  Linear<B, Dim, 2 * Dim> kv_;
  Linear<B, Dim, Dim> proj_;
};

}  // namespace lemevit::layers
