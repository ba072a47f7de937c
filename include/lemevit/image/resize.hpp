#pragma once
// Resampling that reproduces PIL's Image.resize bit for bit (the path
// torchvision's Resize takes for PIL images), plus torchvision's CenterCrop
// and short-side Resize(int) geometry.
//
// BILINEAR and BICUBIC are Pillow's "convolution" resampling: a separable
// filter (horizontal pass, then vertical) whose support widens with the
// downscale factor, so downscaling is antialiased. Pillow computes the
// weights in double, normalises them to sum 1, turns them into 22-bit fixed
// point and accumulates uint8 samples in int32, rounding and clipping to
// 0..255 after each pass. Every one of those steps is repeated here.
// NEAREST is Pillow's affine nearest-neighbour scaling.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "lemevit/error.hpp"
#include "lemevit/image/image.hpp"

namespace lemevit::image {

enum class Interp { Nearest, Bilinear, Bicubic };

inline const char* interp_name(Interp i) {
  switch (i) {
    case Interp::Nearest: return "nearest";
    case Interp::Bilinear: return "bilinear";
    case Interp::Bicubic: return "bicubic";
  }
  return "?";
}

namespace detail {

// Rounds to double through memory: stops the compiler from fusing a multiply
// and an add into an FMA (GCC does by default when -march has FMA), which
// rounds differently from Pillow's baseline build. Cheap insurance: in a
// sweep of all sizes up to 700 -> 300 the fused doubles differed but no
// 22-bit weight did.
inline double unfused(double v) {
  volatile double t = v;
  return t;
}

inline double bilinear_filter(double x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

// Keys cubic with a = -0.5, evaluated in Pillow's order of operations.
inline double bicubic_filter(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) {
    const double t = unfused((a + 2.0) * x);
    return unfused((t - (a + 3.0)) * x * x) + 1;
  }
  if (x < 2.0) {
    const double t = unfused((x - 5) * x);
    return (unfused((t + 8) * x) - 4) * a;
  }
  return 0.0;
}

inline constexpr int kPrecisionBits = 32 - 8 - 2;  // Pillow's PRECISION_BITS

// Fixed-point weights for one axis: output i reads `count[i]` inputs from
// `first[i]` on, with weights k[i * ksize ...].
struct Taps {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<std::int32_t> k;
};

inline Taps make_taps(int in_size, int out_size, Interp interp) {
  const double base_support = interp == Interp::Bicubic ? 2.0 : 1.0;
  double (*filter)(double) = interp == Interp::Bicubic ? bicubic_filter : bilinear_filter;
  const double scale = double(in_size) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = base_support * filterscale;
  Taps t;
  t.ksize = int(std::ceil(support)) * 2 + 1;
  t.first.resize(std::size_t(out_size));
  t.count.resize(std::size_t(out_size));
  t.k.assign(std::size_t(out_size) * std::size_t(t.ksize), 0);
  std::vector<double> w(std::size_t(t.ksize));
  const double ss = 1.0 / filterscale;
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    int xmin = int(center - support + 0.5);  // truncation, as in Pillow
    if (xmin < 0) xmin = 0;
    int xmax = int(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      w[std::size_t(x)] = filter((x + xmin - center + 0.5) * ss);
      ww += w[std::size_t(x)];
    }
    std::int32_t* k = &t.k[std::size_t(xx) * std::size_t(t.ksize)];
    for (int x = 0; x < xmax; ++x) {
      double v = w[std::size_t(x)];
      if (ww != 0.0) v /= ww;
      const double f = v * (1 << kPrecisionBits);
      k[x] = std::int32_t(v < 0 ? -0.5 + f : 0.5 + f);
    }
    t.first[std::size_t(xx)] = xmin;
    t.count[std::size_t(xx)] = xmax;
  }
  return t;
}

inline std::uint8_t clip8(std::int32_t acc) {
  const std::int32_t v = acc >> kPrecisionBits;  // arithmetic shift: floor
  return std::uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
}

// Pillow's nearest scaling: source coordinate accumulated in double from the
// first pixel centre, floored.
inline std::vector<int> nearest_index(int in_size, int out_size) {
  std::vector<int> idx(static_cast<std::size_t>(out_size));
  const double step = double(in_size) / out_size;
  double pos = 0.0 + step * 0.5;
  for (int i = 0; i < out_size; ++i, pos += step) {
    const int v = pos < 0.0 ? -1 : int(pos);
    idx[std::size_t(i)] = std::clamp(v, 0, in_size - 1);
  }
  return idx;
}

inline void check_sizes(const Image& img, int out_w, int out_h, const char* what) {
  if (img.width <= 0 || img.height <= 0 || img.rgb.size() != std::size_t(img.width) * std::size_t(img.height) * 3)
    throw Error(std::string(what) + ": the input image is empty or malformed");
  if (out_w <= 0 || out_h <= 0)
    throw Error(std::string(what) + ": output size " + std::to_string(out_w) + "x" + std::to_string(out_h) +
                " must be positive");
}

}  // namespace detail

// PIL's img.resize((out_w, out_h), interp) on an RGB image.
inline Image resize(const Image& in, int out_w, int out_h, Interp interp) {
  detail::check_sizes(in, out_w, out_h, "resize");
  if (out_w == in.width && out_h == in.height) return in;  // PIL returns a copy
  if (interp == Interp::Nearest) {
    const std::vector<int> xi = detail::nearest_index(in.width, out_w);
    const std::vector<int> yi = detail::nearest_index(in.height, out_h);
    Image out(out_w, out_h);
    for (int y = 0; y < out_h; ++y) {
      const std::uint8_t* src = in.row(yi[std::size_t(y)]);
      std::uint8_t* dst = out.row(y);
      for (int x = 0; x < out_w; ++x)
        for (int c = 0; c < 3; ++c) dst[3 * x + c] = src[3 * xi[std::size_t(x)] + c];
    }
    return out;
  }

  using detail::clip8;
  const int half = 1 << (detail::kPrecisionBits - 1);
  const detail::Taps vt = detail::make_taps(in.height, out_h, interp);
  // Only the input rows the vertical pass reads are resampled horizontally.
  const int y_first = vt.first.front();
  const int y_last = vt.first.back() + vt.count.back();

  Image tmp;
  const Image* src = &in;
  int row0 = 0;  // input row held in src's row 0
  if (out_w != in.width) {
    const detail::Taps ht = detail::make_taps(in.width, out_w, interp);
    tmp = Image(out_w, y_last - y_first);
    for (int y = y_first; y < y_last; ++y) {
      const std::uint8_t* s = in.row(y);
      std::uint8_t* d = tmp.row(y - y_first);
      for (int xx = 0; xx < out_w; ++xx) {
        const std::int32_t* k = &ht.k[std::size_t(xx) * std::size_t(ht.ksize)];
        const std::uint8_t* p = s + std::size_t(ht.first[std::size_t(xx)]) * 3;
        std::int32_t a0 = half, a1 = half, a2 = half;
        for (int x = 0, n = ht.count[std::size_t(xx)]; x < n; ++x) {
          a0 += p[3 * x] * k[x];
          a1 += p[3 * x + 1] * k[x];
          a2 += p[3 * x + 2] * k[x];
        }
        d[3 * xx] = clip8(a0);
        d[3 * xx + 1] = clip8(a1);
        d[3 * xx + 2] = clip8(a2);
      }
    }
    src = &tmp;
    row0 = y_first;
  }
  if (out_h == in.height) return *src;

  Image out(src->width, out_h);
  const std::size_t row_len = std::size_t(src->width) * 3;
  std::vector<std::int32_t> acc(row_len);
  for (int yy = 0; yy < out_h; ++yy) {
    std::fill(acc.begin(), acc.end(), half);
    const std::int32_t* k = &vt.k[std::size_t(yy) * std::size_t(vt.ksize)];
    const int first = vt.first[std::size_t(yy)] - row0;
    for (int y = 0, n = vt.count[std::size_t(yy)]; y < n; ++y) {
      const std::uint8_t* s = src->row(first + y);
      const std::int32_t ky = k[y];
      for (std::size_t i = 0; i < row_len; ++i) acc[i] += s[i] * ky;
    }
    std::uint8_t* d = out.row(yy);
    for (std::size_t i = 0; i < row_len; ++i) d[i] = clip8(acc[i]);
  }
  return out;
}

// Python's round() of (d / 2.0) for d >= 0: halves go to the even neighbour.
inline int round_half_even_half(int d) {
  const int q = d / 2;
  return (d % 2 == 0 || q % 2 == 0) ? q : q + 1;
}

// torchvision CenterCrop((crop_h, crop_w)): an image smaller than the crop is
// first zero-padded (left/top get the floor half), then the crop starts at
// round((size - crop) / 2) with Python's round-half-to-even.
inline Image center_crop(const Image& in, int crop_w, int crop_h) {
  detail::check_sizes(in, crop_w, crop_h, "center_crop");
  const int pad_l = crop_w > in.width ? (crop_w - in.width) / 2 : 0;
  const int pad_t = crop_h > in.height ? (crop_h - in.height) / 2 : 0;
  const int pad_r = crop_w > in.width ? (crop_w - in.width + 1) / 2 : 0;
  const int pad_b = crop_h > in.height ? (crop_h - in.height + 1) / 2 : 0;
  const int pw = in.width + pad_l + pad_r, ph = in.height + pad_t + pad_b;
  const int top = round_half_even_half(ph - crop_h), left = round_half_even_half(pw - crop_w);
  Image out(crop_w, crop_h);  // zero-filled: the padding
  for (int y = 0; y < crop_h; ++y) {
    const int sy = y + top - pad_t;
    if (sy < 0 || sy >= in.height) continue;
    const int x0 = std::max(0, pad_l - left), x1 = std::min(crop_w, in.width + pad_l - left);
    if (x1 <= x0) continue;
    std::copy_n(in.row(sy) + std::size_t(x0 + left - pad_l) * 3, std::size_t(x1 - x0) * 3, out.row(y) + std::size_t(x0) * 3);
  }
  return out;
}

// torchvision Resize(S) size rule (0.14): the short side becomes S, the long
// side int(S * long / short) (true division, truncated).
inline std::pair<int, int> short_side_size(int w, int h, int short_side) {
  if (w <= 0 || h <= 0 || short_side <= 0)
    throw Error("resize_short_side: sizes must be positive (image " + std::to_string(w) + "x" +
                std::to_string(h) + ", short side " + std::to_string(short_side) + ")");
  const int s = std::min(w, h), l = std::max(w, h);
  const int new_long = int(double(std::int64_t(short_side) * l) / double(s));
  return w <= h ? std::pair{short_side, new_long} : std::pair{new_long, short_side};
}

inline Image resize_short_side(const Image& in, int short_side, Interp interp) {
  const auto [w, h] = short_side_size(in.width, in.height, short_side);
  return resize(in, w, h, interp);
}

}  // namespace lemevit::image
