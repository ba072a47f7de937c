// Kernels at LeMeViT's real shapes, plus the register-only FMA loop that
// gives the machine's peak in the same run.
#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include <lemevit/lemevit.hpp>
#if __has_include(<xsimd/xsimd.hpp>) && !defined(LEMEVIT_NO_SIMD)
#include <lemevit/backend/simd.hpp>
#include <immintrin.h>
#define LEMEVIT_BENCH_SIMD 1
#endif

#include "common.hpp"
#include "fma_peak.hpp"

namespace {

using K = lemevit::Kernels<lemevit::backend::Default>;

std::vector<float> data(std::size_t n, float scale = 1.0f) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = scale * (float((i * 2654435761u) % 2001) / 1000.0f - 1.0f);
  return v;
}

void BM_FmaPeak(benchmark::State& state) {
  const int threads = int(state.range(0));
  constexpr std::int64_t iters = 1 << 20;
  for (auto _ : state) {
    float sink = 0;
#pragma omp parallel for num_threads(threads) reduction(+ : sink)
    for (int t = 0; t < threads; ++t) sink += bench::fma_loop(iters);
    benchmark::DoNotOptimize(sink);
  }
  bench::count_flops(state, bench::fma_loop_flops(iters) * threads);
}
BENCHMARK(BM_FmaPeak)->Name("peak/fma")->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime();

// Read bandwidth beside the FMA peak: each thread sums its own buffer, 16
// KiB (L1), 8 MiB (past L2, within a quiet L3) or 256 MiB (main memory),
// at least 64 MiB per thread per parallel region (fork/join out of the
// measurement): with the FMA peak, what this machine gives the kernels at
// the time of a run (bench/compare.py reports the 8 MiB figure per row).
void BM_ReadBandwidth(benchmark::State& state) {
  const int threads = int(state.range(1));
  const std::size_t words = std::size_t(state.range(0)) << 8;  // KiB in 4-byte words
  const int passes = int(std::max<std::int64_t>(1, (std::int64_t(64) << 10) / state.range(0)));
  std::vector<std::vector<std::uint32_t>> buffers(threads);
#pragma omp parallel for num_threads(threads)
  for (int t = 0; t < threads; ++t) buffers[t].assign(words, std::uint32_t(t + 1));  // pages near their reader
  for (auto _ : state) {
    std::uint32_t sink = 0;
#pragma omp parallel for num_threads(threads) reduction(+ : sink)
    for (int t = 0; t < threads; ++t) {
      const std::uint32_t* w = buffers[t].data();
      std::uint32_t sum = 0;
      for (int p = 0; p < passes; ++p) {
#pragma omp simd reduction(+ : sum)
        for (std::size_t i = 0; i < words; ++i) sum += w[i];
        benchmark::DoNotOptimize(sum);  // one real pass each time
      }
      sink += sum;
    }
    benchmark::DoNotOptimize(sink);
  }
  state.counters["bytes/s"] = benchmark::Counter(double(words) * 4 * threads * passes,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_ReadBandwidth)
    ->Name("peak/read")
    ->ArgNames({"KiB", "threads"})
    ->ArgsProduct({{16, 8 << 10, 256 << 10}, {1, 2}})
    ->UseRealTime();

// Linear layers: rows x in -> out, e.g. 3136 tokens through a 64 -> 256 MLP.
template <class K>
void BM_Linear(benchmark::State& state) {
  const int rows = int(state.range(0)), in = int(state.range(1)), out = int(state.range(2));
  bench::set_threads(int(state.range(3)));
  const auto w = data(std::size_t(out) * in, 0.1f), b = data(out), x = data(std::size_t(rows) * in);
  std::vector<float> y(std::size_t(rows) * out);
  typename K::LinearWeights packed;
  K::prepare_linear(w.data(), b.data(), out, in, packed);
  for (auto _ : state) K::linear(x.data(), rows, in, packed, y.data(), out, lemevit::Epilogue::Store);
  bench::count_flops(state, 2.0 * rows * in * out);
}
BENCHMARK(BM_Linear<K>)
    ->Name("kernel/linear")
    ->ArgNames({"rows", "in", "out", "threads"})
    ->ArgsProduct({{3136}, {64}, {192, 256}, {1, 2}})
    ->ArgsProduct({{3136}, {256}, {64}, {1, 2}})
    ->ArgsProduct({{784}, {128}, {384, 512}, {1, 2}})
    ->ArgsProduct({{196}, {192}, {576, 768}, {1, 2}})
    ->ArgsProduct({{49}, {320}, {960, 1280}, {1, 2}})
    ->ArgsProduct({{784}, {576}, {128}, {1, 2}})  // downsample conv as im2col GEMM
    ->ArgsProduct({{12544}, {27}, {32}, {1, 2}})  // the stem's convs
    ->ArgsProduct({{3136}, {288}, {64}, {1, 2}})
    ->UseRealTime();

#if defined(LEMEVIT_BENCH_SIMD) && defined(__AVX512VNNI__) && defined(__AVX512BF16__)
// What the low-precision products can reach, and what competes with them:
// register-only loops of independent chains of one instruction, or of two
// kinds side by side, counted in instructions per second.
// VPDPBUSD does 64 int8 products, VDPBF16PS 32 bf16 products, VFMADD231PS 16
// fp32 ones; a pair that runs no faster than one kind alone shares its
// execution ports (on Zen 5: VPDPBUSD, VFMADD, VPMULLD, VMULPS and, mostly,
// VPERMPS; not VCVTDQ2PS or VADDPS), which bounds int8 at small K, where the
// dequantisation and GELU of each output vector cost as many of those slots as
// its 16 dot products (README "Precision").
namespace pipes {
struct IntOp {
  using T = __m512i;
  static constexpr bool integer = true;
};
struct FloatOp {
  using T = __m512;
  static constexpr bool integer = false;
};
struct Dpbusd : IntOp {
  static T op(T a, T x) { return _mm512_dpbusd_epi32(a, x, x); }
};
struct Dpbf16 : FloatOp {
  static T op(T a, T x) { return _mm512_dpbf16_ps(a, __m512bh(x), __m512bh(x)); }
};
struct Fma : FloatOp {
  static T op(T a, T x) { return _mm512_fmadd_ps(a, x, x); }
};
struct Mullo : IntOp {
  static T op(T a, T x) { return _mm512_mullo_epi32(a, x); }
};
struct Mul : FloatOp {
  static T op(T a, T x) { return _mm512_mul_ps(a, x); }
};
struct Add : FloatOp {
  static T op(T a, T x) { return _mm512_add_ps(a, x); }
};
struct Cvt : FloatOp {  // int32 -> float and back through the bits: a chain of conversions
  static T op(T a, T) { return _mm512_cvtepi32_ps(_mm512_castps_si512(a)); }
};
struct Perm : FloatOp {
  static T op(T a, T x) { return _mm512_permutexvar_ps(_mm512_castps_si512(x), a); }
};
// Chain i starts at a value of its own (else the compiler merges identical
// chains), opaque to it. The shared operand is "chain -1": 0 for the integer
// kinds, -1.0f for the float ones, which keeps every float chain bounded
// (fma(a, -1, -1) alternates, add(a, -1) counts down) with no Inf, NaN or
// denormal.
template <class Op>
typename Op::T operand(int i) {
  typename Op::T v;
  if constexpr (Op::integer)
    v = _mm512_set1_epi32(0x01010101 * (i + 1));
  else
    v = _mm512_set1_ps(float(i));
  asm volatile("" : "+v"(v));
  return v;
}
template <class Op>
float sum(const typename Op::T& v) {
  if constexpr (Op::integer)
    return float(_mm512_reduce_add_epi32(v));
  else
    return _mm512_reduce_add_ps(v);
}

// `iterations` rounds of one step on each of chains<B> chains of A and
// (unless B is void) of B: enough to cover the latency of both ports, few
// enough that GCC keeps two kinds' chains in registers.
template <class B>
constexpr int chains = std::is_void_v<B> ? 12 : 10;

template <class A, class B>
[[gnu::noinline]] float loop(std::int64_t iterations) {
  typename A::T a[chains<B>], xa = operand<A>(-1);
  lemevit::backend::simd::static_for<chains<B>>([&](auto i) { a[i] = operand<A>(i); });
  if constexpr (std::is_void_v<B>) {
    for (std::int64_t it = 0; it < iterations; ++it)
      lemevit::backend::simd::static_for<chains<B>>([&](auto i) { a[i] = A::op(a[i], xa); });
    float t = 0;
    lemevit::backend::simd::static_for<chains<B>>([&](auto i) { t += sum<A>(a[i]); });
    return t;
  } else {
    typename B::T b[chains<B>], xb = operand<B>(-1);
    lemevit::backend::simd::static_for<chains<B>>([&](auto i) { b[i] = operand<B>(chains<B> + i); });
    for (std::int64_t it = 0; it < iterations; ++it)
      lemevit::backend::simd::static_for<chains<B>>([&](auto i) {
        a[i] = A::op(a[i], xa);
        b[i] = B::op(b[i], xb);
      });
    float t = 0;
    lemevit::backend::simd::static_for<chains<B>>([&](auto i) { t += sum<A>(a[i]) + sum<B>(b[i]); });
    return t;
  }
}
}  // namespace pipes

template <class A, class B = void>
void BM_Pipes(benchmark::State& state) {
  constexpr std::int64_t iterations = 1 << 20;
  for (auto _ : state) benchmark::DoNotOptimize(pipes::loop<A, B>(iterations));
  const double per_pass = double(iterations) * pipes::chains<B> * (std::is_void_v<B> ? 1 : 2);
  state.counters["instructions/s"] =
      benchmark::Counter(per_pass * double(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK_TEMPLATE(BM_Pipes, pipes::Fma)->Name("peak/ports/vfmadd231ps");
BENCHMARK_TEMPLATE(BM_Pipes, pipes::Dpbf16)->Name("peak/ports/vdpbf16ps");
BENCHMARK_TEMPLATE(BM_Pipes, pipes::Dpbusd)->Name("peak/ports/vpdpbusd");
BENCHMARK_TEMPLATE(BM_Pipes, pipes::Dpbusd, pipes::Mullo)->Name("peak/ports/vpdpbusd+vpmulld");
BENCHMARK_TEMPLATE(BM_Pipes, pipes::Dpbusd, pipes::Mul)->Name("peak/ports/vpdpbusd+vmulps");
BENCHMARK_TEMPLATE(BM_Pipes, pipes::Dpbusd, pipes::Fma)->Name("peak/ports/vpdpbusd+vfmadd231ps");
BENCHMARK_TEMPLATE(BM_Pipes, pipes::Dpbusd, pipes::Perm)->Name("peak/ports/vpdpbusd+vpermps");
BENCHMARK_TEMPLATE(BM_Pipes, pipes::Dpbusd, pipes::Cvt)->Name("peak/ports/vpdpbusd+vcvtdq2ps");
BENCHMARK_TEMPLATE(BM_Pipes, pipes::Dpbusd, pipes::Add)->Name("peak/ports/vpdpbusd+vaddps");
BENCHMARK_TEMPLATE(BM_Pipes, pipes::Fma, pipes::Perm)->Name("peak/ports/vfmadd231ps+vpermps");
#endif

#if defined(LEMEVIT_BENCH_SIMD)
// The bf16 and int8 micro-kernels by tile and instruction set (the `lemevit`
// fp32 kernel above is the baseline), at the same shapes.
template <class Kernel, class Arch>
void BM_LinearLowp(benchmark::State& state) {
  const int rows = int(state.range(0)), in = int(state.range(1)), out = int(state.range(2));
  bench::set_threads(int(state.range(3)));
  const auto w = data(std::size_t(out) * in, 0.1f), b = data(out), x = data(std::size_t(rows) * in);
  std::vector<float> y(std::size_t(rows) * out);
  typename Kernel::Weights packed;
  packed.pack(w.data(), b.data(), out, in);
  for (auto _ : state)
    lemevit::backend::simd::gemm_lowp<Arch, lemevit::Epilogue::Store, Kernel>(
        x.data(), rows, in, packed, y.data(), out);
  bench::count_flops(state, 2.0 * rows * in * out);
}

// The shapes the micro-kernels are compared at: one per kind of Linear layer.
void lowp_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"rows", "in", "out", "threads"})
      ->ArgsProduct({{3136}, {64}, {256}, {1, 2}})
      ->ArgsProduct({{3136}, {256}, {64}, {1, 2}})
      ->ArgsProduct({{784}, {128}, {512}, {1, 2}})
      ->ArgsProduct({{196}, {192}, {768}, {1, 2}})
      ->ArgsProduct({{49}, {320}, {1280}, {1, 2}})
      ->ArgsProduct({{784}, {576}, {128}, {1, 2}})
      ->ArgsProduct({{12544}, {27}, {32}, {1, 2}})
      ->ArgsProduct({{3136}, {288}, {64}, {1, 2}})
      ->UseRealTime();
}

template <class Kernel, class Arch = xsimd::default_arch>
void register_lowp(const char* name) {
  benchmark::RegisterBenchmark(name, BM_LinearLowp<Kernel, Arch>)->Apply(lowp_shapes);
}

// kernel/linear_bf16/<path>_<rows>x32 of the widened bf16 kernel for Arch.
template <class Arch>
std::string widen_name() {
  using K = lemevit::backend::simd::Bf16Widen<Arch>;
  return std::string("kernel/linear_bf16/") + K::path + "_" + std::to_string(K::rows) + "x32";
}

const bool lowp_registered = [] {
  namespace s = lemevit::backend::simd;
  using A = xsimd::default_arch;
#if defined(__AVX512BF16__)
  register_lowp<s::Bf16Avx512_12x32<A>>("kernel/linear_bf16/avx512_bf16_12x32");
#endif
  if constexpr (s::kBf16Widens<A>) register_lowp<s::Bf16Widen<A>>(widen_name<A>().c_str());
  register_lowp<s::Bf16Generic_4x32<A>>("kernel/linear_bf16/generic_4x32");
#if defined(__AVX512VNNI__)
  register_lowp<s::Int8Vnni512_12x32<A>>("kernel/linear_int8/avx512_vnni_12x32");
#endif
  register_lowp<s::Int8Generic_4x32<A>>("kernel/linear_int8/generic_4x32");
#if defined(__AVX2__)
  // The int8 paths of AVX2 builds (AVX-VNNI where the CPU has it, else
  // VPMADDUBSW) and, in AVX-512 builds, the AVX2 backend's bf16, beside the
  // AVX2 fp32 kernel at the same shapes.
  using Avx2 = xsimd::fma3<xsimd::avx2>;
#if defined(__AVXVNNI__)
  register_lowp<s::Int8AvxVnni_6x32<Avx2>, Avx2>("kernel/linear_int8/avx_vnni_6x32");
#endif
  register_lowp<s::Int8Avx2Maddubs_4x32<Avx2>, Avx2>("kernel/linear_int8/avx2_maddubs_4x32");
  if constexpr (!std::is_same_v<A, Avx2>) register_lowp<s::Bf16Widen<Avx2>, Avx2>(widen_name<Avx2>().c_str());
  benchmark::RegisterBenchmark("kernel/linear_fp32/avx2", BM_Linear<lemevit::Kernels<lemevit::backend::Simd<Avx2>>>)
      ->Apply(lowp_shapes);
#endif
#if defined(__aarch64__) && defined(__ARM_FEATURE_BF16_VECTOR_ARITHMETIC)
  register_lowp<s::Bf16NeonBfmmla_4x32<A>>("kernel/linear_bf16/neon_bfmmla_4x32");
  register_lowp<s::Bf16NeonBfdot_4x32<A>>("kernel/linear_bf16/neon_bfdot_4x32");
#endif
#if defined(__aarch64__) && defined(__ARM_FEATURE_MATMUL_INT8)
  register_lowp<s::Int8NeonMmla_4x32<A>>("kernel/linear_int8/neon_i8mm_4x32");
#endif
#if defined(__aarch64__) && defined(__ARM_FEATURE_DOTPROD)
  register_lowp<s::Int8NeonDot_4x32<A>>("kernel/linear_int8/neon_dotprod_4x32");
#endif
  return true;
}();
#endif

#if defined(LEMEVIT_BENCH_SIMD)
// The stem's and a downsample's 3x3 stride-2 convolutions, one image:
// "padded" (fp32) reads the patches in place from a zero-bordered copy
// (simd/conv.hpp), "gather" (bf16/int8) gathers them in the tile conversion;
// "im2col" writes the patch matrix first, then multiplies. (The model uses
// the in-place kernels where they win: Kernels::conv3x3_s2.)
template <lemevit::Precision P, bool InPlace>
void BM_Conv3x3s2(benchmark::State& state) {
  using Arch = xsimd::default_arch;
  using S = lemevit::Kernels<lemevit::backend::Simd<Arch, P>>;
  namespace simd = lemevit::backend::simd;
  const int side = int(state.range(0)), c = int(state.range(1)), out = int(state.range(2));
  bench::set_threads(int(state.range(3)));
  const int o = lemevit::conv_s2(side), rows = o * o, in = 9 * c;
  const auto w = data(std::size_t(out) * in, 0.1f), b = data(out), x = data(std::size_t(side) * side * c);
  std::vector<float> cols(!InPlace                          ? std::size_t(rows) * in
                          : P == lemevit::Precision::Fp32 ? simd::PaddedMap{side, side, c}.floats()
                                                          : S::conv3x3_s2_scratch(side, side, c));
  std::vector<float> y(std::size_t(rows) * out);
  typename S::LinearWeights packed;
  S::prepare_linear(w.data(), b.data(), out, in, packed);
  for (auto _ : state) {
    if constexpr (InPlace && P == lemevit::Precision::Fp32) {
      simd::conv3x3_s2<Arch, lemevit::Epilogue::Store>(x.data(), 1, side, side, c, packed, y.data(), cols.data());
    } else if constexpr (InPlace) {
      S::conv3x3_s2(x.data(), 1, side, side, c, packed, y.data(), cols.data(), lemevit::Epilogue::Store);
    } else {
      S::im2col_3x3_s2(x.data(), 1, side, side, c, cols.data());
      S::linear(cols.data(), rows, in, packed, y.data(), out, lemevit::Epilogue::Store);
    }
  }
  bench::count_flops(state, 2.0 * rows * in * out);
}

void conv_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"side", "in", "out", "threads"})
      ->ArgsProduct({{224}, {3}, {32}, {1, 2}})    // stem, first conv
      ->ArgsProduct({{112}, {32}, {64}, {1, 2}})   // stem, second conv
      ->ArgsProduct({{56}, {64}, {128}, {1, 2}})   // a downsample
      ->UseRealTime();
}
using lemevit::Precision;
BENCHMARK_TEMPLATE(BM_Conv3x3s2, Precision::Fp32, true)->Name("kernel/conv3x3_s2/fp32/padded")->Apply(conv_shapes);
BENCHMARK_TEMPLATE(BM_Conv3x3s2, Precision::Fp32, false)->Name("kernel/conv3x3_s2/fp32/im2col")->Apply(conv_shapes);
BENCHMARK_TEMPLATE(BM_Conv3x3s2, Precision::Bf16, true)->Name("kernel/conv3x3_s2/bf16/gather")->Apply(conv_shapes);
BENCHMARK_TEMPLATE(BM_Conv3x3s2, Precision::Bf16, false)->Name("kernel/conv3x3_s2/bf16/im2col")->Apply(conv_shapes);
BENCHMARK_TEMPLATE(BM_Conv3x3s2, Precision::Int8, true)->Name("kernel/conv3x3_s2/int8/gather")->Apply(conv_shapes);
BENCHMARK_TEMPLATE(BM_Conv3x3s2, Precision::Int8, false)->Name("kernel/conv3x3_s2/int8/im2col")->Apply(conv_shapes);
#endif

void BM_DepthwiseConv(benchmark::State& state) {
  const int side = int(state.range(0)), ch = int(state.range(1));
  bench::set_threads(int(state.range(2)));
  const auto x = data(std::size_t(side) * side * ch), w = data(9 * std::size_t(ch)), b = data(ch);
  std::vector<float> y(x.size());
  for (auto _ : state) K::depthwise_conv3x3_residual(x.data(), side, side, ch, w.data(), b.data(), y.data());
  bench::count_flops(state, 2.0 * 9 * side * side * ch);
}
BENCHMARK(BM_DepthwiseConv)
    ->Name("kernel/depthwise_conv3x3")
    ->ArgNames({"side", "channels", "threads"})
    ->ArgsProduct({{56}, {64, 96}, {1, 2}})
    ->ArgsProduct({{28}, {128, 192}, {1, 2}})
    ->UseRealTime();

void BM_LayerNorm(benchmark::State& state) {
  const int rows = int(state.range(0)), dim = int(state.range(1));
  bench::set_threads(int(state.range(2)));
  const auto x = data(std::size_t(rows) * dim), g = data(dim), b = data(dim);
  std::vector<float> y(x.size());
  for (auto _ : state) K::layer_norm(x.data(), rows, dim, g.data(), b.data(), 1e-6f, y.data());
  state.SetBytesProcessed(state.iterations() * int64_t(x.size()) * 8);
}
BENCHMARK(BM_LayerNorm)
    ->Name("kernel/layer_norm")
    ->ArgNames({"rows", "dim", "threads"})
    ->ArgsProduct({{3136}, {64}, {1, 2}})
    ->ArgsProduct({{784}, {128}, {1, 2}})
    ->UseRealTime();

void BM_Gelu(benchmark::State& state) {
  const std::size_t n = std::size_t(state.range(0));
  auto x = data(n, 3.0f);
  for (auto _ : state) {
    K::gelu(x.data(), n);
    benchmark::DoNotOptimize(x.data());
  }
  state.SetItemsProcessed(state.iterations() * int64_t(n));
}
BENCHMARK(BM_Gelu)->Name("kernel/gelu")->Arg(3136 * 256)->UseRealTime();

#if defined(LEMEVIT_BENCH_SIMD)
// GELU by its polynomial's degree (math.hpp): 5 in the fp32 epilogue, 2
// (kLowpGeluDegree) in the bf16 and int8 ones; 4096 floats in and out of L1,
// where the epilogue runs (out of place, so every pass sees the same inputs).
template <int Degree>
void BM_GeluDegree(benchmark::State& state) {
  using Arch = xsimd::default_arch;
  using Bt = lemevit::backend::simd::Batch<Arch>;
  constexpr int L = lemevit::backend::simd::kLanes<Arch>;
  const int n = int(state.range(0));
  const auto x = data(std::size_t(n), 3.0f);
  std::vector<float> y(x.size());
  for (auto _ : state) {
    for (int i = 0; i + L <= n; i += L)
      lemevit::backend::simd::gelu<Arch, Degree>(Bt::load_unaligned(x.data() + i)).store_unaligned(y.data() + i);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(state.iterations() * int64_t(n));
}
BENCHMARK_TEMPLATE(BM_GeluDegree, 5)->Name("kernel/gelu_tile/degree:5")->Arg(4096)->UseRealTime();
BENCHMARK_TEMPLATE(BM_GeluDegree, 2)->Name("kernel/gelu_tile/degree:2")->Arg(4096)->UseRealTime();
#endif

// Softmax attention (scores, fp32 softmax, values) for one image, all heads,
// with the products of K's precision.
template <class K>
void BM_AttentionKernel(benchmark::State& state) {
  const int queries = int(state.range(0)), keys = int(state.range(1)), dim = int(state.range(2));
  bench::set_threads(int(state.range(3)));
  const auto q = data(std::size_t(queries) * dim), k = data(std::size_t(keys) * dim),
             v = data(std::size_t(keys) * dim);
  std::vector<float> out(std::size_t(queries) * dim);
  lemevit::AttentionArgs a{q.data(), k.data(), v.data(), dim, dim, dim, queries, keys,
                           dim / 32, 32, 0.1f, out.data(), dim};
  for (auto _ : state) K::attention(a);
  bench::count_flops(state, 4.0 * queries * keys * dim);
}

void attention_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"queries", "keys", "dim", "threads"})
      ->ArgsProduct({{3136}, {16}, {64}, {1, 2}})    // D, x branch
      ->ArgsProduct({{16}, {3136}, {64}, {1, 2}})    // D / C, c branch
      ->ArgsProduct({{784}, {16}, {128}, {1, 2}})    // D, x branch at 28x28
      ->ArgsProduct({{196}, {196}, {192}, {1, 2}})   // S at 14x14
      ->ArgsProduct({{49}, {49}, {320}, {1, 2}})     // S at 7x7
      ->ArgsProduct({{3136}, {3136}, {96}, {1, 2}})  // S at 56x56 (vit_tiny stage 1)
      ->UseRealTime();
}
BENCHMARK_TEMPLATE(BM_AttentionKernel, K)->Name("kernel/attention")->Apply(attention_shapes);
#if defined(LEMEVIT_BENCH_SIMD)
// The bf16 and int8 precisions' attention where the build has bf16 products
// (attention_bf16.hpp), named by their path: avx512_bf16, neon_bfdot.
const bool attention_bf16_registered = [] {
  using K = lemevit::Kernels<lemevit::backend::Simd<xsimd::default_arch, lemevit::Precision::Bf16>>;
  if constexpr (!std::is_void_v<typename K::AttentionOps>)
    benchmark::RegisterBenchmark((std::string("kernel/attention_bf16/") + K::attention_path()).c_str(),
                                 BM_AttentionKernel<K>)
        ->Apply(attention_shapes);
  return true;
}();
#endif

}  // namespace
