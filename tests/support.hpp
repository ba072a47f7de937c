#pragma once
// Helpers shared by the C++ tests: fixture paths and error metrics.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <lemevit/arch.hpp>
#include <lemevit/io/npy.hpp>
#include <lemevit/metadata.hpp>

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

// The relative error (above) of Net's logits for golden case `name` against PyTorch's.
template <class Net>
double golden_error(const std::string& name, std::optional<lemevit::DcaScale> policy = {}) {
  INFO("case " << name);
  lemevit::LoadOptions options;
  options.dca_scale = policy;
  const Net net = Net::load(fixture(name + ".safetensors"), options);
  const auto x = lemevit::io::read_npy(fixture(name + ".input.npy"));
  const auto y = lemevit::io::read_npy(fixture(name + ".logits.npy"));
  REQUIRE(x.shape.size() == 4);
  REQUIRE(x.shape[1] == Net::channels);
  REQUIRE(x.shape[2] == Net::height);
  REQUIRE(x.shape[3] == Net::width);
  const int batch = int(x.shape[0]);
  REQUIRE(y.shape == std::vector<std::int64_t>{batch, net.num_classes()});
  auto ws = net.make_workspace(batch);
  std::vector<float> out(y.data.size());
  net.forward(x.data.data(), batch, out.data(), ws);
  return relative_error(out.data(), y.data.data(), out.size());
}

// Every stage's feature map of fixture `name` against PyTorch's forward_features.
template <class Net>
void golden_features(const std::string& name) {
  const Net net = Net::load(fixture(name + ".safetensors"));
  const auto x = lemevit::io::read_npy(fixture(name + ".input.npy"));
  const int batch = int(x.shape[0]);
  std::vector<std::vector<float>> maps(Net::num_stages);
  std::vector<float*> out;
  for (int i = 0; i < Net::num_stages; ++i) {
    maps[i].resize(std::size_t(batch) * Net::stage_channels(i) * Net::stage_height(i) * Net::stage_width(i));
    out.push_back(maps[i].data());
  }
  auto ws = net.make_workspace(batch);
  net.features(x.data.data(), batch, out, ws);
  for (int i = 0; i < Net::num_stages; ++i) {
    const auto want = lemevit::io::read_npy(fixture(name + ".stage" + std::to_string(i) + ".npy"));
    REQUIRE(want.shape == std::vector<std::int64_t>{batch, Net::stage_channels(i), Net::stage_height(i),
                                                    Net::stage_width(i)});
    const double err = relative_error(maps[i].data(), want.data.data(), maps[i].size());
    INFO(name << " stage " << i << ": relative error " << err);
    CHECK(err < 1e-4);
  }
}

}  // namespace test_support
