// Replays every committed fuzz input, the seed corpora and the regressions
// (inputs that once crashed a target), through the fuzz targets' own entry
// points (targets.hpp), in the normal build and under `meson test`: a
// regression cannot come back unnoticed, with or without clang/libFuzzer.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "targets.hpp"

namespace {

namespace fs = std::filesystem;

std::vector<fs::path> inputs(const std::string& target) {
  std::vector<fs::path> out;
  for (const char* kind : {"corpus", "regressions"}) {
    const fs::path dir = fs::path(LEMEVIT_FUZZ_DIR) / kind / target;
    if (!fs::is_directory(dir)) continue;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file() && e.path().filename().string().front() != '.') out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

template <class F>
void replay(const std::string& target, F&& one, std::size_t at_least) {
  const auto files = inputs(target);
  CHECK(files.size() >= at_least);
  for (const auto& path : files) {
    INFO(target << " input " << path.string());
    std::ifstream in(path, std::ios::binary);
    REQUIRE(in);
    const std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)), {});
    try {
      one(bytes.data(), bytes.size());
    } catch (const std::exception& e) {
      FAIL("escaped the target (only lemevit::Error may be thrown, and is caught there): " << e.what());
    }
  }
}

}  // namespace

TEST_CASE("safetensors fuzz inputs replay cleanly", "[fuzz]") {
  replay("safetensors", fuzz::safetensors_one, 5);
}

TEST_CASE("npy fuzz inputs replay cleanly", "[fuzz]") { replay("npy", fuzz::npy_one, 5); }

TEST_CASE("image fuzz inputs replay cleanly", "[fuzz]") { replay("image", fuzz::image_one, 5); }

// The seeds are only worth fuzzing from if they reach the model: the f32 and
// int8 files load and run in every precision, and an int8 model binds the
// int8 file's q and scales to the numbers it would quantise the f32 file to.
TEST_CASE("safetensors seeds load in every precision", "[fuzz]") {
  const fs::path dir = fs::path(LEMEVIT_FUZZ_DIR) / "corpus" / "safetensors";
  const std::string f32 = (dir / "fuzz_c3_f32.safetensors").string();
  const std::string int8 = (dir / "fuzz_c3_int8.safetensors").string();
  using Int8Net = fuzz::FuzzNetLowp<lemevit::Precision::Int8>;
  using Bf16Net = fuzz::FuzzNetLowp<lemevit::Precision::Bf16>;
  for (const auto& path : {f32, int8}) {
    INFO(path);
    CHECK_NOTHROW(fuzz::run_once(fuzz::FuzzNet::load(path)));
    CHECK_NOTHROW(fuzz::run_once(Bf16Net::load(path)));
  }
  CHECK(fuzz::run_once(Int8Net::load(f32)) == fuzz::run_once(Int8Net::load(int8)));
}
