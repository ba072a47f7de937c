// bf16 and int8 models (backend::Simd<Arch, Precision>) against PyTorch's
// logits on the seeded golden fixtures: the relative logit error
// max |y - y_torch| / max |y_torch| stays within the bounds the README states.
// (Kernel-level exactness is tests/kernels_test.cpp; batch and thread
// invariance, allocation and the CPU check are tests/model_test.cpp.)
#include <cstdio>

#include <lemevit/lemevit.hpp>

#include "support.hpp"

using namespace lemevit;

namespace {

using Bf16 = backend::Simd<xsimd::default_arch, Precision::Bf16>;
using Int8 = backend::Simd<xsimd::default_arch, Precision::Int8>;

template <class Net>
void within(const std::string& name, double bound) {
  const double err = test_support::golden_error<Net>(name);
  using K = Kernels<typename Net::Backend>;
  std::printf("%-14s %s (%s, attention %s): relative logit error %.2e (bound %.0e)\n", name.c_str(),
              precision_name(K::precision), K::gemm_path(), K::attention_path(), err, bound);
  INFO(name << ": relative error " << err);
  CHECK(err < bound);
}

template <ArchSpec A, class In = Input<224, 224>, class Cls = Classes<1000>>
void both(const std::string& name, double bf16_bound, double int8_bound) {
  within<Model<A, In, Cls, Bf16>>(name, bf16_bound);
  within<Model<A, In, Cls, Int8>>(name, int8_bound);
}

}  // namespace

// Bounds: 1.6-2x the largest error measured (bf16 1.1e-2, int8 5.0e-2, with
// attention's products in bf16: README "Precision"). Every GEMM path of a
// precision computes the same numbers (tests/kernels_test.cpp), and paths
// without bf16 attention products are closer, so the bounds hold on all.
#ifndef LEMEVIT_TEST_SMALL_ONLY  // cross builds (qemu): the custom case alone
TEST_CASE("bf16 and int8 official variants stay close to PyTorch's fp32 logits", "[precision]") {
  both<variants::Tiny>("tiny_224", 2e-2, 8e-2);
  both<variants::Small>("small_224", 2e-2, 8e-2);
  both<variants::Base>("base_224", 2e-2, 8e-2);
  both<variants::SmallV2>("small_v2_224", 2e-2, 8e-2);
  both<variants::TinyV2>("tiny_v2_224", 2e-2, 8e-2);
  both<variants::VitTiny>("vit_tiny_224", 2e-2, 8e-2);
}
#endif

// The only case cross builds compile and run (under qemu).
TEST_CASE("bf16 and int8 on the custom configuration stay close to PyTorch's fp32 logits", "[precision][small]") {
  both<test_support::kCustomSmall, Input<96, 64>, Classes<7>>("custom_small", 2e-2, 8e-2);
}
