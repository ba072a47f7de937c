#pragma once
// Comparing a backend's floats with the Reference backend's, shared by the
// kernel tests (SIMD, CUDA, CUDA emulation). Include after catch2.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace test_compare {

// n floats uniform in [lo, hi), seeded.
inline std::vector<float> random_vector(std::size_t n, std::uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

// max |got - ref| <= rel * max |ref| over n floats, and got finite wherever ref is.
inline void require_close(const float* got, const float* ref, std::size_t n, double rel, const std::string& what) {
  double max_err = 0.0, max_ref = 0.0;
  std::size_t at = 0;
  bool finite = true;
  for (std::size_t i = 0; i < n; ++i) {
    if (std::isfinite(ref[i]) && !std::isfinite(got[i])) finite = false;
    const double e = std::fabs(double(got[i]) - double(ref[i]));
    if (e > max_err) {
      max_err = e;
      at = i;
    }
    max_ref = std::max(max_ref, std::fabs(double(ref[i])));
  }
  INFO(what << ": max error " << max_err << " at " << at << " (got " << (n ? got[at] : 0.0f) << ", want "
            << (n ? ref[at] : 0.0f) << "), max |ref| " << max_ref);
  REQUIRE(finite);
  REQUIRE(max_err <= rel * max_ref);
}

inline void require_close(const std::vector<float>& got, const std::vector<float>& ref, double rel,
                          const std::string& what) {
  REQUIRE(got.size() == ref.size());
  require_close(got.data(), ref.data(), got.size(), rel, what);
}

inline bool same_bits(const float* a, const float* b, std::size_t n) {
  return std::memcmp(a, b, n * sizeof(float)) == 0;
}

inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && same_bits(a.data(), b.data(), a.size());
}

}  // namespace test_compare
