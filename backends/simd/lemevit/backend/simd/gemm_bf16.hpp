#pragma once
// bf16 micro-kernels (number format and layout: gemm_lowp.hpp), by tile and
// instruction set:
//   Bf16Avx512_12x32  AVX512_BF16: VDPBF16PS, 12 rows x 2 vectors of fp32 accumulators
//   Bf16NeonBfmmla_4x32  ARMv8.6 / FEAT_BF16 (BFMMLA, e.g. Neoverse V1/V2/N2,
//                     Graviton 3/4): 2 x 4 by 4 x 2 per instruction, twice
//                     BFDOT's products; it sums as two BFDOTs do, in k order
//   Bf16NeonBfdot_4x32  FEAT_BF16's BFDOT, lane-indexed. BFDOT rounds the sum of
//                     its two products itself (round to odd), so these two
//                     kernels differ from the others in the last bits
//   Bf16Widen         CPUs with FMA but no bf16 dot product (AVX2, AVX-512
//                     without AVX512_BF16, ARMv8.0-8.5 NEON): each k-pair of a
//                     panel widened to two fp32 vectors by a shift and a mask,
//                     then two FMAs per accumulator in VDPBF16PS's order; a
//                     bf16 product is exact in fp32, so an FMA rounds as the
//                     generic kernel's add does (the same sums, overflowing and
//                     subnormal products aside). As fast as fp32 at best, with
//                     half its weight bytes: 4x32 on AVX2 and NEON, 6x32 on AVX-512
//   Bf16Generic_4x32  any CPU: scalar loops giving the same sums as VDPBF16PS
//                     (denormals aside: VDPBF16PS flushes them to zero)
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "lemevit/backend/simd/gemm_lowp.hpp"

LEMEVIT_SIMD_DIAGNOSTICS_BEGIN

namespace lemevit::backend::simd {

template <class Arch>
struct Bf16Generic_4x32 {
  using Weights = PackedBf16Linear<2>;
  using Elem = std::uint16_t;
  static constexpr int rows = 4;
  static constexpr const char* path = "fallback";
  static constexpr const char* feature = nullptr;  // the CPU feature it needs
  struct RowParams {};
  static RowParams row_params(const float*, int) { return {}; }

  static void convert(const float* x, int n, const RowParams&, Elem* dst) {
    for (int i = 0; i < n; ++i) dst[i] = to_bf16(x[i]);
    if (n % 2) dst[n] = 0;
  }

  template <int M>
  struct Acc {
    float v[M][kLowpCols];
  };
  template <int M>
  static void zero(Acc<M>& acc) {
    std::memset(acc.v, 0, sizeof acc.v);
  }

  template <int M>
  static void accumulate(Acc<M>& acc, const Elem* a, int lda, int groups, const std::uint16_t* b) {
    for (int g = 0; g < groups; ++g, b += 2 * kLowpCols) {
      for (int r = 0; r < M; ++r) {
        const float x0 = from_bf16(a[std::ptrdiff_t(r) * lda + 2 * g]);
        const float x1 = from_bf16(a[std::ptrdiff_t(r) * lda + 2 * g + 1]);
        for (int c = 0; c < kLowpCols; ++c)
          acc.v[r][c] = (acc.v[r][c] + x1 * from_bf16(b[2 * c + 1])) + x0 * from_bf16(b[2 * c]);
      }
    }
  }

  template <int M, class Epi>
  static void finish(const Acc<M>& acc, const RowParams*, const Weights&, int, const Epi& epi) {
    constexpr int L = kLanes<Arch>;
    for (int r = 0; r < M; ++r)
      for (int v = 0; v < kLowpCols / L; ++v) epi(r, v, load<Arch>(&acc.v[r][v * L]));
  }
};

// Where Bf16Widen applies: instruction sets with FMA and 16+ vector registers.
template <class Arch>
inline constexpr bool kBf16Widens = std::is_base_of_v<xsimd::fma3<xsimd::avx2>, Arch> ||
                                    std::is_base_of_v<xsimd::avx512f, Arch> ||
                                    std::is_base_of_v<xsimd::neon64, Arch>;

template <class Arch>
struct Bf16Widen {
  static_assert(kBf16Widens<Arch>, "an instruction set with FMA");
  using B = Batch<Arch>;
  using I = IntBatch<Arch>;
  using Weights = PackedBf16Linear<2>;
  // x is kept as bf16-rounded floats, which the tile broadcasts directly.
  using Elem = float;
  static constexpr int L = kLanes<Arch>;
  static constexpr int NV = kLowpCols / L;  // accumulator vectors per row
  // A row's 32 columns are summed in parts of HV vectors, so that the
  // accumulators, the widened panel vectors (2 HV) and x's pair fit the
  // register file: AVX2 4 x 2 (14 of 16 registers), NEON 4 x 4 (26 of 32),
  // AVX-512 6 x 2 (18 of 32). Each accumulator takes two dependent FMAs per
  // k-pair: 8 accumulators just cover the FMA latency on two ports, 12 do
  // with room. AVX-512 stops at 6 rows: each row count is another
  // instantiation per epilogue, and 12 rows took kernels_test 23 s longer to
  // compile (232 against 209 s), for a path only AVX-512 CPUs without
  // AVX512_BF16 run.
  static constexpr int HV = L == 16 ? 2 : 16 / L;
  static constexpr int rows = L == 16 ? 6 : 4;
  static constexpr const char* path = L == 16 ? "avx512_widen" : L == 8 ? "avx2_widen" : "neon_widen";
  static constexpr const char* feature = nullptr;  // the instruction set's own
  struct RowParams {};
  static RowParams row_params(const float*, int) { return {}; }

  // dst[i] = x[i] rounded to bf16 (to_bf16: nearest even, NaN kept quiet), as a float.
  static void convert(const float* x, int n, const RowParams&, Elem* dst) {
    int i = 0;
    for (; i + L <= n; i += L) store<Arch>(dst + i, round_to_bf16<Arch>(load<Arch>(x + i)));
    for (; i < n; ++i) dst[i] = from_bf16(to_bf16(x[i]));
    if (n % 2) dst[n] = 0.0f;
  }

  template <int M>
  struct Acc {
    B v[M][NV];
  };
  template <int M>
  static void zero(Acc<M>& acc) {
    static_for<M>([&](auto r) { static_for<NV>([&](auto j) { acc.v[r][j] = B(0.0f); }); });
  }

  // Per k-pair g, a 32-bit lane of the panel holds a column's (w[2g], w[2g+1])
  // with w[2g] in its low half: w[2g] = lane << 16, w[2g+1] = lane & mask.
  // The sums run in locals (see Bf16Avx512_12x32::accumulate).
  template <int M>
  static void accumulate(Acc<M>& acc, const Elem* a, int lda, int groups, const std::uint16_t* b) {
    const I mask(std::int32_t(0xffff0000u));
    static_for<NV / HV>([&](auto part) {
      B v[M][HV];
      static_for<M>([&](auto r) { static_for<HV>([&](auto j) { v[r][j] = acc.v[r][part * HV + j]; }); });
      const std::uint16_t* bp = b + part * HV * L * 2;
      for (int g = 0; g < groups; ++g, bp += 2 * kLowpCols) {
        B w0[HV], w1[HV];
        static_for<HV>([&](auto j) {
          const I u = I::load_unaligned(reinterpret_cast<const std::int32_t*>(bp + j * L * 2));
          w0[j] = from_bits<Arch>(u << 16);
          w1[j] = from_bits<Arch>(u & mask);
        });
        static_for<M>([&](auto r) {
          const float* ar = a + std::ptrdiff_t(r) * lda + 2 * g;
          const B x0(ar[0]), x1(ar[1]);
          static_for<HV>([&](auto j) { v[r][j] = fmadd<Arch>(x0, w0[j], fmadd<Arch>(x1, w1[j], v[r][j])); });
        });
      }
      static_for<M>([&](auto r) { static_for<HV>([&](auto j) { acc.v[r][part * HV + j] = v[r][j]; }); });
    });
  }

  template <int M, class Epi>
  static void finish(const Acc<M>& acc, const RowParams*, const Weights&, int, const Epi& epi) {
    static_for<M>([&](auto r) { static_for<NV>([&](auto j) { epi(int(r), int(j), acc.v[r][j]); }); });
  }
};

#if defined(__AVX512BF16__)
template <class Arch>
struct Bf16Avx512_12x32 {
  static_assert(kLanes<Arch> == 16, "an AVX-512 kernel");
  using Weights = PackedBf16Linear<2>;
  using Elem = std::uint16_t;
  static constexpr int rows = 12;
  static constexpr const char* path = "avx512_bf16";
  static constexpr const char* feature = "avx512_bf16";
  struct RowParams {};
  static RowParams row_params(const float*, int) { return {}; }

  // 32 floats per step; lanes past n load as 0 (the odd tail's padding).
  static void convert(const float* x, int n, const RowParams&, Elem* dst) {
    for (int i = 0; i < n; i += 32) {
      const int left = n - i;
      const __mmask16 lo = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
      const __mmask16 hi = left >= 32 ? __mmask16(0xffff) : left <= 16 ? __mmask16(0) : __mmask16((1u << (left - 16)) - 1);
      const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, x + i + 16), _mm512_maskz_loadu_ps(lo, x + i));
      const int store = (std::min(left, 32) + 1) & ~1;
      const __mmask32 keep = store >= 32 ? __mmask32(0xffffffffu) : __mmask32((1u << store) - 1);
      _mm512_mask_storeu_epi16(dst + i, keep, __m512i(v));
    }
  }

  template <int M>
  struct Acc {
    __m512 v[M][2];
  };
  template <int M>
  static void zero(Acc<M>& acc) {
    static_for<M>([&](auto r) { acc.v[r][0] = acc.v[r][1] = _mm512_setzero_ps(); });
  }

  // The sums run in locals: vector types may alias anything, so updating
  // acc.v in place would store every accumulator at every step wherever GCC
  // does not inline this (as in a program with several epilogues).
  template <int M>
  static void accumulate(Acc<M>& acc, const Elem* a, int lda, int groups, const std::uint16_t* b) {
    __m512 v[M][2];
    static_for<M>([&](auto r) { v[r][0] = acc.v[r][0], v[r][1] = acc.v[r][1]; });
    for (int g = 0; g < groups; ++g, b += 2 * kLowpCols) {
      const __m512bh b0 = __m512bh(_mm512_loadu_si512(b)), b1 = __m512bh(_mm512_loadu_si512(b + 32));
      static_for<M>([&](auto r) {
        std::int32_t pair;
        std::memcpy(&pair, a + std::ptrdiff_t(r) * lda + 2 * g, sizeof pair);
        const __m512bh x = __m512bh(_mm512_set1_epi32(pair));
        v[r][0] = _mm512_dpbf16_ps(v[r][0], x, b0);
        v[r][1] = _mm512_dpbf16_ps(v[r][1], x, b1);
      });
    }
    static_for<M>([&](auto r) { acc.v[r][0] = v[r][0], acc.v[r][1] = v[r][1]; });
  }

  template <int M, class Epi>
  static void finish(const Acc<M>& acc, const RowParams*, const Weights&, int, const Epi& epi) {
    static_for<M>([&](auto r) {
      epi(int(r), 0, Batch<Arch>(acc.v[r][0]));
      epi(int(r), 1, Batch<Arch>(acc.v[r][1]));
    });
  }
};
#endif

#if defined(__aarch64__) && defined(__ARM_FEATURE_BF16_VECTOR_ARITHMETIC)
// BFDOT, one lane-indexed k-pair of x per instruction.
struct Bf16NeonDot {
  static constexpr int group = 2;
  static constexpr const char* path = "neon_bfdot";
  static constexpr const char* feature = "bf16";
  using Acc = float32x4_t;
  using Vec = bfloat16x8_t;
  static Vec load(const std::uint16_t* p) { return vreinterpretq_bf16_u16(vld1q_u16(p)); }
  template <int L>
  static Acc dot(Acc acc, Vec w, Vec x) { return vbfdotq_laneq_f32(acc, w, x, L); }
};

// BFMMLA: a 2 x 4 block of two rows by a 4 x 2 block of two columns.
struct Bf16NeonMmla {
  static constexpr int group = 4;
  static constexpr const char* path = "neon_bfmmla";
  static constexpr const char* feature = "bf16";
  using Acc = float32x4_t;
  using Rows = bfloat16x8_t;
  using Cols = bfloat16x8_t;
  static Rows rows(const std::uint16_t* r0, const std::uint16_t* r1) {
    return vreinterpretq_bf16_u16(vcombine_u16(vld1_u16(r0), r1 ? vld1_u16(r1) : vdup_n_u16(0)));
  }
  static Cols cols(const std::uint16_t* p) { return vreinterpretq_bf16_u16(vld1q_u16(p)); }
  static Acc mmla(Acc acc, Rows x, Cols w) { return vbfmmlaq_f32(acc, x, w); }
};

// A NEON bf16 kernel on `Tile` (NeonLaneDotTile or NeonMmlaTile of the above).
template <class Arch, class Tile>
struct Bf16Neon_4x32 : Tile {
  static_assert(kLanes<Arch> == 4, "a NEON kernel");
  using Weights = PackedBf16Linear<Tile::Ops::group>;
  using Elem = std::uint16_t;
  static constexpr const char* path = Tile::Ops::path;
  static constexpr const char* feature = Tile::Ops::feature;
  struct RowParams {};
  static RowParams row_params(const float*, int) { return {}; }
  // BFCVTN rounds to nearest even, as to_bf16 does; the padding up to the group is 0.
  static void convert(const float* x, int n, const RowParams&, Elem* dst) {
    int i = 0;
    for (; i + 8 <= n; i += 8) {
      const bfloat16x8_t v = vcvtq_high_bf16_f32(vcvtq_low_bf16_f32(vld1q_f32(x + i)), vld1q_f32(x + i + 4));
      vst1q_u16(dst + i, vreinterpretq_u16_bf16(v));
    }
    for (; i < n; ++i) dst[i] = to_bf16(x[i]);
    for (; i % Weights::group; ++i) dst[i] = 0;
  }

  template <int M, class Epi>
  static void finish(const typename Tile::template Acc<M>& acc, const RowParams*, const Weights&, int, const Epi& epi) {
    static_for<M>([&](auto r) {
      static_for<8>([&](auto j) { epi(int(r), int(j), Batch<Arch>(Tile::row_sums(acc, r, j))); });
    });
  }
};
template <class Arch>
using Bf16NeonBfdot_4x32 = Bf16Neon_4x32<Arch, NeonLaneDotTile<Bf16NeonDot>>;
template <class Arch>
using Bf16NeonBfmmla_4x32 = Bf16Neon_4x32<Arch, NeonMmlaTile<Bf16NeonMmla>>;
#endif

}  // namespace lemevit::backend::simd

LEMEVIT_SIMD_DIAGNOSTICS_END
