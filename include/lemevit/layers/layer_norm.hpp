#pragma once
// nn.LayerNorm over the channel dimension. The eps is part of the type
// because the model mixes 1e-6 (block norms) and 1e-5 (everything else).
#include <string>
#include <vector>

#include "lemevit/backend.hpp"
#include "lemevit/weights.hpp"

namespace lemevit::layers {

template <class B, int Dim, float Eps>
class LayerNorm {
 public:
  void load(WeightLoader& w, const std::string& prefix) {
    auto g = w.floats(prefix + ".weight", {Dim});
    auto b = w.floats(prefix + ".bias", {Dim});
    gamma_ = Kernels<B>::make_params(g.data(), Dim);
    beta_ = Kernels<B>::make_params(b.data(), Dim);
  }
  void operator()(const float* x, int rows, float* y) const {
    Kernels<B>::layer_norm(x, rows, Dim, Kernels<B>::data(gamma_), Kernels<B>::data(beta_), Eps, y);
  }

 private:
  typename Kernels<B>::Params gamma_, beta_;
};

template <class B, int Dim>
using BlockNorm = LayerNorm<B, Dim, 1e-6f>;  // norm1 / norm2 inside blocks
template <class B, int Dim>
using TorchNorm = LayerNorm<B, Dim, 1e-5f>;  // PyTorch's default eps

}  // namespace lemevit::layers
