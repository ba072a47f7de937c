#pragma once
// Decoding image files to 8-bit RGB the way the models' users get them from
// PIL: Image.open(path).convert("RGB"). Decoding goes through stb_image (JPEG,
// PNG, BMP, GIF, TGA, PSD, PNM). The channel rules follow PIL:
// gray is replicated, alpha is dropped (not composited over a background),
// 16-bit gray PNG is clipped to 0..255 (PIL's "I" -> "RGB"), other 16-bit PNG
// data keep their high byte; PNM only with maxval 255.
//
// Known differences from PIL, all in the decoders themselves:
//  - JPEG: stb's IDCT, chroma upsampling and YCbCr conversion round slightly
//    differently from libjpeg-turbo; pixels differ by at most a few levels,
//    except that for 4:2:2 files stb mis-weights the second-to-last column's
//    chroma (more than 10 levels at strong colour edges). Define
//    LEMEVIT_IMAGE_LIBJPEG and link -ljpeg to decode JPEG with libjpeg(-turbo)
//    and PIL's settings instead: bit-exact with a PIL linked to the same
//    libjpeg (4-channel CMYK/YCCK JPEGs still go through stb).
//  - GIF: transparent pixels of the first frame come out black (PIL gives
//    their palette colour).
//
// The files are untrusted: the declared size is checked against a pixel limit
// before anything image-sized is allocated, and truncated JPEG/BMP files are
// refused like PIL refuses them (stb would silently fill the rest), and so
// are PNG chunks longer than the file.
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "lemevit/error.hpp"
#include "lemevit/image/detail/stb_image.hpp"

#if defined(LEMEVIT_IMAGE_LIBJPEG)
#include <csetjmp>
#include <cstdio>  // jpeglib.h needs FILE
#include <jpeglib.h>
#endif

namespace lemevit::image {

// Interleaved 8-bit RGB, rows top to bottom.
struct Image {
  int width = 0, height = 0;
  std::vector<std::uint8_t> rgb;  // height * width * 3

  Image() = default;
  Image(int w, int h) : width(w), height(h), rgb(std::size_t(w) * std::size_t(h) * 3) {}
  std::uint8_t* row(int y) { return rgb.data() + std::size_t(y) * std::size_t(width) * 3; }
  const std::uint8_t* row(int y) const { return rgb.data() + std::size_t(y) * std::size_t(width) * 3; }
};

// 100 megapixels: larger than any photo a classifier sees, far below what a
// forged header can declare.
inline constexpr std::int64_t kDefaultMaxPixels = 100'000'000;

// Replicates a gray plane into RGB (PIL's "L" -> "RGB").
inline Image from_gray(int width, int height, const std::uint8_t* gray) {
  Image img(width, height);
  const std::size_t n = std::size_t(width) * std::size_t(height);
  for (std::size_t i = 0; i < n; ++i) img.rgb[3 * i] = img.rgb[3 * i + 1] = img.rgb[3 * i + 2] = gray[i];
  return img;
}

namespace detail {

enum class Format { Png, Jpeg, Bmp, Gif, Pnm, Other };

inline std::uint32_t be16(const std::uint8_t* p) { return std::uint32_t(p[0]) << 8 | p[1]; }
inline std::uint32_t be32(const std::uint8_t* p) { return be16(p) << 16 | be16(p + 2); }
inline std::uint32_t le16(const std::uint8_t* p) { return std::uint32_t(p[1]) << 8 | p[0]; }
inline std::uint32_t le32(const std::uint8_t* p) { return le16(p + 2) << 16 | le16(p); }

inline Format sniff_format(const std::uint8_t* b, std::size_t n) {
  static const std::uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (n >= 8 && std::memcmp(b, png_sig, 8) == 0) return Format::Png;
  // stb takes any FF (FF...) D8 start for a JPEG SOI: so must the checks below.
  if (n >= 2 && b[0] == 0xFF) {
    std::size_t i = 1;
    while (i < n && b[i] == 0xFF) ++i;
    if (i < n && b[i] == 0xD8) return Format::Jpeg;
  }
  if (n >= 2 && b[0] == 'B' && b[1] == 'M') return Format::Bmp;
  if (n >= 6 && std::memcmp(b, "GIF8", 4) == 0) return Format::Gif;
  if (n >= 2 && b[0] == 'P' && (b[1] == '5' || b[1] == '6')) return Format::Pnm;
  return Format::Other;
}

// Walks JPEG markers: calls on_segment(marker, data, len) for each segment
// with a length field; entropy-coded data after SOS is skipped. Returns true
// when EOI is reached, false when the bytes end first (a truncated file).
template <class F>
bool walk_jpeg(const std::uint8_t* b, std::size_t n, F&& on_segment) {
  std::size_t i = 2;  // after SOI
  for (;;) {
    while (i < n && b[i] != 0xFF) ++i;  // stray bytes: libjpeg skips them too
    while (i < n && b[i] == 0xFF) ++i;  // fill bytes
    if (i >= n) return false;
    const std::uint8_t m = b[i++];
    if (m == 0xD9) return true;
    if (m == 0x01 || m == 0xD8 || (m >= 0xD0 && m <= 0xD7)) continue;  // no length field
    if (i + 2 > n) return false;
    const std::size_t len = be16(b + i);
    if (len < 2) return true;  // corrupt, not truncated: stb reports it
    if (i + len > n) return false;
    if (!on_segment(m, b + i + 2, len - 2)) return true;
    i += len;
    if (m == 0xDA) {  // entropy-coded data runs to the next marker
      // Read as stb's decoder reads it: FF, any FF fill bytes, then 00 is a
      // stuffed FF data byte and D0..D7 a restart marker, both inside the data.
      for (;;) {
        if (i >= n) return false;
        if (b[i] != 0xFF) {
          ++i;
          continue;
        }
        std::size_t j = i + 1;
        while (j < n && b[j] == 0xFF) ++j;
        if (j >= n) return false;
        if (b[j] != 0x00 && !(b[j] >= 0xD0 && b[j] <= 0xD7)) break;  // a marker: read from i on
        i = j + 1;
      }
    }
  }
}

// Width and height as the header declares them, read without stb (whose
// own header checks reject very large sizes without saying which size).
inline std::optional<std::pair<std::int64_t, std::int64_t>> declared_size(Format f, const std::uint8_t* b,
                                                                         std::size_t n) {
  using Size = std::pair<std::int64_t, std::int64_t>;
  switch (f) {
    case Format::Png:
      if (n >= 24 && std::memcmp(b + 12, "IHDR", 4) == 0) return Size{be32(b + 16), be32(b + 20)};
      return std::nullopt;
    case Format::Gif:
      if (n >= 10) return Size{le16(b + 6), le16(b + 8)};
      return std::nullopt;
    case Format::Bmp: {
      if (n < 26) return std::nullopt;
      const std::uint32_t hsize = le32(b + 14);
      if (hsize == 12) return Size{le16(b + 18), le16(b + 20)};
      const auto w = std::int32_t(le32(b + 18)), h = std::int32_t(le32(b + 22));
      return Size{w < 0 ? -std::int64_t(w) : w, h < 0 ? -std::int64_t(h) : h};
    }
    case Format::Jpeg: {
      std::optional<Size> size;
      walk_jpeg(b, n, [&](std::uint8_t m, const std::uint8_t* d, std::size_t len) {
        const bool sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
        if (sof && len >= 5) {
          size = Size{be16(d + 3), be16(d + 1)};
          return false;
        }
        return true;
      });
      return size;
    }
    default:
      return std::nullopt;
  }
}

// JPEG structure checked before stb sees the bytes: the data must reach the
// EOI marker (PIL refuses truncated files; stb would fill the rest with
// gray), each Huffman table may hold at most 256 codes (stb 2.27's
// stbi__build_huffman writes past its table otherwise), and a scan must not
// use a Huffman table no DHT defined (stb 2.27 leaves its tables
// uninitialised and decodes with them, reading far outside them; libjpeg
// falls back to the standard tables instead, so this one only matters where
// stb decodes).
enum class JpegCheck { Ok, Truncated, BadHuffman };
struct JpegInfo {
  JpegCheck check = JpegCheck::Ok;
  int components = 0;            // of the (first) frame header
  bool undefined_table = false;  // a scan uses a table no earlier DHT defined
};
inline JpegInfo check_jpeg(const std::uint8_t* b, std::size_t n) {
  JpegInfo info;
  bool bad = false, progressive = false;
  bool dc[4] = {}, ac[4] = {};
  const bool complete = walk_jpeg(b, n, [&](std::uint8_t m, const std::uint8_t* d, std::size_t len) {
    if (m == 0xC4) {
      for (std::size_t i = 0; i < len;) {  // DHT: class/id byte, 16 counts, symbols
        if (i + 17 > len) return !(bad = true);
        std::size_t codes = 0;
        for (int k = 1; k <= 16; ++k) codes += d[i + std::size_t(k)];
        if (codes > 256 || i + 17 + codes > len) return !(bad = true);
        const int tc = d[i] >> 4, th = d[i] & 15;
        if (th < 4 && tc == 0) dc[th] = true;
        if (th < 4 && tc == 1) ac[th] = true;
        i += 17 + codes;
      }
    } else if ((m == 0xC0 || m == 0xC1 || m == 0xC2) && info.components == 0 && len >= 6) {
      info.components = d[5];
      progressive = m == 0xC2;
    } else if (m == 0xDA && len >= 1) {  // SOS: Ns, (Cs, Td|Ta) x Ns, Ss, Se, Ah|Al
      const std::size_t ns = d[0];
      if (len < 1 + 2 * ns + 3) return true;  // stb refuses the length
      const int ss = d[1 + 2 * ns], ah = d[3 + 2 * ns] >> 4;
      const bool uses_dc = !progressive || (ss == 0 && ah == 0), uses_ac = !progressive || ss > 0;
      for (std::size_t c = 0; c < ns; ++c) {
        const int td = d[2 + 2 * c] >> 4, ta = d[2 + 2 * c] & 15;
        if ((uses_dc && td < 4 && !dc[td]) || (uses_ac && ta < 4 && !ac[ta])) info.undefined_table = true;
      }
    }
    return true;
  });
  info.check = bad ? JpegCheck::BadHuffman : complete ? JpegCheck::Ok : JpegCheck::Truncated;
  return info;
}

// Uncompressed BMP pixel data must be all there; stb would read zeros past the end.
inline bool bmp_complete(const std::uint8_t* b, std::size_t n) {
  if (n < 30) return true;  // stb reports what is wrong
  const std::uint32_t offset = le32(b + 10), hsize = le32(b + 14);
  std::int64_t w, h, bpp, compression = 0;
  if (hsize == 12) {
    w = le16(b + 18), h = le16(b + 20), bpp = le16(b + 24);
  } else {
    if (n < 34) return true;
    w = std::int32_t(le32(b + 18)), h = std::int32_t(le32(b + 22)), bpp = le16(b + 28);
    compression = le32(b + 30);
  }
  if (compression != 0 && compression != 3 && compression != 6) return true;  // RLE: sizes vary
  if (w <= 0 || bpp <= 0 || bpp > 32) return true;
  const std::int64_t stride = (w * bpp + 31) / 32 * 4;
  return std::int64_t(n) >= std::int64_t(offset) + stride * (h < 0 ? -h : h);
}

// Every PNG chunk up to IEND must fit in the file. stb 2.27 grows its IDAT
// buffer to the length a chunk declares before reading it, so a forged
// length in a 200-byte file costs gigabytes. (A file without IEND is left
// to stb, as PIL decodes it.)
inline bool png_chunks_fit(const std::uint8_t* b, std::size_t n) {
  std::size_t at = 8;  // past the signature
  while (at + 8 <= n) {
    const std::uint64_t len = be32(b + at);
    if (len > n - at - 8 || n - at - 8 - len < 4) return false;  // data + CRC
    if (std::memcmp(b + at + 4, "IEND", 4) == 0) return true;
    at += 12 + len;
  }
  return true;
}

// P5/P6 header numbers (width, height, maxval), tokenised as stb does
// (whitespace is isspace, a comment runs to CR or LF), or nullopt when one is
// missing or longer than 9 digits: stb 2.27 accumulates them in an int
// without an overflow check, so they must be refused before stb reads them.
inline std::optional<std::array<long, 3>> pnm_header(const std::uint8_t* b, std::size_t n) {
  auto space = [](std::uint8_t c) { return c == ' ' || (c >= '\t' && c <= '\r'); };
  std::size_t i = 2;
  std::array<long, 3> v{};
  for (int k = 0; k < 3; ++k) {
    for (;;) {  // whitespace and comments
      while (i < n && space(b[i])) ++i;
      if (i < n && b[i] == '#') {
        while (i < n && b[i] != '\n' && b[i] != '\r') ++i;
      } else {
        break;
      }
    }
    if (i >= n || b[i] < '0' || b[i] > '9') return std::nullopt;
    for (int digits = 0; i < n && b[i] >= '0' && b[i] <= '9'; ++i) {
      if (++digits > 9) return std::nullopt;
      v[std::size_t(k)] = v[std::size_t(k)] * 10 + (b[i] - '0');
    }
  }
  return v;
}

#if defined(LEMEVIT_IMAGE_LIBJPEG)
struct JpegError {
  jpeg_error_mgr mgr;  // first: libjpeg hands back a pointer to it
  std::jmp_buf jump;
  char msg[JMSG_LENGTH_MAX];
};
inline void jpeg_error_exit(j_common_ptr c) {
  auto* e = reinterpret_cast<JpegError*>(c->err);
  (*c->err->format_message)(c, e->msg);
  std::longjmp(e->jump, 1);
}
inline void jpeg_ignore_warning(j_common_ptr, int) {}  // PIL decodes through warnings too

// Decodes a 1- or 3-component JPEG with libjpeg's defaults (ISLOW IDCT, fancy
// upsampling), as PIL does. Returns false for other layouts, throws on
// libjpeg errors. The C++ objects live outside the setjmp scope: longjmp
// must not skip a destructor.
inline bool decode_libjpeg(const std::uint8_t* data, std::size_t size, const std::string& name, Image& out,
                           std::vector<std::uint8_t>& row) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_error_exit;
  err.mgr.emit_message = jpeg_ignore_warning;
  err.msg[0] = 0;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    throw Error(name + ": cannot decode image: " + err.msg);
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  const int comps = cinfo.num_components;
  if (comps != 1 && comps != 3) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  cinfo.out_color_space = comps == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  out.width = int(cinfo.output_width);
  out.height = int(cinfo.output_height);
  out.rgb.resize(std::size_t(out.width) * std::size_t(out.height) * 3);
  row.resize(std::size_t(out.width) * std::size_t(cinfo.output_components));
  while (cinfo.output_scanline < cinfo.output_height) {
    std::uint8_t* dst = out.row(int(cinfo.output_scanline));
    JSAMPROW rows[1] = {comps == 3 ? dst : row.data()};
    jpeg_read_scanlines(&cinfo, rows, 1);
    if (comps == 1)
      for (int x = 0; x < out.width; ++x) dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = row[std::size_t(x)];
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}
#endif

inline std::string reason() {
  const char* r = stbi_failure_reason();
  return r ? r : "unknown error";
}

}  // namespace detail

// Decodes an image file's bytes; `name` is used in error messages. Images
// declaring more than max_pixels pixels are refused before decoding.
inline Image decode_image(const std::uint8_t* data, std::size_t size, const std::string& name,
                          std::int64_t max_pixels = kDefaultMaxPixels) {
  using detail::Format;
  if (size == 0) throw Error(name + ": empty file, not an image");
  if (size > std::size_t(std::numeric_limits<int>::max()))
    throw Error(name + ": " + std::to_string(size) + " bytes, larger than the 2 GiB the decoder can read");
  const int len = int(size);
  const Format fmt = detail::sniff_format(data, size);

  auto refuse_size = [&](std::int64_t w, std::int64_t h) {  // w, h < 2^32: the product fits 64 bits
    if (w > 0 && h > 0 && (w > max_pixels || h > max_pixels / w))
      throw Error(name + ": image declares " + std::to_string(w) + "x" + std::to_string(h) + " = " +
                  std::to_string(std::uint64_t(w) * std::uint64_t(h)) + " pixels, over the limit of " +
                  std::to_string(max_pixels) + " (refused before decoding)");
  };
  if (auto s = detail::declared_size(fmt, data, size)) refuse_size(s->first, s->second);

  if (fmt == Format::Jpeg) {
    const detail::JpegInfo jpeg = detail::check_jpeg(data, size);
    if (jpeg.check == detail::JpegCheck::BadHuffman)
      throw Error(name + ": cannot decode image: corrupt JPEG (bad Huffman table)");
    if (jpeg.check == detail::JpegCheck::Truncated)
      throw Error(name + ": truncated JPEG (the data ends before the end-of-image marker)");
#if defined(LEMEVIT_IMAGE_LIBJPEG)
    const bool stb_decodes = jpeg.components != 1 && jpeg.components != 3;  // see decode_libjpeg
#else
    const bool stb_decodes = true;
#endif
    if (stb_decodes && jpeg.undefined_table)
      throw Error(name + ": cannot decode image: corrupt JPEG (a scan uses an undefined Huffman table)");
  }

  if (fmt == Format::Png && !detail::png_chunks_fit(data, size))
    throw Error(name + ": truncated PNG (a chunk is longer than the rest of the file)");

  // PIL rescales other PNM maxvals (and stb 2.27 reads 16-bit samples in the
  // wrong byte order): refused rather than decoded differently. Checked
  // before stb reads the header (see pnm_header).
  if (fmt == Format::Pnm) {
    const auto header = detail::pnm_header(data, size);
    if (!header) throw Error(name + ": cannot decode image: malformed PNM header");
    refuse_size((*header)[0], (*header)[1]);
    if ((*header)[2] != 255)
      throw Error(name + ": PNM with maxval " + std::to_string((*header)[2]) + " is not supported (only 255)");
  }

  int w = 0, h = 0, comp = 0;
  if (!stbi_info_from_memory(data, len, &w, &h, &comp))
    throw Error(name + ": cannot decode image: " + detail::reason());
  if (w <= 0 || h <= 0)  // stb 2.27 takes a BMP of height 0 for a valid empty image
    throw Error(name + ": cannot decode image: it declares " + std::to_string(w) + "x" + std::to_string(h) +
                " pixels");
  refuse_size(w, h);

  if (fmt == Format::Bmp && !detail::bmp_complete(data, size))
    throw Error(name + ": truncated BMP (the pixel data is shorter than the header declares)");

  const bool gray16 = fmt == Format::Png && comp == 1 && stbi_is_16_bit_from_memory(data, len);

  Image img;
#if defined(LEMEVIT_IMAGE_LIBJPEG)
  if (fmt == Format::Jpeg) {
    std::vector<std::uint8_t> row;
    if (detail::decode_libjpeg(data, size, name, img, row)) return img;
  }
#endif
  if (gray16) {
    // PIL opens 16-bit gray as mode "I"; converting that to RGB clips at 255.
    stbi_us* px = stbi_load_16_from_memory(data, len, &w, &h, &comp, 1);
    if (!px) throw Error(name + ": cannot decode image: " + detail::reason());
    img = Image(w, h);
    const std::size_t n = std::size_t(w) * std::size_t(h);
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint8_t v = px[i] > 255 ? 255 : std::uint8_t(px[i]);
      img.rgb[3 * i] = img.rgb[3 * i + 1] = img.rgb[3 * i + 2] = v;
    }
    stbi_image_free(px);
    return img;
  }
  // stb's conversion to 3 channels is PIL's: gray replicated, alpha dropped;
  // 16-bit samples keep their high byte, as PIL's ";16B" raw modes do.
  stbi_uc* px = stbi_load_from_memory(data, len, &w, &h, &comp, 3);
  if (!px) throw Error(name + ": cannot decode image: " + detail::reason());
  img.width = w;
  img.height = h;
  img.rgb.assign(px, px + std::size_t(w) * std::size_t(h) * 3);
  stbi_image_free(px);
  return img;
}

inline Image load_image(const std::string& path, std::int64_t max_pixels = kDefaultMaxPixels) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) throw Error(path + ": cannot open image: no such file");
  if (fs::is_directory(st)) throw Error(path + ": cannot open image: is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open image: " + std::strerror(errno));
  std::vector<std::uint8_t> bytes;
  in.seekg(0, std::ios::end);
  const std::streamoff end = in.tellg();
  in.seekg(0, std::ios::beg);
  if (end > 0) {
    if (std::uint64_t(end) > std::uint64_t(std::numeric_limits<int>::max()))
      throw Error(path + ": " + std::to_string(end) + " bytes, larger than the 2 GiB the decoder can read");
    bytes.resize(std::size_t(end));
    in.read(reinterpret_cast<char*>(bytes.data()), end);
    if (in.gcount() != end) throw Error(path + ": read error");
  }
  return decode_image(bytes.data(), bytes.size(), path, max_pixels);
}

}  // namespace lemevit::image
