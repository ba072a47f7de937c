#pragma once
// Backend policies. A backend is a tag type; its kernels are the
// specialisation `Kernels<Tag>`, which lives in backends/<name>/. Layers are
// written once against the interface below and never see which backend runs.
//
// Kernel interface every specialisation provides (all sizes in floats,
// row-major, tokens as rows and channels as columns):
//
//   struct LinearWeights;   // weights prepared for this backend
//   static void prepare_linear(const float* w /*out x in*/, const float* b /*out or null*/,
//                              int out, int in, LinearWeights& dst);
//   static void linear(const float* x, int rows, int ldx, const LinearWeights& w,
//                      float* y, int ldy, Epilogue e);
//        y[r, o] (=, +=, gelu) sum_i x[r, i] * w[o, i] + b[o]
//   static void layer_norm(const float* x, int rows, int dim, const float* gamma,
//                          const float* beta, float eps, float* y);
//   static void gelu(float* x, std::size_t n);
//   static void depthwise_conv3x3_residual(const float* x, int h, int w, int channels,
//                          const float* weight /*9 x channels*/, const float* bias, float* y);
//        y = x + dwconv3x3(x), NHWC, padding 1
//   static void attention(const AttentionArgs& a);
//        out = softmax(scale * q k^T) v per head, fp32 softmax
// and optionally, for the stem and downsample convolutions:
//   static constexpr std::size_t conv3x3_s2_scratch(int h, int w, int channels);
//   static void conv3x3_s2(const float* x, int batch, int h, int w, int channels,
//                          const LinearWeights& w /*over im2col rows*/, float* y,
//                          float* scratch /*batch x conv3x3_s2_scratch*/, Epilogue e);
//        linear over the patches of a 3x3 stride-2 padding-1 conv, run as the
//        backend sees fit (otherwise the layer writes them out with
//        im2col_3x3_s2, then calls linear)
#include <cstddef>
#include <string>
#include <string_view>

namespace lemevit {

// What `linear` does with its result.
enum class Epilogue {
  Store,       // y  = xW^T + b
  Gelu,        // y  = gelu(xW^T + b)   (exact erf GELU)
  Accumulate,  // y += xW^T + b         (fused residual)
};

// One attention call: `queries` rows attend to `keys` rows, each head
// independently. Strides let q/k/v point into fused projections.
struct AttentionArgs {
  const float* q;
  const float* k;
  const float* v;
  int ldq, ldk, ldv;  // row strides
  int queries, keys;
  int heads, head_dim;
  float scale;
  float* out;
  int ldo;
};

// Scale of the dual cross-attention kinds D and D2 (SPEC.md "Attention scale").
enum class DcaScale {
  Official,  // scale_x = ln(M)/ln(N)/sqrt(C), scale_c = 1/sqrt(C)
  HeadDim,   // 1/sqrt(head_dim) for both branches (the seed article's torch>=2 path)
};

// Arithmetic of the matrix products (Linear layers) of a backend that offers
// a choice (backend::Simd), and of attention's two products where the CPU
// has a bf16 dot product; LayerNorm, softmax, GELU, residuals, the stem's
// first convolution and the head (its BatchNorm and classifier) stay fp32 in
// every precision.
enum class Precision {
  Fp32,
  Bf16,  // weights and activations rounded to bf16, fp32 accumulation
  Int8,  // int8 weights per output channel, uint8 activations per row, int32 accumulation
};

constexpr const char* precision_name(Precision p) {
  return p == Precision::Fp32 ? "fp32" : p == Precision::Bf16 ? "bf16" : "int8";
}

// A bf16 or int8 build without that precision's instructions for its target
// (gemm path "fallback") runs the products on portable loops: the same
// numbers, but slower than fp32. The note to show a user then; "" otherwise.
inline std::string portable_precision_note(Precision p, std::string_view gemm_path) {
  if (p == Precision::Fp32 || gemm_path != "fallback") return {};
  const bool bf16 = p == Precision::Bf16;
  return std::string(precision_name(p)) +
         " runs on portable loops in this build (no " +
         (bf16 ? "bf16 kernel: AVX512_BF16, ARM's FEAT_BF16, or fused multiply-add (AVX2, AVX-512, NEON)"
               : "int8 kernel: AVX512_VNNI, AVX-VNNI, AVX2, or ARM's dot product") +
         ", for its target): the same numbers, but slower than fp32 (its products took " +
         (bf16 ? "3x" : "7-8x") +
         " fp32's time on an AVX-512 machine). For speed, build for a CPU that has it (-Dcpu=native, "
         "-march=native), or run in fp32";
}

// bf16 where the build's target has FMA but no bf16 dot product (gemm paths
// "avx2_widen", "avx512_widen", "neon_widen") is widened to fp32: the same
// numbers, at about fp32's speed, not faster. The note to show a user who
// asked for bf16 (for speed, as a rule) then; "" otherwise.
inline std::string widened_precision_note(Precision p, std::string_view gemm_path) {
  // No string_view::ends_with: nvcc compiles this header as C++17 (backends/cuda).
  constexpr std::string_view suffix = "_widen";
  if (p != Precision::Bf16 || gemm_path.size() < suffix.size() ||
      gemm_path.substr(gemm_path.size() - suffix.size()) != suffix)
    return {};
  return "bf16 has no instruction in this build's target, so its products run widened to fp32 (" +
         std::string(gemm_path) +
         "): the same numbers as every bf16 kernel, at about fp32's speed (0.8-0.9x fp32 measured on "
         "AVX2), not faster. bf16 gains speed with AVX512_BF16 or ARM's BF16 extension (build for such "
         "a CPU: -Dcpu=native); here fp32 is at least as fast, and more accurate";
}

namespace backend {
// Scalar, obviously-correct kernels: the oracle every other backend is tested against.
struct Reference {};
// backend::Simd<Arch, Precision> (xsimd kernels per instruction set) is declared in
// backends/simd/lemevit/backend/simd.hpp.
}  // namespace backend

// The fp32 backend on the same instruction set as B (B itself where B has no
// precision choice): what a bf16/int8 model runs the layers in that stay fp32.
template <class B>
struct Fp32Of {
  using type = B;
};

template <class Backend>
struct Kernels {
  static_assert(sizeof(Backend) == 0,
                "no kernels for this backend: include its header "
                "(lemevit/backend/reference.hpp, lemevit/backend/simd.hpp)");
};

}  // namespace lemevit
