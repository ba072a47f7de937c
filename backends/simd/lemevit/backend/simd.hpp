#pragma once
// The SIMD CPU backend: xsimd kernels for one instruction set, picked by the
// `Arch` parameter (xsimd::default_arch is the best the compiler flags allow:
// fma3<avx2> under -mavx2 -mfma, avx512bw under -mavx512bw..., neon64 on
// aarch64). Kernels are parallelised with OpenMP over rows, columns and
// heads, never over a reduction, so results are bitwise reproducible: a row's
// output does not depend on the thread count, on the other rows of the call
// or on its position among them. Nothing here allocates on the heap except
// `prepare_linear`, at load time.
//
// Pieces (backends/simd/lemevit/backend/simd/):
//   xsimd_compat.hpp  version shims for xsimd 8.1 (Debian) and later
//   parallel.hpp      OpenMP glue
//   math.hpp          erf, exact-erf GELU, softmax exp, partial vectors
//   pack.hpp          transposing copies for packed operands
//   gemm.hpp          packed weights and the register-blocked micro-kernel
//   attention.hpp     blocked online-softmax attention
//   elementwise.hpp   LayerNorm, GELU, depthwise 3x3 convolution
#include <cstddef>

#include <xsimd/xsimd.hpp>

#include "lemevit/backend.hpp"
#include "lemevit/host_kernels.hpp"
#include "lemevit/backend/simd/attention.hpp"
#include "lemevit/backend/simd/elementwise.hpp"
#include "lemevit/backend/simd/gemm.hpp"
#include "lemevit/backend/simd/math.hpp"

LEMEVIT_SIMD_DIAGNOSTICS_BEGIN

namespace lemevit {
namespace backend {
// xsimd kernels for the instruction set `Arch`.
template <class Arch = xsimd::default_arch>
struct Simd {};
}  // namespace backend

template <class Arch>
struct Kernels<backend::Simd<Arch>> : HostKernels {
  using Tile = backend::simd::GemmTile<Arch>;

  // W packed into column panels of Tile::cols (see simd/gemm.hpp); `out` and
  // `in` as for the Reference backend.
  using LinearWeights = backend::simd::PackedLinear<Arch>;

  static void prepare_linear(const float* w, const float* b, int out, int in,
                             LinearWeights& dst) {
    dst.pack(w, b, out, in);
  }

  static void linear(const float* x, int rows, int ldx, const LinearWeights& w, float* y,
                     int ldy, Epilogue e) {
    switch (e) {
      case Epilogue::Store:
        backend::simd::gemm<Arch, Epilogue::Store>(x, rows, ldx, w, y, ldy);
        break;
      case Epilogue::Gelu:
        backend::simd::gemm<Arch, Epilogue::Gelu>(x, rows, ldx, w, y, ldy);
        break;
      case Epilogue::Accumulate:
        backend::simd::gemm<Arch, Epilogue::Accumulate>(x, rows, ldx, w, y, ldy);
        break;
    }
  }

  static void layer_norm(const float* x, int rows, int dim, const float* gamma,
                         const float* beta, float eps, float* y) {
    backend::simd::layer_norm<Arch>(x, rows, dim, gamma, beta, eps, y);
  }

  static void gelu(float* x, std::size_t n) { backend::simd::gelu_inplace<Arch>(x, n); }

  static void depthwise_conv3x3_residual(const float* x, int h, int w, int channels,
                                         const float* weight, const float* bias, float* y) {
    backend::simd::depthwise_conv3x3_residual<Arch>(x, h, w, channels, weight, bias, y);
  }

  static void attention(const AttentionArgs& a) { backend::simd::attention<Arch>(a); }
};

}  // namespace lemevit

LEMEVIT_SIMD_DIAGNOSTICS_END
