#pragma once
// One stage of the hierarchy: optional downsample of x (a ConvBn3x3s2, the
// identity after a C stage), meta_token_downsample of c, then `depth` blocks.
#include <array>
#include <variant>
#include <string>

#include "lemevit/arch.hpp"
#include "lemevit/layers/block.hpp"
#include "lemevit/layers/conv.hpp"
#include "lemevit/layers/meta_token_downsample.hpp"
#include "lemevit/profile.hpp"

namespace lemevit::layers {

// Spatial size of stage i's tokens for an H x W input (the stem divides by 4,
// each real downsample by 2, rounding up like a padded stride-2 conv).
constexpr int stage_extent(const ArchSpec& a, int extent, int stage) {
  int n = conv_s2(conv_s2(extent));
  for (int s = 1; s <= stage; ++s)
    if (a.downsamples_before(s)) n = conv_s2(n);
  return n;
}

template <class B, ArchSpec A, int I, int InH, int InW>
class Stage {
 public:
  static constexpr Kind kind = A.kinds[I];
  static constexpr int dim = A.dims[I];
  static constexpr int in_dim = I == 0 ? A.dims[0] : A.dims[I - 1];
  static constexpr bool downsamples = I > 0 && A.downsamples_before(I);
  static constexpr int h = downsamples ? conv_s2(InH) : InH;
  static constexpr int w = downsamples ? conv_s2(InW) : InW;
  static constexpr int tokens = h * w;
  static constexpr int depth = A.depths[I];
  using Downsample = ConvBn3x3s2<B, InH, InW, in_dim, dim>;
  using Meta = MetaTokenDownsample<B, in_dim, dim>;
  using BlockT = Block<B, kind, dim, h, w, A.head_dim, A.meta_tokens, A.mlp_ratio>;

  // Per-image scratch this stage needs (floats).
  static constexpr std::size_t tokens_floats = std::size_t(tokens) * dim;
  static constexpr std::size_t x_scratch =
      std::max(downsamples ? Downsample::scratch_floats : 0, BlockT::x_scratch());
  static constexpr std::size_t c_scratch =
      std::max(std::size_t(A.meta_tokens) * Meta::hidden, BlockT::c_scratch());

  void load(WeightLoader& w) {
    const std::string i = std::to_string(I);
    if constexpr (downsamples) downsample_.load(w, "downsample_layers." + i + ".0", "downsample_layers." + i + ".1");
    meta_.load(w, "meta_token_downsample." + i);
    for (int j = 0; j < depth; ++j) blocks_[j].load(w, "stages." + i + "." + std::to_string(j));
  }

  const Meta& meta() const { return meta_; }

  // `skip_meta`: stage 0's meta tokens are precomputed at load time.
  template <class P = NoProfile>
  void operator()(Activations& a, int batch, DcaScale policy, bool skip_meta = false,
                  Observer* observer = nullptr, P&& prof = P{}) const {
    enter_stage(prof, I);
    if constexpr (downsamples) {
      timed<B>(prof, Part::Downsample, downsample_.flops(batch), [&] { downsample_(a.x, batch, a.x2, a.xbuf); });
      std::swap(a.x, a.x2);
    }
    if (!skip_meta) {
      const int rows = batch * A.meta_tokens;
      timed<B>(prof, Part::MetaDownsample, meta_.flops(rows), [&] { meta_(a.c, rows, a.cn, a.cbuf); });
      std::swap(a.c, a.cn);
    }
    for (int j = 0; j < depth; ++j) blocks_[j](a, batch, policy, {observer, I, j}, prof);
    if (observer) observer->stage_output(I, a.x, batch, h, w, dim);
  }

 private:
  [[no_unique_address]] std::conditional_t<downsamples, Downsample, std::monostate> downsample_;
  Meta meta_;
  std::array<BlockT, depth> blocks_;
};

}  // namespace lemevit::layers
