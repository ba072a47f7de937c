// Device code of the CUDA backend (launched from kernels.cu). Semantics are
// those of the Reference backend (backends/reference), kernel for kernel.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>

namespace lemevit {
namespace backend {
namespace cuda {
namespace kernels {

#if defined(__CUDACC__)
#define LEMEVIT_UNROLL _Pragma("unroll")
#else
#define LEMEVIT_UNROLL  // g++ running the emulation (emulation/cuda_runtime.h)
#endif

// Grid-stride loop over [0, n).
#define LEMEVIT_FOR_EACH(i, n)                                                        \
  for (std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += std::size_t(gridDim.x) * blockDim.x)

__device__ __forceinline__ float gelu(float v) {
  return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));  // exact erf form
}

// ---------------------------------------------------------------- GEMM epilogue

enum EpilogueMode { kAddBias, kAddBiasGelu, kGelu };

// y (rows x cols, row pitch ldy) op= bias, in place after the GEMM.
template <int Mode>
__global__ void bias_epilogue(float* y, int rows, int cols, int ldy, const float* bias) {
  const std::size_t n = std::size_t(rows) * cols;
  LEMEVIT_FOR_EACH(i, n) {
    const std::size_t r = i / cols;
    const int col = int(i - r * cols);
    float& v = y[r * ldy + col];
    if (Mode == kAddBias) v += bias[col];
    if (Mode == kAddBiasGelu) v = gelu(v + bias[col]);
    if (Mode == kGelu) v = gelu(v);
  }
}

// ---------------------------------------------------------------- elementwise

__device__ __forceinline__ float warp_sum(float v) {
  // Butterfly: every lane ends with the same sum, in the same order every run.
  LEMEVIT_UNROLL
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// One warp per row; two passes over the row (it stays in L1) so the variance
// is of centred values. In place (y == x) is allowed.
__global__ void layer_norm(const float* x, int rows, int dim, const float* gamma, const float* beta,
                           float eps, float* y) {
  const int row = int((std::size_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32);
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;  // whole warps leave together
  const float* xr = x + std::size_t(row) * dim;
  float* yr = y + std::size_t(row) * dim;
  float s = 0.0f;
  for (int i = lane; i < dim; i += 32) s += xr[i];
  const float mean = warp_sum(s) / float(dim);
  float q = 0.0f;
  for (int i = lane; i < dim; i += 32) {
    const float d = xr[i] - mean;
    q += d * d;
  }
  const float var = warp_sum(q) / float(dim);  // biased, as PyTorch
  const float inv = 1.0f / sqrtf(var + eps);
  for (int i = lane; i < dim; i += 32) yr[i] = (xr[i] - mean) * inv * gamma[i] + beta[i];
}

__global__ void gelu(float* x, std::size_t n) {
  LEMEVIT_FOR_EACH(i, n) x[i] = gelu(x[i]);
}

// y = x + bias + dwconv3x3(x), NHWC, zero padding 1; one thread per output
// value, channels fastest so neighbouring threads read neighbouring floats.
__global__ void depthwise_conv3x3_residual(const float* x, int h, int w, int channels,
                                           const float* weight, const float* bias, float* y) {
  const std::size_t n = std::size_t(h) * w * channels;
  LEMEVIT_FOR_EACH(idx, n) {
    const int c = int(idx % channels);
    const std::size_t p = idx / channels;
    const int i = int(p / w), j = int(p % w);
    float acc = bias[c];
    LEMEVIT_UNROLL
    for (int di = -1; di <= 1; ++di) {
      LEMEVIT_UNROLL
      for (int dj = -1; dj <= 1; ++dj) {
        const int ii = i + di, jj = j + dj;
        if (ii < 0 || ii >= h || jj < 0 || jj >= w) continue;
        acc += x[(std::size_t(ii) * w + jj) * channels + c] * weight[((di + 1) * 3 + (dj + 1)) * channels + c];
      }
    }
    y[idx] = x[idx] + acc;
  }
}

// ---------------------------------------------------------------- attention

constexpr int kKeyTile = 16;     // keys per shared-memory tile
constexpr int kMaxHeadDim = 128;

struct AttentionParams {
  const float* q;
  const float* k;
  const float* v;
  int ldq, ldk, ldv;
  int queries, keys, heads, head_dim;
  float scale;
  float* out;
  int ldo;
  int split_keys, splits;  // keys per split (a multiple of kKeyTile), number of splits
  float* part_ml;          // splits > 1: (max, sum) per (split, head, query)
  float* part_acc;         //             unnormalised output rows, head_dim each
};

// Launch shape: one thread per (query, head). The keys are split over more
// blocks while the grid would leave SMs idle (2 blocks per SM wanted),
// keeping at least 64 keys per split.
struct AttentionPlan {
  int threads, query_blocks, splits, split_keys;
};
inline AttentionPlan plan_attention(int queries, int keys, int heads, int sms) {
  AttentionPlan p{};
  p.threads = queries >= 128 ? 128 : queries > 32 ? 64 : 32;
  p.query_blocks = (queries + p.threads - 1) / p.threads;
  const int base = p.query_blocks * heads;
  const int want = (2 * sms + base - 1) / base;
  const int max_splits = (keys + 63) / 64;
  const int splits = want < max_splits ? want : max_splits;
  p.split_keys = ((keys + splits - 1) / splits + kKeyTile - 1) / kKeyTile * kKeyTile;
  p.splits = (keys + p.split_keys - 1) / p.split_keys;
  return p;
}

// Grid (query blocks, heads, splits); one thread per query. HD is head_dim
// rounded up: q, the accumulator and the tiles are zero-padded to HD so the
// unrolled loops need no bounds checks and stay in registers.
template <int HD>
__global__ void __launch_bounds__(128) attention_tile(const AttentionParams p) {
  __shared__ __align__(16) float ks[kKeyTile][HD];
  __shared__ __align__(16) float vs[kKeyTile][HD];
  const int h = blockIdx.y, split = blockIdx.z;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const bool active = i < p.queries;
  const int hd = p.head_dim, off = h * hd;

  float q[HD], acc[HD];
  const float* qi = p.q + std::size_t(active ? i : 0) * p.ldq + off;
  LEMEVIT_UNROLL
  for (int d = 0; d < HD; ++d) {
    q[d] = active && d < hd ? qi[d] : 0.0f;
    acc[d] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;

  const int k0 = split * p.split_keys;
  const int k1 = min(p.keys, k0 + p.split_keys);
  for (int t0 = k0; t0 < k1; t0 += kKeyTile) {
    const int nk = min(kKeyTile, k1 - t0);
    __syncthreads();  // the previous tile is consumed
    for (int e = threadIdx.x; e < kKeyTile * HD; e += blockDim.x) {
      const int j = e / HD, d = e % HD;
      const bool in = j < nk && d < hd;
      const std::size_t key = std::size_t(t0 + (in ? j : 0));
      ks[j][d] = in ? p.k[key * p.ldk + off + d] : 0.0f;
      vs[j][d] = in ? p.v[key * p.ldv + off + d] : 0.0f;
    }
    __syncthreads();

    float s[kKeyTile];
    float tile_max = -INFINITY;
    LEMEVIT_UNROLL
    for (int j = 0; j < kKeyTile; ++j) {
      float dot = 0.0f;
      LEMEVIT_UNROLL
      for (int d = 0; d < HD; ++d) dot = fmaf(q[d], ks[j][d], dot);
      s[j] = j < nk ? dot * p.scale : -INFINITY;
      tile_max = fmaxf(tile_max, s[j]);
    }
    // Online softmax: rescale the running state once per tile.
    const float m_new = fmaxf(m, tile_max);
    const float corr = m == -INFINITY ? 0.0f : expf(m - m_new);
    l *= corr;
    LEMEVIT_UNROLL
    for (int d = 0; d < HD; ++d) acc[d] *= corr;
    LEMEVIT_UNROLL
    for (int j = 0; j < kKeyTile; ++j) {
      const float pj = expf(s[j] - m_new);  // 0 for padding keys
      l += pj;
      LEMEVIT_UNROLL
      for (int d = 0; d < HD; ++d) acc[d] = fmaf(pj, vs[j][d], acc[d]);
    }
    m = m_new;
  }
  if (!active) return;

  if (p.splits == 1) {
    float* o = p.out + std::size_t(i) * p.ldo + off;
    const float inv = 1.0f / l;
    LEMEVIT_UNROLL
    for (int d = 0; d < HD; ++d)
      if (d < hd) o[d] = acc[d] * inv;
  } else {
    const std::size_t state = (std::size_t(split) * p.heads + h) * p.queries + i;
    p.part_ml[2 * state] = m;
    p.part_ml[2 * state + 1] = l;
    float* pa = p.part_acc + state * hd;
    LEMEVIT_UNROLL
    for (int d = 0; d < HD; ++d)
      if (d < hd) pa[d] = acc[d];
  }
}

// Merges the splits' softmax states in split order; one thread per output value.
__global__ void attention_merge(const AttentionParams p) {
  const int hd = p.head_dim;
  const std::size_t n = std::size_t(p.queries) * p.heads * hd;
  const std::size_t per_split = std::size_t(p.heads) * p.queries;
  LEMEVIT_FOR_EACH(idx, n) {
    const int d = int(idx % hd);
    const std::size_t t = idx / hd;
    const int h = int(t % p.heads), i = int(t / p.heads);
    const std::size_t first = std::size_t(h) * p.queries + i;
    float mx = -INFINITY;
    for (int s = 0; s < p.splits; ++s) mx = fmaxf(mx, p.part_ml[2 * (first + s * per_split)]);
    float l = 0.0f, o = 0.0f;
    for (int s = 0; s < p.splits; ++s) {
      const std::size_t state = first + s * per_split;
      const float f = expf(p.part_ml[2 * state] - mx);
      l += p.part_ml[2 * state + 1] * f;
      o += p.part_acc[state * hd + d] * f;
    }
    p.out[std::size_t(i) * p.ldo + std::size_t(h) * hd + d] = o / l;
  }
}

// ---------------------------------------------------------------- data movement

__global__ void nchw_to_nhwc(const float* x, int batch, int channels, int hw, float* y) {
  const std::size_t n = std::size_t(batch) * channels * hw;
  LEMEVIT_FOR_EACH(idx, n) {  // idx walks y: (b, pixel, channel)
    const int c = int(idx % channels);
    const std::size_t t = idx / channels;
    const std::size_t pix = t % hw, b = t / hw;
    y[idx] = x[(b * channels + c) * hw + pix];
  }
}

__global__ void nhwc_to_nchw(const float* x, int batch, int hw, int channels, float* y) {
  const std::size_t n = std::size_t(batch) * channels * hw;
  LEMEVIT_FOR_EACH(idx, n) {  // idx walks y: (b, channel, pixel)
    const std::size_t pix = idx % hw, t = idx / hw;
    const std::size_t c = t % channels, b = t / channels;
    y[idx] = x[(b * hw + pix) * channels + c];
  }
}

// Rows = output pixels of each image, columns (ky, kx, channel), zeros outside.
__global__ void im2col_3x3_s2(const float* x, int batch, int h, int w, int channels, float* cols) {
  const int oh = (h - 1) / 2 + 1, ow = (w - 1) / 2 + 1;
  const std::size_t n = std::size_t(batch) * oh * ow * 9 * channels;
  LEMEVIT_FOR_EACH(idx, n) {
    const int c = int(idx % channels);
    std::size_t t = idx / channels;
    const int tap = int(t % 9);
    t /= 9;
    const int oj = int(t % ow);
    t /= ow;
    const int oi = int(t % oh);
    const std::size_t b = t / oh;
    const int i = 2 * oi + tap / 3 - 1, j = 2 * oj + tap % 3 - 1;
    cols[idx] = i < 0 || i >= h || j < 0 || j >= w ? 0.0f : x[((b * h + i) * w + j) * channels + c];
  }
}

__global__ void broadcast_rows(const float* src, std::size_t n, int copies, float* dst) {
  LEMEVIT_FOR_EACH(idx, n * copies) dst[idx] = src[idx % n];
}

// out[b, d] = mean_t x[b, t, d] * scale[d] + shift[d] + mean_m c[b, m, d],
// sums in token order (as the host backends).
__global__ void pool_head(const float* x, int batch, int tokens, const float* c, int meta_tokens, int dim,
                          const float* scale, const float* shift, float* out) {
  LEMEVIT_FOR_EACH(idx, std::size_t(batch) * dim) {
    const std::size_t b = idx / dim;
    const int d = int(idx % dim);
    float sx = 0.0f, sc = 0.0f;
    for (int t = 0; t < tokens; ++t) sx += x[(b * tokens + t) * dim + d];
    for (int m = 0; m < meta_tokens; ++m) sc += c[(b * meta_tokens + m) * dim + d];
    out[idx] = sx / float(tokens) * scale[d] + shift[d] + sc / float(meta_tokens);
  }
}

#undef LEMEVIT_FOR_EACH
#undef LEMEVIT_UNROLL

}  // namespace kernels
}  // namespace cuda
}  // namespace backend
}  // namespace lemevit
