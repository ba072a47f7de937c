// Every Simd<Arch> kernel against the Reference oracle, on seeded random data
// at the model's real shapes and at awkward ones (tails), plus the
// determinism contract: a row's result is bitwise the same whatever the
// thread count, the number of rows in the call and the row's position.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "lemevit/backend/reference.hpp"
#include "lemevit/backend/simd.hpp"
#include "compare.hpp"

// Every operator new of this program is counted: the kernels must not
// allocate (only prepare_linear may, at load time).
namespace {
std::atomic<long> g_allocations{0};
}  // namespace

void on_allocation(std::size_t) { ++g_allocations; }
#include "counting_new.hpp"

namespace {

using lemevit::AttentionArgs;
using lemevit::Epilogue;
using lemevit::Kernels;
using Ref = Kernels<lemevit::backend::Reference>;

// The instruction sets under test: the compiler's best; AVX2+FMA beside
// AVX-512; SSE4.2 on x86 for the generic paths (no table erf, no FMA
// instruction in xsimd). LEMEVIT_TEST_DEFAULT_ARCH_ONLY: the compiler's best
// alone (CI's compile-only AVX-512 check on AVX2 machines, whose native
// build compiles and runs the others).
#if defined(LEMEVIT_TEST_DEFAULT_ARCH_ONLY)
#define LEMEVIT_TEST_ARCHS xsimd::default_arch
#elif XSIMD_WITH_AVX512F && XSIMD_WITH_FMA3_AVX2
#define LEMEVIT_TEST_ARCHS xsimd::default_arch, xsimd::fma3<xsimd::avx2>, xsimd::sse4_2
#elif XSIMD_WITH_AVX2
#define LEMEVIT_TEST_ARCHS xsimd::default_arch, xsimd::sse4_2
#else
#define LEMEVIT_TEST_ARCHS xsimd::default_arch
#endif

using test_compare::random_vector;
using test_compare::require_close;
using test_compare::same_bits;

int default_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

void set_threads(int n) {
#if defined(_OPENMP)
  omp_set_num_threads(n);
#else
  (void)n;
#endif
}

// Restores the thread count at the end of a test.
struct ThreadGuard {
  int saved = default_threads();
  ~ThreadGuard() { set_threads(saved); }
};

const int kThreadCounts[] = {1, 2, 3};

template <class Arch>
std::string arch_name() {
  return Arch::name();
}

std::string epilogue_name(Epilogue e) {
  switch (e) {
    case Epilogue::Store: return "store";
    case Epilogue::Gelu: return "gelu";
    case Epilogue::Accumulate: return "accumulate";
  }
  return "?";
}

// ---------------------------------------------------------------- GELU / erf

TEMPLATE_TEST_CASE("vector erf and softmax exp are accurate", "[simd][gelu]",
                   LEMEVIT_TEST_ARCHS) {
  using B = xsimd::batch<float, TestType>;
  constexpr int L = int(B::size);
  // Every 509th float bit pattern (both signs, all exponents), then a dense
  // grid over the part of the range where erf is not +-1.
  std::vector<float> xs;
  for (std::uint64_t u = 0; u < (std::uint64_t(1) << 32); u += 509) {
    const std::uint32_t bits = std::uint32_t(u);
    float f;
    std::memcpy(&f, &bits, 4);
    if (std::isfinite(f)) xs.push_back(f);
  }
  for (int i = -600000; i <= 600000; ++i) xs.push_back(float(i) * 1e-5f);
  while (xs.size() % L) xs.push_back(0.0f);
  std::vector<float> got(xs.size());
  for (std::size_t i = 0; i < xs.size(); i += L)
    lemevit::backend::simd::erf<TestType>(B::load_unaligned(xs.data() + i))
        .store_unaligned(got.data() + i);
  double max_err = 0.0, max_rel = 0.0;
  float worst = 0.0f, worst_rel = 0.0f;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const double want = std::erf(double(xs[i]));
    const double e = std::fabs(double(got[i]) - want);
    if (e > max_err) {
      max_err = e;
      worst = xs[i];
    }
    if (want != 0.0 && std::fabs(want) > 1e-37 && e / std::fabs(want) > max_rel) {
      max_rel = e / std::fabs(want);
      worst_rel = xs[i];
    }
  }
  INFO(arch_name<TestType>() << ": erf max abs error " << max_err << " at " << worst
                             << ", max relative error " << max_rel << " at " << worst_rel);
  REQUIRE(max_err < 1e-6);
  // measured 6.7e-8 (the 8-interval table, AVX-512, AVX2 and NEON), 9e-8 (xsimd::erf)
  REQUIRE(max_err < 1e-7);
  REQUIRE(max_rel < 3e-7);   // a few ulp everywhere, tiny arguments included

  // softmax_exp over its range (x <= 0, and on to 88.37): relative error.
  std::vector<float> es;
  for (int i = -1000000; i <= 883700; ++i) es.push_back(float(i) * 1e-4f);
  while (es.size() % L) es.push_back(0.0f);
  std::vector<float> eg(es.size());
  for (std::size_t i = 0; i < es.size(); i += L)
    lemevit::backend::simd::softmax_exp<TestType>(B::load_unaligned(es.data() + i))
        .store_unaligned(eg.data() + i);
  double exp_rel = 0.0;
  for (std::size_t i = 0; i < es.size(); ++i) {
    const double want = std::exp(double(es[i]));
    if (want < 1.2e-38) {  // no subnormal results
      if (eg[i] != 0.0f && es[i] < -87.34f) exp_rel = 1.0;
      continue;
    }
    exp_rel = std::max(exp_rel, std::fabs(eg[i] - want) / want);
  }
  INFO(arch_name<TestType>() << ": exp max relative error " << exp_rel);
  REQUIRE(exp_rel < 2.5e-7);  // about 2 ulp
}

// The bound tested for the bf16/int8 epilogue's GELU, per max(1, |v|).
constexpr double kLowpGeluError = 5e-5;

// max |gelu(v) - GELU(v) in double| / max(1, |v|) over a grid of [-10, 10]
// (steps of 1e-4) and far tails, gelu applied in place by `apply`.
template <class F>
double gelu_error_vs_double(F&& apply) {
  std::vector<float> x;
  for (int i = -100000; i <= 100000; ++i) x.push_back(float(i) * 1e-4f);
  for (float v : {-1e30f, -100.0f, 100.0f, 1e30f}) x.push_back(v);
  auto got = x;
  apply(got);
  double max_err = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    const double want = 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
    max_err = std::max(max_err, std::fabs(got[i] - want) / std::max(1.0, std::fabs(v)));
  }
  return max_err;
}

TEMPLATE_TEST_CASE("gelu matches the exact erf GELU", "[simd][gelu]", LEMEVIT_TEST_ARCHS) {
  using S = Kernels<lemevit::backend::Simd<TestType>>;
  for (std::size_t n : {std::size_t(0), std::size_t(1), std::size_t(7), std::size_t(33),
                        std::size_t(100003)}) {
    auto x = random_vector(n, 11 + std::uint32_t(n), -8.0f, 8.0f);
    for (std::size_t i = 0; i < n; i += 17) x[i] *= 100.0f;  // far tails
    auto want = x, got = x;
    Ref::gelu(want.data(), n);
    S::gelu(got.data(), n);
    double max_err = 0.0;
    for (std::size_t i = 0; i < n; ++i)
      max_err = std::max(max_err, std::fabs(double(got[i]) - want[i]) /
                                      std::max(1.0, std::fabs(double(x[i]))));
    INFO(arch_name<TestType>() << " n " << n << ": max error " << max_err);
    REQUIRE(max_err < 1e-6);
  }
  const double max_err = gelu_error_vs_double([](std::vector<float>& x) { S::gelu(x.data(), x.size()); });
  INFO(arch_name<TestType>() << ": gelu vs double max error " << max_err);
  REQUIRE(max_err < 1e-6);
}

// The bf16/int8 epilogue's GELU (kLowpGeluDegree): coarser than float, still
// far finer than the bf16 rounding (2^-9 relative) its output gets next.
TEMPLATE_TEST_CASE("the low precisions' gelu is accurate to 5e-5", "[simd][gelu][lowp]", LEMEVIT_TEST_ARCHS) {
  namespace s = lemevit::backend::simd;
  constexpr int L = s::kLanes<TestType>;
  const double max_err = gelu_error_vs_double([](std::vector<float>& x) {
    for (std::size_t i = 0; i < x.size(); i += L) {
      const int n = int(std::min<std::size_t>(L, x.size() - i));
      const auto v = s::load_n<TestType>(x.data() + i, n);
      s::store_n<TestType>(x.data() + i, n, s::gelu<TestType, s::kLowpGeluDegree>(v));
    }
  });
  INFO(arch_name<TestType>() << ": low-precision gelu vs double max error " << max_err);
  REQUIRE(max_err < kLowpGeluError);
}

// ---------------------------------------------------------------- linear

struct LinearShape {
  int rows, in, out;
};

// The number formats of simd/gemm_lowp.hpp, written out here independently:
// a low-precision linear must equal the Reference fp32 linear applied to the
// bf16-rounded or quantised-then-dequantised operands.

using lemevit::Precision;

// Nearest bf16 (ties to even), by comparing the two neighbours.
float bf16_round(float v) {
  std::uint32_t u;
  std::memcpy(&u, &v, 4);
  const std::uint32_t down = u & 0xffff0000u, up = down + 0x10000u;
  float fd, fu;
  std::memcpy(&fd, &down, 4);
  std::memcpy(&fu, &up, 4);
  const double dd = std::fabs(double(v) - fd), du = std::fabs(double(fu) - v);
  if (dd != du) return dd < du ? fd : fu;
  return (down >> 16) & 1u ? fu : fd;
}

// Each row of n values (stride ld) quantised to uint8 over [min(0, lo), max(0, hi)]
// and dequantised: (q - z) * s.
std::vector<float> dequantised_rows(const std::vector<float>& x, int rows, int ld, int n) {
  std::vector<float> d = x;
  for (int r = 0; r < rows; ++r) {
    const float* row = x.data() + std::size_t(r) * ld;
    const float lo = std::min(0.0f, *std::min_element(row, row + n));
    const float hi = std::max(0.0f, *std::max_element(row, row + n));
    const float s = (hi - lo) / 255.0f;
    for (int k = 0; k < n; ++k) {
      float& out = d[std::size_t(r) * ld + k];
      if (s == 0.0f) {
        out = 0.0f;
        continue;
      }
      const float inv = 1.0f / s;
      const float z = std::clamp(std::nearbyint(-lo * inv), 0.0f, 255.0f);
      const float q = std::clamp(std::nearbyint(row[k] * inv) + z, 0.0f, 255.0f);
      out = (q - z) * s;
    }
  }
  return d;
}

// Each output channel's weights quantised to int8 with s = max|w| / 127, dequantised.
std::vector<float> dequantised_weights(const std::vector<float>& w, int out, int in) {
  std::vector<float> d = w;
  for (int o = 0; o < out; ++o) {
    float amax = 0.0f;
    for (int k = 0; k < in; ++k) amax = std::max(amax, std::fabs(w[std::size_t(o) * in + k]));
    const float s = amax / 127.0f;
    for (int k = 0; k < in; ++k) {
      float& v = d[std::size_t(o) * in + k];
      v = s == 0.0f ? 0.0f : std::clamp(std::nearbyint(v / s), -127.0f, 127.0f) * s;
    }
  }
  return d;
}

// Backend Simd<Arch, P>'s linear against the Reference on the operands as
// precision P sees them (fp32: unchanged).
template <class Arch, Precision P = Precision::Fp32>
void check_linear(const LinearShape& s, Epilogue e, bool with_bias, int ldx_pad, int ldy_pad,
                       std::uint32_t seed, float x_scale = 1.0f) {
  using S = Kernels<lemevit::backend::Simd<Arch, P>>;
  const int ldx = s.in + ldx_pad, ldy = s.out + ldy_pad;
  auto x = random_vector(std::size_t(s.rows) * ldx, seed, -x_scale, x_scale);
  // Rows the per-row quantisation must get right: all zero, all positive, all negative.
  for (int k = 0; k < s.in; ++k) {
    if (s.rows > 3) x[k] = 0.0f;
    if (s.rows > 4) x[std::size_t(ldx) + k] = std::fabs(x[std::size_t(ldx) + k]) + 0.5f;
    if (s.rows > 5) x[std::size_t(2) * ldx + k] = -std::fabs(x[std::size_t(2) * ldx + k]);
  }
  const auto w = random_vector(std::size_t(s.out) * s.in, seed + 1);
  const auto b = random_vector(std::size_t(s.out), seed + 2);
  const auto y0 = random_vector(std::size_t(s.rows) * ldy, seed + 3);
  std::vector<float> xr = x, wr = w;
  if constexpr (P == Precision::Bf16) {
    for (auto& v : xr) v = bf16_round(v);
    for (auto& v : wr) v = bf16_round(v);
  } else if constexpr (P == Precision::Int8) {
    xr = dequantised_rows(x, s.rows, ldx, s.in);
    wr = dequantised_weights(w, s.out, s.in);
  }
  Ref::LinearWeights rw;
  Ref::prepare_linear(wr.data(), with_bias ? b.data() : nullptr, s.out, s.in, rw);
  typename S::LinearWeights sw;
  S::prepare_linear(w.data(), with_bias ? b.data() : nullptr, s.out, s.in, sw);
  auto want = y0, got = y0;
  Ref::linear(xr.data(), s.rows, ldx, rw, want.data(), ldy, e);
  S::linear(x.data(), s.rows, ldx, sw, got.data(), ldy, e);
  std::ostringstream what;
  what << arch_name<Arch>() << " " << lemevit::precision_name(P) << " (" << S::gemm_path()
       << ") linear rows " << s.rows << " in " << s.in << " out " << s.out << " "
       << epilogue_name(e) << (with_bias ? " bias" : " no bias") << " ldx " << ldx << " ldy " << ldy;
  double rel = 1e-5;
  if (P != Precision::Fp32 && e == Epilogue::Gelu) {
    // The low precisions' GELU errs by up to kLowpGeluError max(1, |v|).
    auto pre = y0;
    Ref::linear(xr.data(), s.rows, ldx, rw, pre.data(), ldy, Epilogue::Store);
    double max_pre = 1.0, max_ref = 0.0;
    for (int r = 0; r < s.rows; ++r)
      for (int c = 0; c < s.out; ++c) {
        max_pre = std::max(max_pre, std::fabs(double(pre[std::size_t(r) * ldy + c])));
        max_ref = std::max(max_ref, std::fabs(double(want[std::size_t(r) * ldy + c])));
      }
    if (max_ref > 0.0) rel += kLowpGeluError * max_pre / max_ref;
  }
  require_close(got, want, rel, what.str());
  for (int r = 0; r < s.rows; ++r)
    for (int c = s.out; c < ldy; ++c)
      REQUIRE(got[std::size_t(r) * ldy + c] == y0[std::size_t(r) * ldy + c]);
}

TEMPLATE_TEST_CASE("linear matches the reference at the model's shapes", "[simd][linear]",
                   LEMEVIT_TEST_ARCHS) {
  // (rows, in, out): MLPs, fused projections, im2col convolutions, heads.
  const LinearShape shapes[] = {
      {3136, 64, 256},  {3136, 256, 64},  {3136, 64, 192}, {784, 128, 512}, {784, 512, 128},
      {196, 192, 768},  {196, 768, 192},  {49, 320, 960},  {49, 1280, 320}, {16, 64, 256},
      {16, 256, 64},    {16, 384, 1536},  {12544, 27, 32}, {3136, 288, 64}, {196, 1152, 192},
      {49, 1728, 320},  {49, 2880, 384},  {1, 320, 1000},  {8, 512, 4},     {128, 96, 288}};
  std::uint32_t seed = 100;
  for (const auto& s : shapes) {
    const Epilogue e = seed % 3 == 0 ? Epilogue::Store
                                     : (seed % 3 == 1 ? Epilogue::Gelu : Epilogue::Accumulate);
    check_linear<TestType>(s, e, true, 0, 0, seed);
    seed += 7;
  }
}

TEMPLATE_TEST_CASE("linear handles tails, strides, epilogues and a missing bias",
                   "[simd][linear]", LEMEVIT_TEST_ARCHS) {
  const int rows[] = {1, 5, 17, 31};
  const int dims[] = {1, 7, 27, 33, 64};
  std::uint32_t seed = 1000;
  for (int r : rows)
    for (int in : dims)
      for (int out : dims)
        for (Epilogue e : {Epilogue::Store, Epilogue::Gelu, Epilogue::Accumulate}) {
          check_linear<TestType>({r, in, out}, e, seed % 2 == 0, int(seed % 3), int(seed % 5),
                                 seed);
          ++seed;
        }
}

// Runs backend B's linear on rows [r0, r0 + n) of x, with the given thread
// count, and returns those rows of y. `shift` moves the copy of x by that many
// floats (alignment must not matter either).
template <class B>
std::vector<float> linear_rows(const std::vector<float>& x, int in, int r0, int n, int shift,
                               const typename Kernels<B>::LinearWeights& w,
                               const std::vector<float>& y0, int out, Epilogue e, int threads) {
  std::vector<float> xs(std::size_t(n) * in + shift);
  std::copy(x.begin() + std::ptrdiff_t(r0) * in, x.begin() + std::ptrdiff_t(r0 + n) * in,
            xs.begin() + shift);
  std::vector<float> y(y0.begin() + std::ptrdiff_t(r0) * out,
                       y0.begin() + std::ptrdiff_t(r0 + n) * out);
  set_threads(threads);
  Kernels<B>::linear(xs.data() + shift, n, in, w, y.data(), out, e);
  return y;
}

// A row's result is bitwise the same whatever the thread count, the rows
// around it in the call and its alignment.
template <class B>
void check_row_determinism(const std::string& name) {
  using S = Kernels<B>;
  ThreadGuard guard;
  const LinearShape shapes[] = {{3136, 64, 256}, {53, 192, 96}, {40, 2880, 33}, {16, 320, 1000}};
  std::uint32_t seed = 5000;
  for (const auto& s : shapes) {
    const auto x = random_vector(std::size_t(s.rows) * s.in, seed);
    const auto w = random_vector(std::size_t(s.out) * s.in, seed + 1);
    const auto b = random_vector(std::size_t(s.out), seed + 2);
    const auto y0 = random_vector(std::size_t(s.rows) * s.out, seed + 3);
    typename S::LinearWeights sw;
    S::prepare_linear(w.data(), b.data(), s.out, s.in, sw);
    for (Epilogue e : {Epilogue::Store, Epilogue::Gelu, Epilogue::Accumulate}) {
      const auto full = linear_rows<B>(x, s.in, 0, s.rows, 0, sw, y0, s.out, e, 1);
      // (first row, row count, shift) of the sub-calls.
      const int subs[][3] = {{0, 1, 0},  {1, 1, 1},      {s.rows - 1, 1, 3},
                             {3, 5, 0},  {7, 13, 2},     {2, 17, 0},
                             {0, s.rows, 5}, {s.rows / 2, s.rows / 2, 1},
                             {11, 6, 0}, {13, 12, 7}};
      for (int threads : kThreadCounts) {
        for (const auto& sub : subs) {
          const int r0 = sub[0], n = std::min(sub[1], s.rows - sub[0]);
          if (n <= 0) continue;
          const auto part = linear_rows<B>(x, s.in, r0, n, sub[2], sw, y0, s.out, e, threads);
          INFO(name << " rows " << s.rows << " in " << s.in << " out " << s.out << " "
                    << epilogue_name(e) << ": rows [" << r0 << ", " << r0 + n << ") on "
                    << threads << " threads");
          REQUIRE(same_bits(part.data(), full.data() + std::size_t(r0) * s.out,
                            std::size_t(n) * s.out));
        }
      }
    }
    seed += 10;
  }
}

TEMPLATE_TEST_CASE("linear is bitwise deterministic per row", "[simd][linear][determinism]",
                   LEMEVIT_TEST_ARCHS) {
  check_row_determinism<lemevit::backend::Simd<TestType>>(arch_name<TestType>());
}

TEMPLATE_TEST_CASE("fused GELU equals store then gelu", "[simd][linear][gelu]",
                   LEMEVIT_TEST_ARCHS) {
  using S = Kernels<lemevit::backend::Simd<TestType>>;
  const int rows = 29, in = 40, out = 45;
  const auto x = random_vector(std::size_t(rows) * in, 77, -3.0f, 3.0f);
  const auto w = random_vector(std::size_t(out) * in, 78);
  const auto b = random_vector(std::size_t(out), 79);
  typename S::LinearWeights sw;
  S::prepare_linear(w.data(), b.data(), out, in, sw);
  std::vector<float> fused(std::size_t(rows) * out), split(fused.size());
  S::linear(x.data(), rows, in, sw, fused.data(), out, Epilogue::Gelu);
  S::linear(x.data(), rows, in, sw, split.data(), out, Epilogue::Store);
  S::gelu(split.data(), split.size());
  REQUIRE(same_bits(fused.data(), split.data(), fused.size()));
}

// ---------------------------------------------------------------- bf16 / int8 linear

TEMPLATE_TEST_CASE("bf16 and int8 linear equal the Reference on rounded or quantised operands",
                   "[simd][linear][lowp]", LEMEVIT_TEST_ARCHS) {
  // The model's shapes (as for fp32), then tails of every loop: rows around
  // the 4- and 12-row tiles, k around the 2- and 4-groups, columns around
  // the 32-column panels, and rows longer than one 4096-value chunk.
  const LinearShape shapes[] = {
      {3136, 64, 256}, {3136, 256, 64}, {784, 128, 512}, {784, 512, 128}, {196, 192, 768},
      {196, 768, 192}, {49, 320, 960},  {49, 1280, 320}, {16, 384, 1536}, {12544, 27, 32},
      {3136, 288, 64}, {49, 2880, 384}, {1, 320, 1000},  {8, 512, 4},     {13, 5000, 40},
      {7, 4097, 33},   {25, 8193, 17}};
  std::uint32_t seed = 200;
  for (const auto& s : shapes) {
    const Epilogue e = seed % 3 == 0 ? Epilogue::Store
                                     : (seed % 3 == 1 ? Epilogue::Gelu : Epilogue::Accumulate);
    check_linear<TestType, Precision::Bf16>(s, e, true, 0, 0, seed);
    check_linear<TestType, Precision::Int8>(s, e, true, 0, 0, seed);
    seed += 7;
  }
  const int rows[] = {1, 4, 6, 13, 25};
  const int ins[] = {1, 2, 3, 5, 6, 27, 33, 64};
  const int outs[] = {1, 7, 31, 33, 65};
  for (int r : rows)
    for (int in : ins)
      for (int out : outs)
        for (Epilogue e : {Epilogue::Store, Epilogue::Gelu, Epilogue::Accumulate}) {
          const float x_scale = seed % 4 == 0 ? 1e3f : 1.0f;
          check_linear<TestType, Precision::Bf16>({r, in, out}, e, seed % 2 == 0, int(seed % 3),
                                                       int(seed % 5), seed, x_scale);
          check_linear<TestType, Precision::Int8>({r, in, out}, e, seed % 2 == 0, int(seed % 3),
                                                       int(seed % 5), seed, x_scale);
          ++seed;
        }
}

// y = GELU(x W^T + b) through micro-kernel K for Arch, on weights packed in its layout.
template <class K, class Arch = xsimd::default_arch>
std::vector<float> lowp_gelu_linear(const std::vector<float>& x, const LinearShape& sh,
                                    const std::vector<float>& w, const std::vector<float>& b) {
  typename K::Weights packed;
  packed.pack(w.data(), b.data(), sh.out, sh.in);
  std::vector<float> y(std::size_t(sh.rows) * sh.out);
  lemevit::backend::simd::gemm_lowp<Arch, Epilogue::Gelu, K>(x.data(), sh.rows, sh.in, packed, y.data(), sh.out);
  return y;
}

// Every instruction-set micro-kernel this build has against a portable one
// on the same operands (the bf16 ones only if `bf16`); returns how many were
// compared. The int8 sums are exact and VDPBF16PS sums as the generic bf16
// kernel does, so those are bitwise equal. NEON's BFDOT rounds its pair sums
// itself (round to odd): the selected NEON bf16 kernel is checked against the
// Reference above, and BFMMLA, which sums as two BFDOTs in k order, against
// BFDOT here.
int compare_lowp_kernels(const std::vector<float>& x, const LinearShape& sh, const std::vector<float>& w,
                         const std::vector<float>& b, [[maybe_unused]] bool bf16) {
  using Arch = xsimd::default_arch;
  namespace s = lemevit::backend::simd;
  int compared = 0;
  [[maybe_unused]] auto same_as = [&](const std::vector<float>& fast, const std::vector<float>& portable,
                                      const char* what) {
    INFO(what);
    REQUIRE(same_bits(fast, portable));
    ++compared;
  };
  [[maybe_unused]] const auto int8 = lowp_gelu_linear<s::Int8Generic_4x32<Arch>>(x, sh, w, b);
  if (bf16) {
    [[maybe_unused]] const auto generic = lowp_gelu_linear<s::Bf16Generic_4x32<Arch>>(x, sh, w, b);
    if constexpr (s::kBf16Widens<Arch>)
      same_as(lowp_gelu_linear<s::Bf16Widen<Arch>>(x, sh, w, b), generic, s::Bf16Widen<Arch>::path);
#if defined(__AVX512BF16__)
    same_as(lowp_gelu_linear<s::Bf16Avx512_12x32<Arch>>(x, sh, w, b), generic, "avx512_bf16");
#endif
  }
#if defined(__AVX512VNNI__)
  same_as(lowp_gelu_linear<s::Int8Vnni512_12x32<Arch>>(x, sh, w, b), int8, "avx512_vnni");
#endif
#if defined(__AVX2__)
  {  // the AVX2 kernels: against the generic one with AVX2's epilogue
    using Avx2 = xsimd::fma3<xsimd::avx2>;
    const auto generic = lowp_gelu_linear<s::Int8Generic_4x32<Avx2>, Avx2>(x, sh, w, b);
    same_as(lowp_gelu_linear<s::Int8Avx2Maddubs_4x32<Avx2>, Avx2>(x, sh, w, b), generic, "avx2_maddubs");
    if constexpr (!std::is_same_v<Arch, Avx2>)  // the AVX2 backend's bf16 in an AVX-512 build
      if (bf16)
        same_as(lowp_gelu_linear<s::Bf16Widen<Avx2>, Avx2>(x, sh, w, b),
                lowp_gelu_linear<s::Bf16Generic_4x32<Avx2>, Avx2>(x, sh, w, b), "avx2_widen");
#if defined(__AVXVNNI__)
    same_as(lowp_gelu_linear<s::Int8AvxVnni_6x32<Avx2>, Avx2>(x, sh, w, b), generic, "avx_vnni");
#endif
  }
#endif
#if defined(__aarch64__) && defined(__ARM_FEATURE_DOTPROD)
  same_as(lowp_gelu_linear<s::Int8NeonDot_4x32<Arch>>(x, sh, w, b), int8, "neon_dotprod");
#endif
#if defined(__aarch64__) && defined(__ARM_FEATURE_MATMUL_INT8)
  same_as(lowp_gelu_linear<s::Int8NeonMmla_4x32<Arch>>(x, sh, w, b), int8, "neon_i8mm");
#endif
#if defined(__aarch64__) && defined(__ARM_FEATURE_BF16_VECTOR_ARITHMETIC)
  if (bf16)
    same_as(lowp_gelu_linear<s::Bf16NeonBfmmla_4x32<Arch>>(x, sh, w, b),
            lowp_gelu_linear<s::Bf16NeonBfdot_4x32<Arch>>(x, sh, w, b), "neon_bfmmla vs neon_bfdot");
#endif
  return compared;
}

TEST_CASE("the instruction-set bf16 and int8 kernels equal the portable ones bitwise", "[simd][linear][lowp]") {
  // Rows around the 4-, 6- and 12-row tiles (pairs for MMLA: odd tails), k
  // around every group (2, 4, 8), the 32 values of a conversion step and past
  // one 4096-value chunk, columns around panels.
  const LinearShape shapes[] = {{3136, 64, 256}, {37, 333, 70}, {13, 5000, 40}, {5, 3, 1},
                                {6, 17, 64},     {7, 9, 33},    {3, 4097, 5},  {2, 8, 32},
                                {11, 31, 40},    {17, 65, 96}};
  int compared = 0;
  std::uint32_t seed = 900;
  for (const auto& sh : shapes) {
    INFO("rows " << sh.rows << " in " << sh.in << " out " << sh.out);
    compared += compare_lowp_kernels(random_vector(std::size_t(sh.rows) * sh.in, seed, -4.0f, 4.0f), sh,
                                     random_vector(std::size_t(sh.out) * sh.in, seed + 1),
                                     random_vector(std::size_t(sh.out), seed + 2), true);
    seed += 3;
  }
  if (compared == 0) SUCCEED("this build has no instruction-set bf16 or int8 kernel");
}

// NaN and infinities in an int8 operand: the row range skips NaN, an
// infinite range falls back to scale 1 and zero point 0, and quantisation
// sends NaN to 0 and clamps the rest (gemm_lowp.hpp), so the logits stay
// finite, the same bits in every kernel, in the vector body (64 values a
// step on AVX-512) and in the tails.
TEST_CASE("the int8 kernels quantise NaN and infinities as the portable one does", "[simd][linear][lowp]") {
  using Arch = xsimd::default_arch;
  namespace s = lemevit::backend::simd;
  const LinearShape sh{6, 100, 40};
  auto x = random_vector(std::size_t(sh.rows) * sh.in, 950, -4.0f, 4.0f);
  const float inf = std::numeric_limits<float>::infinity();
  x[3] = std::numeric_limits<float>::quiet_NaN();   // row 0: NaN in the body
  x[97] = std::numeric_limits<float>::quiet_NaN();  // and in the tail
  x[100 + 10] = inf;                                  // row 1: +inf
  x[200 + 70] = -inf;                                 // row 2: -inf in the tail
  x[300 + 5] = 1e30f;                                 // row 3: beyond the int range
  x[400 + 64] = -1e30f;                               // row 4
  const auto w = random_vector(std::size_t(sh.out) * sh.in, 951);
  const auto b = random_vector(std::size_t(sh.out), 952);
  for (float v : lowp_gelu_linear<s::Int8Generic_4x32<Arch>>(x, sh, w, b)) REQUIRE(std::isfinite(v));
  compare_lowp_kernels(x, sh, w, b, false);
}

// Bf16Widen keeps x as bf16-rounded floats: its vector conversion against
// the test's own rounding (ties to even) in the body and the tail, on ties,
// subnormals and signed zeros, and on what that rounding leaves out: NaN stays
// NaN, infinities stay, FLT_MAX rounds up to infinity (as VCVTNE2PS2BF16 does).
// An odd count gets a zero after it (the k-pair's padding).
TEMPLATE_TEST_CASE("the widened bf16 kernel rounds its operand to bf16 exactly", "[simd][linear][lowp]",
                   LEMEVIT_TEST_ARCHS) {
  namespace s = lemevit::backend::simd;
  if constexpr (!s::kBf16Widens<TestType>) {
    SUCCEED(arch_name<TestType>() << " has no widened bf16 kernel");
  } else {
    using K = s::Bf16Widen<TestType>;
    constexpr int L = s::kLanes<TestType>;
    const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
    const float ulp = 1.0f / 256;  // half a bf16 ulp at 1
    std::vector<float> x = {1.0f + ulp,     1.0f + 3 * ulp, -1.0f - ulp, 1.0f + ulp * 1.001f, 0.0f,
                            -0.0f,          1e-40f,         -3e-39f,     inf,                 -inf,
                            nan,            3.4028235e38f,  -3.39e38f,   1.17549435e-38f,     65504.5f};
    // NaNs whose payload the rounding would carry into the exponent or sign:
    // signalling with a low payload (-> inf), all ones (-> -0), negative.
    for (const std::uint32_t bits : {0x7f800001u, 0x7fffffffu, 0xffffffffu, 0xff808000u}) {
      float v;
      std::memcpy(&v, &bits, sizeof v);
      x.push_back(v);
    }
    for (float v : random_vector(std::size_t(3 * L), 960, -100.0f, 100.0f)) x.push_back(v);
    for (const int n : {int(x.size()), L - 1, L + 1, 1}) {
      INFO(arch_name<TestType>() << ", " << n << " values");
      std::vector<float> dst(std::size_t(n) + 1, -1.0f);
      K::convert(x.data(), n, {}, dst.data());
      for (int i = 0; i < n; ++i) {
        INFO("x[" << i << "] = " << x[i] << ", got " << dst[i]);
        if (std::isnan(x[i]))
          CHECK(std::isnan(dst[i]));
        else if (std::fabs(x[i]) >= 3.3961776e38f)  // past the largest bf16's halfway point
          CHECK(dst[i] == std::copysign(inf, x[i]));
        else
          CHECK(same_bits(&dst[i], std::vector<float>{bf16_round(x[i])}.data(), 1));
      }
      if (n % 2) CHECK(same_bits(&dst[n], std::vector<float>{0.0f}.data(), 1));
    }
  }
}

TEMPLATE_TEST_CASE("bf16 and int8 linear are bitwise deterministic per row",
                   "[simd][linear][lowp][determinism]", LEMEVIT_TEST_ARCHS) {
  check_row_determinism<lemevit::backend::Simd<TestType, Precision::Bf16>>(arch_name<TestType>() + " bf16");
  check_row_determinism<lemevit::backend::Simd<TestType, Precision::Int8>>(arch_name<TestType>() + " int8");
}

// The stem and downsample convolutions (Kernels::conv3x3_s2): fp32 reads the
// patches in place from a zero-bordered copy (up to kInPlaceChannels
// channels), bf16/int8 gather them while converting them (up to a conversion
// chunk); beyond, they write im2col into the scratch. Each is bitwise the product over the Reference's im2col
// matrix: the same sums, or the same conversion of the same rows. Maps of odd
// and even sizes (the right and bottom padding), one-pixel maps, several
// images per call, channel counts that do not fill a conversion group; the
// scratch starts as NaN, so a border the kernel failed to zero shows.
template <class Arch, Precision P>
void check_conv(int batch, int h, int w, int c, int out, Epilogue e, std::uint32_t seed) {
  using S = Kernels<lemevit::backend::Simd<Arch, P>>;
  const int oh = (h - 1) / 2 + 1, ow = (w - 1) / 2 + 1, rows = batch * oh * ow, in = 9 * c;
  INFO(arch_name<Arch>() << " " << lemevit::precision_name(P) << " batch " << batch << " " << h << "x" << w
                         << "x" << c << " -> " << out << " " << epilogue_name(e));
  const auto x = random_vector(std::size_t(batch) * h * w * c, seed, -3.0f, 3.0f);
  const auto wt = random_vector(std::size_t(out) * in, seed + 1);
  const auto b = random_vector(std::size_t(out), seed + 2);
  typename S::LinearWeights sw;
  S::prepare_linear(wt.data(), b.data(), out, in, sw);
  std::vector<float> cols(std::size_t(rows) * in);
  Ref::im2col_3x3_s2(x.data(), batch, h, w, c, cols.data());
  const auto y0 = random_vector(std::size_t(rows) * out, seed + 3);  // what Accumulate adds to
  std::vector<float> want = y0, got = y0;
  S::linear(cols.data(), rows, in, sw, want.data(), out, e);
  std::vector<float> scratch(std::size_t(batch) * S::conv3x3_s2_scratch(h, w, c),
                             std::numeric_limits<float>::quiet_NaN());
  S::conv3x3_s2(x.data(), batch, h, w, c, sw, got.data(), scratch.data(), e);
  REQUIRE(same_bits(got, want));
}

TEMPLATE_TEST_CASE("convolutions read their patches as im2col lays them out", "[simd][conv]",
                   LEMEVIT_TEST_ARCHS) {
  struct ConvShape {
    int batch, h, w, c, out;
  };
  const ConvShape shapes[] = {{2, 224, 224, 3, 32}, {1, 112, 112, 32, 64}, {2, 56, 56, 64, 128},
                              {1, 14, 14, 320, 384}, {3, 7, 5, 5, 33},     {2, 1, 1, 8, 7},
                              {1, 2, 3, 1, 40},      {2, 9, 4, 2, 65},     {1, 3, 1, 17, 3},
                              {1, 5, 6, 460, 20}};  // bf16/int8: rows longer than a chunk
  // The model's shapes (the first four) take one epilogue each, in turn: the
  // epilogues run the same code at every size, and all three under ASan
  // made this test a third of CI's sanitizer stage.
  const Epilogue epilogues[] = {Epilogue::Store, Epilogue::Gelu, Epilogue::Accumulate};
  std::uint32_t seed = 1300;
  for (int i = 0; i < int(std::size(shapes)); ++i)
    for (int k = 0; k < 3; ++k) {
      if (i < 4 && k != i % 3) continue;
      const ConvShape& s = shapes[i];
      const Epilogue e = epilogues[k];
      check_conv<TestType, Precision::Fp32>(s.batch, s.h, s.w, s.c, s.out, e, seed);
      check_conv<TestType, Precision::Bf16>(s.batch, s.h, s.w, s.c, s.out, e, seed);
      check_conv<TestType, Precision::Int8>(s.batch, s.h, s.w, s.c, s.out, e, seed);
      seed += 5;
    }
}

// ---------------------------------------------------------------- layer_norm

TEMPLATE_TEST_CASE("layer_norm matches the reference", "[simd][layer_norm]",
                   LEMEVIT_TEST_ARCHS) {
  using S = Kernels<lemevit::backend::Simd<TestType>>;
  ThreadGuard guard;
  const int shapes[][2] = {{3136, 64}, {784, 128}, {196, 320}, {16, 384}, {16, 512}, {49, 1280},
                           {1, 1},     {3, 2},     {5, 7},     {17, 27},  {1, 33},   {4, 100}};
  std::uint32_t seed = 300;
  for (const auto& s : shapes) {
    const int rows = s[0], dim = s[1];
    // An offset mean checks the two-pass variance.
    const auto x = random_vector(std::size_t(rows) * dim, seed, 2.0f, 4.0f);
    const auto g = random_vector(std::size_t(dim), seed + 1, 0.5f, 1.5f);
    const auto bt = random_vector(std::size_t(dim), seed + 2);
    for (float eps : {1e-6f, 1e-5f}) {
      std::vector<float> want(x.size()), got(x.size());
      Ref::layer_norm(x.data(), rows, dim, g.data(), bt.data(), eps, want.data());
      S::layer_norm(x.data(), rows, dim, g.data(), bt.data(), eps, got.data());
      std::ostringstream what;
      what << arch_name<TestType>() << " layer_norm rows " << rows << " dim " << dim;
      if (dim > 1) require_close(got, want, 1e-5, what.str());
      // In place gives the same bits.
      auto inplace = x;
      S::layer_norm(inplace.data(), rows, dim, g.data(), bt.data(), eps, inplace.data());
      REQUIRE(same_bits(inplace.data(), got.data(), got.size()));
      // Rows alone, other thread counts: the same bits.
      for (int threads : kThreadCounts) {
        set_threads(threads);
        for (int r : {0, rows / 2, rows - 1}) {
          std::vector<float> one(static_cast<std::size_t>(dim));
          S::layer_norm(x.data() + std::size_t(r) * dim, 1, dim, g.data(), bt.data(), eps,
                        one.data());
          REQUIRE(same_bits(one.data(), got.data() + std::size_t(r) * dim, std::size_t(dim)));
        }
        std::vector<float> again(x.size());
        S::layer_norm(x.data(), rows, dim, g.data(), bt.data(), eps, again.data());
        REQUIRE(same_bits(again.data(), got.data(), got.size()));
      }
    }
    seed += 3;
  }
}

// ---------------------------------------------------------------- depthwise conv

TEMPLATE_TEST_CASE("depthwise_conv3x3_residual matches the reference", "[simd][dwconv]",
                   LEMEVIT_TEST_ARCHS) {
  using S = Kernels<lemevit::backend::Simd<TestType>>;
  ThreadGuard guard;
  const int shapes[][3] = {{56, 56, 64}, {28, 28, 128}, {14, 14, 192}, {7, 7, 320}, {56, 56, 96},
                           {1, 1, 7},    {3, 5, 27},    {2, 1, 33},    {1, 4, 1},   {9, 3, 17}};
  std::uint32_t seed = 700;
  for (const auto& s : shapes) {
    const int h = s[0], w = s[1], c = s[2];
    const auto x = random_vector(std::size_t(h) * w * c, seed);
    const auto k = random_vector(std::size_t(9) * c, seed + 1);
    const auto b = random_vector(std::size_t(c), seed + 2);
    std::vector<float> want(x.size()), got(x.size());
    Ref::depthwise_conv3x3_residual(x.data(), h, w, c, k.data(), b.data(), want.data());
    S::depthwise_conv3x3_residual(x.data(), h, w, c, k.data(), b.data(), got.data());
    std::ostringstream what;
    what << arch_name<TestType>() << " dwconv " << h << "x" << w << "x" << c;
    require_close(got, want, 1e-5, what.str());
    for (int threads : kThreadCounts) {
      set_threads(threads);
      std::vector<float> again(x.size());
      S::depthwise_conv3x3_residual(x.data(), h, w, c, k.data(), b.data(), again.data());
      REQUIRE(same_bits(again.data(), got.data(), got.size()));
    }
    seed += 3;
  }
}

// ---------------------------------------------------------------- attention

struct AttentionCase {
  int queries, keys, heads, head_dim;
  float scale;
  bool fused;  // q, k, v as strided views into one (rows, 3 C) projection
};

// Inputs of one attention call, q/k/v either separate or views into fused
// projections (q from one buffer, k and v from another, as in cross attention).
struct AttentionData {
  std::vector<float> qbuf, kvbuf, out;
  AttentionArgs args{};
};

AttentionData make_attention(const AttentionCase& c, std::uint32_t seed, float magnitude) {
  AttentionData d;
  const int C = c.heads * c.head_dim;
  const int ldq = c.fused ? 3 * C + 1 : C;
  const int ldkv = c.fused ? 2 * C + 3 : 2 * C;
  d.qbuf = random_vector(std::size_t(c.queries) * ldq, seed, -magnitude, magnitude);
  d.kvbuf = random_vector(std::size_t(c.keys) * ldkv, seed + 1, -magnitude, magnitude);
  const int ldo = c.fused ? C + 2 : C;
  d.out = random_vector(std::size_t(c.queries) * ldo, seed + 2);  // padding must survive
  const int qoff = c.fused ? C : 0;
  d.args = AttentionArgs{d.qbuf.data() + qoff, d.kvbuf.data(), d.kvbuf.data() + C, ldq, ldkv,
                         ldkv, c.queries, c.keys, c.heads, c.head_dim, c.scale, d.out.data(),
                         ldo};
  return d;
}

std::string describe(const AttentionCase& c) {
  std::ostringstream what;
  what << "attention queries " << c.queries << " keys " << c.keys << " heads " << c.heads
       << " head_dim " << c.head_dim << (c.fused ? " strided" : "");
  return what.str();
}

template <class Arch>
void check_attention(const AttentionCase& c, std::uint32_t seed, float magnitude = 1.0f) {
  using S = Kernels<lemevit::backend::Simd<Arch>>;
  AttentionData want = make_attention(c, seed, magnitude);
  AttentionData got = make_attention(c, seed, magnitude);
  Ref::attention(want.args);
  S::attention(got.args);
  std::ostringstream what;
  what << arch_name<Arch>() << " " << describe(c) << " scale " << c.scale << " magnitude " << magnitude;
  require_close(got.out, want.out, 1e-5, what.str());
}

TEMPLATE_TEST_CASE("attention matches the reference at the model's shapes",
                   "[simd][attention]", LEMEVIT_TEST_ARCHS) {
  const AttentionCase cases[] = {
      {3136, 16, 2, 32, 0.0431f, true},  // dual cross attention, x branch (tiny stage 1)
      {16, 3136, 2, 32, 0.125f, true},   // c branch, cross attention
      {784, 16, 4, 32, 0.0368f, true},   // stage 2, x branch
      {16, 784, 4, 32, 0.0884f, false},  // stage 2, c branch
      {784, 784, 3, 32, 0.1768f, true},  // self attention (vit_tiny stage 2)
      {196, 196, 6, 32, 0.1768f, true},  {49, 49, 10, 32, 0.1768f, true},
      {16, 16, 10, 32, 0.1768f, false},  {16, 16, 12, 32, 0.1768f, true}};
  std::uint32_t seed = 900;
  for (const auto& c : cases) check_attention<TestType>(c, seed += 5);
}

TEMPLATE_TEST_CASE("attention on 3136 x 3136 self attention", "[simd][attention][slow]",
                   LEMEVIT_TEST_ARCHS) {
  check_attention<TestType>({3136, 3136, 1, 32, 0.1768f, true}, 950);
}

TEMPLATE_TEST_CASE("attention handles tails, head sizes and large logits",
                   "[simd][attention]", LEMEVIT_TEST_ARCHS) {
  std::uint32_t seed = 2000;
  for (int hd : {1, 7, 16, 32, 33, 64})
    for (int q : {1, 5, 17})
      for (int k : {1, 3, 16, 100, 129, 300}) {
        const int heads = hd >= 32 ? 2 : 3;
        check_attention<TestType>({q, k, heads, hd, 1.0f / std::sqrt(float(hd)), (seed % 2) == 0},
                                  seed);
        ++seed;
      }
  // Large logits: softmax must stay stable (online maximum).
  check_attention<TestType>({17, 300, 2, 32, 1.0f, true}, 2900, 4.0f);
  check_attention<TestType>({40, 1000, 1, 32, 0.5f, false}, 2901, 3.0f);
  // Head sizes past the blocked path's buffers (one query at a time).
  check_attention<TestType>({5, 70, 2, 300, 0.05f, true}, 2902);
  check_attention<TestType>({3, 20, 1, 1000, 0.03f, false}, 2903);
}

template <class Arch, lemevit::Precision P = lemevit::Precision::Fp32>
std::vector<float> attention_rows(const AttentionCase& c, const AttentionData& d, int q0, int n,
                                  int threads) {
  using S = Kernels<lemevit::backend::Simd<Arch, P>>;
  AttentionArgs a = d.args;
  std::vector<float> out(std::size_t(n) * a.ldo, 0.0f);
  a.q += std::ptrdiff_t(q0) * a.ldq;
  a.queries = n;
  a.out = out.data();
  set_threads(threads);
  S::attention(a);
  (void)c;
  return out;
}

// Every sub-range of queries, on every thread count, gives the rows the
// whole call gives, bitwise.
template <class Arch, lemevit::Precision P>
void check_rows_invariant(const AttentionCase& c, const AttentionData& d) {
  const auto full = attention_rows<Arch, P>(c, d, 0, c.queries, 1);
  const int ldo = d.args.ldo, C = c.heads * c.head_dim;
  const int subs[][2] = {{0, 1}, {c.queries - 1, 1}, {1, 5}, {3, 13}, {2, 7}, {0, c.queries}};
  for (int threads : kThreadCounts)
    for (const auto& sub : subs) {
      const int q0 = sub[0], n = std::min(sub[1], c.queries - sub[0]);
      if (n <= 0) continue;
      const auto part = attention_rows<Arch, P>(c, d, q0, n, threads);
      INFO(arch_name<Arch>() << " " << lemevit::precision_name(P) << " queries " << c.queries << " keys "
                             << c.keys << ": queries [" << q0 << ", " << q0 + n << ") on " << threads
                             << " threads");
      for (int i = 0; i < n; ++i)
        REQUIRE(same_bits(part.data() + std::size_t(i) * ldo, full.data() + std::size_t(q0 + i) * ldo,
                          std::size_t(C)));
    }
}

TEMPLATE_TEST_CASE("attention is bitwise deterministic per query",
                   "[simd][attention][determinism]", LEMEVIT_TEST_ARCHS) {
  ThreadGuard guard;
  const AttentionCase cases[] = {{3136, 16, 2, 32, 0.0431f, true},
                                 {16, 3136, 2, 32, 0.125f, true},
                                 {100, 300, 3, 16, 0.25f, false},
                                 {37, 45, 2, 33, 0.17f, true},
                                 {9, 20, 1, 300, 0.05f, false},
                                 {203, 9, 3, 32, 0.2f, false},  // few keys, a partial key block
                                 {784, 16, 4, 64, 0.1f, true}};
  std::uint32_t seed = 4000;
  for (const auto& c : cases) {
    const AttentionData d = make_attention(c, seed += 3, 1.0f);
    // fp32, and the lowp precisions' attention (bf16 products where the CPU has them).
    check_rows_invariant<TestType, lemevit::Precision::Fp32>(c, d);
    check_rows_invariant<TestType, lemevit::Precision::Int8>(c, d);
  }
}

// ------------------------------------------------- attention, bf16 products
// attention_bf16.hpp: the bf16/int8 precisions' attention where the CPU has
// a bf16 dot product. Its portable pair operations (fp32 FMAs on bf16
// operands) run on every instruction set here.

template <class Arch, class Ops>
std::vector<float> bf16_attention(const AttentionCase& c, std::uint32_t seed, float magnitude = 1.0f) {
  AttentionData d = make_attention(c, seed, magnitude);
  lemevit::backend::simd::attention_bf16<Arch, Ops>(d.args);
  return d.out;
}

// Model shapes, then tails: odd key counts (a padded key pair), blocks of
// fewer keys than the tile's rows, head dims of one to eight vectors, few
// queries, and the fp32 fallbacks (few keys, head dims not whole vectors).
std::vector<AttentionCase> bf16_attention_cases() {
  std::vector<AttentionCase> cases = {
      {16, 3136, 2, 32, 0.125f, true},  {16, 784, 4, 32, 0.0884f, false},
      {196, 196, 6, 32, 0.1768f, true}, {212, 212, 6, 32, 0.1768f, false},
      {49, 49, 10, 32, 0.1768f, true},  {16, 16, 12, 32, 0.1768f, true},
      {784, 784, 1, 32, 0.1768f, true}, {3136, 16, 2, 32, 0.0431f, true}};
  for (int hd : {16, 32, 48, 64, 128, 33})
    for (int q : {1, 5, 17, 40})
      for (int k : {3, 17, 61, 130, 301}) cases.push_back({q, k, hd >= 64 ? 1 : 2, hd, 1.0f / std::sqrt(float(hd)), (q + k) % 2 == 0});
  return cases;
}

TEMPLATE_TEST_CASE("bf16-product attention stays within bf16 rounding of the reference",
                   "[simd][attention][lowp]", LEMEVIT_TEST_ARCHS) {
  using Portable = lemevit::backend::simd::Bf16PairPortable<TestType>;
  std::uint32_t seed = 5000;
  for (const auto& c : bf16_attention_cases()) {
    for (float magnitude : {1.0f, 3.0f}) {
      AttentionData want = make_attention(c, ++seed, magnitude);
      Ref::attention(want.args);
      // q, k, v and p rounded to bf16 (2^-9 relative each): about 1e-2 of the
      // largest output at these magnitudes; a wrong pair or key order is far off.
      require_close(bf16_attention<TestType, Portable>(c, seed, magnitude), want.out, 2e-2,
                    arch_name<TestType>() + " bf16 " + describe(c));
    }
  }
}

#if defined(__AVX512BF16__) || (defined(__aarch64__) && defined(__ARM_FEATURE_BF16_VECTOR_ARITHMETIC))
// The instruction set's pair operations (Ops) and the portable ones on every
// bf16 attention case: check(fast, portable, what) compares the outputs. Then
// that Ops is what the bf16 and int8 models run.
template <class Ops, class Check>
void against_portable_pairs(std::uint32_t seed, Check&& check) {
  using Arch = xsimd::default_arch;
  using Portable = lemevit::backend::simd::Bf16PairPortable<Arch>;
  for (const auto& c : bf16_attention_cases())
    for (float magnitude : {1.0f, 4.0f}) {
      ++seed;
      check(bf16_attention<Arch, Ops>(c, seed, magnitude), bf16_attention<Arch, Portable>(c, seed, magnitude),
            std::string(Ops::path) + " " + describe(c) + " magnitude " + std::to_string(magnitude));
    }
  REQUIRE(std::string(Kernels<lemevit::backend::Simd<Arch, lemevit::Precision::Bf16>>::attention_path()) == Ops::path);
  REQUIRE(std::string(Kernels<lemevit::backend::Simd<Arch, lemevit::Precision::Int8>>::attention_path()) == Ops::path);
}
#endif

#if defined(__AVX512BF16__)
TEST_CASE("AVX512_BF16 attention equals its portable form bitwise", "[simd][attention][lowp]") {
  against_portable_pairs<lemevit::backend::simd::Bf16PairAvx512<xsimd::default_arch>>(
      6000, [](const std::vector<float>& fast, const std::vector<float>& portable, const std::string& what) {
        INFO(what);
        REQUIRE(same_bits(fast, portable));
      });
}
#endif

#if defined(__aarch64__) && defined(__ARM_FEATURE_BF16_VECTOR_ARITHMETIC)
TEST_CASE("NEON BFDOT attention agrees with its portable form to rounding", "[simd][attention][lowp]") {
  // BFDOT rounds each pair's sum (to odd) before adding it: a few fp32 ulps
  // per score, which can move a weight p across a bf16 rounding boundary
  // before the value product (one bf16 ulp, 2^-8 of a dominant p: seen up to
  // 1.1e-3 of the largest output, at 784 x 784). A wrong pair, lane or key
  // order is off by the outputs' own size.
  against_portable_pairs<lemevit::backend::simd::Bf16PairNeon<xsimd::default_arch>>(
      6500, [](const std::vector<float>& fast, const std::vector<float>& portable, const std::string& what) {
        require_close(fast, portable, 4e-3, what);
      });
}
#endif

// ---------------------------------------------------------------- allocation

TEMPLATE_TEST_CASE("kernels do not allocate", "[simd][allocation]", LEMEVIT_TEST_ARCHS) {
  using S = Kernels<lemevit::backend::Simd<TestType>>;
  ThreadGuard guard;
  const int rows = 200, in = 96, out = 136;
  const auto x = random_vector(std::size_t(rows) * in, 1);
  const auto w = random_vector(std::size_t(out) * in, 2);
  const auto b = random_vector(std::size_t(out), 3);
  auto y = random_vector(std::size_t(rows) * out, 4);
  typename S::LinearWeights sw;
  S::prepare_linear(w.data(), b.data(), out, in, sw);
  using Bf16 = Kernels<lemevit::backend::Simd<TestType, lemevit::Precision::Bf16>>;
  using Int8 = Kernels<lemevit::backend::Simd<TestType, lemevit::Precision::Int8>>;
  typename Bf16::LinearWeights wb;
  Bf16::prepare_linear(w.data(), b.data(), out, in, wb);
  typename Int8::LinearWeights wi;
  Int8::prepare_linear(w.data(), b.data(), out, in, wi);
  auto img = random_vector(std::size_t(20) * 20 * 40, 5), img_out = img;
  const auto kw = random_vector(9 * 40, 6);
  AttentionData blocked = make_attention({300, 500, 2, 32, 0.2f, true}, 7, 1.0f);
  AttentionData generic = make_attention({20, 70, 1, 300, 0.05f, false}, 8, 1.0f);
  AttentionData few_keys = make_attention({300, 16, 2, 32, 0.2f, true}, 9, 1.0f);
  for (int threads : kThreadCounts) {
    set_threads(threads);
    const long before = g_allocations.load();
    for (Epilogue e : {Epilogue::Store, Epilogue::Gelu, Epilogue::Accumulate}) {
      S::linear(x.data(), rows, in, sw, y.data(), out, e);
      Bf16::linear(x.data(), rows, in, wb, y.data(), out, e);
      Int8::linear(x.data(), rows, in, wi, y.data(), out, e);
    }
    S::layer_norm(x.data(), rows, in, b.data(), b.data(), 1e-6f, y.data());
    S::gelu(y.data(), y.size());
    S::depthwise_conv3x3_residual(img.data(), 20, 20, 40, kw.data(), b.data(), img_out.data());
    S::attention(blocked.args);
    S::attention(generic.args);
    S::attention(few_keys.args);
    const long after = g_allocations.load();
    INFO(arch_name<TestType>() << " on " << threads << " threads");
    REQUIRE(after == before);
  }
}

}  // namespace
