#pragma once
// Attention with its two products in bf16: the attention of the bf16 and int8
// precisions where the CPU has a bf16 dot product (AVX512_BF16, ARM's
// FEAT_BF16; elsewhere they keep attention.hpp's fp32 products). The blocked online softmax of
// attention.hpp, still fp32 but in base 2 (the scores come scaled by
// scale log2(e), p = 2^(t - m) by softmax_exp2: 2.4e-7 relative, six
// operations fewer than exp; 7-11% off the 196 x 196 attention), with
//   scores  s[j][q] = log2(e) scale sum over d pairs of bf16(k[j][d]) bf16(q[q][d])
//   values  o[q][:] = alpha o[q][:] + sum over j pairs of bf16(p[j][q]) bf16(v[j][:])
// each pair summed as VDPBF16PS does (gemm_lowp.hpp):
//   acc = (acc + x[2i+1] w[2i+1]) + x[2i] w[2i], from 0 per key block,
// keys in the plan's blocks (even, fixed by head_dim and instruction set), so
// a query's numbers depend on nothing else. p is summed into l unrounded;
// only the product sees it in bf16.
//
// Operands are 32-bit words holding a pair of bf16 (element 2i in the low
// half, 2i+1 in the high half):
//   Q^T  qt[g][q] = (q[q][2g], q[q][2g+1])   once per query panel
//   K    kp[j][g] = (k[j][2g], k[j][2g+1])   per key block (the row in bf16),
//                                            shared by the task's panels
//   P    pt[i][q] = (p[2i][q], p[2i+1][q])   written by the softmax
//   V    vt[i][d] = (v[2i][d], v[2i+1][d])   per key block, shared likewise
// A pair operation set (Ops) does the arithmetic: Bf16PairAvx512 with
// VDPBF16PS, Bf16PairPortable with the same sums in fp32 FMAs (a bf16
// product is exact in fp32), which tests/kernels_test.cpp holds it to
// bitwise; Bf16PairNeon with BFDOT, held to it within rounding.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "lemevit/backend.hpp"
#include "lemevit/backend/simd/attention.hpp"
#include "lemevit/backend/simd/gemm_lowp.hpp"

#if defined(__AVX512BF16__)
#include <immintrin.h>
#elif defined(__aarch64__) && defined(__ARM_FEATURE_BF16_VECTOR_ARITHMETIC)
#include <arm_neon.h>
#endif

LEMEVIT_SIMD_DIAGNOSTICS_BEGIN

namespace lemevit::backend::simd {

// Any instruction set: scalar conversions, fp32 FMAs (denormals aside:
// VDPBF16PS flushes them).
template <class Arch>
struct Bf16PairPortable {
  using B = Batch<Arch>;
  static constexpr int L = kLanes<Arch>;
  using Acc = B;
  struct Pair {
    B hi, lo;
  };
  static Acc zero() { return B(0.0f); }
  static Pair load(const std::uint32_t* p) {
    alignas(64) float hi[L], lo[L];
    for (int i = 0; i < L; ++i) {
      hi[i] = from_bf16(std::uint16_t(p[i] >> 16));
      lo[i] = from_bf16(std::uint16_t(p[i] & 0xffffu));
    }
    return {B::load_aligned(hi), B::load_aligned(lo)};
  }
  static Pair broadcast(std::uint32_t w) {
    return {B(from_bf16(std::uint16_t(w >> 16))), B(from_bf16(std::uint16_t(w & 0xffffu)))};
  }
  static Acc dot(const Acc& acc, const Pair& x, const Pair& w) {
    return fmadd<Arch>(x.lo, w.lo, fmadd<Arch>(x.hi, w.hi, acc));
  }
  // n (even) floats as n / 2 words.
  static void round_row(const float* x, int n, std::uint32_t* dst) {
    for (int i = 0; i < n; i += 2) dst[i / 2] = to_bf16(x[i]) | std::uint32_t(to_bf16(x[i + 1])) << 16;
  }
  // dst[lane] = (lo[lane], hi[lane])
  static void pack(const B& lo, const B& hi, std::uint32_t* dst) {
    alignas(64) float l[L], h[L];
    lo.store_aligned(l);
    hi.store_aligned(h);
    for (int i = 0; i < L; ++i) dst[i] = to_bf16(l[i]) | std::uint32_t(to_bf16(h[i])) << 16;
  }
};

#if defined(__AVX512BF16__)
template <class Arch>
struct Bf16PairAvx512 {
  static_assert(kLanes<Arch> == 16, "an AVX-512 kernel");
  static constexpr const char* path = "avx512_bf16";
  static constexpr const char* feature = "avx512_bf16";
  using Acc = __m512;
  using Pair = __m512bh;
  static Acc zero() { return _mm512_setzero_ps(); }
  static Pair load(const std::uint32_t* p) { return Pair(_mm512_load_si512(p)); }
  static Pair broadcast(std::uint32_t w) { return Pair(_mm512_set1_epi32(int(w))); }
  static Acc dot(Acc acc, Pair x, Pair w) { return _mm512_dpbf16_ps(acc, x, w); }
  // n is a multiple of 16 here (Bf16AttentionPlan).
  static void round_row(const float* x, int n, std::uint32_t* dst) {
    for (int i = 0; i < n; i += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i / 2),
                          __m256i(_mm512_cvtneps_pbh(_mm512_loadu_ps(x + i))));
  }
  // VCVTNE2PS2BF16 gives lo then hi; one VPERMW interleaves them.
  static void pack(const Batch<Arch>& lo, const Batch<Arch>& hi, std::uint32_t* dst) {
    const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                                23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i both = __m512i(_mm512_cvtne2ps_pbh(hi, lo));
    _mm512_store_si512(dst, _mm512_permutexvar_epi16(interleave, both));
  }
};
#endif

#if defined(__aarch64__) && defined(__ARM_FEATURE_BF16_VECTOR_ARITHMETIC)
// ARMv8.6 / FEAT_BF16: BFDOT sums each lane's pair of products as VDPBF16PS
// does, but rounds that pair's sum itself (round to odd) and flushes
// denormals, so it agrees with Bf16PairPortable to rounding, not bitwise. The
// kernel's broadcast form is BFDOT's (BFMMLA wants 2 x 2 blocks of rows and
// columns, which the online softmax's one-query-per-lane layout does not give).
template <class Arch>
struct Bf16PairNeon {
  static_assert(kLanes<Arch> == 4, "a NEON kernel");
  static constexpr const char* path = "neon_bfdot";
  static constexpr const char* feature = "bf16";
  using Acc = float32x4_t;
  using Pair = bfloat16x8_t;
  static Acc zero() { return vdupq_n_f32(0.0f); }
  static Pair load(const std::uint32_t* p) { return vreinterpretq_bf16_u32(vld1q_u32(p)); }
  static Pair broadcast(std::uint32_t w) { return vreinterpretq_bf16_u32(vdupq_n_u32(w)); }
  static Acc dot(Acc acc, Pair x, Pair w) { return vbfdotq_f32(acc, x, w); }
  // n is a multiple of 4 here (Bf16AttentionPlan); BFCVTN rounds to nearest
  // even, as to_bf16 does.
  static void round_row(const float* x, int n, std::uint32_t* dst) {
    for (int i = 0; i < n; i += 4)
      vst1_u16(reinterpret_cast<std::uint16_t*>(dst + i / 2), vreinterpret_u16_bf16(vcvt_bf16_f32(vld1q_f32(x + i))));
  }
  // dst[lane] = (lo[lane], hi[lane]): the two conversions' halves zipped.
  static void pack(const Batch<Arch>& lo, const Batch<Arch>& hi, std::uint32_t* dst) {
    const uint16x8_t l = vreinterpretq_u16_bf16(vcvtq_low_bf16_f32(lo));
    const uint16x8_t h = vreinterpretq_u16_bf16(vcvtq_low_bf16_f32(hi));
    vst1q_u16(reinterpret_cast<std::uint16_t*>(dst), vzip1q_u16(l, h));
  }
};
#endif

// The pair operations attention uses in a lowp precision on `Arch`: void
// where there is no bf16 dot product (fp32 products there).
template <class Arch>
struct Bf16AttentionOps {
#if defined(__AVX512BF16__)
  using type = std::conditional_t<kLanes<Arch> == 16, Bf16PairAvx512<Arch>, void>;
#elif defined(__aarch64__) && defined(__ARM_FEATURE_BF16_VECTOR_ARITHMETIC)
  using type = std::conditional_t<kLanes<Arch> == 4, Bf16PairNeon<Arch>, void>;
#else
  using type = void;
#endif
};

// attention.hpp's plan for the pair buffers: the blocked path where head_dim
// is whole vectors and at most 128 (else the fp32 paths run).
template <class Arch>
struct Bf16AttentionPlan : AttentionPlan<Arch> {
  static constexpr int kWords = 4096;  // each pair buffer, in 32-bit words
  bool pairs = false;

  explicit Bf16AttentionPlan(int head_dim) : AttentionPlan<Arch>(head_dim) {
    using P = AttentionPlan<Arch>;
    // Keys: the scores (NV vectors of queries each), K rows (head_dim / 2
    // words each), V pairs (hdv words per two keys), even.
    int kb = kAttnScoreFloats / (P::NV * P::L);
    kb = std::min({kb, 2 * kWords / head_dim, 2 * kWords / this->hdv});
    this->key_block = kb / P::MR * P::MR / 2 * 2;
    pairs = this->blocked && head_dim % P::L == 0 && head_dim <= 128 && this->key_block >= P::MR;
  }
};

// acc[r][v] = sum over k < K2 of the pair a[r a_row + k a_k] times the pairs
// b[k ldb + v lanes + lane], k ascending, from 0; then epi(r, v, acc[r][v]).
template <class Arch, class Ops, int M, int NV, class Epi>
inline void pair_kernel(int K2, const std::uint32_t* a, std::ptrdiff_t a_row, std::ptrdiff_t a_k,
                        const std::uint32_t* b, std::ptrdiff_t ldb, Epi&& epi) {
  constexpr int L = kLanes<Arch>;
  typename Ops::Acc acc[M][NV];
  static_for<M>([&](auto r) { static_for<NV>([&](auto v) { acc[r][v] = Ops::zero(); }); });
  for (int k = 0; k < K2; ++k) {
    typename Ops::Pair w[NV];
    static_for<NV>([&](auto v) { w[v] = Ops::load(b + k * ldb + v * L); });
    static_for<M>([&](auto r) {
      const auto x = Ops::broadcast(a[r * a_row + k * a_k]);
      static_for<NV>([&](auto v) { acc[r][v] = Ops::dot(acc[r][v], x, w[v]); });
    });
  }
  static_for<M>([&](auto r) {
    static_for<NV>([&](auto v) { epi(int(r), int(v), Batch<Arch>(acc[r][v])); });
  });
}

// attention_panel (attention.hpp) with the two products on pairs, for up to
// kBf16PanelGroup panels of the same head at once: each key block's K and V
// are converted once for all of them.
inline constexpr int kBf16PanelGroup = 4;

template <class Arch, class Ops, int QV>
inline void attention_group_bf16(const AttentionArgs& a, const Bf16AttentionPlan<Arch>& plan,
                                 int h, int q0, int nq_all) {
  using B = Batch<Arch>;
  using Plan = AttentionPlan<Arch>;
  constexpr int L = Plan::L, MR = Plan::MR, NV = Plan::NV, G = kBf16PanelGroup;
  constexpr int NQ = QV * L;
  constexpr int W = Bf16AttentionPlan<Arch>::kWords;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  alignas(64) float s[kAttnScoreFloats];
  alignas(64) float o[G][kAttnOutFloats];
  alignas(64) std::uint32_t qt[G][W / 2], kp[W], pt[W], vt[W];
  alignas(64) float alpha[G][NQ], rinv[G][NQ];
  B m[G][QV], l[G][QV];

  const int hd = plan.hd, hd2 = hd / 2, hdv = plan.hdv, kb = plan.key_block, nrv = plan.value_panel;
  const int vpanels = hdv / nrv, panels = (nq_all + NQ - 1) / NQ;
  const std::ptrdiff_t off = std::ptrdiff_t(h) * hd;
  const B vzero(0.0f);
  const float log2_scale = a.scale * 1.44269504088896341f;  // softmax in base 2
  // Q^T of each panel through s, then in pairs of head dims.
  for (int g = 0; g < panels; ++g) {
    const int nq = std::min(NQ, nq_all - g * NQ);
    transpose_into(a.q + std::ptrdiff_t(q0 + g * NQ) * a.ldq + off, a.ldq, nq, NQ, hd, s, NQ);
    for (int i = 0; i < hd2; ++i)
      for (int v = 0; v < QV; ++v)
        Ops::pack(B::load_aligned(s + 2 * i * NQ + v * L), B::load_aligned(s + (2 * i + 1) * NQ + v * L),
                  qt[g] + i * NQ + v * L);
    for (int v = 0; v < QV; ++v) {
      m[g][v] = B(kNegInf);
      l[g][v] = vzero;
    }
  }

  for (int j0 = 0; j0 < a.keys; j0 += kb) {
    const int kc = std::min(kb, a.keys - j0), kc2 = (kc + 1) / 2;
    const bool first = j0 == 0, last = j0 + kc >= a.keys;
    // K rows in bf16; V in key pairs, head dims zero-padded to whole panels.
    for (int j = 0; j < kc; ++j) Ops::round_row(a.k + std::ptrdiff_t(j0 + j) * a.ldk + off, hd, kp + j * hd2);
    for (int i = 0; i < kc2; ++i) {
      const float* v0 = a.v + std::ptrdiff_t(j0 + 2 * i) * a.ldv + off;
      const bool odd = 2 * i + 1 < kc;
      for (int d = 0; d < hdv; d += L) {
        const B lo = d < hd ? load<Arch>(v0 + d) : vzero;
        const B hi = d < hd && odd ? load<Arch>(v0 + a.ldv + d) : vzero;
        Ops::pack(lo, hi, vt + i * hdv + d);
      }
    }
    for (int g = 0; g < panels; ++g) {
      const int qg = q0 + g * NQ, nq = std::min(NQ, nq_all - g * NQ);
      for (int jt = 0; jt < kc; jt += MR) {
        dispatch_rows<MR>(std::min(MR, kc - jt), [&](auto mc) {
          constexpr int M = decltype(mc)::value;
          pair_kernel<Arch, Ops, M, QV>(hd2, kp + jt * hd2, hd2, 1, qt[g], NQ, [&](int r, int v, B acc) {
            (acc * B(log2_scale)).store_aligned(s + (jt + r) * NQ + v * L);
          });
        });
      }
      softmax_block<Arch, QV, true>(s, kc, a.scale, m[g], l[g], alpha[g]);
      // P in key pairs (an odd block's last pair padded with p = 0).
      for (int i = 0; i < kc2; ++i)
        for (int v = 0; v < QV; ++v) {
          const float* p0 = s + 2 * i * NQ + v * L;
          Ops::pack(B::load_aligned(p0), 2 * i + 1 < kc ? B::load_aligned(p0 + NQ) : vzero, pt + i * NQ + v * L);
        }
      if (last)
        for (int v = 0; v < QV; ++v) (B(1.0f) / l[g][v]).store_aligned(rinv[g] + v * L);
      const RunningOutput<Arch> out{o[g], hdv, hd, alpha[g], rinv[g],
                                    a.out + std::ptrdiff_t(qg) * a.ldo + off, a.ldo, first, last};
      for (int qr = 0; qr < nq; qr += MR) {
        dispatch_rows<MR>(std::min(MR, nq - qr), [&](auto mc) {
          constexpr int M = decltype(mc)::value;
          for (int pp = 0; pp < vpanels; ++pp) {
            auto epi = [&](int r, int v, B acc) { out(qr + r, pp * nrv + v * L, acc); };
            // P^T as A: the pair (query r, keys 2i, 2i + 1) at pt[i * NQ + r].
            if (plan.value_vectors == 1)
              pair_kernel<Arch, Ops, M, 1>(kc2, pt + qr, 1, NQ, vt + pp * nrv, hdv, epi);
            else
              pair_kernel<Arch, Ops, M, NV>(kc2, pt + qr, 1, NQ, vt + pp * nrv, hdv, epi);
          }
        });
      }
    }
  }
}

// Attention with bf16 products on `Ops` where Bf16AttentionPlan allows
// (query panels), fp32 otherwise (few keys, unusual head dims).
template <class Arch, class Ops>
inline void attention_bf16(const AttentionArgs& a) {
  if (a.queries <= 0 || a.heads <= 0 || a.head_dim <= 0) return;
  const Bf16AttentionPlan<Arch> plan(a.head_dim);
  if (!plan.pairs || FewKeys<Arch>::applies(a)) return attention<Arch>(a);
  for_each_query_group<Arch>(a, kBf16PanelGroup, [&](auto qv, int h, int q0, int nq) {
    attention_group_bf16<Arch, Ops, decltype(qv)::value>(a, plan, h, q0, nq);
  });
}

}  // namespace lemevit::backend::simd

LEMEVIT_SIMD_DIAGNOSTICS_END
