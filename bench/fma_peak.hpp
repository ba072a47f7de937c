#pragma once
// The machine's FMA peak, measured in the same run as the other benchmarks:
// a register-only loop of independent fused multiply-adds (no memory
// traffic), so every other result can be read as a fraction of it.
#include <cstdint>

#include <xsimd/xsimd.hpp>

namespace bench {

// Runs `iterations` rounds of 12 independent vector FMA chains; returns a
// value that depends on the result so the compiler cannot drop the loop.
// FLOPs per call: iterations * 12 * lanes * 2.
inline float fma_loop(std::int64_t iterations) {
  using batch = xsimd::batch<float>;
  batch a0(1.0f), a1(1.1f), a2(1.2f), a3(1.3f), a4(1.4f), a5(1.5f);
  batch a6(1.6f), a7(1.7f), a8(1.8f), a9(1.9f), a10(2.0f), a11(2.1f);
  const batch m(0.999999f), c(1e-7f);
  for (std::int64_t i = 0; i < iterations; ++i) {
    a0 = xsimd::fma(a0, m, c); a1 = xsimd::fma(a1, m, c); a2 = xsimd::fma(a2, m, c);
    a3 = xsimd::fma(a3, m, c); a4 = xsimd::fma(a4, m, c); a5 = xsimd::fma(a5, m, c);
    a6 = xsimd::fma(a6, m, c); a7 = xsimd::fma(a7, m, c); a8 = xsimd::fma(a8, m, c);
    a9 = xsimd::fma(a9, m, c); a10 = xsimd::fma(a10, m, c); a11 = xsimd::fma(a11, m, c);
  }
  const batch s = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)) + ((a8 + a9) + (a10 + a11));
  return xsimd::hadd(s);  // xsimd 8.1 name of reduce_add;
}

inline double fma_loop_flops(std::int64_t iterations) {
  return double(iterations) * 12 * xsimd::batch<float>::size * 2;
}

}  // namespace bench
