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

// Fixed-point weights for outputs [out_first, out_first + n) of one axis
// resampled from in_size to out_size: output out_first + i reads `count[i]`
// inputs from `first[i]` on, with weights k[i * ksize ...].
struct Taps {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<std::int32_t> k;
};

inline Taps make_taps(int in_size, int out_size, Interp interp, int out_first, int n) {
  const double base_support = interp == Interp::Bicubic ? 2.0 : 1.0;
  double (*filter)(double) = interp == Interp::Bicubic ? bicubic_filter : bilinear_filter;
  const double scale = double(in_size) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = base_support * filterscale;
  Taps t;
  t.ksize = int(std::ceil(support)) * 2 + 1;
  t.first.resize(std::size_t(n));
  t.count.resize(std::size_t(n));
  t.k.assign(std::size_t(n) * std::size_t(t.ksize), 0);
  std::vector<double> w(std::size_t(t.ksize));
  const double ss = 1.0 / filterscale;
  for (int i = 0; i < n; ++i) {
    const double center = (out_first + i + 0.5) * scale;
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
    std::int32_t* k = &t.k[std::size_t(i) * std::size_t(t.ksize)];
    for (int x = 0; x < xmax; ++x) {
      double v = w[std::size_t(x)];
      if (ww != 0.0) v /= ww;
      const double f = v * (1 << kPrecisionBits);
      k[x] = std::int32_t(v < 0 ? -0.5 + f : 0.5 + f);
    }
    t.first[std::size_t(i)] = xmin;
    t.count[std::size_t(i)] = xmax;
  }
  return t;
}

inline std::uint8_t clip8(std::int32_t acc) {
  const std::int32_t v = acc >> kPrecisionBits;  // arithmetic shift: floor
  return std::uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
}

// Pillow's nearest scaling: source coordinate accumulated in double from the
// first pixel centre, floored; the sources of outputs [out_first, out_first + n).
// (The sum runs from output 0 so that it rounds exactly as Pillow's does.)
inline std::vector<int> nearest_index(int in_size, int out_size, int out_first, int n) {
  std::vector<int> idx(static_cast<std::size_t>(n));
  const double step = double(in_size) / out_size;
  double pos = 0.0 + step * 0.5;
  for (int i = 0; i < out_first + n; ++i, pos += step) {
    if (i < out_first) continue;
    const int v = pos < 0.0 ? -1 : int(pos);
    idx[std::size_t(i - out_first)] = std::clamp(v, 0, in_size - 1);
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

// A rectangle of an image: x0, y0 may lie outside it (padding).
struct Box {
  int x0 = 0, y0 = 0, width = 0, height = 0;
};

namespace detail {

// Pixels [box.x0, box.x0 + box.width) x [box.y0, ...) of PIL's
// img.resize((out_w, out_h), interp), the box inside the output: each output
// pixel depends only on its own coordinates, so a crop of a huge resize
// costs what the crop costs.
inline Image resize_box(const Image& in, int out_w, int out_h, Interp interp, Box box) {
  if (interp == Interp::Nearest) {
    const std::vector<int> xi = nearest_index(in.width, out_w, box.x0, box.width);
    const std::vector<int> yi = nearest_index(in.height, out_h, box.y0, box.height);
    Image out(box.width, box.height);
    for (int y = 0; y < box.height; ++y) {
      const std::uint8_t* src = in.row(yi[std::size_t(y)]);
      std::uint8_t* dst = out.row(y);
      for (int x = 0; x < box.width; ++x)
        for (int c = 0; c < 3; ++c) dst[3 * x + c] = src[3 * xi[std::size_t(x)] + c];
    }
    return out;
  }

  const int half = 1 << (kPrecisionBits - 1);
  // Pillow skips the pass of an axis whose size does not change.
  const bool horizontal = out_w != in.width, vertical = out_h != in.height;
  const Taps vt = vertical ? make_taps(in.height, out_h, interp, box.y0, box.height) : Taps{};
  // Only the input rows the vertical pass reads are resampled horizontally.
  const int y_first = vertical ? vt.first.front() : box.y0;
  const int y_last = vertical ? vt.first.back() + vt.count.back() : box.y0 + box.height;

  // Rows y_first..y_last of the horizontal pass, box columns only.
  Image tmp(box.width, y_last - y_first);
  const Taps ht = horizontal ? make_taps(in.width, out_w, interp, box.x0, box.width) : Taps{};
  for (int y = y_first; y < y_last; ++y) {
    const std::uint8_t* s = in.row(y);
    std::uint8_t* d = tmp.row(y - y_first);
    if (!horizontal) {
      std::copy_n(s + std::size_t(box.x0) * 3, std::size_t(box.width) * 3, d);
      continue;
    }
    for (int xx = 0; xx < box.width; ++xx) {
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
  if (!vertical) return tmp;

  Image out(box.width, box.height);
  const std::size_t row_len = std::size_t(box.width) * 3;
  std::vector<std::int32_t> acc(row_len);
  for (int yy = 0; yy < box.height; ++yy) {
    std::fill(acc.begin(), acc.end(), half);
    const std::int32_t* k = &vt.k[std::size_t(yy) * std::size_t(vt.ksize)];
    const int first = vt.first[std::size_t(yy)] - y_first;
    for (int y = 0, n = vt.count[std::size_t(yy)]; y < n; ++y) {
      const std::uint8_t* s = tmp.row(first + y);
      const std::int32_t ky = k[y];
      for (std::size_t i = 0; i < row_len; ++i) acc[i] += s[i] * ky;
    }
    std::uint8_t* d = out.row(yy);
    for (std::size_t i = 0; i < row_len; ++i) d[i] = clip8(acc[i]);
  }
  return out;
}

}  // namespace detail

// PIL's img.resize((out_w, out_h), interp) on an RGB image.
inline Image resize(const Image& in, int out_w, int out_h, Interp interp) {
  detail::check_sizes(in, out_w, out_h, "resize");
  if (out_w == in.width && out_h == in.height) return in;  // PIL returns a copy
  return detail::resize_box(in, out_w, out_h, interp, {0, 0, out_w, out_h});
}

// Python's round() of (d / 2.0) for d >= 0: halves go to the even neighbour.
inline int round_half_even_half(int d) {
  const int q = d / 2;
  return (d % 2 == 0 || q % 2 == 0) ? q : q + 1;
}

// torchvision CenterCrop((crop_h, crop_w)) of a w x h image: an image
// smaller than the crop is first zero-padded (left/top get the floor half),
// then the crop starts at round((size - crop) / 2) with Python's
// round-half-to-even. Returns where the crop lies in the image (x0, y0
// negative where there is padding).
inline Box center_crop_box(int w, int h, int crop_w, int crop_h) {
  const int pad_l = crop_w > w ? (crop_w - w) / 2 : 0;
  const int pad_t = crop_h > h ? (crop_h - h) / 2 : 0;
  const int pad_r = crop_w > w ? (crop_w - w + 1) / 2 : 0;
  const int pad_b = crop_h > h ? (crop_h - h + 1) / 2 : 0;
  const int top = round_half_even_half(h + pad_t + pad_b - crop_h);
  const int left = round_half_even_half(w + pad_l + pad_r - crop_w);
  return {left - pad_l, top - pad_t, crop_w, crop_h};
}

namespace detail {

// center_crop(resize(in, out_w, out_h, interp), crop_w, crop_h), resampling
// only the pixels the crop keeps.
inline Image resize_center_crop(const Image& in, int out_w, int out_h, Interp interp, int crop_w, int crop_h) {
  const Box crop = center_crop_box(out_w, out_h, crop_w, crop_h);
  // The part of the crop inside the resized image; the rest stays zero.
  const int x0 = std::max(crop.x0, 0), x1 = std::min(crop.x0 + crop_w, out_w);
  const int y0 = std::max(crop.y0, 0), y1 = std::min(crop.y0 + crop_h, out_h);
  const bool same = out_w == in.width && out_h == in.height;
  Image inside;
  if (!same) inside = resize_box(in, out_w, out_h, interp, {x0, y0, x1 - x0, y1 - y0});
  Image out(crop_w, crop_h);  // zero-filled: the padding
  for (int y = y0; y < y1; ++y) {
    const std::uint8_t* s = same ? in.row(y) + std::size_t(x0) * 3 : inside.row(y - y0);
    std::copy_n(s, std::size_t(x1 - x0) * 3, out.row(y - crop.y0) + std::size_t(x0 - crop.x0) * 3);
  }
  return out;
}

}  // namespace detail

// torchvision CenterCrop((crop_h, crop_w)) (see center_crop_box).
inline Image center_crop(const Image& in, int crop_w, int crop_h) {
  detail::check_sizes(in, crop_w, crop_h, "center_crop");
  return detail::resize_center_crop(in, in.width, in.height, Interp::Nearest, crop_w, crop_h);
}

// torchvision Resize(S) size rule (0.14): the short side becomes S, the long
// side int(S * long / short) (true division, truncated). A long side past
// 2^30 (a forged 1-pixel-wide image) is refused: no pipeline wants it.
inline std::pair<int, int> short_side_size(int w, int h, int short_side) {
  if (w <= 0 || h <= 0 || short_side <= 0)
    throw Error("resize_short_side: sizes must be positive (image " + std::to_string(w) + "x" +
                std::to_string(h) + ", short side " + std::to_string(short_side) + ")");
  const int s = std::min(w, h), l = std::max(w, h);
  const double new_long = std::trunc(double(std::int64_t(short_side) * l) / double(s));
  if (new_long > double(1 << 30))
    throw Error("resize_short_side: a " + std::to_string(w) + "x" + std::to_string(h) +
                " image would get a long side of " + std::to_string(std::int64_t(new_long)) +
                " pixels (short side " + std::to_string(short_side) + "); refused");
  return w <= h ? std::pair{short_side, int(new_long)} : std::pair{int(new_long), short_side};
}

inline Image resize_short_side(const Image& in, int short_side, Interp interp) {
  const auto [w, h] = short_side_size(in.width, in.height, short_side);
  return resize(in, w, h, interp);
}

}  // namespace lemevit::image
