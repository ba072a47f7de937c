#pragma once
// Multi-head attention for the SIMD backend, flash-attention style: keys are
// processed in blocks with a running maximum and sum per query (online
// softmax, fp32), so memory is a fixed-size stack buffer whatever the key
// count, and nothing is allocated on the heap.
//
// A task is one head and a panel of queries, one query per vector lane
// (Q^T packed once per task). Per block of keys, read in place:
//   scores  S^T = K Q^T          GEMM micro-kernel, rows keys, K = head_dim
//   softmax t = scale S, m' = max(m, max t), p = exp(t - m'),
//           alpha = exp(m - m'), l = alpha l + sum p   (vectorised over queries)
//   values  O = alpha O + P V    GEMM micro-kernel, rows queries, K = keys
// and at the end out = O (1 / l), written by the last block's values step (a
// single block never touches O). The key block size depends on head_dim and
// the instruction set only, and every step is lane-wise in the queries, so a
// query's arithmetic is the same whatever the number of queries, their
// position and the thread count. Tasks are split over heads and query panels,
// never over keys. Up to 16 keys (dual cross attention's image tokens
// attending to the meta tokens) take attention_few_keys instead: one block,
// no Q^T, scores with one key per lane.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>

#include "lemevit/backend.hpp"
#include "lemevit/backend/simd/gemm.hpp"
#include "lemevit/backend/simd/math.hpp"
#include "lemevit/backend/simd/parallel.hpp"
#include "lemevit/backend/simd/pack.hpp"
#include "lemevit/backend/simd/xsimd_compat.hpp"

LEMEVIT_SIMD_DIAGNOSTICS_BEGIN

namespace lemevit::backend::simd {

inline constexpr int kAttnScoreFloats = 4096;  // scores of one key block, key-major
inline constexpr int kAttnQueryFloats = 4096;  // packed Q^T of a query panel
inline constexpr int kAttnOutFloats = 4096;    // running outputs of a query panel
inline constexpr int kAttnValueFloats = 4096;  // packed V block, when V needs padding

// How one head_dim is processed on one instruction set: keys in blocks of
// `key_block` (a multiple of the micro-kernel's rows), V read in place or
// padded, and whether the fixed buffers fit (head_dim up to 128 on AVX-512,
// 256 on AVX2 and NEON; larger head_dims take attention_query). Nothing here
// depends on the number of queries or keys.
template <class Arch>
struct AttentionPlan {
  using Tile = GemmTile<Arch>;
  static constexpr int L = kLanes<Arch>;
  static constexpr int MR = Tile::rows;
  static constexpr int NV = Tile::vectors;

  int hd = 0;
  int value_vectors = 0;  // vectors per V panel: 1 when head_dim fits one vector
  int value_panel = 0;    // head dims per V panel
  int hdv = 0;            // head_dim rounded up to whole V panels
  bool pack_values = false;  // V rows used in place unless head_dim needs padding
  int key_block = 0;
  bool blocked = false;  // false: head_dim too large for the buffers

  explicit AttentionPlan(int head_dim) : hd(head_dim) {
    value_vectors = head_dim <= L ? 1 : NV;
    value_panel = value_vectors * L;
    hdv = (head_dim + value_panel - 1) / value_panel * value_panel;
    pack_values = hdv != head_dim;
    key_block = kAttnScoreFloats / (NV * L);
    if (pack_values) key_block = std::min(key_block, kAttnValueFloats / hdv);
    key_block = key_block / MR * MR;
    blocked = key_block >= MR && head_dim * NV * L <= kAttnQueryFloats &&
              NV * L * hdv <= kAttnOutFloats;
  }
};

// One key block's online softmax, one lane per query: the scores s[j][q]
// (kc rows of QV vectors) become p in place, the running maximum m and sum l
// move on, alpha gets exp(m_old - m_new) (0 for the first block):
//   t = scale s, m' = max(m, max_j t), p = exp(t - m'), l = alpha l + sum_j p
// (j ascending; t is recomputed rather than stored: a multiply is cheaper
// than a store). Locals, not m and l, carry the sums: arrays the loops index
// would stay in memory and chain every add through a store.
//
// Base2: the scores are t already, scaled by scale log2(e) where the
// product wrote them (`scale` is then unused), and exp is softmax_exp2 (the
// low precisions' attention, attention_bf16.hpp).
template <class Arch, int QV, bool Base2 = false>
inline void softmax_block(float* s, int kc, float scale, Batch<Arch>* m, Batch<Arch>* l, float* alpha) {
  using B = Batch<Arch>;
  constexpr int L = kLanes<Arch>, NQ = QV * L;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const B vscale(scale), vneginf(kNegInf), vzero(0.0f);
  const auto scaled = [&](const float* p) { return Base2 ? B::load_aligned(p) : B::load_aligned(p) * vscale; };
  const auto exp = [](const B& d) { return Base2 ? softmax_exp2<Arch>(d) : softmax_exp<Arch>(d); };
  B mx[QV], mo[QV], sum[QV];
  static_for<QV>([&](auto v) { mx[v] = vneginf; });
  for (int j = 0; j < kc; ++j)
    static_for<QV>([&](auto v) { mx[v] = xsimd::max(mx[v], scaled(s + j * NQ + v * L)); });
  static_for<QV>([&](auto v) {
    const B m_new = xsimd::max(m[v], mx[v]);
    const B al = xsimd::select(m[v] == vneginf, vzero, exp(m[v] - m_new));
    al.store_aligned(alpha + v * L);
    mo[v] = m_new;
    sum[v] = vzero;
  });
  for (int j = 0; j < kc; ++j)
    static_for<QV>([&](auto v) {
      float* sp = s + j * NQ + v * L;
      const B p = exp(scaled(sp) - mo[v]);
      p.store_aligned(sp);
      sum[v] = sum[v] + p;
    });
  static_for<QV>([&](auto v) {
    m[v] = mo[v];
    l[v] = fmadd<Arch>(l[v], B::load_aligned(alpha + v * L), sum[v]);
  });
}

// The values step's epilogue at query `row` of a panel, head dims [d, d +
// lanes): O = alpha O + acc, kept in `o` (rows of hdv) until the last key
// block writes (alpha O + acc) / l to the output. The first block starts O
// (alpha is 0 there).
template <class Arch>
struct RunningOutput {
  float* o;
  int hdv, hd;
  const float* alpha;
  const float* rinv;
  float* out;  // the panel's first query at this head
  std::ptrdiff_t ldo;
  bool first, last;

  void operator()(int row, int d, Batch<Arch> acc) const {
    using B = Batch<Arch>;
    float* op = o + row * hdv + d;
    if (!first) acc = fmadd<Arch>(B::load_aligned(op), B(alpha[row]), acc);
    if (!last)
      acc.store_aligned(op);
    else if (d < hd)
      store_n<Arch>(out + row * ldo + d, hd - d, acc * B(rinv[row]));
  }
};

// Scores of a key block in lane-per-query layout:
//   s[j][q] = sum_d k[j][d] q[q][d]           (micro-kernel: rows keys, columns queries)
// softmax per query, vectorised across the queries of the panel:
//   t = scale s, m' = max(m, max_j t), p = exp(t - m'), alpha = exp(m - m'),
//   l = alpha l + sum_j p                      (j ascending)
// values:
//   o[q][:] = alpha o[q][:] + sum_j p[j][q] v[j][:]   (rows queries, columns head dims)
// One head h, queries [q0, q0 + nq), nq <= QV * lanes.
template <class Arch, int QV>
inline void attention_panel(const AttentionArgs& a, const AttentionPlan<Arch>& plan, int h,
                            int q0, int nq) {
  using B = Batch<Arch>;
  using Plan = AttentionPlan<Arch>;
  constexpr int L = Plan::L, MR = Plan::MR, NV = Plan::NV;
  constexpr int NQ = QV * L;  // queries per panel
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  alignas(64) float qt[kAttnQueryFloats];
  alignas(64) float s[kAttnScoreFloats];
  alignas(64) float o[kAttnOutFloats];
  alignas(64) float vb[kAttnValueFloats];
  alignas(64) float alpha[NQ], rinv[NQ];

  const int hd = plan.hd, hdv = plan.hdv, kb = plan.key_block, nrv = plan.value_panel;
  const int vpanels = hdv / nrv;
  const std::ptrdiff_t off = std::ptrdiff_t(h) * hd;
  // Q^T: head dims as rows, the panel's queries as columns (zero past nq).
  transpose_into(a.q + std::ptrdiff_t(q0) * a.ldq + off, a.ldq, nq, NQ, hd, qt, NQ);
  B m[QV], l[QV];
  for (int v = 0; v < QV; ++v) {
    m[v] = B(kNegInf);
    l[v] = B(0.0f);
  }

  for (int j0 = 0; j0 < a.keys; j0 += kb) {
    const int kc = std::min(kb, a.keys - j0);
    // Scores, MR keys at a time.
    for (int jt = 0; jt < kc; jt += MR) {
      dispatch_rows<MR>(std::min(MR, kc - jt), [&](auto mc) {
        constexpr int M = decltype(mc)::value;
        micro_kernel<Arch, M, QV>(hd, a.k + std::ptrdiff_t(j0 + jt) * a.ldk + off, a.ldk, qt,
                                  [&](int r, int v, B acc) {
                                    acc.store_aligned(s + (jt + r) * NQ + v * L);
                                  });
      });
    }
    softmax_block<Arch, QV>(s, kc, a.scale, m, l, alpha);
    const bool first = j0 == 0, last = j0 + kc >= a.keys;
    if (last)
      for (int v = 0; v < QV; ++v) (B(1.0f) / l[v]).store_aligned(rinv + v * L);
    // Values: V rows in place, or padded to whole panels.
    const float* vrows = a.v + std::ptrdiff_t(j0) * a.ldv + off;
    std::ptrdiff_t ldv = a.ldv;
    if (plan.pack_values) {
      for (int j = 0; j < kc; ++j) {
        const float* src = vrows + std::ptrdiff_t(j) * a.ldv;
        std::copy(src, src + hd, vb + j * hdv);
        std::fill(vb + j * hdv + hd, vb + (j + 1) * hdv, 0.0f);
      }
      vrows = vb;
      ldv = hdv;
    }
    const RunningOutput<Arch> out{o, hdv, hd, alpha, rinv, a.out + std::ptrdiff_t(q0) * a.ldo + off,
                                  a.ldo, first, last};
    for (int qr = 0; qr < nq; qr += MR) {
      dispatch_rows<MR>(std::min(MR, nq - qr), [&](auto mc) {
        constexpr int M = decltype(mc)::value;
        for (int pp = 0; pp < vpanels; ++pp) {
          auto epi = [&](int r, int v, B acc) { out(qr + r, pp * nrv + v * L, acc); };
          // P^T as A: element (query r, key j) at s[j * NQ + r].
          if (plan.value_vectors == 1)
            micro_kernel_strided<Arch, M, 1, false>(kc, s + qr, 1, NQ, vrows + pp * nrv, ldv, epi);
          else
            micro_kernel_strided<Arch, M, NV, false>(kc, s + qr, 1, NQ, vrows + pp * nrv, ldv,
                                                     epi);
        }
      });
    }
  }
}

// Few keys (the 16 meta tokens that image tokens attend to in dual cross
// attention): a query's scores fit KV vectors, so the softmax is a single
// block with no running maximum, and Q needs no transpose. A panel is one
// vector of queries (lanes) of one head:
//   scores   s[q][j] = sum_d q[d] k[j][d]   one key per lane, R queries at a
//            time, d ascending (K^T packed once per task, Q broadcast in place)
//   softmax  transposed to one query per lane: t = scale s, m = max_j t,
//            p = exp(t - m), l = sum_j p    (j ascending)
//   values   o[q][:] = (sum_j p[q][j] v[j][:]) (1 / l)   (j ascending, V in place)
// Every step is per query, so nothing depends on the other queries of a task.
template <class Arch>
struct FewKeys {
  static constexpr int L = kLanes<Arch>;
  static constexpr int max_keys = 16;
  static constexpr int KV = (max_keys + L - 1) / L;  // score vectors per query
  static constexpr int W = KV * L;                    // padded keys
  static constexpr int R = GemmTile<Arch>::wide_file && L >= 16 ? 8 : 4;  // queries at a time
  static constexpr int max_head_dim = 128;
  static constexpr int task_queries = 16 * L;
  static bool applies(const AttentionArgs& a) {
    return a.keys <= max_keys && a.head_dim <= max_head_dim && a.head_dim % L == 0;
  }
};

// kt[d W + j] = k[j][d] for j < keys, 0 for the padding lanes.
template <class Arch>
inline void pack_few_keys(const AttentionArgs& a, int h, float* kt) {
  constexpr int W = FewKeys<Arch>::W;
  const int hd = a.head_dim;
  std::fill(kt, kt + hd * W, 0.0f);
  for (int j = 0; j < a.keys; ++j) {
    const float* k = a.k + std::ptrdiff_t(j) * a.ldk + std::ptrdiff_t(h) * hd;
    for (int d = 0; d < hd; ++d) kt[d * W + j] = k[d];
  }
}

// Scores of queries [q0, q0 + M) of head h into s[(q - q0) W + j].
template <class Arch, int M>
inline void few_keys_scores(const AttentionArgs& a, const float* kt, int h, int q0, float* s) {
  using B = Batch<Arch>;
  constexpr int L = FewKeys<Arch>::L, KV = FewKeys<Arch>::KV, W = FewKeys<Arch>::W;
  const int hd = a.head_dim;
  const float* q[M];
  static_for<M>([&](auto r) { q[r] = a.q + std::ptrdiff_t(q0 + r) * a.ldq + std::ptrdiff_t(h) * hd; });
  B acc[M][KV];
  static_for<M>([&](auto r) { static_for<KV>([&](auto v) { acc[r][v] = B(0.0f); }); });
  for (int d = 0; d < hd; ++d) {
    B kd[KV];
    static_for<KV>([&](auto v) { kd[v] = B::load_aligned(kt + d * W + v * L); });
    static_for<M>([&](auto r) {
      const B qd(q[r][d]);
      static_for<KV>([&](auto v) { acc[r][v] = fmadd<Arch>(qd, kd[v], acc[r][v]); });
    });
  }
  static_for<M>([&](auto r) {
    static_for<KV>([&](auto v) { acc[r][v].store_aligned(s + r * W + v * L); });
  });
}

// Values of queries [q0 + r0, q0 + r0 + M): P at p[j L + r], 1 / l at rinv[r].
template <class Arch, int M>
inline void few_keys_values(const AttentionArgs& a, const float* p, const float* rinv, int h,
                            int q0, int r0) {
  using B = Batch<Arch>;
  constexpr int L = FewKeys<Arch>::L;
  const int hd = a.head_dim;
  const std::ptrdiff_t off = std::ptrdiff_t(h) * hd;
  const float* vh = a.v + off;
  float* out = a.out + std::ptrdiff_t(q0 + r0) * a.ldo + off;
  // Two vectors of head dims at a time, then one.
  auto chunk = [&](int d, auto nv) {
    constexpr int NV = decltype(nv)::value;
    B acc[M][NV];
    static_for<M>([&](auto r) { static_for<NV>([&](auto v) { acc[r][v] = B(0.0f); }); });
    for (int j = 0; j < a.keys; ++j) {
      B w[NV];
      static_for<NV>([&](auto v) { w[v] = load<Arch>(vh + std::ptrdiff_t(j) * a.ldv + d + v * L); });
      static_for<M>([&](auto r) {
        const B pj(p[j * L + r0 + r]);
        static_for<NV>([&](auto v) { acc[r][v] = fmadd<Arch>(pj, w[v], acc[r][v]); });
      });
    }
    static_for<M>([&](auto r) {
      const B ri(rinv[r0 + r]);
      static_for<NV>([&](auto v) { store<Arch>(out + r * a.ldo + d + v * L, acc[r][v] * ri); });
    });
  };
  int d = 0;
  for (; d + 2 * L <= hd; d += 2 * L) chunk(d, std::integral_constant<int, 2>{});
  if (d < hd) chunk(d, std::integral_constant<int, 1>{});
}

// Queries [q0, q0 + nq), nq <= lanes, of head h.
template <class Arch>
inline void attention_few_keys(const AttentionArgs& a, const float* kt, int h, int q0, int nq) {
  using B = Batch<Arch>;
  using F = FewKeys<Arch>;
  constexpr int L = F::L, W = F::W, R = F::R;
  alignas(64) float s[L * W];  // query-major scores
  alignas(64) float t[W * L];  // key-major: one query per lane
  alignas(64) float rinv[L];
  for (int r = 0; r < nq; r += R)
    dispatch_rows<R>(std::min(R, nq - r), [&](auto mc) {
      few_keys_scores<Arch, decltype(mc)::value>(a, kt, h, q0 + r, s + r * W);
    });
  if constexpr (L >= kTransposeBlock) {
    transpose_into(s, W, nq, L, a.keys, t, L);
  } else {  // SSE: 4 lanes, 8x8 transpose blocks
    for (int j = 0; j < a.keys; ++j)
      for (int r = 0; r < L; ++r) t[j * L + r] = r < nq ? s[r * W + j] : 0.0f;
  }
  const B vscale(a.scale);
  B m = B::load_aligned(t) * vscale;
  for (int j = 1; j < a.keys; ++j) m = xsimd::max(m, B::load_aligned(t + j * L) * vscale);
  B l(0.0f);
  for (int j = 0; j < a.keys; ++j) {
    const B p = softmax_exp<Arch>(B::load_aligned(t + j * L) * vscale - m);
    p.store_aligned(t + j * L);
    l = l + p;
  }
  (B(1.0f) / l).store_aligned(rinv);
  for (int r = 0; r < nq; r += R)
    dispatch_rows<R>(std::min(R, nq - r), [&](auto mc) {
      few_keys_values<Arch, decltype(mc)::value>(a, t, rinv, h, q0, r);
    });
}

// Any head_dim: one query at a time, dot products over head dims, the running
// output kept in the output row itself.
template <class Arch>
inline void attention_query(const AttentionArgs& a, int h, int i) {
  using B = Batch<Arch>;
  constexpr int L = kLanes<Arch>;
  constexpr int kChunk = 64;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const int hd = a.head_dim;
  const std::ptrdiff_t off = std::ptrdiff_t(h) * hd;
  const float* q = a.q + std::ptrdiff_t(i) * a.ldq + off;
  float* o = a.out + std::ptrdiff_t(i) * a.ldo + off;
  float p[kChunk];
  float m = kNegInf, l = 0.0f;
  for (int d = 0; d < hd; d += L) store_n<Arch>(o + d, hd - d, B(0.0f));
  for (int j0 = 0; j0 < a.keys; j0 += kChunk) {
    const int kc = std::min(kChunk, a.keys - j0);
    float mx = kNegInf;
    for (int j = 0; j < kc; ++j) {
      const float* k = a.k + std::ptrdiff_t(j0 + j) * a.ldk + off;
      B acc(0.0f);
      for (int d = 0; d < hd; d += L)
        acc = fmadd<Arch>(load_n<Arch>(q + d, hd - d), load_n<Arch>(k + d, hd - d), acc);
      p[j] = reduce_add<Arch>(acc) * a.scale;
      mx = std::max(mx, p[j]);
    }
    const float m_new = std::max(m, mx);
    const float al = m == kNegInf ? 0.0f : std::exp(m - m_new);
    float sum = 0.0f;
    for (int j = 0; j < kc; ++j) {
      p[j] = std::exp(p[j] - m_new);
      sum += p[j];
    }
    for (int d = 0; d < hd; d += L) {
      const int n = hd - d;
      B acc = load_n<Arch>(o + d, n) * B(al);
      for (int j = 0; j < kc; ++j)
        acc = fmadd<Arch>(B(p[j]), load_n<Arch>(a.v + std::ptrdiff_t(j0 + j) * a.ldv + off + d, n),
                          acc);
      store_n<Arch>(o + d, n, acc);
    }
    l = l * al + sum;
    m = m_new;
  }
  const B vl(l);
  for (int d = 0; d < hd; d += L) store_n<Arch>(o + d, hd - d, load_n<Arch>(o + d, hd - d) / vl);
}

// Blocked attention's tasks: heads times groups of `group` query panels of
// NV vectors, or of one vector when the queries fit one (16 meta queries: no
// scores and exps for empty lanes) or when that is needed to give every
// thread work. A query's arithmetic is lane-wise, so neither the panel width
// nor the grouping changes any result. group(std::integral_constant<int, QV>,
// h, q0, nq) runs queries [q0, q0 + nq), nq <= group * QV * lanes; `group`
// shrinks while there are fewer than two tasks per thread.
template <class Arch, class Group>
inline void for_each_query_group(const AttentionArgs& a, int group, Group&& run) {
  constexpr int L = kLanes<Arch>, NV = GemmTile<Arch>::vectors;
  [[maybe_unused]] const double flops = 4.0 * a.queries * double(a.keys) * a.head_dim * a.heads;
  const int want = 2 * max_threads();
  const bool narrow =
      NV > 1 && (a.queries <= L || a.heads * ((a.queries + NV * L - 1) / (NV * L)) < want);
  const int nq = narrow ? L : NV * L;
  const int panels = (a.queries + nq - 1) / nq;
  group = std::clamp(a.heads * panels / want, 1, std::max(1, group));
  const int groups = (panels + group - 1) / group, span = group * nq;
  const int tasks = a.heads * groups;
  LEMEVIT_SIMD_OMP(omp parallel for schedule(dynamic) if (flops >= kParallelFlops && tasks > 1))
  for (int t = 0; t < tasks; ++t) {
    const int h = t / groups, q0 = (t % groups) * span, n = std::min(span, a.queries - q0);
    if (narrow)
      run(std::integral_constant<int, 1>{}, h, q0, n);
    else
      run(std::integral_constant<int, NV>{}, h, q0, n);
  }
}

template <class Arch>
inline void attention(const AttentionArgs& a) {
  if (a.queries <= 0 || a.heads <= 0 || a.head_dim <= 0) return;
  [[maybe_unused]] const double flops = 4.0 * a.queries * double(a.keys) * a.head_dim * a.heads;
  const AttentionPlan<Arch> plan(a.head_dim);
  if (!plan.blocked) {
    const int tasks = a.heads * a.queries;
    [[maybe_unused]] const bool parallel = flops >= kParallelFlops && tasks > 1;
    LEMEVIT_SIMD_OMP(omp parallel for schedule(dynamic, 4) if (parallel))
    for (int t = 0; t < tasks; ++t) attention_query<Arch>(a, t / a.queries, t % a.queries);
    return;
  }
  if (FewKeys<Arch>::applies(a)) {
    using F = FewKeys<Arch>;
    constexpr int QT = F::task_queries;
    const int chunks = (a.queries + QT - 1) / QT, tasks = a.heads * chunks;
    LEMEVIT_SIMD_OMP(omp parallel for schedule(dynamic) if (flops >= kParallelFlops && tasks > 1))
    for (int t = 0; t < tasks; ++t) {
      alignas(64) float kt[F::max_head_dim * F::W];
      const int h = t / chunks, end = std::min(a.queries, (t % chunks + 1) * QT);
      pack_few_keys<Arch>(a, h, kt);
      for (int q0 = (t % chunks) * QT; q0 < end; q0 += F::L)
        attention_few_keys<Arch>(a, kt, h, q0, std::min(F::L, end - q0));
    }
    return;
  }
  for_each_query_group<Arch>(a, 1, [&](auto qv, int h, int q0, int nq) {
    attention_panel<Arch, decltype(qv)::value>(a, plan, h, q0, nq);
  });
}

}  // namespace lemevit::backend::simd

LEMEVIT_SIMD_DIAGNOSTICS_END
