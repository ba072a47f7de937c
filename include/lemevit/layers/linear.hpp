#pragma once
// nn.Linear with static in/out widths (`Out` may be Dynamic for a class head
// sized at load time). Weights are prepared once into the backend's layout.
#include <string>

#include "lemevit/arch.hpp"
#include "lemevit/backend.hpp"
#include "lemevit/weights.hpp"

namespace lemevit::layers {

template <class B, int In, int Out>
class Linear {
 public:
  static_assert(In >= 1, "Linear needs at least one input feature");
  static constexpr int in_features = In;

  void load(WeightLoader& w, const std::string& prefix, int out = Out) {
    out_ = out;
    auto bias = w.floats(prefix + ".bias", {out_});
    if constexpr (requires { requires Kernels<B>::takes_int8_weights; }) {
      if (auto q = w.int8(prefix + ".weight", {out_, In})) {
        Kernels<B>::prepare_linear_int8(q->values.data(), q->scales.data(), bias.data(), out_, In, weights_);
        return;
      }
    }
    auto weight = w.floats(prefix + ".weight", {out_, In});
    Kernels<B>::prepare_linear(weight.data(), bias.data(), out_, In, weights_);
  }
  // Prepare from values computed at load time (folded convolutions).
  void set(const float* weight, const float* bias, int out = Out) {
    out_ = out;
    Kernels<B>::prepare_linear(weight, bias, out_, In, weights_);
  }

  int out_features() const { return out_; }
  const typename Kernels<B>::LinearWeights& prepared() const { return weights_; }
  double flops(int rows) const { return 2.0 * rows * In * out_; }

  // y (rows x out, row stride ldy) <- x (rows x In, row stride ldx) W^T + b
  void operator()(const float* x, int rows, float* y, Epilogue e = Epilogue::Store,
                  int ldx = In, int ldy = -1) const {
    Kernels<B>::linear(x, rows, ldx, weights_, y, ldy < 0 ? out_ : ldy, e);
  }

 private:
  int out_ = Out;
  typename Kernels<B>::LinearWeights weights_;
};

}  // namespace lemevit::layers
