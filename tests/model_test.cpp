// Model-level behaviour beyond the golden numbers: no heap allocation in
// forward, a model shared by threads, batch and thread-count invariance.
// (The loader's error reports are tests/errors_test.cpp.)
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <new>
#include <random>
#include <thread>

#ifdef _OPENMP
#include <omp.h>
#endif

// Passes of 4 test images (456 KiB of activations each) instead of 17: the
// cases below need batches of several passes, and at 17 per pass they ran
// 260 images per precision, most of the aarch64 suite's time under qemu.
// The pass logic is the same whatever the size.
#define LEMEVIT_PASS_BYTES (std::size_t(2) << 20)
#include <lemevit/lemevit.hpp>

#include "support.hpp"

using namespace lemevit;
using test_support::fixture;

// --- allocation counting ----------------------------------------------------
static std::atomic<long> g_allocations{0};
static std::atomic<bool> g_counting{false};
void on_allocation(std::size_t) {
  if (g_counting) ++g_allocations;
}
#include "counting_new.hpp"

namespace {

using test_support::kCustomSmall;
template <class B>
using SmallOn = Model<kCustomSmall, Input<96, 64>, Classes<7>, B>;
using Small = SmallOn<backend::Default>;
static_assert(Small::images_per_pass == 4, "passes of several images, a few of them in a batch");

std::vector<float> random_images(int batch, int seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d;
  std::vector<float> x(std::size_t(batch) * 3 * 96 * 64);
  for (auto& v : x) v = d(gen);
  return x;
}

}  // namespace

// The contracts below hold in every precision: a low-precision linear
// quantises each row on its own, so a row's result depends on nothing else.
#if defined(LEMEVIT_NO_SIMD)
#define LEMEVIT_PRECISIONS backend::Default
#else
using SimdBf16 = backend::Simd<xsimd::default_arch, Precision::Bf16>;
using SimdInt8 = backend::Simd<xsimd::default_arch, Precision::Int8>;
#define LEMEVIT_PRECISIONS backend::Default, SimdBf16, SimdInt8
#endif

TEMPLATE_TEST_CASE("forward allocates nothing on the heap", "[model]", LEMEVIT_PRECISIONS) {
  using Net = SmallOn<TestType>;
  const Net net = Net::load(fixture("custom_small.safetensors"));
  auto ws = net.make_workspace(2);
  const auto x = random_images(2, 1);
  std::vector<float> y(2 * 7);
  net.forward(x.data(), 2, y.data(), ws);  // warm-up: thread pool start-up may allocate
  g_allocations = 0;
  g_counting = true;
  for (int i = 0; i < 3; ++i) net.forward(x.data(), 2, y.data(), ws);
  g_counting = false;
  CHECK(g_allocations == 0);
}

TEST_CASE("one loaded model serves several threads at once", "[model]") {
  const Small net = Small::load(fixture("custom_small.safetensors"));
  const auto x = random_images(1, 2);
  std::vector<float> expected(7);
  {
    auto ws = net.make_workspace(1);
    net.forward(x.data(), 1, expected.data(), ws);
  }
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      auto ws = net.make_workspace(1);
      std::vector<float> y(7);
      for (int i = 0; i < 20; ++i) {
        net.forward(x.data(), 1, y.data(), ws);
        if (std::memcmp(y.data(), expected.data(), 7 * sizeof(float)) != 0) ++mismatches;
      }
    });
  for (auto& t : threads) t.join();
  CHECK(mismatches == 0);
}

TEMPLATE_TEST_CASE("a sample's logits do not depend on its batch", "[model]", LEMEVIT_PRECISIONS) {
  using Net = SmallOn<TestType>;
  const Net net = Net::load(fixture("custom_small.safetensors"));
  const auto x = random_images(3, 3);
  auto ws = net.make_workspace(3);
  std::vector<float> all(3 * 7), one(7);
  net.forward(x.data(), 3, all.data(), ws);
  const std::size_t image = 3 * 96 * 64;
  for (int b = 0; b < 3; ++b) {
    net.forward(x.data() + b * image, 1, one.data(), ws);
    CHECK(std::memcmp(one.data(), all.data() + b * 7, 7 * sizeof(float)) == 0);
  }
}

TEMPLATE_TEST_CASE("a batch larger than one pass gives the logits of one pass", "[model]", LEMEVIT_PRECISIONS) {
  using Net = SmallOn<TestType>;
  // The CPU runs a batch in passes of images_per_pass images; with an
  // observer the whole batch goes through in one pass.
  const Net net = Net::load(fixture("custom_small.safetensors"));
  const int batch = Net::images_per_pass + 2;
  REQUIRE(batch > Net::images_per_pass);
  const auto x = random_images(batch, 5);
  auto ws = net.make_workspace(batch);
  std::vector<float> passes(std::size_t(batch) * 7), whole(passes.size()), one(7);
  net.forward(x.data(), batch, passes.data(), ws);
  Observer watch_only;
  net.forward(x.data(), batch, whole.data(), ws, &watch_only);
  CHECK(std::memcmp(passes.data(), whole.data(), passes.size() * sizeof(float)) == 0);
  const std::size_t image = 3 * 96 * 64;
  for (int b : {0, Net::images_per_pass - 1, Net::images_per_pass, batch - 1}) {
    net.forward(x.data() + b * image, 1, one.data(), ws);
    CHECK(std::memcmp(one.data(), passes.data() + b * 7, 7 * sizeof(float)) == 0);
  }
}

TEMPLATE_TEST_CASE("passes run side by side on several threads give each image's own logits", "[model]",
                   LEMEVIT_PRECISIONS) {
#ifdef _OPENMP
  // With T threads, a batch of more than one pass runs T passes at a time,
  // one per thread, each in its own slot of the workspace (then the rest one
  // by one): every image must still get the logits it gets alone, and
  // nothing may be allocated.
  using Net = SmallOn<TestType>;
  const Net net = Net::load(fixture("custom_small.safetensors"));
  const int batch = 3 * Net::images_per_pass + 1;
  const auto x = random_images(batch, 6);
  auto ws = net.make_workspace(batch);
  const std::size_t image = 3 * 96 * 64;
  std::vector<float> alone(std::size_t(batch) * 7), y(alone.size());
  for (int b = 0; b < batch; ++b) net.forward(x.data() + b * image, 1, alone.data() + b * 7, ws);
  const int saved = omp_get_max_threads();
  for (int threads : {2, 3}) {
    omp_set_num_threads(threads);
    std::fill(y.begin(), y.end(), -1.0f);
    net.forward(x.data(), batch, y.data(), ws);  // warm-up: OpenMP's thread pool
    g_allocations = 0;
    g_counting = true;
    net.forward(x.data(), batch, y.data(), ws);
    g_counting = false;
    INFO(threads << " threads, batch " << batch);
    CHECK(g_allocations == 0);
    for (int b = 0; b < batch; ++b)
      CHECK(std::memcmp(y.data() + b * 7, alone.data() + b * 7, 7 * sizeof(float)) == 0);
  }
  omp_set_num_threads(saved);
#else
  SUCCEED("built without OpenMP: one pass at a time by construction");
#endif
}

TEST_CASE("a profiled forward gives the same logits and accounts for every FLOP", "[model][profile]") {
  // Over several passes (a batch larger than images_per_pass), the per-part
  // FLOPs counted at each layer call from its runtime shapes must add up to
  // Model::flops, counted independently from the architecture (flops.hpp).
  const Small net = Small::load(fixture("custom_small.safetensors"));
  const int batch = Small::images_per_pass + 2;
  const auto x = random_images(batch, 6);
  auto ws = net.make_workspace(batch);
  std::vector<float> plain(std::size_t(batch) * 7), profiled(plain.size());
  net.forward(x.data(), batch, plain.data(), ws);
  Profile profile;
  net.forward(x.data(), batch, profiled.data(), ws, profile);
  CHECK(std::memcmp(plain.data(), profiled.data(), plain.size() * sizeof(float)) == 0);
  CHECK(profile.flops() == Approx(Small::flops * batch).epsilon(1e-12));
  const int passes = (batch + Small::images_per_pass - 1) / Small::images_per_pass;
  // Custom small: 5 blocks (C, D2, D, S, S), downsamples before stages 2-4
  // (stage 1 follows a C stage), meta-token downsamples in stages 1-4.
  CHECK(profile[Part::Stem].calls == passes);
  CHECK(profile[Part::Downsample].calls == 3 * passes);
  CHECK(profile[Part::MetaDownsample].calls == 5 * passes);  // stage 0's is a copy
  CHECK(profile[Part::PosEmbed].calls == 5 * passes);
  CHECK(profile[Part::Head].calls == passes);
  double seconds = 0.0;
  for (int i = 0; i < kParts; ++i) {
    CHECK(profile[Part(i)].calls > 0);
    CHECK(profile[Part(i)].seconds >= 0.0);
    seconds += profile[Part(i)].seconds;
  }
  CHECK(profile[Part::LayerNorm].flops == 0.0);
  CHECK(profile.seconds() == Approx(seconds));
  CHECK(profile.seconds() > 0.0);
  // By stage: the stem, stage 0's meta-token copy and the head lie outside
  // the stages; each stage's FLOPs are those of its downsample and blocks.
  REQUIRE(profile.stages() == 5);
  CHECK(profile.stage(Profile::kOutside).calls == 3 * passes);
  double stage_flops = profile.stage(Profile::kOutside).flops;
  for (int i = 0; i < 5; ++i) stage_flops += profile.stage(i).flops;
  CHECK(stage_flops == Approx(profile.flops()).epsilon(1e-12));
  CHECK(profile.stage(0).flops > 0.0);
}

TEST_CASE("a profiled batch of passes side by side is timed as it runs", "[model][profile]") {
#ifdef _OPENMP
  // On 2 threads a batch of several passes runs them side by side; a Profile
  // must see that run (each thread timing its own passes), not one pass at a
  // time: the same logits, every FLOP and call once, times averaged over the
  // threads.
  const Small net = Small::load(fixture("custom_small.safetensors"));
  const int batch = 2 * Small::images_per_pass + 1, passes = 3;
  const auto x = random_images(batch, 8);
  auto ws = net.make_workspace(batch);
  std::vector<float> plain(std::size_t(batch) * 7), profiled(plain.size());
  const int saved = omp_get_max_threads();
  omp_set_num_threads(2);
  net.forward(x.data(), batch, plain.data(), ws);
  // The second thread's passes run in the workspace's second slot; one pass
  // at a time would never touch it. The passes are handed out dynamically,
  // so on a busy machine one thread may take both before the other wakes:
  // a few tries tell that race from a pass that never runs side by side.
  float* slot1 = ws.data() + std::size_t(Small::images_per_pass) * ws.floats_per_image();
  const auto slot1_written = [&] {
    return std::any_of(slot1, slot1 + ws.floats_per_image(), [](float v) { return !std::isnan(v); });
  };
  Profile profile;
  double wall = 0.0;
  for (int attempt = 0; attempt < 20; ++attempt) {
    std::fill(slot1, slot1 + ws.floats_per_image(), std::numeric_limits<float>::quiet_NaN());
    profile = Profile{};
    const auto t0 = std::chrono::steady_clock::now();
    net.forward(x.data(), batch, profiled.data(), ws, profile);
    wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (slot1_written()) break;
  }
  omp_set_num_threads(saved);
  CHECK(std::memcmp(plain.data(), profiled.data(), plain.size() * sizeof(float)) == 0);
  CHECK(slot1_written());
  CHECK(profile.flops() == Approx(Small::flops * batch).epsilon(1e-12));
  CHECK(profile[Part::Stem].calls == passes);
  CHECK(profile[Part::Head].calls == passes);
  CHECK(profile.stages() == 5);
  // Two passes on two threads, then one alone: averaged over the threads,
  // the parts' times cannot exceed the wall time (summed, they would).
  CHECK(profile.seconds() > 0.0);
  CHECK(profile.seconds() <= wall);
#else
  SUCCEED("built without OpenMP: one pass at a time by construction");
#endif
}

TEMPLATE_TEST_CASE("a sample's logits do not depend on the thread count", "[model]", LEMEVIT_PRECISIONS) {
  using Net = SmallOn<TestType>;
#ifdef _OPENMP
  const Net net = Net::load(fixture("custom_small.safetensors"));
  const auto x = random_images(2, 4);
  auto ws = net.make_workspace(2);
  std::vector<float> reference(2 * 7), y(2 * 7);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  net.forward(x.data(), 2, reference.data(), ws);
  for (int threads : {2, 3, 4}) {
    omp_set_num_threads(threads);
    net.forward(x.data(), 2, y.data(), ws);
    CHECK(std::memcmp(y.data(), reference.data(), y.size() * sizeof(float)) == 0);
  }
  omp_set_num_threads(saved);
#else
  SUCCEED("built without OpenMP: single-threaded by construction");
#endif
}

TEST_CASE("workspace misuse is reported", "[model]") {
  const Small net = Small::load(fixture("custom_small.safetensors"));
  auto ws = net.make_workspace(1);
  std::vector<float> x(2 * 3 * 96 * 64), y(14);
  CHECK_THROWS_WITH(net.forward(x.data(), 2, y.data(), ws), Catch::Contains("exceeds the workspace capacity"));
  using Other = Model<variants::Tiny, Input<64, 64>, Classes<7>>;
  Workspace other(Other::activation_bytes_per_image / sizeof(float), 1);
  CHECK_THROWS_WITH(net.forward(x.data(), 1, y.data(), other), Catch::Contains("different model type"));
}

TEST_CASE("a file of another architecture is refused with the differences", "[model][errors]") {
  using Tiny = Model<variants::Tiny, Input<224, 224>, Classes<1000>>;
  try {
    (void)Tiny::load(fixture("small_224.safetensors"));
    FAIL("loading lemevit_small weights into a Tiny type must fail");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("lemevit_small") && Catch::Contains("dims 96,96,192,320,384"));
  }
}

#if !defined(LEMEVIT_NO_SIMD)
TEST_CASE("a low precision on portable loops, or bf16 widened to fp32, comes with a note on its speed", "[model][cpu]") {
  CHECK(portable_precision_note(Precision::Fp32, "fallback").empty());
  for (const char* path : {"avx512_bf16", "neon_bfmmla", "fallback", "avx2", "_widen_not"})
    CHECK(widened_precision_note(Precision::Bf16, path).empty());
  CHECK(widened_precision_note(Precision::Fp32, "avx2_widen").empty());
  CHECK(!widened_precision_note(Precision::Bf16, "neon_widen").empty());
  CHECK(portable_precision_note(Precision::Bf16, "avx512_bf16").empty());
  CHECK(portable_precision_note(Precision::Int8, "neon_i8mm").empty());
  for (const Precision p : {Precision::Bf16, Precision::Int8}) {
    const std::string note = portable_precision_note(p, "fallback");
    CHECK_THAT(note, Catch::StartsWith(precision_name(p)) && Catch::Contains("slower than fp32") &&
                         Catch::Contains("-Dcpu=native") && Catch::Contains("run in fp32"));
  }
#if defined(__AVX2__) && defined(__FMA__)
  // The AVX2 backend has no bf16 dot product: its bf16 is widened to fp32 FMAs, not portable loops.
  using Avx2Bf16 = Kernels<backend::Simd<xsimd::fma3<xsimd::avx2>, Precision::Bf16>>;
  CHECK(std::string(Avx2Bf16::gemm_path()) == "avx2_widen");
  CHECK(portable_precision_note(Precision::Bf16, Avx2Bf16::gemm_path()).empty());
  // ... which is the same speed as fp32 at best: that note instead.
  CHECK_THAT(widened_precision_note(Precision::Bf16, Avx2Bf16::gemm_path()),
             Catch::StartsWith("bf16 has no instruction") && Catch::Contains("(avx2_widen)") &&
                 Catch::Contains("not faster") && Catch::Contains("-Dcpu=native"));
  // Its int8 has instructions: AVX-VNNI where the build targets it, else VPMADDUBSW, never the portable loops.
  using Avx2Int8 = Kernels<backend::Simd<xsimd::fma3<xsimd::avx2>, Precision::Int8>>;
#if defined(__AVXVNNI__)
  CHECK(std::string(Avx2Int8::gemm_path()) == "avx_vnni");
#else
  CHECK(std::string(Avx2Int8::gemm_path()) == "avx2_maddubs");
#endif
  CHECK(portable_precision_note(Precision::Int8, Avx2Int8::gemm_path()).empty());
#endif
}

TEST_CASE("a model built for a CPU feature the CPU lacks is refused at load, naming it", "[model][cpu]") {
  // LEMEVIT_CPU_HIDE makes a feature look absent (it cannot add one).
  struct Hide {
    explicit Hide(const char* f) { setenv("LEMEVIT_CPU_HIDE", f, 1); }
    ~Hide() { unsetenv("LEMEVIT_CPU_HIDE"); }
  };
  const std::string path = fixture("custom_small.safetensors");
  using Bf16 = SmallOn<SimdBf16>;
  using Int8 = SmallOn<SimdInt8>;
  // The message also says what to do: a low-precision extension missing
  // leaves fp32 as an option, a missing vector width only a rebuild.
  const char* lowp_remedy = "or run in fp32";
  const char* isa_remedy = "Build the program for this CPU";
  auto refused = [&](auto load, const char* feature, const char* remedy) {
    Hide hide(feature);
    CHECK_THROWS_WITH(load(), Catch::Contains(feature) && Catch::Contains("this CPU lacks") && Catch::Contains(remedy));
  };
  const std::string bf16_path = Kernels<Bf16::Backend>::gemm_path();
  const std::string int8_path = Kernels<Int8::Backend>::gemm_path();
  if (const char* f = Kernels<Bf16::Backend>::gemm_feature()) refused([&] { return Bf16::load(path); }, f, lowp_remedy);
  if (const char* f = Kernels<Int8::Backend>::gemm_feature()) refused([&] { return Int8::load(path); }, f, lowp_remedy);
  // int8's attention takes bf16 products where the build has them.
  if (const char* f = Kernels<Int8::Backend>::attention_feature()) refused([&] { return Int8::load(path); }, f, lowp_remedy);
  if (std::string(xsimd::default_arch::name()) == "avx512bw") {
    refused([&] { return Small::load(path); }, "avx512bw", isa_remedy);
    refused([&] { return Small::random(1); }, "avx512f", isa_remedy);
  }
#if defined(__AVXVNNI__) && defined(__FMA__)
  {  // the AVX2 backend's int8 products (AVX-VNNI), checked by the same call Model::load makes
    using Avx2Int8 = Kernels<backend::Simd<xsimd::fma3<xsimd::avx2>, Precision::Int8>>;
    REQUIRE(std::string(Avx2Int8::gemm_path()) == "avx_vnni");
    Hide hide("avx_vnni");
    CHECK_THROWS_WITH(Avx2Int8::check_cpu(), Catch::Contains("avx_vnni") && Catch::Contains("this CPU lacks") &&
                                                 Catch::Contains(lowp_remedy));
  }
#endif
  // Hiding what the type does not use changes nothing; nor does hiding nothing.
  if (const char* f = Kernels<Int8::Backend>::gemm_feature()) {
    Hide hide(f);
    CHECK_NOTHROW(Bf16::load(path));
  }
  CHECK_NOTHROW(Bf16::load(path));
  CHECK_NOTHROW(Int8::load(path));
  INFO("this build's paths: bf16 " << bf16_path << ", int8 " << int8_path);
  if (bf16_path == "fallback" && int8_path == "fallback") SUCCEED("no CPU extension to check in this build");
}
#endif
