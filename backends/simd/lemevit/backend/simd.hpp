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
//   gemm_lowp.hpp     bf16 and int8 formats, packed layouts, their GEMM driver
//   gemm_bf16.hpp     bf16 micro-kernels (AVX512_BF16, NEON BFDOT/BFMMLA, widened to fp32 FMA, generic)
//   gemm_int8.hpp     int8 micro-kernels (AVX512_VNNI, NEON SDOT, generic)
//   attention.hpp     blocked online-softmax attention
//   attention_bf16.hpp  the same with bf16 products (bf16/int8 precisions, AVX512_BF16)
//   conv.hpp          fp32 3x3 stride-2 convolution reading its patches in place (the stem)
//   elementwise.hpp   LayerNorm, GELU, depthwise 3x3 convolution
#include <cstddef>
#include <string>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "lemevit/backend.hpp"
#include "lemevit/cpu_features.hpp"
#include "lemevit/host_kernels.hpp"
#include "lemevit/backend/simd/attention.hpp"
#include "lemevit/backend/simd/attention_bf16.hpp"
#include "lemevit/backend/simd/conv.hpp"
#include "lemevit/backend/simd/elementwise.hpp"
#include "lemevit/backend/simd/gemm.hpp"
#include "lemevit/backend/simd/gemm_bf16.hpp"
#include "lemevit/backend/simd/gemm_int8.hpp"
#include "lemevit/backend/simd/math.hpp"

LEMEVIT_SIMD_DIAGNOSTICS_BEGIN

namespace lemevit {
namespace backend {
// xsimd kernels for the instruction set `Arch`; the Linear layers' products
// in precision `P` (Precision::Fp32, Bf16, Int8).
template <class Arch = xsimd::default_arch, Precision P = Precision::Fp32>
struct Simd {};
}  // namespace backend

template <class Arch, Precision P>
struct Fp32Of<backend::Simd<Arch, P>> {
  using type = backend::Simd<Arch>;
};

namespace backend::simd {
// The micro-kernel of a precision on an instruction set: for bf16/int8 the
// one of the extension the compiler targets for that vector width (AVX-512,
// AVX-VNNI, NEON's), else the generic one.
template <class Arch>
struct Fp32Kernel {
  using Weights = PackedLinear<Arch>;
  static constexpr const char* path = Arch::name();
  static constexpr const char* feature = nullptr;  // beyond the Arch's own
};
template <class Arch, Precision P>
struct GemmKernel {
  using type = Fp32Kernel<Arch>;
};
template <class Arch>
struct GemmKernel<Arch, Precision::Bf16> {
  // Without a bf16 dot product, bf16 widened to fp32 where the instruction
  // set has FMA (AVX2 arches also in AVX-512 builds), else portable loops.
  using Widen = std::conditional_t<kBf16Widens<Arch>, Bf16Widen<Arch>, Bf16Generic_4x32<Arch>>;
#if defined(__AVX512BF16__)
  using type = std::conditional_t<kLanes<Arch> == 16, Bf16Avx512_12x32<Arch>, Widen>;
#elif defined(__aarch64__) && defined(__ARM_FEATURE_BF16_VECTOR_ARITHMETIC)
  using type = std::conditional_t<std::is_base_of_v<xsimd::neon64, Arch>, Bf16NeonBfmmla_4x32<Arch>, Widen>;
#else
  using type = Widen;
#endif
};
template <class Arch>
struct GemmKernel<Arch, Precision::Int8> {
  // AVX-VNNI, else VPMADDUBSW, serves the AVX2 arches, also in a build that
  // targets AVX-512 VNNI.
#if defined(__AVXVNNI__)
  using X86 = std::conditional_t<std::is_base_of_v<xsimd::avx2, Arch>, Int8AvxVnni_6x32<Arch>, Int8Generic_4x32<Arch>>;
#elif defined(__AVX2__)
  using X86 = std::conditional_t<std::is_base_of_v<xsimd::avx2, Arch>, Int8Avx2Maddubs_4x32<Arch>, Int8Generic_4x32<Arch>>;
#else
  using X86 = Int8Generic_4x32<Arch>;
#endif
#if defined(__AVX512VNNI__)
  using type = std::conditional_t<kLanes<Arch> == 16, Int8Vnni512_12x32<Arch>, X86>;
#elif defined(__aarch64__) && defined(__ARM_FEATURE_MATMUL_INT8)
  using type = std::conditional_t<std::is_base_of_v<xsimd::neon64, Arch>, Int8NeonMmla_4x32<Arch>,
                                  Int8Generic_4x32<Arch>>;
#elif defined(__aarch64__) && defined(__ARM_FEATURE_DOTPROD)
  using type = std::conditional_t<std::is_base_of_v<xsimd::neon64, Arch>, Int8NeonDot_4x32<Arch>,
                                  Int8Generic_4x32<Arch>>;
#else
  using type = X86;
#endif
};
}  // namespace backend::simd

template <class Arch, Precision P>
struct Kernels<backend::Simd<Arch, P>> : HostKernels {
  static constexpr Precision precision = P;
  using Gemm = typename backend::simd::GemmKernel<Arch, P>::type;
  // Attention's products: in bf16 for bf16 and int8 where the CPU has a bf16
  // dot product (void: fp32).
  using AttentionOps = std::conditional_t<P == Precision::Fp32, void,
                                          typename backend::simd::Bf16AttentionOps<Arch>::type>;

  // fp32: W packed into column panels of GemmTile::cols (see simd/gemm.hpp);
  // bf16/int8: see simd/gemm_lowp.hpp. `out` and `in` as for the Reference backend.
  using LinearWeights = typename Gemm::Weights;

  // The instruction set the products run on: "avx512", "avx2", ... for fp32;
  // "avx512_bf16", "avx2_widen", "avx512_widen", "neon_widen" (bf16 widened to
  // fp32), "avx512_vnni", "avx_vnni", "avx2_maddubs", "neon_bfmmla", "neon_i8mm",
  // "neon_dotprod" or "fallback"
  // (portable loops) otherwise.
  static constexpr const char* gemm_path() { return Gemm::path; }

  // Called when a model is loaded: throws lemevit::Error naming every
  // instruction-set extension this backend was compiled for that the CPU lacks.
  static void check_cpu() {
    constexpr auto built_for = "this program's SIMD backend";
    const std::string rebuild = "Build the program for this CPU (-march=native or meson setup -Dcpu=native)";
    // A CPU with the vector width but not the bf16/int8 extension still runs fp32.
    const std::string rebuild_or_fp32 =
        rebuild + ", or run in fp32 (Precision::Fp32, or --precision fp32 in the lemevit tool)";
    namespace x = xsimd;
    if constexpr (std::is_base_of_v<x::avx512bw, Arch>)
      cpu::require({"avx512f", "avx512cd", "avx512dq", "avx512bw"}, built_for, rebuild);
    else if constexpr (std::is_base_of_v<x::avx512f, Arch>)
      cpu::require({"avx512f"}, built_for, rebuild);
    else if constexpr (std::is_base_of_v<x::fma3<x::avx2>, Arch>)
      cpu::require({"avx2", "fma"}, built_for, rebuild);
    else if constexpr (std::is_base_of_v<x::avx2, Arch>)
      cpu::require({"avx2"}, built_for, rebuild);
    if constexpr (Gemm::feature != nullptr) cpu::require({Gemm::feature}, built_for, rebuild_or_fp32);
    if constexpr (attention_feature() != nullptr) cpu::require({attention_feature()}, built_for, rebuild_or_fp32);
  }

  // The CPU feature the products need beyond the instruction set (nullptr: none).
  static constexpr const char* gemm_feature() { return Gemm::feature; }
  // The same for attention's products.
  static constexpr const char* attention_feature() {
    if constexpr (std::is_void_v<AttentionOps>)
      return nullptr;
    else
      return AttentionOps::feature;
  }

  // Attention's products: "avx512_bf16" or "neon_bfdot" (bf16 pairs,
  // attention_bf16.hpp), or "fp32".
  static constexpr const char* attention_path() {
    if constexpr (std::is_void_v<AttentionOps>)
      return "fp32";
    else
      return AttentionOps::path;
  }

  static void prepare_linear(const float* w, const float* b, int out, int in,
                             LinearWeights& dst) {
    dst.pack(w, b, out, in);
  }

  // int8 weights stored quantised (tools/convert.py --dtype int8) are packed
  // as they are: the same numbers load-time quantisation gives.
  static constexpr bool takes_int8_weights = P == Precision::Int8;
  static void prepare_linear_int8(const std::int8_t* q, const float* scale, const float* b, int out,
                                  int in, LinearWeights& dst) requires(P == Precision::Int8) {
    dst.pack_quantized(q, scale, b, out, in);
  }

  static void linear(const float* x, int rows, int ldx, const LinearWeights& w, float* y,
                     int ldy, Epilogue e) {
    with_epilogue(e, [&](auto ep) {
      if constexpr (P == Precision::Fp32)
        backend::simd::gemm<Arch, ep.value>(x, rows, ldx, w, y, ldy);
      else
        backend::simd::gemm_lowp<Arch, ep.value, Gemm>(x, rows, ldx, w, y, ldy);
    });
  }

  // A 3x3 stride-2 padding-1 convolution over `batch` NHWC maps whose weights
  // were prepared as a Linear over im2col rows (layers::ConvBn3x3s2). Where
  // it pays, no im2col matrix is written: fp32 reads the patches of up to
  // kInPlaceChannels channels in place from a zero-bordered copy of the maps
  // (simd/conv.hpp); bf16 and int8 gather each patch row as their tile
  // conversion reads it (simd/gemm_lowp.hpp), up to one conversion chunk.
  static constexpr std::size_t conv3x3_s2_scratch(int h, int w, int channels) {
    if (!in_place(channels)) return std::size_t(conv_s2(h)) * conv_s2(w) * 9 * channels;
    return P == Precision::Fp32 ? backend::simd::PaddedMap{h, w, channels}.floats() : 0;
  }
  static void conv3x3_s2(const float* x, int batch, int h, int w, int channels, const LinearWeights& wt,
                         float* y, float* scratch, Epilogue e) {
    const int rows = batch * conv_s2(h) * conv_s2(w);
    if (!in_place(channels)) {
      im2col_3x3_s2(x, batch, h, w, channels, scratch);
      linear(scratch, rows, 9 * channels, wt, y, wt.out, e);
      return;
    }
    with_epilogue(e, [&](auto ep) {
      if constexpr (P == Precision::Fp32)
        backend::simd::conv3x3_s2<Arch, ep.value>(x, batch, h, w, channels, wt, y, scratch);
      else
        backend::simd::gemm_lowp_rows<Arch, ep.value, Gemm>(backend::simd::Patches3x3s2{x, h, w, channels}, rows,
                                                            wt, y, wt.out);
    });
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

  static void attention(const AttentionArgs& a) {
    if constexpr (std::is_void_v<AttentionOps>)
      backend::simd::attention<Arch>(a);
    else
      backend::simd::attention_bf16<Arch, AttentionOps>(a);
  }

  // A batch larger than one pass runs this many passes side by side (see
  // Model::run): one per OpenMP thread.
  static int concurrent_passes() { return backend::simd::max_threads(); }
  template <class F>
  static void run_concurrently(int tasks, int slots, F&& task) {
    backend::simd::run_concurrently(tasks, slots, task);
  }

 private:
  // Whether conv3x3_s2 reads its patches in place (see there) rather than
  // writing the im2col matrix into the scratch.
  static constexpr bool in_place(int channels) {
    if constexpr (P == Precision::Fp32)
      return channels <= backend::simd::kInPlaceChannels;
    else
      return 9 * channels <= backend::simd::kLowpChunk;
  }

  template <class F>
  static void with_epilogue(Epilogue e, F&& f) {
    switch (e) {
      case Epilogue::Store: f(std::integral_constant<Epilogue, Epilogue::Store>{}); break;
      case Epilogue::Gelu: f(std::integral_constant<Epilogue, Epilogue::Gelu>{}); break;
      case Epilogue::Accumulate: f(std::integral_constant<Epilogue, Epilogue::Accumulate>{}); break;
    }
  }
};

}  // namespace lemevit

LEMEVIT_SIMD_DIAGNOSTICS_END
