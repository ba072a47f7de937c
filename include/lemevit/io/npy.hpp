#pragma once
// .npy files (NumPy format 1.0/2.0/3.0) of little-endian float32, C order:
// the exchange format of `lemevit infer`. Anything else is refused by name.
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "lemevit/error.hpp"

namespace lemevit::io {

struct NpyArray {
  std::vector<std::int64_t> shape;
  std::vector<float> data;
};

namespace detail {
// Value of `'key': ...` in the npy header dict, up to the next top-level comma.
inline std::string npy_field(const std::string& h, const std::string& key) {
  const auto at = h.find("'" + key + "'");
  if (at == std::string::npos) return {};
  auto colon = h.find(':', at);
  if (colon == std::string::npos) return {};
  std::size_t i = colon + 1, depth = 0, start = i;
  for (; i < h.size(); ++i) {
    if (h[i] == '(') ++depth;
    else if (h[i] == ')') { if (depth == 0) break; --depth; }
    else if ((h[i] == ',' || h[i] == '}') && depth == 0) break;
  }
  if (i < h.size() && h[i] == ')') ++i;
  std::string v = h.substr(start, i - start);
  const auto b = v.find_first_not_of(" "), e = v.find_last_not_of(" ");
  return b == std::string::npos ? std::string() : v.substr(b, e - b + 1);
}
}  // namespace detail

inline NpyArray read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open");
  f.seekg(0, std::ios::end);
  const std::uint64_t file_size = std::uint64_t(f.tellg());
  f.seekg(0);
  auto bad = [&](const std::string& what) { return Error(path + ": " + what); };
  char magic[8];
  if (!f.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0)
    throw bad("not a .npy file (bad magic)");
  const int major = static_cast<unsigned char>(magic[6]);
  std::uint32_t hlen = 0;
  if (major == 1) {
    unsigned char b[2];
    if (!f.read(reinterpret_cast<char*>(b), 2)) throw bad("truncated header");
    hlen = b[0] | (b[1] << 8);
  } else if (major == 2 || major == 3) {
    unsigned char b[4];
    if (!f.read(reinterpret_cast<char*>(b), 4)) throw bad("truncated header");
    hlen = b[0] | (b[1] << 8) | (b[2] << 16) | (std::uint32_t(b[3]) << 24);
  } else {
    throw bad("unsupported .npy version " + std::to_string(major));
  }
  if (hlen > (1u << 20) || hlen > file_size) throw bad("header length past the end of the file");
  std::string header(hlen, '\0');
  if (!f.read(header.data(), hlen)) throw bad("truncated header");
  const std::string descr = detail::npy_field(header, "descr");
  if (descr != "'<f4'" && descr != "'f4'")
    throw bad("dtype " + (descr.empty() ? std::string("?") : descr) +
              " is not float32 (expected '<f4'); convert with arr.astype(np.float32)");
  if (detail::npy_field(header, "fortran_order") != "False")
    throw bad("Fortran-ordered arrays are not supported; save a C-contiguous array");
  const std::string shp = detail::npy_field(header, "shape");
  if (shp.size() < 2 || shp.front() != '(' || shp.back() != ')') throw bad("malformed shape");
  NpyArray a;
  std::uint64_t numel = 1;
  std::size_t i = 1;
  while (i + 1 < shp.size()) {
    while (i + 1 < shp.size() && (shp[i] == ' ' || shp[i] == ',')) ++i;
    if (i + 1 >= shp.size()) break;
    std::uint64_t v = 0;
    bool any = false;
    while (i + 1 < shp.size() && shp[i] >= '0' && shp[i] <= '9') {
      v = v * 10 + std::uint64_t(shp[i++] - '0');
      any = true;
      if (v > (1ull << 40)) throw bad("shape is implausibly large");
    }
    if (!any) throw bad("malformed shape " + shp);
    a.shape.push_back(std::int64_t(v));
    if (v != 0 && numel > (1ull << 34) / v) throw bad("shape is implausibly large");  // before it can wrap
    numel *= v;
  }
  const std::uint64_t data_at = 8 + (major == 1 ? 2 : 4) + hlen;
  if (file_size - data_at < numel * 4)
    throw bad("truncated: shape needs " + std::to_string(numel * 4) + " bytes of data, file has " +
              std::to_string(file_size - data_at));
  a.data.resize(numel);
  f.read(reinterpret_cast<char*>(a.data.data()), std::streamsize(numel * 4));
  if (!f) throw bad("read error");
  return a;
}

inline void write_npy(const std::string& path, const std::vector<std::int64_t>& shape,
                      const float* data) {
  std::string dims;
  std::uint64_t numel = 1;
  for (auto d : shape) {
    dims += std::to_string(d) + ", ";
    numel *= std::uint64_t(d);
  }
  if (shape.size() > 1) dims.resize(dims.size() - 1);  // "(2, 3)" but "(2,)"
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  while ((10 + header.size() + 1) % 64) header += ' ';
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open for writing");
  f.write("\x93NUMPY\x01\x00", 8);
  const unsigned char len[2] = {static_cast<unsigned char>(header.size() & 0xFF),
                                static_cast<unsigned char>(header.size() >> 8)};
  f.write(reinterpret_cast<const char*>(len), 2);
  f << header;
  f.write(reinterpret_cast<const char*>(data), std::streamsize(numel * 4));
  if (!f) throw Error(path + ": write failed");
}

}  // namespace lemevit::io
