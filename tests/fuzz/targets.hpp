#pragma once
// The fuzz targets' entry points, shared by the libFuzzer binaries
// (tests/fuzz/<target>.cpp, built by tests/fuzz/build.sh) and by the replay
// test (tests/fuzz/replay_test.cpp, run by `meson test`), which feeds every
// file of tests/fuzz/corpus/<target>/ and tests/fuzz/regressions/<target>/
// through the same functions.
//
// Contract: an input may make the library throw lemevit::Error (that is the
// documented way to refuse a bad file) and nothing else: any other exception
// escapes, and memory errors, undefined behaviour, leaks, huge allocations and
// wrong results (checked by the oracles below) are findings.
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include <lemevit/image/preprocess.hpp>
#include <lemevit/lemevit.hpp>

namespace fuzz {

// A wrong result: abort under libFuzzer (a crash it records), an exception in
// the replay test (which names the input file).
[[noreturn]] inline void oracle_failed(const char* what) {
#if defined(LEMEVIT_FUZZ_REPLAY)
  throw std::logic_error(std::string("fuzz oracle failed: ") + what);
#else
  std::fprintf(stderr, "fuzz oracle failed: %s\n", what);
  std::abort();
#endif
}
#define FUZZ_CHECK(cond) \
  do {                   \
    if (!(cond)) ::fuzz::oracle_failed(#cond); \
  } while (0)

// An in-memory file with a path, for the readers that take paths
// (SafetensorsFile, read_npy): a memfd reached through /proc/self/fd.
class MemFile {
 public:
  explicit MemFile(const char* name) {
    fd_ = ::memfd_create(name, MFD_CLOEXEC);
    if (fd_ < 0) {
      std::perror("memfd_create");
      std::abort();
    }
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  ~MemFile() { ::close(fd_); }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;

  const std::string& write(const std::uint8_t* data, std::size_t size) {
    if (::ftruncate(fd_, 0) != 0) std::abort();
    std::size_t done = 0;
    while (done < size) {
      const ssize_t n = ::pwrite(fd_, data + done, size - done, off_t(done));
      if (n <= 0) std::abort();
      done += std::size_t(n);
    }
    return path_;
  }
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

// --- (a) safetensors header/metadata parser and weight binding --------------

// A model small enough that a complete, valid file is a few KB, with every
// attention kind (C, D2, D, S), so a seed reaches successful loads and runs.
inline constexpr lemevit::ArchSpec kFuzzArch = lemevit::arch<4>(
    {1, 1, 1, 1}, {8, 8, 8, 8},
    {lemevit::Kind::C, lemevit::Kind::D2, lemevit::Kind::D, lemevit::Kind::S}, 1, 8, 1);
using FuzzNet = lemevit::Model<kFuzzArch, lemevit::Input<16, 16>, lemevit::Classes<3>>;
using FuzzNetDynamic = lemevit::Model<kFuzzArch, lemevit::Input<16, 16>, lemevit::Classes<lemevit::Dynamic>>;
// The low precisions convert the weights at load (bf16 rounding, int8
// quantisation per row) and bind an int8 file's q and scales as they are.
template <lemevit::Precision P>
using FuzzNetLowp = lemevit::Model<kFuzzArch, lemevit::Input<16, 16>, lemevit::Classes<3>,
                                   lemevit::backend::Simd<xsimd::default_arch, P>>;
// The custom configuration of the golden tests (custom_small.safetensors).
inline constexpr lemevit::ArchSpec kCustomSmall = lemevit::arch<5>(
    {1, 1, 1, 1, 1}, {32, 32, 64, 96, 128},
    {lemevit::Kind::C, lemevit::Kind::D2, lemevit::Kind::D, lemevit::Kind::S, lemevit::Kind::S}, 3, 16, 8);
using CustomSmall = lemevit::Model<kCustomSmall, lemevit::Input<96, 64>, lemevit::Classes<7>>;
using Known = lemevit::Registry<FuzzNet, CustomSmall>;

// One forward pass on a fixed input; its logits.
template <class Net>
std::vector<float> run_once(const Net& net) {
  static const std::vector<float> x = [] {
    std::vector<float> v(std::size_t(Net::channels) * Net::height * Net::width);
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = float(int(i * 37 % 101) - 50) / 25.0f;
    return v;
  }();
  auto ws = net.make_workspace(1);
  std::vector<float> logits(std::size_t(net.num_classes()));
  net.forward(x.data(), 1, logits.data(), ws);
  return logits;
}

// Every tensor the reader reports must be exactly the bytes its data_offsets
// name inside this input, and the header must be what the reader accepted.
inline void check_tensor_views(const lemevit::io::SafetensorsFile& f, const std::uint8_t* data,
                               std::size_t size) {
  FUZZ_CHECK(size >= 8);
  std::uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];
  FUZZ_CHECK(header_len <= size - 8);
  const auto root = lemevit::json::parse(
      std::string_view(reinterpret_cast<const char*>(data) + 8, std::size_t(header_len)));
  const std::uint64_t data_size = size - 8 - header_len;
  std::size_t count = 0;
  for (const auto& [name, t] : f.tensors()) {
    ++count;
    const auto* entry = root.find(name);
    FUZZ_CHECK(entry != nullptr);
    const auto* off = entry->find("data_offsets");
    FUZZ_CHECK(off && off->array.size() == 2);
    const auto begin = std::uint64_t(off->array[0].number), end = std::uint64_t(off->array[1].number);
    FUZZ_CHECK(begin <= end && end <= data_size);
    FUZZ_CHECK(t.bytes == end - begin);
    std::uint64_t numel = 1;  // t.numel() in int64, without overflow
    for (auto d : t.shape) FUZZ_CHECK(d >= 0 && !__builtin_mul_overflow(numel, std::uint64_t(d), &numel));
    FUZZ_CHECK(numel <= std::uint64_t(INT64_MAX) && t.numel() == std::int64_t(numel));
    FUZZ_CHECK(numel * lemevit::io::dtype_size(t.dtype) == t.bytes);
    FUZZ_CHECK(t.bytes == 0 || std::memcmp(t.data, data + 8 + header_len + begin, t.bytes) == 0);
  }
  FUZZ_CHECK(count + (root.find("__metadata__") ? 1 : 0) == root.object.size());
}

inline int safetensors_one(const std::uint8_t* data, std::size_t size) {
  static MemFile file("lemevit-fuzz-safetensors");
  const std::string& path = file.write(data, size);
  try {
    lemevit::io::SafetensorsFile f(path);
    check_tensor_views(f, data, size);
    const lemevit::ModelInfo info = lemevit::read_model_info(f);
    // What the image commands parse from the metadata: the preprocessing
    // pipeline and the class names.
    if (!info.preprocess.empty()) {
      try {
        const auto pp = lemevit::image::Preprocess::from_json(info.preprocess, "lemevit.preprocess");
        (void)pp.output_wh(640, 480);
      } catch (const lemevit::Error&) {
      }
    }
    if (!info.class_names.empty()) (void)lemevit::json::parse(info.class_names);
  } catch (const lemevit::Error&) {
  }
  try {
    run_once(FuzzNet::load(path));
  } catch (const lemevit::Error&) {
  }
  try {
    run_once(FuzzNetDynamic::load(path));
  } catch (const lemevit::Error&) {
  }
  try {
    run_once(FuzzNetLowp<lemevit::Precision::Bf16>::load(path));
  } catch (const lemevit::Error&) {
  }
  try {
    run_once(FuzzNetLowp<lemevit::Precision::Int8>::load(path));
  } catch (const lemevit::Error&) {
  }
  try {
    auto m = Known::load(path);
    FUZZ_CHECK(m->num_classes() >= 1);
  } catch (const lemevit::Error&) {
  }
  return 0;
}

// --- (b) .npy reader ----------------------------------------------------------

inline int npy_one(const std::uint8_t* data, std::size_t size) {
  static MemFile file("lemevit-fuzz-npy");
  static MemFile copy("lemevit-fuzz-npy-copy");
  const std::string& path = file.write(data, size);
  lemevit::io::NpyArray a;
  try {
    a = lemevit::io::read_npy(path);
  } catch (const lemevit::Error&) {
    return 0;
  }
  std::uint64_t numel = 1;
  for (auto d : a.shape) {
    FUZZ_CHECK(d >= 0);
    FUZZ_CHECK(!__builtin_mul_overflow(numel, std::uint64_t(d), &numel));
  }
  FUZZ_CHECK(a.data.size() == numel);
  // What was read writes back to an array that reads the same, bit for bit.
  lemevit::io::write_npy(copy.path(), a.shape, a.data.data());
  const lemevit::io::NpyArray b = lemevit::io::read_npy(copy.path());
  FUZZ_CHECK(a.shape == b.shape);
  FUZZ_CHECK(a.data.size() == b.data.size());
  FUZZ_CHECK(a.data.empty() || std::memcmp(a.data.data(), b.data.data(), a.data.size() * 4) == 0);
  return 0;
}

// --- (c) image decoding and preprocessing --------------------------------------

inline constexpr std::int64_t kFuzzMaxPixels = 1 << 14;  // 128 x 128

inline int image_one(const std::uint8_t* data, std::size_t size) {
  namespace im = lemevit::image;
  im::Image img;
  try {
    img = im::decode_image(data, size, "fuzz-input", kFuzzMaxPixels);
  } catch (const lemevit::Error&) {
    return 0;
  }
  FUZZ_CHECK(img.width > 0 && img.height > 0);
  FUZZ_CHECK(std::int64_t(img.width) * img.height <= kFuzzMaxPixels);
  FUZZ_CHECK(img.rgb.size() == std::size_t(img.width) * std::size_t(img.height) * 3);
  static const std::array<im::Preprocess, 3> pipelines = [] {
    im::Preprocess nearest;
    nearest.resize_wh = {28, 28};
    nearest.interp = im::Interp::Nearest;
    return std::array<im::Preprocess, 3>{im::Preprocess::seed_user(28), im::Preprocess::timm_eval(28), nearest};
  }();
  std::vector<float> x(3 * 28 * 28);
  for (const auto& pp : pipelines) {
    im::to_tensor(img, pp, x.data(), 28, 28);  // must not throw: every pipeline yields 28 x 28
    for (float v : x) FUZZ_CHECK(std::isfinite(v));
  }
  return 0;
}

}  // namespace fuzz
