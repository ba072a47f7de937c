#pragma once
// Row- and element-wise kernels of the SIMD backend: LayerNorm, GELU and the
// depthwise 3x3 convolution with residual. All vectorised over channels,
// tails loaded and stored lane by lane; a row's result depends only on that
// row (and, for the convolution, its 3x3 neighbourhood), never on the thread
// count or on which rows share the call.
#include <cmath>
#include <cstddef>

#include "lemevit/backend/simd/gemm.hpp"
#include "lemevit/backend/simd/math.hpp"
#include "lemevit/backend/simd/parallel.hpp"
#include "lemevit/backend/simd/xsimd_compat.hpp"

LEMEVIT_SIMD_DIAGNOSTICS_BEGIN

namespace lemevit::backend::simd {

// Sum of x[0..n) in a fixed order: four vector accumulators over blocks of
// four vectors, the rest into the first, lanes added by reduce_add. The lanes
// of the tail vector past n read as `fill` (they contribute f(fill)).
template <class Arch, class F>
inline float row_sum(const float* x, int n, float fill, F&& f) {
  using B = Batch<Arch>;
  constexpr int L = kLanes<Arch>;
  B s0(0.0f), s1(0.0f), s2(0.0f), s3(0.0f);
  int i = 0;
  for (; i + 4 * L <= n; i += 4 * L) {
    s0 = s0 + f(load<Arch>(x + i));
    s1 = s1 + f(load<Arch>(x + i + L));
    s2 = s2 + f(load<Arch>(x + i + 2 * L));
    s3 = s3 + f(load<Arch>(x + i + 3 * L));
  }
  for (; i + L <= n; i += L) s0 = s0 + f(load<Arch>(x + i));
  if (i < n) s0 = s0 + f(load_partial<Arch>(x + i, n - i, fill));
  return reduce_add<Arch>((s0 + s1) + (s2 + s3));
}

// PyTorch LayerNorm over the last dimension: mean, then the biased variance
// as the mean of squared deviations (two passes). y may alias x.
template <class Arch>
inline void layer_norm(const float* x, int rows, int dim, const float* gamma, const float* beta,
                       float eps, float* y) {
  using B = Batch<Arch>;
  constexpr int L = kLanes<Arch>;
  if (rows <= 0 || dim <= 0) return;
  LEMEVIT_SIMD_OMP(omp parallel for schedule(static) if (double(rows) * dim >= 65536.0))
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + std::ptrdiff_t(r) * dim;
    float* yr = y + std::ptrdiff_t(r) * dim;
    const float mean = row_sum<Arch>(xr, dim, 0.0f, [](B v) { return v; }) / float(dim);
    const B vm(mean);
    // Tail lanes read as the mean: zero deviation.
    float var = row_sum<Arch>(xr, dim, mean, [&](B v) {
      const B d = v - vm;
      return d * d;
    });
    var /= float(dim);
    const B inv(1.0f / std::sqrt(var + eps));
    int i = 0;
    for (; i + L <= dim; i += L)
      store<Arch>(yr + i, fmadd<Arch>((load<Arch>(xr + i) - vm) * inv, load<Arch>(gamma + i),
                                      load<Arch>(beta + i)));
    if (i < dim) {
      const int n = dim - i;
      store_partial<Arch>(yr + i, n,
                          fmadd<Arch>((load_partial<Arch>(xr + i, n) - vm) * inv,
                                      load_partial<Arch>(gamma + i, n),
                                      load_partial<Arch>(beta + i, n)));
    }
  }
}

// x[i] = gelu(x[i]) in place; every element through the same vector code.
template <class Arch>
inline void gelu_inplace(float* x, std::size_t n) {
  constexpr std::size_t L = kLanes<Arch>;
  constexpr std::size_t kBlock = 4096;
  const std::ptrdiff_t blocks = std::ptrdiff_t((n + kBlock - 1) / kBlock);
  LEMEVIT_SIMD_OMP(omp parallel for schedule(static) if (n >= 2 * kBlock))
  for (std::ptrdiff_t bi = 0; bi < blocks; ++bi) {
    const std::size_t begin = std::size_t(bi) * kBlock;
    const std::size_t end = std::min(n, begin + kBlock);
    std::size_t i = begin;
    for (; i + L <= end; i += L) store<Arch>(x + i, gelu<Arch>(load<Arch>(x + i)));
    if (i < end) {
      const int m = int(end - i);
      store_partial<Arch>(x + i, m, gelu<Arch>(load_partial<Arch>(x + i, m)));
    }
  }
}

// y = x + dwconv3x3(x) + bias, NHWC, zero padding 1. Taps outside the image
// are skipped; the rest accumulate in the Reference's order (row, then
// column), one fused multiply-add each.
template <class Arch>
inline void depthwise_conv3x3_residual(const float* x, int h, int w, int channels,
                                       const float* weight, const float* bias, float* y) {
  using B = Batch<Arch>;
  constexpr int L = kLanes<Arch>;
  if (h <= 0 || w <= 0 || channels <= 0) return;
  const std::ptrdiff_t C = channels;
  const int full = channels / L * L, tail = channels - full;
  // Inner rows: per channel vector, a sweep along the row that keeps the
  // 3 x 3 window of input vectors and the nine weight vectors in registers,
  // so that a pixel costs three loads, nine FMAs and a store. (A block of
  // four pixels through lambdas, which GCC left out of line, ran at a sixth
  // of that: 93 us for 56 x 56 x 64, 1 thread.)
  const bool sweeps = h > 2 && w > 2 && full == channels;
  LEMEVIT_SIMD_OMP(omp parallel for schedule(static) if (double(h) * w * channels >= 65536.0))
  for (int i = 0; i < h; ++i) {
    const bool inner_row = sweeps && i > 0 && i < h - 1;
    if (inner_row) {
      const float* up = x + std::ptrdiff_t(i - 1) * w * C;
      const float* mid = up + w * C;
      const float* down = mid + w * C;
      float* out = y + std::ptrdiff_t(i) * w * C;
      for (int c = 0; c < full; c += L) {
        B wt[9];
        for (int t = 0; t < 9; ++t) wt[t] = load<Arch>(weight + t * C + c);
        const B b = load<Arch>(bias + c);
        // Columns j - 1 and j of the three rows; j + 1 is loaded per pixel.
        B a0 = load<Arch>(up + c), a1 = load<Arch>(up + C + c);
        B m0 = load<Arch>(mid + c), m1 = load<Arch>(mid + C + c);
        B d0 = load<Arch>(down + c), d1 = load<Arch>(down + C + c);
        for (int j = 1; j < w - 1; ++j) {
          const std::ptrdiff_t next = (j + 1) * C + c;
          const B a2 = load<Arch>(up + next), m2 = load<Arch>(mid + next), d2 = load<Arch>(down + next);
          B acc = fmadd<Arch>(a0, wt[0], b);  // the taps in the Reference's order
          acc = fmadd<Arch>(a1, wt[1], acc);
          acc = fmadd<Arch>(a2, wt[2], acc);
          acc = fmadd<Arch>(m0, wt[3], acc);
          acc = fmadd<Arch>(m1, wt[4], acc);
          acc = fmadd<Arch>(m2, wt[5], acc);
          acc = fmadd<Arch>(d0, wt[6], acc);
          acc = fmadd<Arch>(d1, wt[7], acc);
          acc = fmadd<Arch>(d2, wt[8], acc);
          store<Arch>(out + j * C + c, m1 + acc);
          a0 = a1, a1 = a2, m0 = m1, m1 = m2, d0 = d1, d1 = d2;
        }
      }
    }
    for (int j = 0; j < w; ++j) {
      if (inner_row && j > 0 && j < w - 1) continue;  // swept above
      // The taps inside the image, in order: input and weight pointers.
      const float* xs[9];
      const float* ws[9];
      int taps = 0;
      for (int di = -1; di <= 1; ++di) {
        const int ii = i + di;
        if (ii < 0 || ii >= h) continue;
        for (int dj = -1; dj <= 1; ++dj) {
          const int jj = j + dj;
          if (jj < 0 || jj >= w) continue;
          xs[taps] = x + (std::ptrdiff_t(ii) * w + jj) * C;
          ws[taps] = weight + ((di + 1) * 3 + (dj + 1)) * C;
          ++taps;
        }
      }
      const std::ptrdiff_t at = (std::ptrdiff_t(i) * w + j) * C;
      for (int c = 0; c < full; c += L) {
        B acc = load<Arch>(bias + c);
        for (int t = 0; t < taps; ++t)
          acc = fmadd<Arch>(load<Arch>(xs[t] + c), load<Arch>(ws[t] + c), acc);
        store<Arch>(y + at + c, load<Arch>(x + at + c) + acc);
      }
      if (tail) {
        B acc = load_partial<Arch>(bias + full, tail);
        for (int t = 0; t < taps; ++t)
          acc = fmadd<Arch>(load_partial<Arch>(xs[t] + full, tail),
                            load_partial<Arch>(ws[t] + full, tail), acc);
        store_partial<Arch>(y + at + full, tail, load_partial<Arch>(x + at + full, tail) + acc);
      }
    }
  }
}

}  // namespace lemevit::backend::simd

LEMEVIT_SIMD_DIAGNOSTICS_END
