#pragma once
// Where a forward pass spends its time, by layer kind:
//
//   lemevit::Profile profile;
//   net.forward(images, batch, logits, ws, profile);  // same work, same logits, timed
//   profile[lemevit::Part::Attention].seconds, profile.stage(1).flops ...
//
// Layers wrap each piece of work in `timed<B>(profiler, part, flops, work)`.
// A normal forward passes `NoProfile`, for which `timed` is the plain call:
// no clock, no branch, no counter is compiled into it. With a `Profile`, the
// calling thread reads a steady clock around each piece (the kernels inside
// run OpenMP-parallel and join before returning; device backends are
// synchronised first), so a part's time is the wall time all threads spent
// in it. A batch whose passes run side by side (Model::run) is timed the
// same way: each thread times its own single-threaded passes, and the
// parts' times are averaged over the threads (merge).
#include <algorithm>
#include <array>
#include <chrono>
#include <type_traits>

#include "lemevit/arch.hpp"
#include "lemevit/backend.hpp"

namespace lemevit {

enum class Part {
  Stem,            // the two stride-2 convolutions (+ BatchNorm, GELU) on the image
  Downsample,      // stride-2 convolutions between stages
  MetaDownsample,  // meta_token_downsample (MLP + LayerNorms on the meta tokens)
  LayerNorm,       // the blocks' norm1 / norm2 on image and meta tokens
  PosEmbed,        // x + depthwise 3x3 conv (conditional position encoding)
  Projections,     // q, k, v projections (fused: qkv, kv, qv1, kv2, ...)
  OutProjection,   // proj, proj_x, proj_c
  Attention,       // softmax(q k^T) v, every head
  Mlp,             // the blocks' MLPs (fc1 + GELU, fc2 + residual)
  Head,            // norm_c, pooling, final BatchNorm, classifier
};
inline constexpr int kParts = int(Part::Head) + 1;

inline constexpr const char* part_name(Part p) {
  constexpr const char* names[kParts] = {"stem",      "downsample",       "meta_downsample", "layer_norm",
                                         "pos_embed", "qkv_projections", "out_projections", "attention",
                                         "mlp",       "head"};
  return names[int(p)];
}

// The profiler of a normal forward pass: nothing.
struct NoProfile {};

// Wall time, FLOPs and calls per part and stage, summed over every forward
// pass it was given to.
class Profile {
 public:
  struct Entry {
    double seconds = 0.0;
    double flops = 0.0;
    long calls = 0;

    Entry& operator+=(const Entry& o) {
      seconds += o.seconds;
      flops += o.flops;
      calls += o.calls;
      return *this;
    }
  };
  static constexpr int kOutside = -1;  // the stem and the head, outside every stage

  // One part over all stages.
  Entry operator[](Part p) const {
    Entry e;
    for (const auto& stage : entries_) e += stage[int(p)];
    return e;
  }
  // Part `p` of stage `stage` (or kOutside).
  Entry at(int stage, Part p) const { return entries_[stage + 1][int(p)]; }
  // All parts of stage `stage` (or kOutside).
  Entry stage(int stage) const {
    Entry e;
    for (const auto& part : entries_[stage + 1]) e += part;
    return e;
  }
  // Stages seen so far (stage indices 0 .. stages() - 1).
  int stages() const { return stages_; }
  double seconds() const { return total().seconds; }
  double flops() const { return total().flops; }

  // Adds a profile of passes that ran side by side with others, one per
  // thread on `threads` threads: FLOPs and calls as they are, times divided
  // by `threads`, so that the parts still add up to the wall time.
  void merge(const Profile& other, int threads) {
    for (std::size_t s = 0; s < entries_.size(); ++s)
      for (int p = 0; p < kParts; ++p) {
        Entry e = other.entries_[s][p];
        e.seconds /= threads;
        entries_[s][p] += e;
      }
    stages_ = std::max(stages_, other.stages_);
  }

  // The work recorded from now on belongs to `stage` (or kOutside).
  void enter_stage(int stage) {
    stage_ = stage;
    stages_ = std::max(stages_, stage + 1);
  }

  template <class F>
  void record(Part p, double flops, F&& work) {
    const auto t0 = std::chrono::steady_clock::now();
    work();
    Entry& e = entries_[stage_ + 1][int(p)];
    e.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    e.flops += flops;
    ++e.calls;
  }

 private:
  Entry total() const {
    Entry e;
    for (int s = kOutside; s < kMaxStages; ++s) e += stage(s);
    return e;
  }

  std::array<std::array<Entry, kParts>, kMaxStages + 1> entries_{};
  int stage_ = kOutside, stages_ = 0;
};

// Tells a Profile which stage the following work belongs to.
template <class P>
inline void enter_stage(P& profiler, int stage) {
  if constexpr (!std::is_same_v<std::remove_const_t<P>, NoProfile>) profiler.enter_stage(stage);
}

// Runs `work` (`flops` floating-point operations of part `part`), timed when
// the profiler is a Profile.
template <class B, class P, class F>
inline void timed(P& profiler, Part part, double flops, F&& work) {
  if constexpr (std::is_same_v<std::remove_const_t<P>, NoProfile>) {
    (void)profiler, (void)part, (void)flops;
    work();
  } else {
    profiler.record(part, flops, [&] {
      work();
      Kernels<B>::synchronize();
    });
  }
}

}  // namespace lemevit
