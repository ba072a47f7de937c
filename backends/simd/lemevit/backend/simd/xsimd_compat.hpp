#pragma once
// Version shims for xsimd. Debian ships xsimd 8.1.0, whose API predates the
// current documentation; everything the SIMD backend needs from xsimd that
// differs between versions goes through this header and nowhere else.
//
//   reduce_add  8.x: xsimd::hadd          >= 9: xsimd::reduce_add
//               (8.1's avx512f hadd uses an AVX512DQ instruction: avx512 goes
//               to _mm512_reduce_add_ps)
//   reduce_max  8.x: (absent)             >= 9: xsimd::reduce_max
//   fmadd       8.1 has no fused multiply-add for avx512f (it falls back to
//               x * y + z, which the compiler may or may not contract); the
//               kernels need one rounding per step on every instruction set,
//               so avx512 and NEON go to the intrinsic directly.
//   bits_of / from_bits
//               8.x: bitwise_cast<batch<U, A>>(x)   >= 9: bitwise_cast<U>(x)
#include <xsimd/xsimd.hpp>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#if defined(__ARM_NEON) || defined(__aarch64__)
#include <arm_neon.h>
#endif

// GCC 12 reports -Wmaybe-uninitialized inside its own AVX-512 intrinsic
// headers (the `__m512 __Y = __Y;` of _mm512_undefined_ps, used by most
// masked-form intrinsics) wherever they are inlined into OpenMP-outlined
// functions; a false positive, gone in GCC 13. The backend's headers wrap
// their code in these two macros so that users' -Wall builds stay clean.
#if defined(__GNUC__) && !defined(__clang__)
#define LEMEVIT_SIMD_DIAGNOSTICS_BEGIN \
  _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"")
#define LEMEVIT_SIMD_DIAGNOSTICS_END _Pragma("GCC diagnostic pop")
#else
#define LEMEVIT_SIMD_DIAGNOSTICS_BEGIN
#define LEMEVIT_SIMD_DIAGNOSTICS_END
#endif

namespace lemevit::backend::simd {

template <class Arch>
using Batch = xsimd::batch<float, Arch>;

template <class Arch>
inline constexpr int kLanes = int(Batch<Arch>::size);

template <class Arch>
inline Batch<Arch> load(const float* p) {
  return Batch<Arch>::load_unaligned(p);
}

template <class Arch>
inline void store(float* p, const Batch<Arch>& v) {
  v.store_unaligned(p);
}

// a * b + c with a single rounding.
template <class Arch>
inline Batch<Arch> fmadd(const Batch<Arch>& a, const Batch<Arch>& b, const Batch<Arch>& c) {
#if defined(__AVX512F__)
  if constexpr (std::is_base_of_v<xsimd::avx512f, Arch>) {
    return Batch<Arch>(_mm512_fmadd_ps(a, b, c));
  } else
#endif
#if defined(__aarch64__)
  if constexpr (std::is_base_of_v<xsimd::neon, Arch>) {
    return Batch<Arch>(vfmaq_f32(c, a, b));
  } else
#endif
  {
    return xsimd::fma(a, b, c);
  }
}

template <class Arch>
using IntBatch = xsimd::batch<std::int32_t, Arch>;

// Reinterpretation of float lanes as int32 and back.
template <class Arch>
inline IntBatch<Arch> bits_of(const Batch<Arch>& v) {
#if XSIMD_VERSION_MAJOR >= 9
  return xsimd::bitwise_cast<std::int32_t>(v);
#else
  return xsimd::bitwise_cast<IntBatch<Arch>>(v);
#endif
}

template <class Arch>
inline Batch<Arch> from_bits(const IntBatch<Arch>& v) {
#if XSIMD_VERSION_MAJOR >= 9
  return xsimd::bitwise_cast<float>(v);
#else
  return xsimd::bitwise_cast<Batch<Arch>>(v);
#endif
}

template <class Arch>
inline float reduce_add(const Batch<Arch>& v) {
#if defined(__AVX512F__)
  // xsimd 8.1's avx512f hadd needs AVX512DQ.
  if constexpr (std::is_base_of_v<xsimd::avx512f, Arch>) return _mm512_reduce_add_ps(v);
#endif
#if XSIMD_VERSION_MAJOR >= 9
  return xsimd::reduce_add(v);
#else
  return xsimd::hadd(v);
#endif
}

// Maximum of the lanes. The result is exact whatever the order.
template <class Arch>
inline float reduce_max(const Batch<Arch>& v) {
#if XSIMD_VERSION_MAJOR >= 9
  return xsimd::reduce_max(v);
#else
  alignas(64) float t[kLanes<Arch>];
  v.store_unaligned(t);
  float m = t[0];
  for (int i = 1; i < kLanes<Arch>; ++i) m = t[i] > m ? t[i] : m;
  return m;
#endif
}

}  // namespace lemevit::backend::simd
