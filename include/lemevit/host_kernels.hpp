#pragma once
// What every CPU backend shares: memory is ordinary host memory (uploads and
// downloads are copies, or nothing), parameters live in std::vector, and the
// data-movement ops are plain loops. A device backend (backends/cuda)
// provides the same members for its own memory.
#include <cstddef>
#include <cstring>
#include <new>
#include <vector>

#include "lemevit/arch.hpp"

namespace lemevit {

struct HostKernels {
  static constexpr bool host_memory = true;  // backend pointers are readable on the host

  using Params = std::vector<float>;
  static Params make_params(const float* host, std::size_t n) { return Params(host, host + n); }
  static const float* data(const Params& p) { return p.data(); }

  static float* allocate(std::size_t floats) {
    return static_cast<float*>(::operator new[](floats * sizeof(float), std::align_val_t(64)));
  }
  static void release(float* p) { ::operator delete[](p, std::align_val_t(64)); }
  static void upload(float* dst, const float* src, std::size_t n) {
    if (dst != src) std::memcpy(dst, src, n * sizeof(float));
  }
  static void download(float* dst, const float* src, std::size_t n) { upload(dst, src, n); }
  static void synchronize() {}

  // NCHW images -> NHWC token maps. Pixel by pixel, so that y is written in
  // order (channel by channel, each pass rewrote every cache line of y: 3x
  // slower for 224 x 224 RGB).
  static void nchw_to_nhwc(const float* x, int batch, int channels, int h, int w, float* y) {
    const std::size_t plane = std::size_t(h) * w, image = channels * plane;
    for (int b = 0; b < batch; ++b) {
      const float* xb = x + b * image;
      float* yb = y + b * image;
      for (std::size_t i = 0; i < plane; ++i)
        for (int c = 0; c < channels; ++c) yb[i * channels + c] = xb[c * plane + i];
    }
  }

  // NHWC token maps -> NCHW (backbone features handed to the user).
  static void nhwc_to_nchw(const float* x, int batch, int h, int w, int channels, float* y) {
    const std::size_t image = std::size_t(channels) * h * w;
    for (int b = 0; b < batch; ++b)
      for (int i = 0; i < h * w; ++i)
        for (int c = 0; c < channels; ++c) y[b * image + std::size_t(c) * h * w + i] = x[b * image + std::size_t(i) * channels + c];
  }

  // Patches of a 3x3 stride-2 padding-1 convolution over NHWC maps, one row
  // per output pixel, ordered (ky, kx, channel) like the prepared weights.
  static void im2col_3x3_s2(const float* x, int batch, int h, int w, int channels, float* cols) {
    const int oh = conv_s2(h), ow = conv_s2(w);
    const std::size_t row = std::size_t(9) * channels;
    for (int b = 0; b < batch; ++b) {
      const float* xb = x + std::size_t(b) * h * w * channels;
      float* cb = cols + std::size_t(b) * oh * ow * row;
#pragma omp parallel for schedule(static)
      for (int oi = 0; oi < oh; ++oi)
        for (int oj = 0; oj < ow; ++oj) patch_3x3_s2(xb, h, w, channels, oi, oj, cb + (std::size_t(oi) * ow + oj) * row);
    }
  }

  // One row of im2col_3x3_s2: output pixel (oi, oj) of map x. The three
  // pixels of a kernel row are adjacent in NHWC: one copy each.
  static void patch_3x3_s2(const float* x, int h, int w, int channels, int oi, int oj, float* dst) {
    const std::size_t pixel = std::size_t(channels) * sizeof(float);
    const int j0 = 2 * oj - 1;
    const int first = j0 < 0 ? 1 : 0, last = j0 + 2 >= w ? 2 : 3;  // the kx in [first, last) inside the map
    for (int ky = 0; ky < 3; ++ky, dst += 3 * channels) {
      const int i = 2 * oi + ky - 1;
      if (i < 0 || i >= h) {
        std::memset(dst, 0, 3 * pixel);
        continue;
      }
      if (first) std::memset(dst, 0, pixel);
      std::memcpy(dst + first * channels, x + (std::ptrdiff_t(i) * w + j0 + first) * channels, (last - first) * pixel);
      if (last < 3) std::memset(dst + 2 * channels, 0, pixel);
    }
  }

  // dst = `copies` consecutive copies of src (n floats).
  static void broadcast_rows(const float* src, std::size_t n, int copies, float* dst) {
    for (int b = 0; b < copies; ++b) std::memcpy(dst + b * n, src, n * sizeof(float));
  }

  // out[b] = mean over tokens of x[b] * scale + shift + mean over meta tokens of c[b],
  // means accumulated in token order so that threading cannot change them.
  static void pool_head(const float* x, int batch, int tokens, const float* c, int meta_tokens, int dim,
                        const float* scale, const float* shift, float* out) {
    for (int b = 0; b < batch; ++b) {
      float* o = out + std::size_t(b) * dim;
      for (int d = 0; d < dim; ++d) {
        float sx = 0.0f, sc = 0.0f;
        for (int t = 0; t < tokens; ++t) sx += x[(std::size_t(b) * tokens + t) * dim + d];
        for (int m = 0; m < meta_tokens; ++m) sc += c[(std::size_t(b) * meta_tokens + m) * dim + d];
        o[d] = sx / float(tokens) * scale[d] + shift[d] + sc / float(meta_tokens);
      }
    }
  }
};

}  // namespace lemevit
