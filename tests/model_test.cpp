// Model-level behaviour beyond the golden numbers: no heap allocation in
// forward, a model shared by threads, batch invariance, and the loader's
// error reports for broken or mismatched weight files.
#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <new>
#include <random>
#include <thread>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <lemevit/lemevit.hpp>

#include "support.hpp"

using namespace lemevit;
using test_support::fixture;

// --- allocation counting ----------------------------------------------------
static std::atomic<long> g_allocations{0};
static std::atomic<bool> g_counting{false};

void* operator new(std::size_t n) {
  if (g_counting) ++g_allocations;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, std::align_val_t a) {
  if (g_counting) ++g_allocations;
  void* p = nullptr;
  if (posix_memalign(&p, std::max<std::size_t>(std::size_t(a), sizeof(void*)), n ? n : 1) != 0)
    throw std::bad_alloc();
  return p;
}
void* operator new[](std::size_t n, std::align_val_t a) { return operator new(n, a); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace {

constexpr ArchSpec kCustomSmall =
    arch<5>({1, 1, 1, 1, 1}, {32, 32, 64, 96, 128},
            {Kind::C, Kind::D2, Kind::D, Kind::S, Kind::S}, 3, 16, 8);
using Small = Model<kCustomSmall, Input<96, 64>, Classes<7>>;

std::vector<float> random_images(int batch, int seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d;
  std::vector<float> x(std::size_t(batch) * 3 * 96 * 64);
  for (auto& v : x) v = d(gen);
  return x;
}

// A copy of a safetensors file with one change, written by a minimal writer.
struct Edit {
  std::string drop;                     // tensor to leave out
  std::string add;                      // extra tensor to add (f32, shape [1])
  std::string reshape;                  // tensor whose shape becomes [1]
  std::map<std::string, std::string> meta;  // metadata overrides
  float poison = 0.0f;                  // written into the first element of `poison_at`
  std::string poison_at;
};

std::string rewrite(const std::string& src, const std::string& dst, const Edit& e) {
  io::SafetensorsFile f(src);
  std::string header = "{\"__metadata__\":{";
  auto meta = f.metadata();
  for (auto& [k, v] : e.meta) meta[k] = v;
  bool first = true;
  for (auto& [k, v] : meta) {
    header += (first ? "" : ",") + json::quote(k) + ":" + json::quote(v);
    first = false;
  }
  header += "}";
  std::string data;
  auto put = [&](const std::string& name, const std::string& dtype,
                 const std::vector<std::int64_t>& shape, const std::string& bytes) {
    std::string dims;
    for (std::size_t i = 0; i < shape.size(); ++i) dims += (i ? "," : "") + std::to_string(shape[i]);
    header += "," + json::quote(name) + ":{\"dtype\":\"" + dtype + "\",\"shape\":[" + dims +
              "],\"data_offsets\":[" + std::to_string(data.size()) + "," +
              std::to_string(data.size() + bytes.size()) + "]}";
    data += bytes;
  };
  for (auto& [name, t] : f.tensors()) {
    if (name == e.drop) continue;
    std::string bytes(reinterpret_cast<const char*>(t.data), t.bytes);
    auto shape = t.shape;
    if (name == e.reshape) {
      shape = {1};
      bytes.resize(io::dtype_size(t.dtype));
    }
    if (name == e.poison_at) std::memcpy(bytes.data(), &e.poison, 4);
    put(name, io::dtype_name(t.dtype), shape, bytes);
  }
  if (!e.add.empty()) put(e.add, "F32", {1}, std::string(4, '\0'));
  header += "}";
  std::ofstream out(dst, std::ios::binary);
  const std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.put(char((n >> (8 * i)) & 0xFF));
  out << header << data;
  return dst;
}

std::string load_error(const std::string& path) {
  try {
    (void)Small::load(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("forward allocates nothing on the heap", "[model]") {
  const Small net = Small::load(fixture("custom_small.safetensors"));
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

TEST_CASE("a sample's logits do not depend on its batch", "[model]") {
  const Small net = Small::load(fixture("custom_small.safetensors"));
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

TEST_CASE("a sample's logits do not depend on the thread count", "[model]") {
#ifdef _OPENMP
  const Small net = Small::load(fixture("custom_small.safetensors"));
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

TEST_CASE("broken or mismatched weight files are reported by name", "[model][errors]") {
  const std::string src = fixture("custom_small.safetensors");
  const std::string tmp = fixture("edited.safetensors");
  CHECK_THAT(load_error(rewrite(src, tmp, {.drop = "stages.2.0.attn.qkv1.weight"})),
             Catch::Contains("missing tensor 'stages.2.0.attn.qkv1.weight'") &&
                 Catch::Contains("expected shape [192, 64]"));
  CHECK_THAT(load_error(rewrite(src, tmp, {.add = "stages.9.0.extra"})),
             Catch::Contains("unexpected tensor") && Catch::Contains("stages.9.0.extra"));
  CHECK_THAT(load_error(rewrite(src, tmp, {.reshape = "head.bias"})),
             Catch::Contains("'head.bias' has shape [1], expected [7]"));
  CHECK_THAT(load_error(rewrite(src, tmp, {.meta = {{"lemevit.dims", "32,32,64,96,160"}}})),
             Catch::Contains("does not match the model type") && Catch::Contains("dims"));
  CHECK_THAT(load_error(rewrite(src, tmp, {.meta = {{"lemevit.num_classes", "10"}}})),
             Catch::Contains("num_classes 10 in the file vs 7"));
  CHECK_THAT(load_error(rewrite(src, tmp, {.poison = NAN, .poison_at = "norm_c.weight"})),
             Catch::Contains("'norm_c.weight' contains NaN"));
  // Truncation: cut the file in the middle of the tensor data.
  {
    std::ifstream in(src, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    std::ofstream(tmp, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  }
  CHECK_THAT(load_error(tmp), Catch::Contains("past the end"));
  {
    std::ofstream(tmp, std::ios::binary) << "abc";
  }
  CHECK_THAT(load_error(tmp), Catch::Contains("truncated"));
  CHECK_THAT(load_error(fixture("does-not-exist.safetensors")), Catch::Contains("cannot open"));
  std::remove(tmp.c_str());
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
