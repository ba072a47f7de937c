// The error catalogue: every kind of bad input the library refuses, each
// refused with a lemevit::Error whose message names the file and the tensor
// (or metadata key) at fault. The files are edited copies of the golden
// custom_small fixture, written by a small safetensors writer that can also
// write what a correct writer never would (reversed, overlapping or
// out-of-bounds offsets, lying header lengths, unknown dtypes).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include <unistd.h>

#include <lemevit/image/image.hpp>
#include <lemevit/lemevit.hpp>

#include "support.hpp"

using namespace lemevit;
using Catch::Contains;
using test_support::fixture;

// --- the largest single C++ allocation while counting ------------------------
static std::atomic<bool> g_tracking{false};
static std::atomic<std::size_t> g_largest{0};

static void note(std::size_t n) {
  if (!g_tracking) return;
  std::size_t cur = g_largest.load();
  while (n > cur && !g_largest.compare_exchange_weak(cur, n)) {
  }
}
void on_allocation(std::size_t n) { note(n); }
#include "counting_new.hpp"

namespace {

namespace fs = std::filesystem;

using test_support::kCustomSmall;
using Small = Model<kCustomSmall, Input<96, 64>, Classes<7>>;

// A scratch folder of this process, removed at exit.
const fs::path& scratch() {
  static const struct Dir {
    fs::path path;
    Dir() : path(fs::temp_directory_path() / ("lemevit-errors-" + std::to_string(::getpid()))) {
      fs::create_directories(path);
    }
    ~Dir() {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  } dir;
  return dir.path;
}
std::string scratch_file(const std::string& name) { return (scratch() / name).string(); }

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
  REQUIRE(out.good());
}
std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// A safetensors file as editable parts; write() lays them out as told, right
// or wrong.
struct Tensor {
  std::string name, dtype;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0, end = 0;
};
struct St {
  std::map<std::string, std::string> meta;
  bool with_meta = true;
  std::vector<Tensor> tensors;
  std::string data;

  // The fixture's tensors, contiguous in name order.
  static St of(const std::string& path) {
    io::SafetensorsFile f(path);
    St s;
    s.meta.insert(f.metadata().begin(), f.metadata().end());
    for (const auto& [name, t] : f.tensors()) {
      s.tensors.push_back({name, io::dtype_name(t.dtype), t.shape, s.data.size(), s.data.size() + t.bytes});
      s.data.append(reinterpret_cast<const char*>(t.data), t.bytes);
    }
    return s;
  }
  Tensor& at(const std::string& name) {
    for (auto& t : tensors)
      if (t.name == name) return t;
    FAIL("no tensor " << name << " in the fixture");
    throw;
  }
  void drop(const std::string& name) {
    tensors.erase(std::remove_if(tensors.begin(), tensors.end(), [&](const Tensor& t) { return t.name == name; }),
                  tensors.end());
  }
  // Appends a tensor with these bytes at the end of the data.
  void add(const std::string& name, const std::string& dtype, std::vector<std::int64_t> shape,
           const std::string& bytes) {
    tensors.push_back({name, dtype, std::move(shape), data.size(), data.size() + bytes.size()});
    data += bytes;
  }
  float* floats(const std::string& name) { return reinterpret_cast<float*>(data.data() + at(name).begin); }

  std::string header() const {
    std::string h = "{";
    if (with_meta) {
      h += "\"__metadata__\":{";
      bool first = true;
      for (const auto& [k, v] : meta) {
        h += (first ? "" : ",") + json::quote(k) + ":" + json::quote(v);
        first = false;
      }
      h += "}";
    }
    for (const auto& t : tensors) {
      if (h.size() > 1) h += ",";
      std::string dims;
      for (std::size_t i = 0; i < t.shape.size(); ++i) {
        if (i) dims += ',';  // (not `(i ? "," : "") + ...`: GCC 12 warns -Wrestrict on it)
        dims += std::to_string(t.shape[i]);
      }
      h += json::quote(t.name) + ":{\"dtype\":\"" + t.dtype + "\",\"shape\":[" + dims + "],\"data_offsets\":[" +
           std::to_string(t.begin) + "," + std::to_string(t.end) + "]}";
    }
    return h + "}";
  }
  // The file's bytes; `declared` replaces the true header length.
  std::string bytes(std::optional<std::uint64_t> declared = {}) const {
    const std::string h = header();
    const std::uint64_t n = declared.value_or(h.size());
    std::string out;
    for (int i = 0; i < 8; ++i) out += char((n >> (8 * i)) & 0xFF);
    return out + h + data;
  }
  std::string write(const std::string& name, std::optional<std::uint64_t> declared = {}) const {
    const std::string path = scratch_file(name);
    write_bytes(path, bytes(declared));
    return path;
  }
};

St fixture_st() { return St::of(fixture("custom_small.safetensors")); }

// What loading `path` into the custom_small type reports ("(loaded)" if nothing).
std::string load_error(const std::string& path) {
  try {
    (void)Small::load(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "(loaded)";
}
std::string npy_error(const std::string& path) {
  try {
    (void)io::read_npy(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "(read)";
}
std::string image_error(const std::string& path) {
  try {
    (void)image::load_image(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "(decoded)";
}

std::string le16(std::uint32_t v) { return {char(v & 0xFF), char((v >> 8) & 0xFF)}; }
std::string le32(std::uint32_t v) { return le16(v & 0xFFFF) + le16(v >> 16); }
std::string be16(std::uint32_t v) { return {char((v >> 8) & 0xFF), char(v & 0xFF)}; }
std::string be32(std::uint32_t v) { return be16(v >> 16) + be16(v & 0xFFFF); }

}  // namespace

// --- safetensors container ---------------------------------------------------

TEST_CASE("the unmodified fixture loads (the edits below are the only problem)", "[errors]") {
  CHECK(load_error(fixture_st().write("intact.safetensors")) == "(loaded)");
}

TEST_CASE("a missing file and a folder are refused by name", "[errors]") {
  const std::string missing = scratch_file("no-such.safetensors");
  CHECK_THAT(load_error(missing), Contains(missing) && Contains("cannot open"));
  CHECK_THAT(load_error(scratch().string()), Contains(scratch().string()) && Contains("not a regular file"));
}

TEST_CASE("a truncated file is refused by name", "[errors]") {
  const St st = fixture_st();
  const std::string whole = st.bytes();
  const std::string path = scratch_file("truncated.safetensors");
  // Cut in the tensor data: the first tensor (in name order) reaching past the end is named.
  write_bytes(path, whole.substr(0, whole.size() - 1000));
  const std::string msg = load_error(path);
  CHECK_THAT(msg, Contains(path) && Contains("tensor '") && Contains("lies past the end of the data") &&
                      Contains("truncated file?"));
  // Cut in the header, and shorter than the length field itself.
  write_bytes(path, whole.substr(0, 100));
  CHECK_THAT(load_error(path), Contains(path) && Contains("runs past the end of the file"));
  write_bytes(path, whole.substr(0, 5));
  CHECK_THAT(load_error(path), Contains(path) && Contains("truncated: 5 bytes"));
  write_bytes(path, "");
  CHECK_THAT(load_error(path), Contains(path) && Contains("truncated: 0 bytes"));
}

TEST_CASE("a header length past the end of the file is refused", "[errors]") {
  const St st = fixture_st();
  const std::uint64_t size = st.bytes().size();
  const std::string path = st.write("header_len.safetensors", size);
  CHECK_THAT(load_error(path), Contains(path) && Contains("header length " + std::to_string(size)) &&
                                   Contains("runs past the end of the file"));
  const std::string all_ones = st.write("header_len_max.safetensors", ~std::uint64_t(0));
  CHECK_THAT(load_error(all_ones), Contains(all_ones) && Contains("header length 18446744073709551615"));
  // A header length that ends inside the JSON: what is left is not JSON.
  const std::string shortened = st.write("header_len_short.safetensors", st.header().size() - 10);
  CHECK_THAT(load_error(shortened), Contains(shortened) && Contains("header is not valid JSON"));
}

TEST_CASE("a huge declared header is refused before anything is allocated", "[errors]") {
  // Declared 200 MiB in a small file: past the end.
  const St st = fixture_st();
  const std::string small = st.write("huge_small.safetensors", 200ull << 20);
  // Declared 100 MiB + 1 in a (sparse) file that is that long: over the limit.
  const std::string big = scratch_file("huge_big.safetensors");
  {
    const std::uint64_t n = (100ull << 20) + 1;
    std::string head;
    for (int i = 0; i < 8; ++i) head += char((n >> (8 * i)) & 0xFF);
    write_bytes(big, head + "{");
    fs::resize_file(big, 8 + n + 64);
  }
  g_largest = 0;
  g_tracking = true;
  const std::string small_msg = load_error(small), big_msg = load_error(big);
  g_tracking = false;
  CHECK_THAT(small_msg, Contains(small) && Contains("header length 209715200") && Contains("runs past the end"));
  CHECK_THAT(big_msg, Contains(big) && Contains("header of 104857601 bytes exceeds the 100 MiB limit"));
  CHECK(g_largest < (1u << 20));
}

TEST_CASE("tensor data offsets outside the data are refused with the tensor's name", "[errors]") {
  St st = fixture_st();
  Tensor& t = st.at("head.bias");
  t.begin = st.data.size() + 4;
  t.end = t.begin + 28;
  const std::string path = st.write("oob.safetensors");
  CHECK_THAT(load_error(path), Contains(path) && Contains("tensor 'head.bias'") &&
                                   Contains("data_offsets end " + std::to_string(t.end)) &&
                                   Contains("lies past the end of the data (" + std::to_string(st.data.size())));
  // Offsets too large for any file.
  t.begin = 0;
  t.end = ~std::uint64_t(0) >> 1;
  CHECK_THAT(load_error(st.write("oob2.safetensors")),
             Contains("tensor 'head.bias'") && Contains("data_offsets must be non-negative integers"));
}

TEST_CASE("overlapping tensor data is refused naming both tensors", "[errors]") {
  St st = fixture_st();
  // norm.bias and norm.weight are both [128] f32: point the second at the first's bytes.
  const Tensor bias = st.at("norm.bias");
  Tensor& weight = st.at("norm.weight");
  weight.begin = bias.begin + 8;
  weight.end = bias.end + 8;
  const std::string path = st.write("overlap.safetensors");
  CHECK_THAT(load_error(path), Contains(path) && Contains("'norm.bias'") && Contains("'norm.weight'") &&
                                   Contains("overlapping data_offsets"));
}

TEST_CASE("reversed data offsets are refused", "[errors]") {
  St st = fixture_st();
  Tensor& t = st.at("head.bias");
  std::swap(t.begin, t.end);
  const std::string path = st.write("reversed.safetensors");
  CHECK_THAT(load_error(path), Contains(path) && Contains("tensor 'head.bias'") &&
                                   Contains("data_offsets are reversed (" + std::to_string(t.begin) + " > " +
                                            std::to_string(t.end) + ")"));
}

TEST_CASE("a byte count that disagrees with shape x dtype is refused", "[errors]") {
  St st = fixture_st();
  st.at("head.bias").shape = {8};
  const std::string path = st.write("size.safetensors");
  CHECK_THAT(load_error(path), Contains(path) && Contains("tensor 'head.bias'") &&
                                   Contains("holds 28 bytes but shape [8] of F32 needs 32"));
  St half = fixture_st();
  half.at("head.bias").dtype = "F16";
  CHECK_THAT(load_error(half.write("size16.safetensors")),
             Contains("tensor 'head.bias'") && Contains("holds 28 bytes but shape [7] of F16 needs 14"));
}

TEST_CASE("an unknown or unsupported dtype is refused by name", "[errors]") {
  St st = fixture_st();
  st.at("head.bias").dtype = "F8_E4M3";
  const std::string path = st.write("dtype.safetensors");
  CHECK_THAT(load_error(path), Contains(path) && Contains("tensor 'head.bias'") && Contains("unknown dtype 'F8_E4M3'"));
  // A dtype safetensors knows but a weight cannot be: same byte count, integer type.
  St ints = fixture_st();
  ints.at("head.bias").dtype = "I32";
  const std::string ipath = ints.write("dtype_i32.safetensors");
  CHECK_THAT(load_error(ipath), Contains(ipath) && Contains("tensor 'head.bias' has dtype I32") &&
                                    Contains("expected F32, F16, BF16 or I8"));
}

TEST_CASE("malformed header entries are refused with the tensor's name", "[errors]") {
  struct Case {
    std::string entry, message;
  };
  const Case cases[] = {
      {R"("t":{"shape":[1],"data_offsets":[0,4]})", "tensor 't': missing dtype"},
      {R"("t":{"dtype":"F32","data_offsets":[0,4]})", "tensor 't': missing shape"},
      {R"("t":{"dtype":"F32","shape":[1]})", "tensor 't': data_offsets must be [begin, end]"},
      {R"("t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]})", "tensor 't': shape entries must be non-negative"},
      {R"("t":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]})", "tensor 't': shape entries must be non-negative"},
      {R"("t":{"dtype":"F32","shape":[1e999],"data_offsets":[0,4]})", "out of the range of a double"},
      {R"("t":{"dtype":"F32","shape":[1099511627776000],"data_offsets":[0,4]})",
       "tensor 't': shape entries must be non-negative"},
      // 2^39 x 2^39 elements: the product wraps to 0 in 64 bits, matching empty data.
      {R"("t":{"dtype":"F32","shape":[549755813888,549755813888],"data_offsets":[0,0]})",
       "tensor 't': shape is implausibly large"},
      {R"("t":[1,2])", "tensor 't': entry is not an object"},
      {R"("__metadata__":{"k":1})", "metadata value 'k' is not a string"},
      {R"("t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]})",
       "duplicate key"},
  };
  for (const auto& c : cases) {
    const std::string header = "{" + c.entry + "}";
    std::string bytes;
    for (int i = 0; i < 8; ++i) bytes += char((std::uint64_t(header.size()) >> (8 * i)) & 0xFF);
    bytes += header + std::string(4, '\0');
    const std::string path = scratch_file("entry.safetensors");
    write_bytes(path, bytes);
    INFO(header);
    CHECK_THAT(load_error(path), Contains(path) && Contains(c.message));
  }
}

// --- binding the tensors to the model type -------------------------------------

TEST_CASE("a tensor of the wrong shape is refused with both shapes", "[errors]") {
  St st = fixture_st();
  st.at("head.weight").shape = {128, 7};  // same bytes, transposed shape
  const std::string path = st.write("shape.safetensors");
  CHECK_THAT(load_error(path), Contains(path) && Contains("tensor 'head.weight' has shape [128, 7], expected [7, 128]"));
}

TEST_CASE("a missing tensor is refused with its expected shape", "[errors]") {
  St st = fixture_st();
  st.drop("stages.2.0.attn.qkv1.weight");
  const std::string path = st.write("missing.safetensors");
  CHECK_THAT(load_error(path), Contains(path) && Contains("missing tensor 'stages.2.0.attn.qkv1.weight'") &&
                                   Contains("expected shape [192, 64]"));
}

TEST_CASE("an extra tensor is refused by name", "[errors]") {
  St st = fixture_st();
  st.add("stages.9.0.extra", "F32", {2}, std::string(8, '\0'));
  const std::string path = st.write("extra.safetensors");
  CHECK_THAT(load_error(path), Contains(path) && Contains("1 unexpected tensor(s)") &&
                                   Contains("stages.9.0.extra [2]"));
  // BatchNorm bookkeeping is not an extra tensor.
  St bn = fixture_st();
  bn.add("norm.num_batches_tracked", "I64", {}, std::string(8, '\0'));
  CHECK(load_error(bn.write("bookkeeping.safetensors")) == "(loaded)");
}

TEST_CASE("metadata that disagrees with the model type is refused with the differences", "[errors]") {
  struct Case {
    std::map<std::string, std::string> meta;
    std::string message;
  };
  const Case cases[] = {
      {{{"lemevit.dims", "32,32,64,96,160"}}, "dims 32,32,64,96,160 in the file vs 32,32,64,96,128 in the type"},
      {{{"lemevit.depths", "1,1,2,1,1"}}, "depths 1,1,2,1,1 in the file vs 1,1,1,1,1 in the type"},
      {{{"lemevit.kinds", "C,D,D,S,S"}}, "kinds C,D,D,S,S in the file vs C,D2,D,S,S in the type"},
      {{{"lemevit.head_dim", "32"}}, "head_dim 32 in the file vs 16 in the type"},
      {{{"lemevit.meta_tokens", "16"}}, "meta_tokens 16 in the file vs 8 in the type"},
      {{{"lemevit.mlp_ratio", "4"}}, "mlp_ratio 4 in the file vs 3 in the type"},
      {{{"lemevit.num_classes", "10"}}, "num_classes 10 in the file vs 7 in the type"},
      {{{"lemevit.in_chans", "1"}}, "in_chans 1 in the file vs 3 in the type"},
      {{{"lemevit.depths", "1,x,1,1,1"}}, "metadata lemevit.depths = 'x' is not an integer"},
      {{{"lemevit.head_dim", "16.5"}}, "metadata lemevit.head_dim = '16.5' is not an integer"},
      {{{"lemevit.dca_scale", "sqrt"}}, "metadata lemevit.dca_scale = 'sqrt', expected official or head_dim"},
  };
  for (const auto& c : cases) {
    St st = fixture_st();
    for (const auto& [k, v] : c.meta) st.meta[k] = v;
    const std::string path = st.write("meta.safetensors");
    INFO(c.message);
    const std::string msg = load_error(path);
    CHECK_THAT(msg, Contains(path) && Contains(c.message));
  }
  St lacking = fixture_st();
  lacking.meta.erase("lemevit.kinds");
  const std::string path = lacking.write("meta_lacking.safetensors");
  CHECK_THAT(load_error(path), Contains(path) && Contains("has lemevit.depths but lacks lemevit.kinds"));
  // The mismatch names the file's variant and the type.
  St other = fixture_st();
  other.meta["lemevit.dims"] = "32,32,64,96,160";
  CHECK_THAT(load_error(other.write("meta2.safetensors")),
             Contains("holds a custom model that does not match the model type custom"));
}

TEST_CASE("a file no compiled-in type matches is refused with the list", "[errors]") {
  using Known = Registry<Small>;
  St st = fixture_st();
  st.meta["lemevit.meta_tokens"] = "4";
  const std::string path = st.write("registry.safetensors");
  try {
    (void)Known::load(path);
    FAIL("loaded");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Contains(path) && Contains("meta_tokens 4") && Contains("does not compile in") &&
                             Contains("depths 1,1,1,1,1, dims 32,32,64,96,128"));
  }
  St bare = fixture_st();
  bare.with_meta = false;
  const std::string bare_path = bare.write("bare.safetensors");
  try {
    (void)Known::load(bare_path);
    FAIL("loaded");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Contains(bare_path) && Contains("no lemevit.* architecture metadata"));
  }
  // A file without metadata still loads into a type directly (per-tensor checks).
  CHECK(load_error(bare_path) == "(loaded)");
}

TEST_CASE("int8 weights without a valid per-row scale are refused by name", "[errors]") {
  const std::string w = "head.weight", sname = w + "_scale";
  auto int8_head = [&](St& st) {  // head.weight (7 x C) as I8 ones
    const auto shape = st.at(w).shape;
    st.drop(w);
    st.add(w, "I8", shape, std::string(std::size_t(shape[0] * shape[1]), '\x01'));
    return shape;
  };
  {
    St st = fixture_st();
    int8_head(st);
    const std::string path = st.write("int8_noscale.safetensors");
    CHECK_THAT(load_error(path), Contains(path) && Contains("int8 tensor 'head.weight' has no 'head.weight_scale'"));
  }
  {
    St st = fixture_st();
    int8_head(st);
    st.add(sname, "F32", {6}, std::string(24, '\0'));
    CHECK_THAT(load_error(st.write("int8_scaleshape.safetensors")),
               Contains("tensor 'head.weight_scale' is F32 [6], expected F32 [7]"));
  }
  {
    St st = fixture_st();
    int8_head(st);
    std::string bytes;
    for (int i = 0; i < 7; ++i) bytes += le32(i == 4 ? 0u : 0x3F800000u);  // 1.0f, one 0
    st.add(sname, "F32", {7}, bytes);
    CHECK_THAT(load_error(st.write("int8_zeroscale.safetensors")),
               Contains("tensor 'head.weight_scale' holds 0.000000 at row 4") && Contains("finite and positive"));
  }
}

TEST_CASE("BatchNorm statistics that do not fold to finite values are refused", "[errors]") {
  {  // a negative variance: sqrt gives NaN (found by the fuzzer, an int8 model quantising it)
    St st = fixture_st();
    st.floats("downsample_layers.0.1.running_var")[2] = -0.5f;
    const std::string path = st.write("bn_negvar.safetensors");
    CHECK_THAT(load_error(path), Contains(path) && Contains("BatchNorm 'downsample_layers.0.1'") &&
                                     Contains("at channel 2") &&
                                     Contains("running_var is -0.500000: a variance cannot be negative"));
  }
  {  // the head's BatchNorm, folded into a scale and a shift
    St st = fixture_st();
    st.floats("norm.running_var")[0] = -1.0f;
    CHECK_THAT(load_error(st.write("norm_negvar.safetensors")),
               Contains("BatchNorm 'norm'") && Contains("at channel 0") && Contains("cannot be negative"));
  }
  {  // finite statistics whose fold overflows: 3e38 / sqrt(0 + 1e-5)
    St st = fixture_st();
    st.floats("downsample_layers.2.1.weight")[1] = 3e38f;
    st.floats("downsample_layers.2.1.running_var")[1] = 0.0f;
    CHECK_THAT(load_error(st.write("bn_overflow.safetensors")),
               Contains("BatchNorm 'downsample_layers.2.1'") && Contains("at channel 1") &&
                   Contains("overflow float"));
  }
}

TEST_CASE("NaN and Inf weights are refused with the tensor and index", "[errors]") {
  {
    St st = fixture_st();
    st.floats("norm_c.weight")[5] = NAN;
    const std::string path = st.write("nan.safetensors");
    CHECK_THAT(load_error(path), Contains(path) && Contains("tensor 'norm_c.weight' contains NaN at flat index 5"));
  }
  {
    St st = fixture_st();
    st.floats("stages.3.0.mlp.0.weight")[100] = -INFINITY;
    const std::string path = st.write("inf.safetensors");
    CHECK_THAT(load_error(path),
               Contains(path) && Contains("tensor 'stages.3.0.mlp.0.weight' contains Inf at flat index 100"));
  }
  // Half-precision storage: f16 +Inf (0x7C00) and a bf16 NaN (0x7FC0).
  for (const auto& [dtype, bits, what] : {std::tuple{"F16", 0x7C00, "Inf"}, std::tuple{"BF16", 0x7FC0, "NaN"}}) {
    St st = fixture_st();
    st.drop("head.bias");
    std::string bytes;
    for (int i = 0; i < 7; ++i) bytes += le16(i == 3 ? bits : 0x3C00 * (std::string(dtype) == "F16") + 0x3F80 * (std::string(dtype) == "BF16"));
    st.add("head.bias", dtype, {7}, bytes);
    const std::string path = st.write(std::string("nan_") + dtype + ".safetensors");
    INFO(dtype);
    CHECK_THAT(load_error(path), Contains(path) && Contains(std::string("tensor 'head.bias' contains ") + what +
                                                            " at flat index 3"));
  }
}

// --- .npy inputs -----------------------------------------------------------------

namespace {
std::string npy(const std::string& descr, const std::string& shape, std::size_t data_bytes, bool fortran = false,
                int version = 1) {
  std::string header = "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") +
                       ", 'shape': " + shape + ", }";
  while ((10 + header.size() + 1) % 64) header += ' ';
  header += '\n';
  std::string out = std::string("\x93NUMPY", 6) + char(version) + '\0';
  out += version == 1 ? le16(std::uint32_t(header.size())) : le32(std::uint32_t(header.size()));
  return out + header + std::string(data_bytes, '\0');
}
}  // namespace

TEST_CASE("a bad input .npy is refused by name", "[errors]") {
  const std::string path = scratch_file("input.npy");
  write_bytes(path, npy("<f4", "(2, 3, 96, 64)", 2 * 3 * 96 * 64 * 4));
  CHECK(npy_error(path) == "(read)");
  write_bytes(path, npy("<f8", "(2, 3)", 48));
  CHECK_THAT(npy_error(path), Contains(path) && Contains("dtype '<f8' is not float32") && Contains("astype(np.float32)"));
  write_bytes(path, npy(">f4", "(2, 3)", 24));
  CHECK_THAT(npy_error(path), Contains(path) && Contains("dtype '>f4' is not float32"));
  write_bytes(path, npy("<i4", "(2, 3)", 24));
  CHECK_THAT(npy_error(path), Contains(path) && Contains("dtype '<i4' is not float32"));
  write_bytes(path, npy("<f4", "(2, 3)", 24, /*fortran*/ true));
  CHECK_THAT(npy_error(path), Contains(path) && Contains("Fortran-ordered arrays are not supported"));
  // Truncated data, then a truncated header, then not an .npy at all.
  write_bytes(path, npy("<f4", "(2, 3, 96, 64)", 1000));
  CHECK_THAT(npy_error(path), Contains(path) && Contains("truncated: shape needs 147456 bytes of data, file has 1000"));
  write_bytes(path, npy("<f4", "(2, 3)", 24).substr(0, 40));
  CHECK_THAT(npy_error(path), Contains(path) && Contains("header length past the end of the file"));
  write_bytes(path, npy("<f4", "(2, 3)", 24).substr(0, 9));
  CHECK_THAT(npy_error(path), Contains(path) && Contains("truncated header"));
  write_bytes(path, "\x93NUMPY");
  CHECK_THAT(npy_error(path), Contains(path) && Contains("not a .npy file"));
  write_bytes(path, "just text, not numpy");
  CHECK_THAT(npy_error(path), Contains(path) && Contains("not a .npy file (bad magic)"));
  write_bytes(path, npy("<f4", "(2, 3)", 24, false, 9));
  CHECK_THAT(npy_error(path), Contains(path) && Contains("unsupported .npy version 9"));
  write_bytes(path, npy("<f4", "(2, x)", 24));
  CHECK_THAT(npy_error(path), Contains(path) && Contains("malformed shape"));
  // 2^34 x 2^34 elements: the product wraps to 0 in 64 bits, matching no data.
  write_bytes(path, npy("<f4", "(17179869184, 17179869184)", 0));
  CHECK_THAT(npy_error(path), Contains(path) && Contains("shape is implausibly large"));
  write_bytes(path, npy("<f4", "(2, 3, 2, 1099511627777)", 0));
  CHECK_THAT(npy_error(path), Contains(path) && Contains("shape is implausibly large"));
  const std::string missing = scratch_file("missing.npy");
  CHECK_THAT(npy_error(missing), Contains(missing) && Contains("cannot open"));
}

// --- images ----------------------------------------------------------------------

TEST_CASE("unreadable images are refused by name", "[errors]") {
  const std::string dir = fs::path(LEMEVIT_SOURCE_DIR "/models/fashion_mnist/samples").string();
  const std::string good = read_bytes(dir + "/00_ankle_boot.png");
  CHECK(image_error(dir + "/00_ankle_boot.png") == "(decoded)");

  const std::string path = scratch_file("image.png");
  write_bytes(path, "");
  CHECK_THAT(image_error(path), Contains(path) && Contains("empty file, not an image"));
  write_bytes(path, "this is a text file, not an image");
  CHECK_THAT(image_error(path), Contains(path) && Contains("cannot decode image"));
  write_bytes(path, good.substr(0, good.size() / 2));
  CHECK_THAT(image_error(path), Contains(path) && Contains("truncated PNG"));
  const std::string jpeg = scratch_file("image.jpg");
  const std::string photo = read_bytes(LEMEVIT_SOURCE_DIR "/tests/images/grace_hopper.jpg");
  write_bytes(jpeg, photo.substr(0, photo.size() / 2));
  CHECK_THAT(image_error(jpeg), Contains(jpeg) && Contains("truncated JPEG"));
  const std::string missing = scratch_file("missing.png");
  CHECK_THAT(image_error(missing), Contains(missing) && Contains("no such file"));
  CHECK_THAT(image_error(scratch().string()), Contains(scratch().string()) && Contains("is a directory"));
  const std::string pgm = scratch_file("image.pgm");
  write_bytes(pgm, "P5\n2 2\n65535\n" + std::string(8, '\x01'));
  CHECK_THAT(image_error(pgm), Contains(pgm) && Contains("PNM with maxval 65535 is not supported"));
  const std::string bmp = scratch_file("image.bmp");
  {
    // 4x4 24-bit BMP whose pixel data stops after one row.
    std::string b = "BM" + le32(54 + 48) + le32(0) + le32(54) + le32(40) + le32(4) + le32(4) + le16(1) + le16(24) +
                    le32(0) + le32(48) + le32(2835) + le32(2835) + le32(0) + le32(0);
    write_bytes(bmp, b + std::string(12, '\x7f'));
  }
  CHECK_THAT(image_error(bmp), Contains(bmp) && Contains("truncated BMP"));
}

TEST_CASE("images that broke stb_image 2.27 under the fuzzer are refused by name", "[errors]") {
  const std::string dir = LEMEVIT_SOURCE_DIR "/tests/fuzz/regressions/image/";
  const std::pair<const char*, const char*> cases[] = {
      {"jpeg_fill_bytes_before_soi_huffman_overflow.jpg", "corrupt JPEG (bad Huffman table)"},
      {"jpeg_fill_bytes_before_stuffed_zero_hide_bad_huffman.jpg", "corrupt JPEG (bad Huffman table)"},
      {"jpeg_cmyk_undefined_ac_table.jpg", "corrupt JPEG (a scan uses an undefined Huffman table)"},
      {"pnm_width_overflows_int.ppm", "cannot decode image: malformed PNM header"},
      {"bmp_height_zero.bmp", "cannot decode image: it declares 8216x0 pixels"},
      // 262 bytes whose IDAT declares ~1 GB: stb would allocate 2 GiB for it.
      {"png_idat_length_past_end.png", "truncated PNG (a chunk is longer than the rest of the file)"},
  };
  for (const auto& [file, message] : cases) {
    INFO(file);
    CHECK_THAT(image_error(dir + file), Contains(dir + file) && Contains(message));
  }
}

TEST_CASE("a decompression bomb is refused before its pixels are allocated", "[errors]") {
  constexpr std::uint32_t n = 60000;
  const std::string declared = "image declares 60000x60000 = 3600000000 pixels, over the limit of 100000000";
  // Each header is complete enough for the format to be recognised; the
  // pixel data (3600000000 pixels, 10.8 GB as RGB) is absent.
  const std::string png = std::string("\x89PNG\r\n\x1a\n", 8) + be32(13) + "IHDR" + be32(n) + be32(n) +
                          std::string("\x08\x02\x00\x00\x00", 5) + be32(0) + be32(0) + "IDAT" + be32(0);
  const std::string jpeg = std::string("\xFF\xD8\xFF\xC0", 4) + be16(17) + '\x08' + be16(n) + be16(n) + '\x03' +
                           std::string("\x01\x22\x00\x02\x11\x01\x03\x11\x01", 9) + std::string("\xFF\xD9", 2);
  const std::string gif = "GIF89a" + le16(n) + le16(n) + std::string("\x00\x00\x00", 3) + "\x3B";
  const std::string bmp = "BM" + le32(54) + le32(0) + le32(54) + le32(40) + le32(n) + le32(n) + le16(1) + le16(24) +
                          le32(0) + le32(0) + le32(2835) + le32(2835) + le32(0) + le32(0);
  const std::string ppm = "P6\n60000 60000\n255\n";
  for (const auto& [name, bytes] : {std::pair{"bomb.png", png}, std::pair{"bomb.jpg", jpeg},
                                    std::pair{"bomb.gif", gif}, std::pair{"bomb.bmp", bmp},
                                    std::pair{"bomb.ppm", ppm}}) {
    const std::string path = scratch_file(name);
    write_bytes(path, bytes);
    INFO(name);
    g_largest = 0;
    g_tracking = true;
    const std::string msg = image_error(path);
    g_tracking = false;
    CHECK_THAT(msg, Contains(path) && Contains(declared) && Contains("refused before decoding"));
    CHECK(g_largest < (1u << 20));
  }
  // The limit is the caller's: a small one refuses a normal image.
  const std::string sample = LEMEVIT_SOURCE_DIR "/models/fashion_mnist/samples/00_ankle_boot.png";
  try {
    (void)image::load_image(sample, 100);
    FAIL("decoded");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Contains(sample) && Contains("28x28 = 784 pixels, over the limit of 100"));
  }
}
