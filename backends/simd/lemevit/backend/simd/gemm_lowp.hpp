#pragma once
// What the bf16 and int8 GEMMs of the SIMD backend share: number formats,
// packed weight layouts and the blocked driver. The micro-kernels, one per
// tile and instruction set, are in gemm_bf16.hpp and gemm_int8.hpp.
//
// Number formats (every path, vector or scalar, implements exactly these):
//   bf16   x and W rounded to bf16 (nearest, ties to even); products summed
//          in fp32 two k at a time as VDPBF16PS does: acc = (acc + x[k+1] w[k+1]) + x[k] w[k]
//          (a bf16 product is exact in fp32).
//   int8   W per output channel, symmetric: s_w = max|w| / 127,
//          q_w = clamp(nearbyint(w / s_w), -127, 127).
//          x per row, asymmetric uint8 over [min(0, min x), max(0, max x)]
//          (ONNX Runtime's dynamic quantisation, per row rather than per
//          tensor so that a row never depends on the others):
//          s_x = (hi - lo) / 255, z = nearbyint(-lo / s_x),
//          q_x = clamp(nearbyint(x * (1 / s_x)) + z, 0, 255).
//          acc = sum_k q_x q_w in int32 (exact), then
//          y = float(acc - z * sum_k q_w) * (s_x * s_w).
// Then bias, GELU and the residual as in the fp32 epilogue (LinearEpilogue).
//
// Packed layout: output columns in panels of kLowpCols (zero-padded); within
// a panel, k in groups of G (the kernel's: 2 or 4 for bf16, 4 or 8 for int8;
// zero-padded), each group storing its G values for every column
// contiguously: [group][column][G]. With G = 2 (bf16) or 4 (int8) that is one
// 64-byte vector per 16 columns, the operand VDPBF16PS and VPDPBUSD take, or
// one 16-byte vector per 4 columns for BFDOT and SDOT; with G = 4 (bf16) or 8
// (int8) a 16-byte vector holds a G x 2 block of two columns, the operand of
// ARM's BFMMLA and USMMLA.
//
// The driver converts a row tile of x into a stack buffer once per column
// block (every panel of the block reuses it), in chunks of kLowpChunk values
// when a row is longer. Blocking only moves work between threads: a row's
// result depends on nothing but that row.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "lemevit/arch.hpp"
#include "lemevit/backend.hpp"
#include "lemevit/host_kernels.hpp"
#include "lemevit/backend/simd/gemm.hpp"
#include "lemevit/backend/simd/parallel.hpp"
#include "lemevit/backend/simd/xsimd_compat.hpp"

#if defined(__aarch64__)
#include <arm_neon.h>
#endif

LEMEVIT_SIMD_DIAGNOSTICS_BEGIN

namespace lemevit::backend::simd {

inline constexpr int kLowpCols = 32;
inline constexpr int kLowpChunk = 4096;  // per row; a multiple of every group
// Weight bytes per column block: 4x the fp32 GEMM's. Each column block
// converts the row tiles again, which costs more than streaming a larger
// block of (2-4x smaller) weights from L2/L3: Base's fc2 (196 x 1536 -> 384,
// 1 thread) bf16 660 -> 610 us, int8 385 -> 330 us; the other shapes unchanged.
inline constexpr int kLowpBlockBytes = 1 << 20;

// fp32 -> bf16, nearest even (VCVTNE2PS2BF16); NaN stays a (quiet) NaN.
inline std::uint16_t to_bf16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return std::uint16_t((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return std::uint16_t(u >> 16);
}

inline float from_bf16(std::uint16_t b) {
  const std::uint32_t u = std::uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// from_bf16(to_bf16(x)) lane-wise: x rounded to bf16, kept as a float.
// xsimd::isnan, not v != v: xsimd 8.1's != is an ordered compare, false for NaN.
template <class Arch>
inline Batch<Arch> round_to_bf16(const Batch<Arch>& v) {
  using I = IntBatch<Arch>;
  const I mask(std::int32_t(0xffff0000u)), quiet(0x00400000), half(0x7fff), one(1);
  const I u = bits_of<Arch>(v);
  const Batch<Arch> rounded = from_bits<Arch>((u + half + ((u >> 16) & one)) & mask);
  return xsimd::select(xsimd::isnan(v), from_bits<Arch>((u | quiet) & mask), rounded);
}

// Dynamic quantisation of one activation row (see the top of the file).
struct RowQuant {
  float scale = 1.0f, inv = 1.0f;
  std::int32_t zero = 0;
};

inline RowQuant row_quant_from_range(float lo, float hi) {
  RowQuant q;
  const float scale = (hi - lo) / 255.0f;
  if (!(scale > 0.0f) || !std::isfinite(scale)) return q;  // an all-zero row (or NaN/Inf input)
  q.scale = scale;
  q.inv = 1.0f / scale;
  q.zero = std::int32_t(std::clamp(std::nearbyint(-lo * q.inv), 0.0f, 255.0f));
  return q;
}

// row_quant_from_range of x[i, n) joined with [lo, hi], the range of x[0, i)
// a vector loop found (lo <= 0 <= hi): the generic kernel's comparisons,
// which skip NaN.
inline RowQuant row_quant_from_tail(const float* x, int i, int n, float lo, float hi) {
  for (; i < n; ++i) {
    if (x[i] < lo) lo = x[i];
    if (x[i] > hi) hi = x[i];
  }
  return row_quant_from_range(lo, hi);
}

// clamp(nearbyint(v * inv) + zero, 0, 255); NaN -> 0.
inline std::uint8_t quantise(float v, const RowQuant& q) {
  float t = std::nearbyint(v * q.inv) + float(q.zero);
  t = t > 0.0f ? t : 0.0f;
  t = t < 255.0f ? t : 255.0f;
  return std::uint8_t(t);
}

template <class T>
using AlignedVector = std::vector<T, AlignedAllocator<T>>;

// W (out x in) as panels [panel][group][column][G] of `value(o, k)` (zero padded).
template <int G, class T, class F>
inline void pack_grouped(int out, int in, AlignedVector<T>& panels, F&& value) {
  const int groups = (in + G - 1) / G;
  const int np = (out + kLowpCols - 1) / kLowpCols;
  panels.assign(std::size_t(np) * groups * kLowpCols * G, T(0));
  for (int o = 0; o < out; ++o) {
    T* dst = panels.data() + std::size_t(o / kLowpCols) * groups * kLowpCols * G + (o % kLowpCols) * G;
    for (int k = 0; k < in; ++k) dst[std::size_t(k / G) * kLowpCols * G + k % G] = value(o, k);
  }
}

inline void pack_bias(const float* b, int out, AlignedFloats& bias) {
  bias.assign(std::size_t((out + kLowpCols - 1) / kLowpCols) * kLowpCols, 0.0f);
  if (b) std::copy(b, b + out, bias.begin());
}

// bf16 weights, packed at load in groups of G.
template <int G>
struct PackedBf16Linear {
  static constexpr int group = G;
  AlignedVector<std::uint16_t> panels;
  AlignedFloats bias;
  int out = 0, in = 0;

  void pack(const float* w, const float* b, int out_, int in_) {
    out = out_;
    in = in_;
    pack_grouped<group>(out, in, panels,
                        [&](int o, int k) { return to_bf16(w[std::size_t(o) * in + k]); });
    pack_bias(b, out, bias);
  }
};

// int8 weights with per-output-channel scales, packed at load in groups of G.
template <int G>
struct PackedInt8Linear {
  static constexpr int group = G;
  AlignedVector<std::int8_t> panels;
  AlignedFloats scale;                     // s_w per column (padding: 1)
  AlignedVector<std::int32_t> column_sum;  // sum_k q_w per column (padding: 0)
  AlignedFloats bias;
  int out = 0, in = 0;

  void pack(const float* w, const float* b, int out_, int in_) {
    std::vector<std::int8_t> q(std::size_t(out_) * in_);
    std::vector<float> s(out_, 1.0f);
    for (int o = 0; o < out_; ++o) {
      const float* row = w + std::size_t(o) * in_;
      float amax = 0.0f;
      for (int k = 0; k < in_; ++k) amax = std::max(amax, std::fabs(row[k]));
      if (amax > 0.0f && std::isfinite(amax)) s[o] = amax / 127.0f;
      for (int k = 0; k < in_; ++k)
        q[std::size_t(o) * in_ + k] = std::int8_t(std::clamp(std::nearbyint(row[k] / s[o]), -127.0f, 127.0f));
    }
    pack_quantized(q.data(), s.data(), b, out_, in_);
  }

  // From weights quantised ahead (tools/convert.py --dtype int8): q (out x in), s per row.
  void pack_quantized(const std::int8_t* q, const float* s, const float* b, int out_, int in_) {
    out = out_;
    in = in_;
    const std::size_t padded = std::size_t((out + kLowpCols - 1) / kLowpCols) * kLowpCols;
    scale.assign(padded, 1.0f);
    column_sum.assign(padded, 0);
    std::copy(s, s + out, scale.begin());
    for (int o = 0; o < out; ++o)
      for (int k = 0; k < in; ++k) column_sum[o] += q[std::size_t(o) * in + k];
    pack_grouped<group>(out, in, panels, [&](int o, int k) { return q[std::size_t(o) * in + k]; });
    pack_bias(b, out, bias);
  }
};

#if defined(__aarch64__) && (defined(__ARM_FEATURE_DOTPROD) || defined(__ARM_FEATURE_BF16_VECTOR_ARITHMETIC))
// The loop of the NEON lane-indexed dot-product kernels (SDOT, BFDOT). A
// 16-byte vector of a panel holds one k-group of four columns; a 16-byte
// vector of a row's operand holds four k-groups, and D::dot<l>(acc, w, x)
// takes group l of x. A tile (M rows x 32 columns, 8 accumulator vectors per
// row) is summed in two halves of 16 columns, so that 4 rows keep 16
// accumulators, 4 panel and 4 row vectors in the 32 NEON registers. The sums
// run in locals (see Bf16Avx512_12x32::accumulate).
// D: group (values per k-group), Acc, Vec, load(p) of 16 bytes, dot<l>.
template <class D, int M, class E, class W>
inline void neon_lane_dot(typename D::Acc (&acc)[M][8], const E* a, int lda, int groups, const W* b) {
  constexpr int G = D::group, per_vector = 16 / sizeof(E);  // values of a 16-byte vector
  for (int half = 0; half < 2; ++half) {
    typename D::Acc v[M][4];
    static_for<M>([&](auto r) { static_for<4>([&](auto j) { v[r][j] = acc[r][4 * half + j]; }); });
    const W* bh = b + half * 16 * G;
    auto step = [&](auto l, int g, const typename D::Vec (&x)[M]) {
      const W* bg = bh + std::ptrdiff_t(g + l) * kLowpCols * G;
      typename D::Vec w[4];
      static_for<4>([&](auto j) { w[j] = D::load(bg + j * 4 * G); });
      static_for<M>([&](auto r) {
        static_for<4>([&](auto j) { v[r][j] = D::template dot<decltype(l)::value>(v[r][j], w[j], x[r]); });
      });
    };
    int g = 0;
    for (; g + 4 <= groups; g += 4) {
      typename D::Vec x[M];
      static_for<M>([&](auto r) { x[r] = D::load(a + std::ptrdiff_t(r) * lda + g * G); });
      static_for<4>([&](auto l) { step(l, g, x); });
    }
    if (const int left = groups - g; left > 0) {  // 1-3 groups: the row's end, padded with zeros
      typename D::Vec x[M];
      static_for<M>([&](auto r) {
        alignas(16) E t[per_vector] = {};
        std::memcpy(t, a + std::ptrdiff_t(r) * lda + g * G, sizeof(E) * left * G);
        x[r] = D::load(t);
      });
      static_for<3>([&](auto l) {
        if (l < left) step(l, g, x);
      });
    }
    static_for<M>([&](auto r) { static_for<4>([&](auto j) { acc[r][4 * half + j] = v[r][j]; }); });
  }
}

// What the NEON lane-dot kernels share: the 4 x 32 tile's accumulators, kept
// as 8 vectors per row, and its loop. D as for neon_lane_dot, plus path and
// feature (see gemm_bf16.hpp, gemm_int8.hpp).
template <class D>
struct NeonLaneDotTile {
  using Ops = D;
  static constexpr int rows = 4;
  template <int M>
  struct Acc {
    typename D::Acc v[M][8];
  };
  template <int M>
  static void zero(Acc<M>& acc) {
    static_for<M>([&](auto r) { static_for<8>([&](auto j) { acc.v[r][j] = typename D::Acc{}; }); });
  }
  template <int M, class E, class W>
  static void accumulate(Acc<M>& acc, const E* a, int lda, int groups, const W* b) {
    neon_lane_dot<D, M>(acc.v, a, lda, groups, b);
  }
  // Row r's sums for columns 4q..4q+3.
  template <int M>
  static typename D::Acc row_sums(const Acc<M>& acc, int r, int q) {
    return acc.v[r][q];
  }
};
#endif

#if defined(__aarch64__) && (defined(__ARM_FEATURE_MATMUL_INT8) || defined(__ARM_FEATURE_BF16_VECTOR_ARITHMETIC))
// The loop of the NEON matrix-multiply kernels (USMMLA, BFMMLA): one
// instruction multiplies a 2 x G block of two rows (8 bytes of each, joined)
// by a G x 2 block of two columns (a 16-byte vector of a panel) into the 2 x 2
// sums [r0c0 r0c1 r1c0 r1c1]. A 4 x 32 tile is two row pairs by 16 column
// pairs, summed in two halves of 16 columns so that 16 accumulators, the row
// pairs and the panel vectors fit the 32 NEON registers. An odd last row is
// paired with zeros. The sums run in locals (see Bf16Avx512_12x32::accumulate).
// D: group, Acc, Rows (row pair), Cols (column pair), rows(r0, r1 or nullptr),
// cols(p), mmla(acc, rows, cols), plus path and feature.
template <class D>
struct NeonMmlaTile {
  using Ops = D;
  static constexpr int rows = 4;
  template <int M>
  struct Acc {
    typename D::Acc v[(M + 1) / 2][16];  // [row pair][column pair]
  };
  template <int M>
  static void zero(Acc<M>& acc) {
    static_for<(M + 1) / 2>([&](auto p) { static_for<16>([&](auto j) { acc.v[p][j] = typename D::Acc{}; }); });
  }
  template <int M, class E, class W>
  static void accumulate(Acc<M>& acc, const E* a, int lda, int groups, const W* b) {
    constexpr int P = (M + 1) / 2, G = D::group;
    for (int half = 0; half < 2; ++half) {
      typename D::Acc v[P][8];
      static_for<P>([&](auto p) { static_for<8>([&](auto j) { v[p][j] = acc.v[p][8 * half + j]; }); });
      const W* bh = b + half * 16 * G;
      for (int g = 0; g < groups; ++g) {
        typename D::Rows x[P];
        static_for<P>([&](auto p) {
          const E* r0 = a + std::ptrdiff_t(2 * p) * lda + g * G;
          if constexpr (2 * p + 1 < M) x[p] = D::rows(r0, r0 + lda);
          else x[p] = D::rows(r0, nullptr);
        });
        const W* bg = bh + std::ptrdiff_t(g) * kLowpCols * G;
        static_for<8>([&](auto j) {
          const typename D::Cols w = D::cols(bg + 2 * j * G);
          static_for<P>([&](auto p) { v[p][j] = D::mmla(v[p][j], x[p], w); });
        });
      }
      static_for<P>([&](auto p) { static_for<8>([&](auto j) { acc.v[p][8 * half + j] = v[p][j]; }); });
    }
  }
  // Row r's sums for columns 4q..4q+3, out of the 2 x 2 blocks of column pairs 2q and 2q+1.
  template <int M>
  static typename D::Acc row_sums(const Acc<M>& acc, int r, int q) {
    return mmla_row(acc.v[r / 2][2 * q], acc.v[r / 2][2 * q + 1], r % 2);
  }
  static int32x4_t mmla_row(int32x4_t lo, int32x4_t hi, int upper) {
    const int64x2_t a = vreinterpretq_s64_s32(lo), b = vreinterpretq_s64_s32(hi);
    return vreinterpretq_s32_s64(upper ? vzip2q_s64(a, b) : vzip1q_s64(a, b));
  }
  static float32x4_t mmla_row(float32x4_t lo, float32x4_t hi, int upper) {
    const int64x2_t a = vreinterpretq_s64_f32(lo), b = vreinterpretq_s64_f32(hi);
    return vreinterpretq_f32_s64(upper ? vzip2q_s64(a, b) : vzip1q_s64(a, b));
  }
};
#endif

// The rows of HostKernels::im2col_3x3_s2's matrix (the patches of a 3x3
// stride-2 padding-1 convolution over `batch` NHWC maps), gathered one at a
// time into an L1-resident buffer instead of a matrix written out and read
// back (3.6 MB per image at the stem's 112x112x32 -> 64: int8 there 0.45 ->
// 0.35 ms, 1 thread, kernel/conv3x3_s2). Needs 9 c <= kLowpChunk.
struct Patches3x3s2 {
  static constexpr bool gathers = true;
  const float* x;
  int h, w, c;
  int oh = conv_s2(h), ow = conv_s2(w);
  const float* row(int r, float* dst) const {
    const int per_image = oh * ow, b = r / per_image;
    HostKernels::patch_3x3_s2(x + std::ptrdiff_t(b) * h * w * c, h, w, c, r % per_image / ow, r % ow, dst);
    return dst;
  }
};

// One M-row tile times one panel of a row that is one chunk: the sums, then
// the epilogue. Flattened (everything it calls inlined, lambdas included) so
// that the accumulators pass from the dot products to the epilogue in
// registers: in translation units as large as the model's, GCC's unit-growth
// limit otherwise leaves accumulate and finish out of line, which stores and
// reloads every accumulator and cost 13-17% at K = 64 (1 thread, 3136 x 64 ->
// 256: int8 219-229 us inlined, 263-273 us out of line; bf16 318-328 / 368-372).
template <class K, int M, class Epi>
[[gnu::flatten]] inline void lowp_tile(const typename K::Elem* a, int lda, int groups,
                                       const typename K::Weights& w, int panel,
                                       const typename K::RowParams* params, const Epi& epi) {
  constexpr int G = K::Weights::group;
  typename K::template Acc<M> acc;
  K::template zero<M>(acc);
  K::template accumulate<M>(acc, a, lda, groups, w.panels.data() + std::ptrdiff_t(panel) * groups * kLowpCols * G);
  K::template finish<M>(acc, params, w, panel, epi);
}

// The driver. A kernel K (gemm_bf16.hpp, gemm_int8.hpp) provides
//   Weights, Elem (activation element in the tile buffer), rows (tile height),
//   RowParams, row_params(x, in), convert(x, n, params, dst: n rounded up to the group),
//   Acc<M>, zero<M>(acc), accumulate<M>(acc, a, lda, groups, panel_group0),
//   finish<M>(acc, params, weights, panel, epi), calling epi(r, v, Batch<Arch>).
// Src: DenseRows or Patches3x3s2.
template <class Arch, Epilogue E, class K, class Src>
inline void gemm_lowp_rows(const Src& src, int rows, const typename K::Weights& w, float* y, int ldy) {
  using W = typename K::Weights;
  constexpr int MR = K::rows, G = W::group, L = kLanes<Arch>;
  static_assert(kLowpCols % L == 0 && kLowpChunk % G == 0);
  if (rows <= 0 || w.out <= 0) return;
  const int in = w.in, groups = (in + G - 1) / G;
  const int lda = std::min(groups * G, kLowpChunk);
  const bool one_chunk = in <= kLowpChunk;
  if (Src::gathers && !one_chunk) throw std::logic_error("gemm_lowp: gathered rows longer than kLowpChunk");
  const auto* panels = w.panels.data();
  const GemmBlocking g = gemm_blocking<Arch, MR, kLowpCols, sizeof(*panels), kLowpBlockBytes>(rows, in, w.out);
  [[maybe_unused]] const double flops = 2.0 * rows * double(in) * w.out;
  const int tasks = g.row_blocks * g.col_blocks;
  LEMEVIT_SIMD_OMP(omp parallel for schedule(dynamic) if (flops >= kParallelFlops && tasks > 1))
  for (int task = 0; task < tasks; ++task) {
    alignas(64) typename K::Elem a[MR * std::size_t(kLowpChunk)];
    alignas(64) float gathered[Src::gathers ? kLowpChunk : 1];
    typename K::RowParams params[MR];
    const int rb = task / g.col_blocks, cb = task % g.col_blocks;
    const int t_end = std::min(g.row_tiles, (rb + 1) * g.tiles_per_block);
    const int p_end = std::min(g.panels, (cb + 1) * g.panels_per_block);
    for (int t = rb * g.tiles_per_block; t < t_end; ++t) {
      const int r0 = t * MR, m = std::min(MR, rows - r0);
      auto convert = [&](int k0) {  // chunk k0 of long (dense) rows
        const int n = std::min(kLowpChunk, in - k0);
        for (int r = 0; r < m; ++r) K::convert(src.row(r0 + r, nullptr) + k0, n, params[r], a + std::ptrdiff_t(r) * lda);
      };
      if constexpr (Src::gathers) {  // one chunk
        for (int r = 0; r < m; ++r) {
          const float* xr = src.row(r0 + r, gathered);
          params[r] = K::row_params(xr, in);
          K::convert(xr, in, params[r], a + std::ptrdiff_t(r) * lda);
        }
      } else {
        // All ranges first: the rows' reductions overlap instead of each
        // conversion waiting for its own.
        for (int r = 0; r < m; ++r) params[r] = K::row_params(src.row(r0 + r, nullptr), in);
        if (one_chunk) convert(0);
      }
      dispatch_rows<MR>(m, [&](auto mc) {
        constexpr int M = decltype(mc)::value;
        for (int p = cb * g.panels_per_block; p < p_end; ++p) {
          const int ncols = std::min(kLowpCols, w.out - p * kLowpCols);
          float* yt = y + std::ptrdiff_t(r0) * ldy + p * kLowpCols;
          const float* bias = w.bias.data() + std::ptrdiff_t(p) * kLowpCols;
          if (one_chunk) {
            with_panel_epilogue<Arch, E, M, kLowpCols, kLowpGeluDegree>(bias, yt, ldy, ncols, [&](const auto& epi) {
              lowp_tile<K, M>(a, lda, groups, w, p, params, epi);
            });
            continue;
          }
          const auto* panel = panels + std::ptrdiff_t(p) * groups * kLowpCols * G;
          typename K::template Acc<M> acc;
          K::template zero<M>(acc);
          for (int k0 = 0; k0 < in; k0 += kLowpChunk) {
            convert(k0);
            const int gn = (std::min(kLowpChunk, in - k0) + G - 1) / G;
            K::template accumulate<M>(acc, a, lda, gn, panel + std::ptrdiff_t(k0 / G) * kLowpCols * G);
          }
          with_panel_epilogue<Arch, E, M, kLowpCols, kLowpGeluDegree>(bias, yt, ldy, ncols, [&](const auto& epi) {
            K::template finish<M>(acc, params, w, p, epi);
          });
        }
      });
    }
  }
}

template <class Arch, Epilogue E, class K>
inline void gemm_lowp(const float* x, int rows, int ldx, const typename K::Weights& w, float* y,
                      int ldy) {
  gemm_lowp_rows<Arch, E, K>(DenseRows{x, ldx}, rows, w, y, ldy);
}

}  // namespace lemevit::backend::simd

LEMEVIT_SIMD_DIAGNOSTICS_END
