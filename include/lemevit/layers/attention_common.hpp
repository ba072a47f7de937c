#pragma once
// Pieces shared by the four attention kinds: per-image dispatch of the
// backend's multi-head attention kernel over fused projection buffers.
#include <cmath>
#include <cstddef>

#include "lemevit/backend.hpp"

namespace lemevit::layers {

// A strided view of one operand (q, k or v) inside a fused projection:
// `data` + b * batch_stride is image b's first row, rows `ld` floats apart.
struct Operand {
  const float* data;
  int ld;
  std::size_t batch_stride;
};

template <class B>
void multi_head_attention(int batch, Operand q, int queries, Operand k, Operand v, int keys,
                          int heads, int head_dim, float scale, float* out, int ldo) {
  for (int b = 0; b < batch; ++b) {
    AttentionArgs a{};
    a.q = q.data + b * q.batch_stride;
    a.k = k.data + b * k.batch_stride;
    a.v = v.data + b * v.batch_stride;
    a.ldq = q.ld;
    a.ldk = k.ld;
    a.ldv = v.ld;
    a.queries = queries;
    a.keys = keys;
    a.heads = heads;
    a.head_dim = head_dim;
    a.scale = scale;
    a.out = out + std::size_t(b) * queries * ldo;
    a.ldo = ldo;
    Kernels<B>::attention(a);
  }
}

// FLOPs of multi_head_attention: q k^T and the weighted sum of v, each
// queries x keys x dim multiply-adds per image.
inline double attention_flops(int batch, int queries, int keys, int dim) {
  return 4.0 * batch * queries * keys * dim;
}

inline float head_dim_scale(int head_dim) { return float(1.0 / std::sqrt(double(head_dim))); }

// Scales of the dual cross-attention branches (SPEC.md): the x branch has N
// queries over M meta keys, the c branch M queries over N image keys.
struct DcaScales {
  float x, c;
};
inline DcaScales dca_scales(DcaScale policy, int tokens, int meta_tokens, int dim, int head_dim) {
  if (policy == DcaScale::HeadDim) return {head_dim_scale(head_dim), head_dim_scale(head_dim)};
  const double base = 1.0 / std::sqrt(double(dim));
  return {float(std::log(double(meta_tokens)) / std::log(double(tokens)) * base), float(base)};
}

}  // namespace lemevit::layers
