#pragma once
// `meta_token_downsample.i`: carries the meta tokens into stage i's width,
// Linear(Cin, 4Cin) -> LayerNorm -> GELU -> Linear(4Cin, Cout) -> LayerNorm,
// both LayerNorms with PyTorch's default eps 1e-5.
#include <string>

#include "lemevit/layers/layer_norm.hpp"
#include "lemevit/layers/linear.hpp"

namespace lemevit::layers {

template <class B, int Cin, int Cout>
class MetaTokenDownsample {
 public:
  static constexpr int hidden = 4 * Cin;

  void load(WeightLoader& w, const std::string& prefix) {
    fc1_.load(w, prefix + ".0");
    norm1_.load(w, prefix + ".1");
    fc2_.load(w, prefix + ".3");
    norm2_.load(w, prefix + ".4");
  }
  double flops(int rows) const { return fc1_.flops(rows) + fc2_.flops(rows); }

  // c (rows x Cin) -> out (rows x Cout); `buf` holds rows x hidden.
  void operator()(const float* c, int rows, float* out, float* buf) const {
    fc1_(c, rows, buf);
    norm1_(buf, rows, buf);
    Kernels<B>::gelu(buf, std::size_t(rows) * hidden);
    fc2_(buf, rows, out);
    norm2_(out, rows, out);
  }

 private:
  Linear<B, Cin, hidden> fc1_;
  TorchNorm<B, hidden> norm1_;
  Linear<B, hidden, Cout> fc2_;
  TorchNorm<B, Cout> norm2_;
};

}  // namespace lemevit::layers
