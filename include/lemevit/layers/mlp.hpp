#pragma once
// The block MLP, Linear(C, rC) -> GELU -> Linear(rC, C) (`mlp.0`, `mlp.3`),
// applied as a residual: x += mlp(xn). GELU and the residual add are fused
// into the two GEMMs' epilogues.
#include <string>

#include "lemevit/layers/linear.hpp"

namespace lemevit::layers {

template <class B, int Dim, int Hidden>
class Mlp {
 public:
  static constexpr int hidden = Hidden;

  void load(WeightLoader& w, const std::string& prefix) {
    fc1_.load(w, prefix + ".0");
    fc2_.load(w, prefix + ".3");
  }
  double flops(int rows) const { return fc1_.flops(rows) + fc2_.flops(rows); }

  // x (rows x Dim) += fc2(gelu(fc1(xn))); `hidden_buf` holds rows x Hidden.
  void residual(const float* xn, int rows, float* hidden_buf, float* x) const {
    fc1_(xn, rows, hidden_buf, Epilogue::Gelu);
    fc2_(hidden_buf, rows, x, Epilogue::Accumulate);
  }

 private:
  Linear<B, Dim, Hidden> fc1_;
  Linear<B, Hidden, Dim> fc2_;
};

}  // namespace lemevit::layers
