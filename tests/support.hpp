#pragma once
// Helpers shared by the C++ tests: fixture paths and error metrics.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <lemevit/arch.hpp>

namespace test_support {

// The small custom configuration of tools/make_fixtures.py (cases
// custom_small*): C, D2, D, S, S at head_dim 16 with 8 meta tokens, mlp ratio
// 3, for a 96x64 input and 7 classes.
inline constexpr lemevit::ArchSpec kCustomSmall = lemevit::arch<5>(
    {1, 1, 1, 1, 1}, {32, 32, 64, 96, 128},
    {lemevit::Kind::C, lemevit::Kind::D2, lemevit::Kind::D, lemevit::Kind::S, lemevit::Kind::S}, 3, 16, 8);

// Golden cases are written by tools/make_fixtures.py (PyTorch reference);
// the build passes their folder in LEMEVIT_FIXTURES.
inline std::string fixtures() {
  const char* d = std::getenv("LEMEVIT_FIXTURES");
  if (!d || !*d) FAIL("LEMEVIT_FIXTURES is not set: run the tests through `meson test`");
  return d;
}
inline std::string fixture(const std::string& name) { return fixtures() + "/" + name; }

// max |a - b| / max |b|: the relative error the golden tests bound by 1e-4.
inline double relative_error(const float* a, const float* b, std::size_t n) {
  double diff = 0.0, scale = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::fabs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::fabs(double(b[i])));
  }
  return diff / std::max(scale, 1e-30);
}

}  // namespace test_support
