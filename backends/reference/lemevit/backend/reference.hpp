#pragma once
// The Reference backend: plain scalar loops, written for obviousness, not
// speed. Every other backend is tested against it, so keep it boring.
#include <cmath>
#include <cstddef>
#include <vector>

#include "lemevit/backend.hpp"
#include "lemevit/host_kernels.hpp"

namespace lemevit {

template <>
struct Kernels<backend::Reference> : HostKernels {
  // Weights stay in PyTorch's (out, in) layout.
  struct LinearWeights {
    std::vector<float> w, b;
    int out = 0, in = 0;
  };

  static void prepare_linear(const float* w, const float* b, int out, int in,
                             LinearWeights& dst) {
    dst.out = out;
    dst.in = in;
    dst.w.assign(w, w + std::size_t(out) * in);
    dst.b.assign(std::size_t(out), 0.0f);
    if (b) dst.b.assign(b, b + out);
  }

  static float gelu(float v) { return 0.5f * v * (1.0f + std::erf(v * 0.70710678118654752f)); }

  static void linear(const float* x, int rows, int ldx, const LinearWeights& w, float* y,
                     int ldy, Epilogue e) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; ++r) {
      for (int o = 0; o < w.out; ++o) {
        const float* wr = w.w.data() + std::size_t(o) * w.in;
        const float* xr = x + std::size_t(r) * ldx;
        float acc = 0.0f;
        for (int i = 0; i < w.in; ++i) acc += xr[i] * wr[i];
        acc += w.b[o];
        float& dst = y[std::size_t(r) * ldy + o];
        switch (e) {
          case Epilogue::Store: dst = acc; break;
          case Epilogue::Gelu: dst = gelu(acc); break;
          case Epilogue::Accumulate: dst += acc; break;
        }
      }
    }
  }

  static void layer_norm(const float* x, int rows, int dim, const float* gamma,
                         const float* beta, float eps, float* y) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; ++r) {
      const float* xr = x + std::size_t(r) * dim;
      float* yr = y + std::size_t(r) * dim;
      float mean = 0.0f;
      for (int i = 0; i < dim; ++i) mean += xr[i];
      mean /= float(dim);
      float var = 0.0f;
      for (int i = 0; i < dim; ++i) var += (xr[i] - mean) * (xr[i] - mean);
      var /= float(dim);  // biased, as PyTorch's LayerNorm
      const float inv = 1.0f / std::sqrt(var + eps);
      for (int i = 0; i < dim; ++i) yr[i] = (xr[i] - mean) * inv * gamma[i] + beta[i];
    }
  }

  static void gelu(float* x, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) x[i] = gelu(x[i]);
  }

  static void depthwise_conv3x3_residual(const float* x, int h, int w, int channels,
                                         const float* weight, const float* bias, float* y) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < h; ++i) {
      for (int j = 0; j < w; ++j) {
        for (int c = 0; c < channels; ++c) {
          float acc = bias[c];
          for (int di = -1; di <= 1; ++di) {
            for (int dj = -1; dj <= 1; ++dj) {
              const int ii = i + di, jj = j + dj;
              if (ii < 0 || ii >= h || jj < 0 || jj >= w) continue;
              acc += x[(std::size_t(ii) * w + jj) * channels + c] *
                     weight[((di + 1) * 3 + (dj + 1)) * channels + c];
            }
          }
          const std::size_t at = (std::size_t(i) * w + j) * channels + c;
          y[at] = x[at] + acc;
        }
      }
    }
  }

  // Two passes over the keys per query (max, then exp-sum and values), so it
  // needs no scratch memory whatever the key count.
  static void attention(const AttentionArgs& a) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int h = 0; h < a.heads; ++h) {
      for (int i = 0; i < a.queries; ++i) {
        const int off = h * a.head_dim;
        const float* q = a.q + std::size_t(i) * a.ldq + off;
        auto score = [&](int j) {
          const float* k = a.k + std::size_t(j) * a.ldk + off;
          float s = 0.0f;
          for (int d = 0; d < a.head_dim; ++d) s += q[d] * k[d];
          return s * a.scale;
        };
        float mx = -INFINITY;
        for (int j = 0; j < a.keys; ++j) mx = std::fmax(mx, score(j));
        float* o = a.out + std::size_t(i) * a.ldo + off;
        for (int d = 0; d < a.head_dim; ++d) o[d] = 0.0f;
        float sum = 0.0f;
        for (int j = 0; j < a.keys; ++j) {
          const float p = std::exp(score(j) - mx);
          sum += p;
          const float* v = a.v + std::size_t(j) * a.ldv + off;
          for (int d = 0; d < a.head_dim; ++d) o[d] += p * v[d];
        }
        for (int d = 0; d < a.head_dim; ++d) o[d] /= sum;
      }
    }
  }
};

}  // namespace lemevit
