#pragma once
// Looking inside a forward pass without slowing it down when nobody looks:
// an Observer passed to Model::forward sees each stage's feature map (for
// detection/segmentation backbones) and the meta tokens' attention over the
// image tokens (the paper's Figure 4). Both are off the hot path: with no
// observer, forward does exactly the same work.
#include <cmath>
#include <cstddef>

#include "lemevit/arch.hpp"

namespace lemevit {

// The c-branch attention of one C, D or D2 block: meta tokens (queries)
// over the image tokens (keys), for `batch` images. `probabilities` fills
// softmax(scale * q k^T) for one image, head and meta token.
struct MetaAttention {
  int stage, block;
  Kind kind;
  int batch, heads, head_dim, meta_tokens, height, width;
  float scale;
  const float* q;  // meta-token queries, image b at q + b * q_batch_stride, rows ldq apart
  const float* k;  // image-token keys
  int ldq, ldk;
  std::size_t q_batch_stride, k_batch_stride;

  // out: height * width probabilities.
  void probabilities(int image, int head, int meta_token, float* out) const {
    const float* qr = q + image * q_batch_stride + std::size_t(meta_token) * ldq + head * head_dim;
    const float* kb = k + image * k_batch_stride + head * head_dim;
    const int n = height * width;
    float mx = -INFINITY;
    for (int j = 0; j < n; ++j) {
      float s = 0.0f;
      for (int d = 0; d < head_dim; ++d) s += qr[d] * kb[std::size_t(j) * ldk + d];
      out[j] = s * scale;
      mx = std::fmax(mx, out[j]);
    }
    float sum = 0.0f;
    for (int j = 0; j < n; ++j) sum += (out[j] = std::exp(out[j] - mx));
    for (int j = 0; j < n; ++j) out[j] /= sum;
  }
};

class Observer {
 public:
  virtual ~Observer() = default;
  // x after stage `stage`: NHWC tokens, batch x height x width x channels.
  virtual void stage_output(int /*stage*/, const float* /*x*/, int /*batch*/, int /*height*/,
                            int /*width*/, int /*channels*/) {}
  // Called for every C, D and D2 block while its projections are alive.
  virtual void meta_attention(const MetaAttention& /*a*/) {}
};

// Where a layer reports to (nullptr: nobody is looking).
struct Probe {
  Observer* observer = nullptr;
  int stage = 0, block = 0;
};

}  // namespace lemevit
