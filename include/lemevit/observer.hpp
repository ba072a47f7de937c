#pragma once
// Looking inside a forward pass without slowing it down when nobody looks:
// an Observer passed to Model::forward sees each stage's feature map (for
// detection/segmentation backbones) and the meta tokens' attention over the
// image tokens (the paper's Figure 4). Both are off the hot path: with no
// observer, forward does exactly the same work.
#include <cmath>
#include <cstddef>
#include <vector>

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
  // x after stage `stage`: NHWC tokens, batch x height x width x channels,
  // in the backend's memory (device memory for backend::Cuda).
  virtual void stage_output(int /*stage*/, const float* /*x*/, int /*batch*/, int /*height*/,
                            int /*width*/, int /*channels*/) {}
  // Called for every C, D and D2 block while its projections are alive
  // (host-memory backends only).
  virtual void meta_attention(const MetaAttention& /*a*/) {}
};

// Records the meta tokens' attention maps of one block: by default the last
// dual cross-attention (D/D2) block of the network, the paper's Figure 4
// (the last C block for a network without D/D2 blocks).
class AttentionMaps final : public Observer {
 public:
  AttentionMaps() = default;
  // Record block (stage, block) instead, whatever its kind (C, D or D2).
  AttentionMaps(int stage, int block) : want_stage_(stage), want_block_(block) {}

  void meta_attention(const MetaAttention& a) override {
    const bool chosen = want_stage_ >= 0 ? (a.stage == want_stage_ && a.block == want_block_)
                                         : (a.kind != Kind::C || !seen_dual_);
    if (!chosen) return;
    seen_dual_ = seen_dual_ || a.kind != Kind::C;
    info_ = a;
    const std::size_t n = std::size_t(a.height) * a.width;
    maps_.resize(std::size_t(a.batch) * a.heads * a.meta_tokens * n);
    for (int b = 0; b < a.batch; ++b)
      for (int h = 0; h < a.heads; ++h)
        for (int m = 0; m < a.meta_tokens; ++m)
          a.probabilities(b, h, m, maps_.data() + ((std::size_t(b) * a.heads + h) * a.meta_tokens + m) * n);
    recorded_ = true;
  }

  bool recorded() const { return recorded_; }
  // Which block was recorded, its kind and geometry (q/k pointers are stale).
  const MetaAttention& info() const { return info_; }
  // Attention of meta token m, head h, image b over the height x width image tokens.
  const float* map(int image, int head, int meta_token) const {
    const std::size_t n = std::size_t(info_.height) * info_.width;
    return maps_.data() + ((std::size_t(image) * info_.heads + head) * info_.meta_tokens + meta_token) * n;
  }
  // Mean over heads and the given meta tokens (all when empty): height x width values.
  std::vector<float> mean_map(int image, const std::vector<int>& meta_tokens = {}) const {
    std::vector<int> tokens = meta_tokens;
    if (tokens.empty())
      for (int m = 0; m < info_.meta_tokens; ++m) tokens.push_back(m);
    const std::size_t n = std::size_t(info_.height) * info_.width;
    std::vector<float> out(n, 0.0f);
    for (int h = 0; h < info_.heads; ++h)
      for (int m : tokens) {
        const float* p = map(image, h, m);
        for (std::size_t j = 0; j < n; ++j) out[j] += p[j] / float(info_.heads * tokens.size());
      }
    return out;
  }

 private:
  int want_stage_ = -1, want_block_ = -1;
  bool seen_dual_ = false, recorded_ = false;
  MetaAttention info_{};
  std::vector<float> maps_;
};

// Where a layer reports to (nullptr: nobody is looking).
struct Probe {
  Observer* observer = nullptr;
  int stage = 0, block = 0;
};

}  // namespace lemevit
