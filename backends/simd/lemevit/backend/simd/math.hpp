#pragma once
// Element-wise vector math for the SIMD backend: erf and the exact-erf GELU,
// the softmax exp, and loads/stores of a partial vector (channel and column
// tails).
//
// Both erf and GELU are piecewise polynomials, branch-free, whose
// coefficients come from one in-register table lookup per degree (vpermps on
// AVX-512 and AVX2, tbl on NEON). Instruction sets without a table lookup use
// xsimd::erf.
// erf: |x| clamped to [0, 4] (erf is 1.0f from 3.92 on), eight intervals
// [i/2, i/2 + 1/2), on each a degree-7 polynomial in the offset s from the
// interval's start (the first without constant term, so tiny arguments keep
// their relative accuracy). Max abs error 6.7e-8 against erf in double over
// the float range (relative error <= 2.6e-7): as accurate as xsimd's erf
// (9e-8) and about twice as fast, with no data-dependent branches.
// GELU, where one lookup reads 16 floats (AVX-512, NEON): Phi(x) = (1 + erf
// x) / 2 on 16 intervals centred at j/4, degree 5, so that the interval and
// the offset come from two additions of a rounding constant (no multiply),
// and the 1/2 folds into the table; error <= 1e-7 |v| (about 1 ulp). It sits
// beside every matrix product's output at the small K of Tiny's first stage,
// on the same ports, so each instruction saved shows there. The bf16 and
// int8 epilogues use degree 2 (kGeluTable16Lowp). Elsewhere (AVX2) GELU goes
// through erf.
// softmax_exp: Cody-Waite reduction and xsimd's polynomial, about 1.5 ulp.
// tests/kernels_test.cpp checks all three over the float range.
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "lemevit/backend/simd/xsimd_compat.hpp"

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

LEMEVIT_SIMD_DIAGNOSTICS_BEGIN

namespace lemevit::backend::simd {

// GELU's polynomial degree (see gelu below): kGeluDegree where the output
// is used in float (fp32), kLowpGeluDegree in the bf16 and int8 products'
// epilogues, whose output the next product rounds to bf16 or int8, far
// coarser than degree 2's error (three lookups and three FMAs fewer).
inline constexpr int kGeluDegree = 5, kLowpGeluDegree = 2;

namespace detail {

// kErfTable[k][i]: coefficient of s^k on [i/2, i/2 + 1/2), padded to 16 lanes.
// Fitted in long double (weighted least squares with Lawson's reweighting
// towards minimax), rounded to float.
alignas(64) inline constexpr float kErfTable[8][16] = {
    {0.000000000e+00f, 5.204998851e-01f, 8.427007794e-01f, 9.661051631e-01f, 9.953222871e-01f,
     9.995930195e-01f, 9.999778867e-01f, 9.999992847e-01f},
    {1.128379345e+00f, 8.787826300e-01f, 4.151073396e-01f, 1.189303100e-01f, 2.066701651e-02f,
     2.178282011e-03f, 1.392504928e-04f, 5.399061138e-06f},
    {-9.590810805e-06f, -4.393949509e-01f, -4.151002467e-01f, -1.783961207e-01f,
     -4.133530706e-02f, -5.445621908e-03f, -4.176497750e-04f, -1.888205406e-05f},
    {-3.759651482e-01f, -1.463994235e-01f, 1.382524371e-01f, 1.387613714e-01f, 4.824487865e-02f,
     8.348817006e-03f, 7.873112918e-04f, 4.202951095e-05f},
    {-1.272977446e-03f, 1.825171113e-01f, 7.010836899e-02f, -4.465582967e-02f, -3.462232649e-02f,
     -8.613915183e-03f, -1.029949170e-03f, -6.551379920e-05f},
    {1.181067824e-01f, 1.006411854e-02f, -7.315265387e-02f, -1.472639944e-02f, 1.387573313e-02f,
     6.091194227e-03f, 9.525815258e-04f, 7.199057291e-05f},
    {-1.142420061e-02f, -5.778227746e-02f, 1.402164530e-02f, 1.940878108e-02f, -1.507150359e-03f,
     -2.778554102e-03f, -5.782372900e-04f, -5.086963210e-05f},
    {-1.594040170e-02f, 1.782744750e-02f, 3.757892642e-03f, -5.919804797e-03f, -7.271142676e-04f,
     6.347040762e-04f, 1.739888248e-04f, 1.724422873e-05f},
};

// kGeluTable16[k][j]: coefficient of s^k of Phi(x) = (1 + erf x) / 2 on
// s = x - j/4 in [-1/8, 1/8] ([0, 1/8] for j = 0); tools/fit_gelu_table.py
// fits and prints it.
alignas(64) inline constexpr float kGeluTable16[6][16] = {
    {5.000000000e-01f, 6.381632090e-01f, 7.602499127e-01f, 8.555778265e-01f, 9.213504195e-01f, 9.614500403e-01f, 9.830525517e-01f, 9.933358431e-01f, 9.976611137e-01f, 9.992686510e-01f, 9.997965097e-01f, 9.999496937e-01f, 9.999889731e-01f, 9.999978542e-01f, 9.999996424e-01f, 9.999999404e-01f},
    {5.641895533e-01f, 5.300070643e-01f, 4.393912852e-01f, 3.214655221e-01f, 2.075537443e-01f, 1.182605624e-01f, 5.946514383e-02f, 2.638749778e-02f, 1.033349242e-02f, 3.571159439e-03f, 1.089142170e-03f, 2.931386116e-04f, 6.962652697e-05f, 1.459451232e-05f, 2.699713377e-06f, 4.407160930e-07f},
    {2.521337819e-06f, -1.325061172e-01f, -2.196795195e-01f, -2.411022782e-01f, -2.075656950e-01f, -1.478149891e-01f, -8.918804675e-02f, -4.618243873e-02f, -2.065750957e-02f, -8.039642125e-03f, -2.715469804e-03f, -8.083787980e-04f, -2.181468153e-04f, -5.026325016e-05f, -1.649420119e-05f, -2.633897509e-07f},
    {-1.881293803e-01f, -1.545841843e-01f, -7.323127985e-02f, 1.339528523e-02f, 6.918451935e-02f, 8.376744390e-02f, 6.937645376e-02f, 4.507902265e-02f, 2.411173843e-02f, 1.086233277e-02f, 4.175001755e-03f, 1.380156376e-03f, 3.945261415e-04f, 9.789445903e-05f, 2.114417475e-05f, 3.983804618e-06f},
    {7.068079431e-04f, 6.345239282e-02f, 9.012002498e-02f, 7.533332705e-02f, 3.539067134e-02f, -3.597804112e-03f, -2.276603878e-02f, -2.370520681e-02f, -1.782380790e-02f, -9.274798445e-03f, -4.804661032e-03f, -1.498505007e-03f, 6.379545812e-05f, 3.543034836e-05f, 4.154183844e-04f, -9.578973550e-05f},
    {5.362058058e-02f, 3.982459381e-02f, 3.682599636e-03f, -2.648326382e-02f, -3.445206583e-02f, -2.353796363e-02f, -7.495712023e-03f, 3.241363214e-03f, 6.502842531e-03f, 5.320271943e-03f, 3.065410769e-03f, 1.385421841e-03f, 5.128696212e-04f, 1.588967280e-04f, 4.174380956e-05f, 9.377611605e-06f},
};

// The same at degree 2 (GELU error <= 4.1e-5 max(1, |v|)), for the bf16 and
// int8 products, whose next product rounds the GELU's output to bf16 (2^-9
// relative) or int8 anyway: three table lookups and three FMAs fewer.
// `tools/fit_gelu_table.py 2` fits and prints it.
alignas(64) inline constexpr float kGeluTable16Lowp[3][16] = {
    {4.999886751e-01f, 6.381593347e-01f, 7.602444291e-01f, 8.555737138e-01f, 9.213482738e-01f, 9.614502192e-01f, 9.830539227e-01f, 9.933372736e-01f, 9.976621866e-01f, 9.992692471e-01f, 9.997968078e-01f, 9.999498129e-01f, 9.999889731e-01f, 9.999978542e-01f, 9.999996424e-01f, 9.999999404e-01f},
    {5.658258200e-01f, 5.282025933e-01f, 4.385354221e-01f, 3.216121793e-01f, 2.083584517e-01f, 1.192382574e-01f, 6.027678400e-02f, 2.691611834e-02f, 1.061695628e-02f, 3.699205350e-03f, 1.138492720e-03f, 3.094348358e-04f, 7.427387027e-05f, 1.575314309e-05f, 2.894862064e-06f, 4.751281608e-07f},
    {-3.503815830e-02f, -1.312672198e-01f, -2.179191262e-01f, -2.396625578e-01f, -2.068764567e-01f, -1.478807330e-01f, -8.963017166e-02f, -4.664433375e-02f, -2.100354433e-02f, -8.223718032e-03f, -2.809066325e-03f, -8.398066275e-04f, -2.183034812e-04f, -5.006228457e-05f, -1.087853798e-05f, -1.587763450e-06f},
};

// GeluTable16<D>::c: the 16-interval table of degree D.
template <int Degree>
struct GeluTable16;
template <>
struct GeluTable16<kGeluDegree> {
  static constexpr const auto& c = kGeluTable16;
};
template <>
struct GeluTable16<kLowpGeluDegree> {
  static constexpr const auto& c = kGeluTable16Lowp;
};

// Lookup of lane i of an 8-entry float table, for index vectors in [0, 8).
// `prepare` turns lane indices into whatever the lookup instruction takes.
template <class Arch, class = void>
struct Lookup8 {
  static constexpr bool available = false;
};

// The same for a 16-entry table, where one instruction does it.
template <class Arch, class = void>
struct Lookup16 {
  static constexpr bool available = false;
};

#if defined(__AVX512F__)
template <class Arch>
struct Lookup8<Arch, std::enable_if_t<std::is_base_of_v<xsimd::avx512f, Arch>>> {
  static constexpr bool available = true;
  static __m512i prepare(const xsimd::batch<std::int32_t, Arch>& i) { return i; }
  static Batch<Arch> get(const float* table, __m512i i) {
    return Batch<Arch>(_mm512_permutexvar_ps(i, _mm512_load_ps(table)));
  }
};

template <class Arch>
struct Lookup16<Arch, std::enable_if_t<std::is_base_of_v<xsimd::avx512f, Arch>>>
    : Lookup8<Arch> {};
#endif

#if defined(__AVX2__)
template <class Arch>
struct Lookup8<Arch, std::enable_if_t<std::is_base_of_v<xsimd::avx2, Arch>>> {
  static constexpr bool available = true;
  static __m256i prepare(const xsimd::batch<std::int32_t, Arch>& i) { return i; }
  static Batch<Arch> get(const float* table, __m256i i) {
    return Batch<Arch>(_mm256_permutevar8x32_ps(_mm256_load_ps(table), i));
  }
};
#endif

#if defined(__aarch64__)
template <class Arch>
struct Lookup8<Arch, std::enable_if_t<std::is_base_of_v<xsimd::neon64, Arch>>> {
  static constexpr bool available = true;
  // Lane i selects bytes 4i .. 4i+3.
  static uint8x16_t prepare(const xsimd::batch<std::int32_t, Arch>& i) {
    return vreinterpretq_u8_u32(
        vmlaq_n_u32(vdupq_n_u32(0x03020100u), vreinterpretq_u32_s32(i), 0x04040404u));
  }
  static Batch<Arch> get(const float* table, uint8x16_t i) {
    const uint8x16x2_t t = {{vreinterpretq_u8_f32(vld1q_f32(table)),
                             vreinterpretq_u8_f32(vld1q_f32(table + 4))}};
    return Batch<Arch>(vreinterpretq_f32_u8(vqtbl2q_u8(t, i)));
  }
};

template <class Arch>
struct Lookup16<Arch, std::enable_if_t<std::is_base_of_v<xsimd::neon64, Arch>>> {
  static constexpr bool available = true;
  static uint8x16_t prepare(const xsimd::batch<std::int32_t, Arch>& i) {
    return Lookup8<Arch>::prepare(i);
  }
  static Batch<Arch> get(const float* table, uint8x16_t i) {
    const uint8x16x4_t t = {{vreinterpretq_u8_f32(vld1q_f32(table)),
                             vreinterpretq_u8_f32(vld1q_f32(table + 4)),
                             vreinterpretq_u8_f32(vld1q_f32(table + 8)),
                             vreinterpretq_u8_f32(vld1q_f32(table + 12))}};
    return Batch<Arch>(vreinterpretq_f32_u8(vqtbl4q_u8(t, i)));
  }
};
#endif

}  // namespace detail

// 1.5 * 2^23: adding it to a float of magnitude below 2^22 rounds that float
// to an integer k (to nearest even) and leaves k in the low mantissa bits.
inline constexpr float kRoundMagic = 12582912.0f;

// c(D) s^D + ... + c(1) s + c(0) by Horner's rule, c(k) a vector of
// coefficients (one table lookup per degree in erf and GELU).
template <class Arch, class C, int... K>
inline Batch<Arch> horner(const C& c, const Batch<Arch>& s, std::integer_sequence<int, K...>) {
  constexpr int degree = int(sizeof...(K));
  Batch<Arch> p = c(degree);
  ((p = fmadd<Arch>(p, s, c(degree - 1 - K))), ...);
  return p;
}
template <int Degree, class Arch, class C>
inline Batch<Arch> horner(const C& c, const Batch<Arch>& s) {
  return horner<Arch>(c, s, std::make_integer_sequence<int, Degree>{});
}

// erf(a) for a >= 0 (and +inf), see the top of the file.
template <class Arch>
inline Batch<Arch> erf_nonnegative(const Batch<Arch>& a) {
  using B = Batch<Arch>;
  using Lookup = detail::Lookup8<Arch>;
  static_assert(Lookup::available);
  const B magic(kRoundMagic);
  const B x = xsimd::min(a, B(4.0f));
  // Interval k = round(2x - 1/2) in [0, 7], so k/2 <= x (up to rounding);
  // on a boundary either neighbour's polynomial is accurate.
  const B t = fmadd<Arch>(xsimd::min(x, B(3.75f)), B(2.0f), B(-0.5f)) + magic;
  const B s = xsimd::fnma(t - magic, B(0.5f), x);  // x - k/2, exact
  const auto idx = Lookup::prepare(bits_of<Arch>(t) & IntBatch<Arch>(7));
  return horner<7, Arch>([&](int k) { return Lookup::get(detail::kErfTable[k], idx); }, s);
}

template <class Arch>
inline Batch<Arch> erf(const Batch<Arch>& x) {
  if constexpr (detail::Lookup8<Arch>::available) {
    return erf_nonnegative<Arch>(xsimd::abs(x)) ^ xsimd::bitofsign(x);
  } else {
    return xsimd::erf(x);
  }
}

// gelu(v) = 0.5 v (1 + erf(v / sqrt 2)). With a 16-entry lookup it is
// |v| Phi(|v| / sqrt 2) + min(v, 0), the same for either sign (erf is odd)
// with one rounding and no sign handling; with the 8-entry erf,
// 0.5 (v + |v| erf(|v| / sqrt 2)); otherwise in the Reference's order.
// Degree: of the 16-interval polynomial (kGeluDegree: float accuracy;
// kLowpGeluDegree: for an output rounded to bf16 or int8 next).
template <class Arch, int Degree = kGeluDegree>
inline Batch<Arch> gelu(const Batch<Arch>& v) {
  using B = Batch<Arch>;
  const B half(0.5f), rsqrt2(0.70710678118654752f);
  if constexpr (detail::Lookup16<Arch>::available) {
    using Lookup = detail::Lookup16<Arch>;
    // 1.5 * 2^21: adding it rounds to a multiple of 1/4 (nearest even) and
    // leaves 4 times that in the low mantissa bits.
    const B magic(kRoundMagic / 4);
    const B av = xsimd::abs(v);
    // Phi is 1.0f from 3.87 on; the clamp keeps the interval j = round(4x) <= 15.
    const B x = xsimd::min(av * rsqrt2, B(3.87f));
    const B t = x + magic;
    const B s = x - (t - magic);  // x - j/4, exact
    const auto idx = Lookup::prepare(bits_of<Arch>(t) & IntBatch<Arch>(15));
    const B p = horner<Degree, Arch>(
        [&](int k) { return Lookup::get(detail::GeluTable16<Degree>::c[k], idx); }, s);
    return fmadd<Arch>(av, p, xsimd::min(v, B(0.0f)));
  } else if constexpr (detail::Lookup8<Arch>::available) {
    const B av = xsimd::abs(v);
    return half * fmadd<Arch>(av, erf_nonnegative<Arch>(av * rsqrt2), v);
  } else {
    return (half * v) * (B(1.0f) + xsimd::erf(v * rsqrt2));
  }
}

// 2^k for t = k + kRoundMagic, |k| <= 127: k's bits moved into the exponent.
template <class Arch>
inline Batch<Arch> pow2_rounded(const Batch<Arch>& t) {
  return from_bits<Arch>((bits_of<Arch>(t) << 23) + IntBatch<Arch>(127 << 23));
}

// exp(x) for softmax arguments (x <= 0, correct up to x = 88.37), about
// 1.5 ulp; 0 below -87.34 (no subnormal results). Cody-Waite reduction
// x = k ln 2 + r, |r| <= ln(2)/2, xsimd's (Cephes') polynomial for e^r, and
// 2^k assembled in the exponent bits: xsimd::exp's method, written out so
// that the bits do not change with the xsimd version.
template <class Arch>
inline Batch<Arch> softmax_exp(const Batch<Arch>& v) {
  using B = Batch<Arch>;
  const B lo(-87.3365402f), magic(kRoundMagic);
  const B x = xsimd::min(xsimd::max(v, lo), B(88.3762589f));  // 2^k stays finite
  const B t = fmadd<Arch>(x, B(1.44269504088896341f), magic);  // k + magic
  const B k = t - magic;
  B r = xsimd::fnma(k, B(0.693359375f), x);
  r = xsimd::fnma(k, B(-2.12194440e-4f), r);
  B p = fmadd<Arch>(B(1.3997796e-03f), r, B(8.3955629e-03f));
  p = fmadd<Arch>(p, r, B(4.1665401e-02f));
  p = fmadd<Arch>(p, r, B(1.6666277e-01f));
  p = fmadd<Arch>(p, r, B(5.0000000e-01f));
  const B e = fmadd<Arch>(p, r * r, r) + B(1.0f);
  return xsimd::select(v < lo, B(0.0f), e * pow2_rounded<Arch>(t));
}

// 2^d for the softmax of the low precisions' attention, whose scores come
// pre-scaled by log2(e) (d <= 0 there): relative error 2.4e-7, a degree-5
// fit of 2^f on [-1/2, 1/2] (weighted towards minimax), far below the bf16
// rounding p then gets for its product. d below -126 gives 2^-126 p(f), so
// no subnormal and no overflow; NaN stays NaN.
template <class Arch>
inline Batch<Arch> softmax_exp2(const Batch<Arch>& d) {
  using B = Batch<Arch>;
  const B magic(kRoundMagic);
  const B x = xsimd::max(d, B(-126.0f));
  const B t = x + magic;  // k + magic, k = nearbyint(x)
  const B f = x - (t - magic);
  B p = fmadd<Arch>(B(1.32764666e-03f), f, B(9.67554189e-03f));
  p = fmadd<Arch>(p, f, B(5.55071346e-02f));
  p = fmadd<Arch>(p, f, B(2.40221202e-01f));
  p = fmadd<Arch>(p, f, B(6.93146944e-01f));
  p = fmadd<Arch>(p, f, B(1.00000012f));
  return p * pow2_rounded<Arch>(t);
}

// The first n (< lanes) floats at p; the other lanes hold `fill`.
template <class Arch>
inline Batch<Arch> load_partial(const float* p, int n, float fill = 0.0f) {
  alignas(64) float t[kLanes<Arch>];
  for (int i = 0; i < kLanes<Arch>; ++i) t[i] = i < n ? p[i] : fill;
  return Batch<Arch>::load_unaligned(t);
}

// Writes the first n (< lanes) lanes of v to p.
template <class Arch>
inline void store_partial(float* p, int n, const Batch<Arch>& v) {
  alignas(64) float t[kLanes<Arch>];
  v.store_unaligned(t);
  for (int i = 0; i < n; ++i) p[i] = t[i];
}

// Loads n floats, a full vector when n >= lanes.
template <class Arch>
inline Batch<Arch> load_n(const float* p, int n, float fill = 0.0f) {
  return n >= kLanes<Arch> ? load<Arch>(p) : load_partial<Arch>(p, n, fill);
}

template <class Arch>
inline void store_n(float* p, int n, const Batch<Arch>& v) {
  if (n >= kLanes<Arch>)
    store<Arch>(p, v);
  else
    store_partial<Arch>(p, n, v);
}

}  // namespace lemevit::backend::simd

LEMEVIT_SIMD_DIAGNOSTICS_END
