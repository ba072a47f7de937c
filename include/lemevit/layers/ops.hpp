#pragma once
// Data movement shared by all CPU backends (layout changes, patch gathering,
// pooling). No arithmetic worth a backend specialisation lives here.
#include <cstddef>

namespace lemevit::ops {

// NCHW image -> NHWC tokens.
inline void nchw_to_nhwc(const float* x, int channels, int h, int w, float* y) {
  for (int c = 0; c < channels; ++c)
    for (int i = 0; i < h * w; ++i) y[std::size_t(i) * channels + c] = x[std::size_t(c) * h * w + i];
}

// NHWC tokens -> NCHW map (for backbone features handed to the user).
inline void nhwc_to_nchw(const float* x, int h, int w, int channels, float* y) {
  for (int i = 0; i < h * w; ++i)
    for (int c = 0; c < channels; ++c) y[std::size_t(c) * h * w + i] = x[std::size_t(i) * channels + c];
}

// Patches of a 3x3 stride-2 padding-1 convolution over an NHWC map, one row
// per output pixel, ordered (ky, kx, channel) to match the prepared weights.
inline void im2col_3x3_s2(const float* x, int h, int w, int channels, float* cols) {
  const int oh = (h - 1) / 2 + 1, ow = (w - 1) / 2 + 1;
  const std::size_t row = std::size_t(9) * channels;
#pragma omp parallel for schedule(static)
  for (int oi = 0; oi < oh; ++oi) {
    for (int oj = 0; oj < ow; ++oj) {
      float* dst = cols + (std::size_t(oi) * ow + oj) * row;
      for (int ky = 0; ky < 3; ++ky) {
        for (int kx = 0; kx < 3; ++kx, dst += channels) {
          const int i = 2 * oi + ky - 1, j = 2 * oj + kx - 1;
          if (i < 0 || i >= h || j < 0 || j >= w) {
            for (int c = 0; c < channels; ++c) dst[c] = 0.0f;
          } else {
            const float* src = x + (std::size_t(i) * w + j) * channels;
            for (int c = 0; c < channels; ++c) dst[c] = src[c];
          }
        }
      }
    }
  }
}

// Mean over `rows` rows of a (rows x dim) matrix, accumulated in row order
// so that the result does not depend on threading.
inline void mean_rows(const float* x, int rows, int dim, float* out) {
  for (int c = 0; c < dim; ++c) out[c] = 0.0f;
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < dim; ++c) out[c] += x[std::size_t(r) * dim + c];
  for (int c = 0; c < dim; ++c) out[c] /= float(rows);
}

}  // namespace lemevit::ops
