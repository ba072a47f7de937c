#pragma once
// nn.LayerNorm over the channel dimension. The eps is part of the type
// because the model mixes 1e-6 (block norms) and 1e-5 (everything else); it
// is given as a power of ten (eps = 10^-EpsExponent), since float template
// parameters need clang 18.
#include <string>
#include <vector>

#include "lemevit/backend.hpp"
#include "lemevit/weights.hpp"

namespace lemevit::layers {

template <class B, int Dim, int EpsExponent>
class LayerNorm {
 public:
  static constexpr float eps = EpsExponent == 5 ? 1e-5f : EpsExponent == 6 ? 1e-6f : 0.0f;
  static_assert(eps > 0.0f, "LayerNorm eps exponent must be 5 or 6 (the eps values LeMeViT uses)");

  void load(WeightLoader& w, const std::string& prefix) {
    auto g = w.floats(prefix + ".weight", {Dim});
    auto b = w.floats(prefix + ".bias", {Dim});
    gamma_ = Kernels<B>::make_params(g.data(), Dim);
    beta_ = Kernels<B>::make_params(b.data(), Dim);
  }
  void operator()(const float* x, int rows, float* y) const {
    Kernels<B>::layer_norm(x, rows, Dim, Kernels<B>::data(gamma_), Kernels<B>::data(beta_), eps, y);
  }

 private:
  typename Kernels<B>::Params gamma_, beta_;
};

template <class B, int Dim>
using BlockNorm = LayerNorm<B, Dim, 6>;  // norm1 / norm2 inside blocks
template <class B, int Dim>
using TorchNorm = LayerNorm<B, Dim, 5>;  // PyTorch's default eps

}  // namespace lemevit::layers
