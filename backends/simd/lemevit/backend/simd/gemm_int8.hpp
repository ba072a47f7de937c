#pragma once
// int8 micro-kernels (number format and layout: gemm_lowp.hpp), by tile and
// instruction set; all give bitwise the same results (the sums are exact):
//   Int8Vnni512_12x32  AVX512_VNNI: VPDPBUSD (uint8 x int8, four products per
//                      int32 lane), 12 rows x 2 vectors of int32 accumulators
//   Int8AvxVnni_6x32   AVX-VNNI (the VEX VPDPBUSD of AVX2-only CPUs: Alder Lake
//                      and later, Zen 5 client): 6 rows x 4 vectors of 8 lanes,
//                      summed in two halves of 16 columns (16 registers)
//   Int8Avx2Maddubs_4x32  AVX2 without VNNI: VPMADDUBSW + VPMADDWD, exact
//                      through a sign trick (see there), 4 rows x 4 vectors
//   Int8NeonMmla_4x32  ARMv8.6 / FEAT_I8MM (USMMLA, e.g. Neoverse V1/V2/N2,
//                      Graviton 3/4, Cortex-X2/A710 and later): uint8 x int8,
//                      2 x 8 by 8 x 2 per instruction, twice SDOT's products
//   Int8NeonDot_4x32   ARMv8.2+ dot product (SDOT, e.g. Cortex-A76/A78, the
//                      Raspberry Pi 5): signed x signed, so activations are
//                      stored as q_x - 128 and 128 sum_k q_w is added back, exactly
//   Int8Generic_4x32   any CPU: scalar loops
#include <cstdint>
#include <cstring>

#include "lemevit/backend/simd/gemm_lowp.hpp"

LEMEVIT_SIMD_DIAGNOSTICS_BEGIN

namespace lemevit::backend::simd {

template <class Arch>
struct Int8Generic_4x32 {
  using Weights = PackedInt8Linear<4>;
  using Elem = std::uint8_t;
  static constexpr int rows = 4;
  static constexpr const char* path = "fallback";
  static constexpr const char* feature = nullptr;  // the CPU feature it needs
  using RowParams = RowQuant;

  static RowQuant row_params(const float* x, int n) { return row_quant_from_tail(x, 0, n, 0.0f, 0.0f); }

  static void convert(const float* x, int n, const RowQuant& q, Elem* dst) {
    int i = 0;
    for (; i < n; ++i) dst[i] = quantise(x[i], q);
    for (; i % 4; ++i) dst[i] = 0;
  }

  template <int M>
  struct Acc {
    std::int32_t v[M][kLowpCols];
  };
  template <int M>
  static void zero(Acc<M>& acc) {
    std::memset(acc.v, 0, sizeof acc.v);
  }

  template <int M>
  static void accumulate(Acc<M>& acc, const Elem* a, int lda, int groups, const std::int8_t* b) {
    for (int g = 0; g < groups; ++g, b += 4 * kLowpCols)
      for (int r = 0; r < M; ++r) {
        const std::uint8_t* x = a + std::ptrdiff_t(r) * lda + 4 * g;
        const std::int32_t x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3];
        for (int c = 0; c < kLowpCols; ++c)
          acc.v[r][c] += x0 * b[4 * c] + x1 * b[4 * c + 1] + x2 * b[4 * c + 2] + x3 * b[4 * c + 3];
      }
  }

  template <int M, class Epi>
  static void finish(const Acc<M>& acc, const RowQuant* q, const Weights& w, int panel, const Epi& epi) {
    constexpr int L = kLanes<Arch>;
    const std::int32_t* sums = w.column_sum.data() + std::ptrdiff_t(panel) * kLowpCols;
    const float* scales = w.scale.data() + std::ptrdiff_t(panel) * kLowpCols;
    for (int r = 0; r < M; ++r) {
      alignas(64) float y[kLowpCols];
      for (int c = 0; c < kLowpCols; ++c)
        y[c] = float(acc.v[r][c] - q[r].zero * sums[c]) * (q[r].scale * scales[c]);
      for (int v = 0; v < kLowpCols / L; ++v) epi(r, v, load<Arch>(y + v * L));
    }
  }
};

#if defined(__AVX512VNNI__)
template <class Arch>
struct Int8Vnni512_12x32 {
  static_assert(kLanes<Arch> == 16, "an AVX-512 kernel");
  using Weights = PackedInt8Linear<4>;
  using Elem = std::uint8_t;
  static constexpr int rows = 12;
  static constexpr const char* path = "avx512_vnni";
  static constexpr const char* feature = "avx512_vnni";
  using RowParams = RowQuant;

  static __mmask16 head(int left) { return left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1); }

  // Two pairs of accumulators halve the min/max dependency chains; masked-off
  // lanes load as 0, inside the range already.
  static RowQuant row_params(const float* x, int n) {
    __m512 lo = _mm512_setzero_ps(), hi = lo, lo1 = lo, hi1 = lo;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
      const __m512 v = _mm512_loadu_ps(x + i), v1 = _mm512_loadu_ps(x + i + 16);
      lo = _mm512_min_ps(v, lo);  // a NaN in v yields the second operand
      hi = _mm512_max_ps(v, hi);
      lo1 = _mm512_min_ps(v1, lo1);
      hi1 = _mm512_max_ps(v1, hi1);
    }
    for (; i < n; i += 16) {
      const __m512 v = _mm512_maskz_loadu_ps(head(n - i), x + i);
      lo = _mm512_min_ps(v, lo);
      hi = _mm512_max_ps(v, hi);
    }
    return row_quant_from_range(_mm512_reduce_min_ps(_mm512_min_ps(lo1, lo)),
                                _mm512_reduce_max_ps(_mm512_max_ps(hi1, hi)));
  }

  // 64 values at a time through two saturating packs and a lane shuffle
  // (cheaper than VPMOVDB, slow to memory on AMD), then 16 with masks.
  static void convert(const float* x, int n, const RowQuant& q, Elem* dst) {
    const __m512 inv = _mm512_set1_ps(q.inv), zero = _mm512_set1_ps(float(q.zero));
    const __m512 floor = _mm512_setzero_ps(), ceil = _mm512_set1_ps(255.0f);
    auto sixteen = [&](__m512 v) {
      const __m512 t = _mm512_add_ps(_mm512_roundscale_ps(_mm512_mul_ps(v, inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), zero);
      return _mm512_min_ps(_mm512_max_ps(t, floor), ceil);  // max_ps(NaN, 0) = 0
    };
    int i = 0;
    if (n >= 64) {
      // packus interleaves 128-bit lanes: dword j of the result holds values 4j..4j+3 of lane order[j].
      const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
      // The same numbers in fewer steps: the packs saturate to [0, 255], so
      // only +Inf needs the clamp (at 256) before the integer conversion
      // rounds to nearest; NaN (min_ps returns its second operand) and values
      // below INT_MIN convert to INT_MIN, which saturates to 0 like the
      // clamps above.
      const __m512 top = _mm512_set1_ps(256.0f);
      const __m512i zi = _mm512_set1_epi32(q.zero);
      auto quad = [&](int k) {
        const __m512 t = _mm512_min_ps(top, _mm512_mul_ps(_mm512_loadu_ps(x + i + 16 * k), inv));
        return _mm512_add_epi32(_mm512_cvt_roundps_epi32(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), zi);
      };
      for (; i + 64 <= n; i += 64) {
        const __m512i ab = _mm512_packus_epi32(quad(0), quad(1)), cd = _mm512_packus_epi32(quad(2), quad(3));
        _mm512_storeu_si512(dst + i, _mm512_permutexvar_epi32(order, _mm512_packus_epi16(ab, cd)));
      }
    }
    const int padded = (n + 3) & ~3;
    for (; i < padded; i += 16) {
      const __m512 t = sixteen(_mm512_maskz_loadu_ps(head(n - i), x + i));
      // Padding lanes (n <= lane < padded) must be 0, not the zero point.
      _mm512_mask_cvtepi32_storeu_epi8(dst + i, head(padded - i), _mm512_maskz_cvtps_epi32(head(n - i), t));
    }
  }

  // Typed as VPDPBUSD's own int32 lanes (__m512i is 64-bit lanes): with
  // every access of one type GCC keeps a tile's accumulators in registers
  // where accumulate and finish are inlined together (lowp_tile).
  template <int M>
  struct Acc {
    __v16si v[M][2];
  };
  template <int M>
  static void zero(Acc<M>& acc) {
    static_for<M>([&](auto r) { acc.v[r][0] = acc.v[r][1] = __v16si{}; });
  }

  // The sums run in locals (see Bf16Avx512_12x32::accumulate).
  template <int M>
  static void accumulate(Acc<M>& acc, const Elem* a, int lda, int groups, const std::int8_t* b) {
    __v16si v[M][2];
    static_for<M>([&](auto r) { v[r][0] = acc.v[r][0], v[r][1] = acc.v[r][1]; });
    for (int g = 0; g < groups; ++g, b += 4 * kLowpCols) {
      const __m512i b0 = _mm512_loadu_si512(b), b1 = _mm512_loadu_si512(b + 64);
      static_for<M>([&](auto r) {
        std::int32_t quad;
        std::memcpy(&quad, a + std::ptrdiff_t(r) * lda + 4 * g, sizeof quad);
        const __m512i x = _mm512_set1_epi32(quad);
        v[r][0] = __v16si(_mm512_dpbusd_epi32(__m512i(v[r][0]), x, b0));
        v[r][1] = __v16si(_mm512_dpbusd_epi32(__m512i(v[r][1]), x, b1));
      });
    }
    static_for<M>([&](auto r) { acc.v[r][0] = v[r][0], acc.v[r][1] = v[r][1]; });
  }

  template <int M, class Epi>
  static void finish(const Acc<M>& acc, const RowQuant* q, const Weights& w, int panel, const Epi& epi) {
    const std::int32_t* sums = w.column_sum.data() + std::ptrdiff_t(panel) * kLowpCols;
    const float* scales = w.scale.data() + std::ptrdiff_t(panel) * kLowpCols;
    static_for<M>([&](auto r) {
      const __m512i z = _mm512_set1_epi32(q[r].zero);
      const __m512 s = _mm512_set1_ps(q[r].scale);
      static_for<2>([&](auto v) {
        const __m512i corrected = _mm512_sub_epi32(__m512i(acc.v[r][v]), _mm512_mullo_epi32(z, _mm512_loadu_si512(sums + 16 * v)));
        // An explicitly rounded product: GCC would otherwise contract it with
        // the epilogue's bias addition into an FMA, differently per tile height.
        const __m512 y = _mm512_mul_round_ps(_mm512_cvtepi32_ps(corrected), _mm512_mul_ps(s, _mm512_loadu_ps(scales + 16 * v)),
                                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        epi(int(r), int(v), Batch<Arch>(y));
      });
    });
  }
};
#endif

#if defined(__AVX2__)
// What the 256-bit kernels share: the rows' quantisation, stored as
// q_x - Offset (Elem: uint8 for Offset 0, int8 for 128), in k-groups of 4;
// the tile's loop around D's dot product (D: the kernel, see accumulate);
// and the epilogue, which takes the offset back out exactly:
// acc - (z - Offset) sum_k q_w = sum_k (q_x - z) q_w.
template <class Arch, class E, int Offset, class D>
struct Int8Avx2Common {
  static_assert(kLanes<Arch> == 8, "an AVX2 kernel");
  using Weights = PackedInt8Linear<4>;
  using Elem = E;
  using RowParams = RowQuant;

  // MINPS/MAXPS return their second operand for a NaN: the accumulator.
  static RowQuant row_params(const float* x, int n) {
    __m256 lo = _mm256_setzero_ps(), hi = lo;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
      const __m256 v = _mm256_loadu_ps(x + i);
      lo = _mm256_min_ps(v, lo);
      hi = _mm256_max_ps(v, hi);
    }
    alignas(32) float l[8], h[8];
    _mm256_store_ps(l, lo);
    _mm256_store_ps(h, hi);
    float mn = 0.0f, mx = 0.0f;
    for (int j = 0; j < 8; ++j) mn = std::min(mn, l[j]), mx = std::max(mx, h[j]);
    return row_quant_from_tail(x, i, n, mn, mx);
  }

  // quantise(), 32 values at a time (two saturating packs and a lane shuffle),
  // then 8; q - 128 is q with its top bit flipped.
  static void convert(const float* x, int n, const RowQuant& q, Elem* dst) {
    const __m256 inv = _mm256_set1_ps(q.inv), zero = _mm256_set1_ps(float(q.zero));
    const __m256 floor = _mm256_setzero_ps(), ceil = _mm256_set1_ps(255.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m256i flip = _mm256_set1_epi8(Offset ? char(0x80) : 0);
    auto eight = [&](const float* p) {
      __m256 t = _mm256_add_ps(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(p), inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), zero);
      t = _mm256_min_ps(_mm256_max_ps(t, floor), ceil);  // max_ps(NaN, 0) = 0
      return _mm256_cvtps_epi32(t);
    };
    int i = 0;
    for (; i + 32 <= n; i += 32) {
      const __m256i ab = _mm256_packus_epi32(eight(x + i), eight(x + i + 8));
      const __m256i cd = _mm256_packus_epi32(eight(x + i + 16), eight(x + i + 24));
      __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), order);
      if constexpr (Offset != 0) bytes = _mm256_xor_si256(bytes, flip);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), bytes);
    }
    for (; i + 8 <= n; i += 8) {
      const __m256i t = eight(x + i);
      const __m128i words = _mm_packus_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(dst + i),
                       _mm_xor_si128(_mm_packus_epi16(words, words), _mm256_castsi256_si128(flip)));
    }
    for (; i < n; ++i) dst[i] = Elem(int(quantise(x[i], q)) - Offset);
    for (; i % Weights::group; ++i) dst[i] = 0;
  }

  template <int M>
  struct Acc {
    __m256i v[M][4];
  };
  template <int M>
  static void zero(Acc<M>& acc) {
    static_for<M>([&](auto r) { static_for<4>([&](auto j) { acc.v[r][j] = _mm256_setzero_si256(); }); });
  }

  template <int M, class Epi>
  static void finish(const Acc<M>& acc, const RowQuant* q, const Weights& w, int panel, const Epi& epi) {
    const std::int32_t* sums = w.column_sum.data() + std::ptrdiff_t(panel) * kLowpCols;
    const float* scales = w.scale.data() + std::ptrdiff_t(panel) * kLowpCols;
    static_for<M>([&](auto r) {
      const __m256i z = _mm256_set1_epi32(q[r].zero - Offset);
      const __m256 s = _mm256_set1_ps(q[r].scale);
      static_for<4>([&](auto v) {
        const __m256i sum = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sums + 8 * v));
        const __m256i corrected = _mm256_sub_epi32(acc.v[r][v], _mm256_mullo_epi32(z, sum));
        __m256 y = _mm256_mul_ps(_mm256_cvtepi32_ps(corrected), _mm256_mul_ps(s, _mm256_loadu_ps(scales + 8 * v)));
        // Kept a separate rounding: GCC would otherwise contract it with the
        // epilogue's bias addition into an FMA, unlike the generic kernel.
        __asm__("" : "+x"(y));
        epi(int(r), int(v), Batch<Arch>(y));
      });
    });
  }

  // The tile's loop, in two halves of 16 columns (AVX2 has 16 vector
  // registers): D::prepare(x) once per row and k-group (x: the group's four
  // values in every lane), D::dot(acc, prepared, w) per panel vector. The
  // sums run in locals (see Bf16Avx512_12x32::accumulate).
  template <int M>
  static void accumulate(Acc<M>& acc, const Elem* a, int lda, int groups, const std::int8_t* b) {
    for (int half = 0; half < 2; ++half) {
      __m256i v[M][2];
      static_for<M>([&](auto r) { v[r][0] = acc.v[r][2 * half], v[r][1] = acc.v[r][2 * half + 1]; });
      const std::int8_t* bh = b + half * 64;
      for (int g = 0; g < groups; ++g, bh += 4 * kLowpCols) {
        const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bh));
        const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bh + 32));
        static_for<M>([&](auto r) {
          std::int32_t quad;
          std::memcpy(&quad, a + std::ptrdiff_t(r) * lda + 4 * g, sizeof quad);
          const auto x = D::prepare(_mm256_set1_epi32(quad));
          v[r][0] = D::dot(v[r][0], x, b0);
          v[r][1] = D::dot(v[r][1], x, b1);
        });
      }
      static_for<M>([&](auto r) { acc.v[r][2 * half] = v[r][0], acc.v[r][2 * half + 1] = v[r][1]; });
    }
  }
};
#endif

#if defined(__AVXVNNI__)
template <class Arch>
struct Int8AvxVnni_6x32 : Int8Avx2Common<Arch, std::uint8_t, 0, Int8AvxVnni_6x32<Arch>> {
  static constexpr int rows = 6;
  static constexpr const char* path = "avx_vnni";
  static constexpr const char* feature = "avx_vnni";

  static __m256i prepare(__m256i x) { return x; }
  static __m256i dot(__m256i acc, __m256i x, __m256i w) { return _mm256_dpbusd_avx_epi32(acc, x, w); }
};
#endif

#if defined(__AVX2__)
// AVX2 without VNNI (Haswell to Comet Lake, Zen 1-3): VPMADDUBSW multiplies
// uint8 by int8 and sums each pair in int16, saturating; VPMADDWD by ones
// widens the pairs to int32. Exact: the rows hold x = q_x - 128, VPMADDUBSW
// takes |x| <= 128 as its unsigned operand and q_w with x's sign (VPSIGNB,
// |q_w| <= 127) as its signed one, so a pair sums to at most 2 * 128 * 127 =
// 32512 < 2^15. (ONNX Runtime's AVX2 kernel feeds it q_x and q_w as they are,
// which can saturate.) 4 rows: 8 accumulators, the panel vectors, x, |x| and
// the ones stay in the 16 registers.
template <class Arch>
struct Int8Avx2Maddubs_4x32 : Int8Avx2Common<Arch, std::int8_t, 128, Int8Avx2Maddubs_4x32<Arch>> {
  static constexpr int rows = 4;
  static constexpr const char* path = "avx2_maddubs";
  static constexpr const char* feature = nullptr;  // AVX2 itself

  struct Signed {
    __m256i x, magnitude;
  };
  static Signed prepare(__m256i x) { return {x, _mm256_abs_epi8(x)}; }
  static __m256i dot(__m256i acc, const Signed& x, __m256i w) {
    const __m256i pairs = _mm256_maddubs_epi16(x.magnitude, _mm256_sign_epi8(w, x.x));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  }
};
#endif

#if defined(__aarch64__) && defined(__ARM_FEATURE_DOTPROD)
// SDOT, one lane-indexed k-quad of x per instruction: signed x signed, so
// the rows hold q_x - 128.
struct Int8NeonDot {
  static constexpr int group = 4, offset = 128;
  static constexpr const char* path = "neon_dotprod";
  static constexpr const char* feature = "asimddp";
  using Elem = std::int8_t;
  using Acc = int32x4_t;
  using Vec = int8x16_t;
  static Vec load(const std::int8_t* p) { return vld1q_s8(p); }
  template <int L>
  static Acc dot(Acc acc, Vec w, Vec x) { return vdotq_laneq_s32(acc, w, x, L); }
};
#endif

#if defined(__aarch64__) && defined(__ARM_FEATURE_MATMUL_INT8)
// USMMLA: unsigned rows (q_x as it is) by signed columns.
struct Int8NeonMmla {
  static constexpr int group = 8, offset = 0;
  static constexpr const char* path = "neon_i8mm";
  static constexpr const char* feature = "i8mm";
  using Elem = std::uint8_t;
  using Acc = int32x4_t;
  using Rows = uint8x16_t;
  using Cols = int8x16_t;
  static Rows rows(const std::uint8_t* r0, const std::uint8_t* r1) {
    return vcombine_u8(vld1_u8(r0), r1 ? vld1_u8(r1) : vdup_n_u8(0));
  }
  static Cols cols(const std::int8_t* p) { return vld1q_s8(p); }
  static Acc mmla(Acc acc, Rows x, Cols w) { return vusmmlaq_s32(acc, x, w); }
};
#endif

#if defined(__aarch64__) && (defined(__ARM_FEATURE_DOTPROD) || defined(__ARM_FEATURE_MATMUL_INT8))
// A NEON int8 kernel on `Tile` (NeonLaneDotTile or NeonMmlaTile of the
// above): Int8Generic_4x32's quantisation, vectorised, rows stored as
// q_x - Ops::offset.
template <class Arch, class Tile>
struct Int8Neon_4x32 : Tile {
  static_assert(kLanes<Arch> == 4, "a NEON kernel");
  using Ops = typename Tile::Ops;
  using Weights = PackedInt8Linear<Ops::group>;
  using Elem = typename Ops::Elem;
  static constexpr const char* path = Ops::path;
  static constexpr const char* feature = Ops::feature;
  using RowParams = RowQuant;

  // min/max NaN-skipping like the generic loop: FMINNM/FMAXNM return the number.
  static RowQuant row_params(const float* x, int n) {
    float32x4_t lo = vdupq_n_f32(0.0f), hi = lo;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
      const float32x4_t v = vld1q_f32(x + i);
      lo = vminnmq_f32(lo, v);
      hi = vmaxnmq_f32(hi, v);
    }
    return row_quant_from_tail(x, i, n, vminnmvq_f32(lo), vmaxnmvq_f32(hi));
  }

  // quantise() minus the offset; the padding up to the group is 0 (its weights are 0).
  static void convert(const float* x, int n, const RowQuant& q, Elem* dst) {
    const float32x4_t inv = vdupq_n_f32(q.inv), zero = vdupq_n_f32(float(q.zero));
    const float32x4_t floor = vdupq_n_f32(0.0f), ceil = vdupq_n_f32(255.0f);
    const int32x4_t offset = vdupq_n_s32(Ops::offset);
    auto four = [&](const float* p) {
      float32x4_t t = vaddq_f32(vrndnq_f32(vmulq_f32(vld1q_f32(p), inv)), zero);
      t = vminnmq_f32(vmaxnmq_f32(t, floor), ceil);  // NaN -> 0
      return vmovn_u32(vreinterpretq_u32_s32(vsubq_s32(vcvtq_s32_f32(t), offset)));
    };
    int i = 0;
    for (; i + 16 <= n; i += 16) {
      const uint16x8_t lo = vcombine_u16(four(x + i), four(x + i + 4));
      const uint16x8_t hi = vcombine_u16(four(x + i + 8), four(x + i + 12));
      vst1q_u8(reinterpret_cast<std::uint8_t*>(dst + i), vcombine_u8(vmovn_u16(lo), vmovn_u16(hi)));
    }
    for (; i < n; ++i) dst[i] = Elem(int(quantise(x[i], q)) - Ops::offset);
    for (; i % Weights::group; ++i) dst[i] = 0;
  }

  template <int M, class Epi>
  static void finish(const typename Tile::template Acc<M>& acc, const RowQuant* q, const Weights& w, int panel,
                     const Epi& epi) {
    const std::int32_t* sums = w.column_sum.data() + std::ptrdiff_t(panel) * kLowpCols;
    const float* scales = w.scale.data() + std::ptrdiff_t(panel) * kLowpCols;
    static_for<M>([&](auto r) {
      static_for<8>([&](auto j) {
        // acc - offset sum + (offset - z) sum = the generic kernel's acc - z sum, exactly.
        const int32x4_t corrected = vmlaq_n_s32(Tile::row_sums(acc, r, j), vld1q_s32(sums + 4 * j), Ops::offset - q[r].zero);
        float32x4_t y = vmulq_f32(vcvtq_f32_s32(corrected), vmulq_n_f32(vld1q_f32(scales + 4 * j), q[r].scale));
        // Kept a separate rounding: GCC would otherwise contract it with the
        // epilogue's bias addition into an FMA, unlike the generic kernel.
        __asm__("" : "+w"(y));
        epi(int(r), int(j), Batch<Arch>(y));
      });
    });
  }
};
#endif
#if defined(__aarch64__) && defined(__ARM_FEATURE_DOTPROD)
template <class Arch>
using Int8NeonDot_4x32 = Int8Neon_4x32<Arch, NeonLaneDotTile<Int8NeonDot>>;
#endif
#if defined(__aarch64__) && defined(__ARM_FEATURE_MATMUL_INT8)
template <class Arch>
using Int8NeonMmla_4x32 = Int8Neon_4x32<Arch, NeonMmlaTile<Int8NeonMmla>>;
#endif

}  // namespace lemevit::backend::simd

LEMEVIT_SIMD_DIAGNOSTICS_END
