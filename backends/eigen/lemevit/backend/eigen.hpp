#pragma once
// The Eigen backend: GEMMs through Eigen's blocked matrix products (portable
// to any CPU Eigen vectorises for), everything else from the Reference
// backend. A second, independent GEMM implementation next to backends/simd,
// for CPUs xsimd does not cover.
#include <Eigen/Core>

#include "lemevit/backend.hpp"
#include "lemevit/backend/reference.hpp"

namespace lemevit {
namespace backend {
struct Eigen {};
}  // namespace backend

template <>
struct Kernels<backend::Eigen> : Kernels<backend::Reference> {
  using Matrix = ::Eigen::Matrix<float, ::Eigen::Dynamic, ::Eigen::Dynamic, ::Eigen::RowMajor>;
  using Vector = ::Eigen::Matrix<float, 1, ::Eigen::Dynamic>;

  struct LinearWeights {
    Matrix wt;  // in x out: y = x * wt + b
    Vector b;
  };

  static void prepare_linear(const float* w, const float* b, int out, int in, LinearWeights& dst) {
    dst.wt = ::Eigen::Map<const Matrix>(w, out, in).transpose();
    dst.b = b ? Vector(::Eigen::Map<const Vector>(b, out)) : Vector::Zero(out);
  }

  static void linear(const float* x, int rows, int ldx, const LinearWeights& w, float* y, int ldy,
                     Epilogue e) {
    using Stride = ::Eigen::OuterStride<>;
    const int out = int(w.wt.cols());
    ::Eigen::Map<const Matrix, 0, Stride> X(x, rows, w.wt.rows(), Stride(ldx));
    ::Eigen::Map<Matrix, 0, Stride> Y(y, rows, out, Stride(ldy));
    // Eigen's blocking depends on the matrix size, so unlike Simd and
    // Reference this backend does not promise batch-independent rounding.
    switch (e) {
      case Epilogue::Store: Y.noalias() = (X * w.wt).rowwise() + w.b; break;
      case Epilogue::Gelu:
        Y.noalias() = ((X * w.wt).rowwise() + w.b).unaryExpr([](float t) { return gelu(t); });
        break;
      case Epilogue::Accumulate: Y.noalias() += (X * w.wt).rowwise() + w.b; break;
    }
  }
};

}  // namespace lemevit
