// The user's "comparison against standard ViT attention": the attention
// layers of LeMeViT (C, D, D2: image tokens exchange information with 16
// meta tokens) against standard multi-head self-attention (S) on the same
// N image tokens, at the real stage shapes (56x56, 28x28, 14x14, 7x7).
// Projections included; single image, 1 and 2 threads.
#include <vector>

#include <lemevit/lemevit.hpp>

#include "common.hpp"

namespace {

using lemevit::layers::CrossAttention;
using lemevit::layers::DualCrossAttention;
using lemevit::layers::DualCrossAttentionV2;
using lemevit::layers::SelfAttention;
constexpr int kMeta = 16, kHeadDim = 32;

template <class Layer>
Layer make_layer() {
  Layer l;
  auto w = lemevit::WeightLoader::random(7);
  l.load(w, "attn");
  return l;
}

std::vector<float> tokens(std::size_t n) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = float((i * 7919) % 1000) / 500.0f - 1.0f;
  return v;
}

// kind: 0 = C, 1 = D, 2 = D2, 3 = S
template <int Side, int Dim, int Kind>
void BM_Attention(benchmark::State& state) {
  constexpr int n = Side * Side;
  constexpr double m = kMeta;
  bench::set_threads(int(state.range(0)));
  const auto xn = tokens(std::size_t(n) * Dim), cn = tokens(std::size_t(kMeta) * Dim);
  auto x = xn, c = cn;
  std::vector<float> xbuf(std::size_t(n) * 4 * Dim), cbuf(std::size_t(kMeta) * 4 * Dim);
  const auto policy = lemevit::DcaScale::Official;
  double flops = 0;
  if constexpr (Kind == 0) {
    static const auto l = make_layer<CrossAttention<lemevit::backend::Default, Dim, kHeadDim, n, kMeta>>();
    for (auto _ : state) l(xn.data(), cn.data(), c.data(), 1, xbuf.data(), cbuf.data(), policy);
    flops = 2.0 * n * Dim * 2 * Dim + 4.0 * m * Dim * Dim + 4.0 * m * n * Dim;
  } else if constexpr (Kind == 1 || Kind == 2) {
    using L = std::conditional_t<Kind == 1, DualCrossAttention<lemevit::backend::Default, Dim, kHeadDim, n, kMeta>,
                                 DualCrossAttentionV2<lemevit::backend::Default, Dim, kHeadDim, n, kMeta>>;
    static const auto l = make_layer<L>();
    for (auto _ : state)
      l(xn.data(), cn.data(), x.data(), c.data(), 1, xbuf.data(), cbuf.data(), policy);
    flops = 2.0 * (n + m) * Dim * (Kind == 1 ? 3 : 2) * Dim + 8.0 * n * m * Dim + 2.0 * (n + m) * Dim * Dim;
  } else {
    static const auto l = make_layer<SelfAttention<lemevit::backend::Default, Dim, kHeadDim>>();
    for (auto _ : state) l(xn.data(), n, x.data(), 1, xbuf.data());
    flops = 8.0 * n * Dim * Dim + 4.0 * double(n) * n * Dim;
  }
  benchmark::DoNotOptimize(x.data());
  benchmark::DoNotOptimize(c.data());
  bench::count_flops(state, flops);
}

void Threads(benchmark::internal::Benchmark* b) {
  b->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond)->UseRealTime();
}

}  // namespace

// LeMeViT-Tiny's dense stages (stage 1 at 56x56, stage 2 at 28x28) and the
// widths of Small; S at each shape is the standard-attention peer.
#define LEMEVIT_ATTENTION_SHAPE(side, dim)                                                           \
  BENCHMARK_TEMPLATE(BM_Attention, side, dim, 0)->Name("attention/C/" #side "x" #side "/C" #dim)->Apply(Threads);  \
  BENCHMARK_TEMPLATE(BM_Attention, side, dim, 1)->Name("attention/D/" #side "x" #side "/C" #dim)->Apply(Threads);  \
  BENCHMARK_TEMPLATE(BM_Attention, side, dim, 2)->Name("attention/D2/" #side "x" #side "/C" #dim)->Apply(Threads); \
  BENCHMARK_TEMPLATE(BM_Attention, side, dim, 3)->Name("attention/S/" #side "x" #side "/C" #dim)->Apply(Threads);

LEMEVIT_ATTENTION_SHAPE(56, 64)
LEMEVIT_ATTENTION_SHAPE(28, 128)
LEMEVIT_ATTENTION_SHAPE(56, 96)
LEMEVIT_ATTENTION_SHAPE(28, 192)
LEMEVIT_ATTENTION_SHAPE(14, 192)
LEMEVIT_ATTENTION_SHAPE(7, 320)
