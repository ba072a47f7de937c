#pragma once
// Transposing copies for packing operands: dst[c * ldd + r] = src[r * lds + c].
// Whole 8x8 (AVX) or 4x4 (NEON) blocks go through registers, the rest
// element by element. Copies only: no arithmetic, so no effect on results.
#include <cstddef>

#if defined(__AVX__)
#include <immintrin.h>
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace lemevit::backend::simd {

#if defined(__AVX__)
inline constexpr int kTransposeBlock = 8;

inline void transpose_block(const float* src, std::ptrdiff_t lds, float* dst, std::ptrdiff_t ldd) {
  const __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + lds),
               r2 = _mm256_loadu_ps(src + 2 * lds), r3 = _mm256_loadu_ps(src + 3 * lds),
               r4 = _mm256_loadu_ps(src + 4 * lds), r5 = _mm256_loadu_ps(src + 5 * lds),
               r6 = _mm256_loadu_ps(src + 6 * lds), r7 = _mm256_loadu_ps(src + 7 * lds);
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1),
               t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3),
               t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
               t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)),
               u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2)),
               u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)),
               u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2)),
               u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0)),
               u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2)),
               u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0)),
               u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  _mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(dst + ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
}
#elif defined(__aarch64__)
inline constexpr int kTransposeBlock = 4;

inline void transpose_block(const float* src, std::ptrdiff_t lds, float* dst, std::ptrdiff_t ldd) {
  const float32x4_t a = vld1q_f32(src), b = vld1q_f32(src + lds), c = vld1q_f32(src + 2 * lds),
                    d = vld1q_f32(src + 3 * lds);
  const float32x4_t t0 = vtrn1q_f32(a, b), t1 = vtrn2q_f32(a, b), t2 = vtrn1q_f32(c, d),
                    t3 = vtrn2q_f32(c, d);
  vst1q_f32(dst, vcombine_f32(vget_low_f32(t0), vget_low_f32(t2)));
  vst1q_f32(dst + ldd, vcombine_f32(vget_low_f32(t1), vget_low_f32(t3)));
  vst1q_f32(dst + 2 * ldd, vcombine_f32(vget_high_f32(t0), vget_high_f32(t2)));
  vst1q_f32(dst + 3 * ldd, vcombine_f32(vget_high_f32(t1), vget_high_f32(t3)));
}
#else
inline constexpr int kTransposeBlock = 1;

inline void transpose_block(const float* src, std::ptrdiff_t, float* dst, std::ptrdiff_t) {
  *dst = *src;
}
#endif

// dst[c * ldd + r] = r < rows ? src[r * lds + c] : 0 for r < rows_padded, c < cols.
inline void transpose_into(const float* src, std::ptrdiff_t lds, int rows, int rows_padded,
                           int cols, float* dst, std::ptrdiff_t ldd) {
  constexpr int T = kTransposeBlock;
  const int rows_full = rows / T * T, cols_full = cols / T * T;
  for (int r = 0; r < rows_full; r += T)
    for (int c = 0; c < cols_full; c += T)
      transpose_block(src + r * lds + c, lds, dst + c * ldd + r, ldd);
  for (int r = 0; r < rows_padded; ++r) {
    const int c0 = r < rows_full ? cols_full : 0;
    for (int c = c0; c < cols; ++c) dst[c * ldd + r] = r < rows ? src[r * lds + c] : 0.0f;
  }
}

}  // namespace lemevit::backend::simd
