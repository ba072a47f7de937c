#pragma once
// Memory-mapped safetensors reader. The file is untrusted: the header length,
// every offset, shape and dtype is checked against the mapping before a
// single tensor byte is touched, so nothing is ever read outside the file.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "lemevit/error.hpp"
#include "lemevit/io/json.hpp"

namespace lemevit::io {

enum class DType { F32, F16, BF16, F64, I64, I32, I16, I8, U8, Bool };

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F64: return "F64";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::Bool: return "BOOL";
  }
  return "?";
}

inline std::size_t dtype_size(DType d) {
  switch (d) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    default: return 1;
  }
}

inline std::string shape_str(const std::vector<std::int64_t>& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000) << 16;
  std::uint32_t exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (man << 13);  // inf / nan
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    int e = -1;
    do { ++e; man <<= 1; } while (!(man & 0x400));
    bits = sign | std::uint32_t(112 - e) << 23 | ((man & 0x3FF) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline float bf16_to_float(std::uint16_t b) {
  const std::uint32_t bits = std::uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

struct TensorInfo {
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  const unsigned char* data = nullptr;
  std::size_t bytes = 0;

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

class SafetensorsFile {
 public:
  // Files above this header size are refused before any allocation.
  static constexpr std::uint64_t kMaxHeaderBytes = 100u << 20;

  explicit SafetensorsFile(std::string path) : path_(std::move(path)) {
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(std::string("cannot open: ") + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      fail("not a regular file");
    }
    size_ = std::size_t(st.st_size);
    if (size_ < 8) {
      ::close(fd);
      fail("truncated: " + std::to_string(size_) + " bytes, a safetensors file has at least 8");
    }
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) fail(std::string("cannot map: ") + std::strerror(errno));
    base_ = static_cast<const unsigned char*>(p);
    try {
      parse();
    } catch (...) {
      ::munmap(const_cast<unsigned char*>(base_), size_);
      throw;
    }
  }
  ~SafetensorsFile() {
    if (base_) ::munmap(const_cast<unsigned char*>(base_), size_);
  }
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorInfo, std::less<>>& tensors() const { return tensors_; }
  const std::map<std::string, std::string, std::less<>>& metadata() const { return metadata_; }

  const std::string* meta(std::string_view key) const {
    auto it = metadata_.find(key);
    return it == metadata_.end() ? nullptr : &it->second;
  }

 private:
  std::string path_;
  const unsigned char* base_ = nullptr;
  std::size_t size_ = 0;
  std::map<std::string, TensorInfo, std::less<>> tensors_;
  std::map<std::string, std::string, std::less<>> metadata_;

  [[noreturn]] void fail(const std::string& what) const {
    throw Error(path_ + ": " + what);
  }

  static bool parse_dtype(const std::string& s, DType& d) {
    static const std::pair<const char*, DType> table[] = {
        {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16}, {"F64", DType::F64},
        {"I64", DType::I64}, {"I32", DType::I32}, {"I16", DType::I16},   {"I8", DType::I8},
        {"U8", DType::U8},   {"BOOL", DType::Bool}};
    for (auto& [name, v] : table)
      if (s == name) { d = v; return true; }
    return false;
  }

  void parse() {
    std::uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | base_[i];
    if (header_len > size_ - 8)
      fail("header length " + std::to_string(header_len) + " runs past the end of the file (" +
           std::to_string(size_) + " bytes): truncated or not a safetensors file");
    if (header_len > kMaxHeaderBytes)
      fail("header of " + std::to_string(header_len) + " bytes exceeds the 100 MiB limit");
    const std::string_view text(reinterpret_cast<const char*>(base_ + 8), header_len);
    json::Value root;
    try {
      root = json::parse(text);
    } catch (const Error& e) {
      fail(std::string("header is not valid JSON (") + e.what() + ")");
    }
    if (root.type != json::Value::Type::Object) fail("header is not a JSON object");
    const unsigned char* data = base_ + 8 + header_len;
    const std::size_t data_size = size_ - 8 - header_len;
    struct Range {
      std::uint64_t begin, end;
      const std::string* name;
      bool operator<(const Range& o) const { return begin != o.begin ? begin < o.begin : end < o.end; }
    };
    std::vector<Range> ranges;
    for (const auto& [name, v] : root.object) {
      if (name == "__metadata__") {
        if (v.type != json::Value::Type::Object) fail("__metadata__ is not an object");
        for (const auto& [k, mv] : v.object) {
          if (mv.type != json::Value::Type::String)
            fail("metadata value '" + k + "' is not a string");
          metadata_[k] = mv.string;
        }
        continue;
      }
      const std::string where = "tensor '" + name + "': ";
      if (v.type != json::Value::Type::Object) fail(where + "entry is not an object");
      const auto* dt = v.find("dtype");
      const auto* sh = v.find("shape");
      const auto* off = v.find("data_offsets");
      if (!dt || dt->type != json::Value::Type::String) fail(where + "missing dtype");
      if (!sh || sh->type != json::Value::Type::Array) fail(where + "missing shape");
      if (!off || off->type != json::Value::Type::Array || off->array.size() != 2)
        fail(where + "data_offsets must be [begin, end]");
      TensorInfo t;
      if (!parse_dtype(dt->string, t.dtype)) fail(where + "unknown dtype '" + dt->string + "'");
      std::uint64_t numel = 1;
      for (const auto& d : sh->array) {
        if (d.type != json::Value::Type::Number || d.number < 0 || d.number > 1e12 ||
            d.number != std::floor(d.number))
          fail(where + "shape entries must be non-negative integers");
        const auto dim = std::uint64_t(d.number);
        t.shape.push_back(std::int64_t(dim));
        // Checked before multiplying: a wrapped product could look small, and
        // every prefix stays <= 2^40 so TensorInfo::numel() cannot overflow.
        if (dim != 0 && numel > (std::uint64_t(1) << 40) / dim) fail(where + "shape is implausibly large");
        numel *= dim;
      }
      std::uint64_t range[2];
      for (int i = 0; i < 2; ++i) {
        const auto& o = off->array[i];
        if (o.type != json::Value::Type::Number || o.number < 0 || o.number > 1e15 ||
            o.number != std::floor(o.number))
          fail(where + "data_offsets must be non-negative integers");
        range[i] = std::uint64_t(o.number);
      }
      if (range[1] < range[0])
        fail(where + "data_offsets are reversed (" + std::to_string(range[0]) + " > " +
             std::to_string(range[1]) + ")");
      if (range[1] > data_size)
        fail(where + "data_offsets end " + std::to_string(range[1]) + " lies past the end of the data (" +
             std::to_string(data_size) + " bytes): truncated file?");
      const std::uint64_t expect = numel * dtype_size(t.dtype);
      if (range[1] - range[0] != expect)
        fail(where + "holds " + std::to_string(range[1] - range[0]) + " bytes but shape " +
             shape_str(t.shape) + " of " + dtype_name(t.dtype) + " needs " + std::to_string(expect));
      t.data = data + range[0];
      t.bytes = std::size_t(expect);
      if (t.bytes) ranges.push_back({range[0], range[1], &name});
      tensors_.emplace(name, std::move(t));
    }
    std::sort(ranges.begin(), ranges.end());
    for (std::size_t i = 1; i < ranges.size(); ++i)
      if (ranges[i].begin < ranges[i - 1].end) {
        auto str = [](const Range& r) {
          return "'" + *r.name + "' [" + std::to_string(r.begin) + ", " + std::to_string(r.end) + ")";
        };
        fail("tensors " + str(ranges[i - 1]) + " and " + str(ranges[i]) + " have overlapping data_offsets");
      }
  }
};

}  // namespace lemevit::io
