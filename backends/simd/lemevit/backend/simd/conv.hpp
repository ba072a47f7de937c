#pragma once
// fp32 3x3 stride-2 padding-1 convolution over NHWC maps of few channels
// (kInPlaceChannels: the stem's two), its weights packed as a Linear over
// patch rows ordered (ky, kx, channel) (layers::ConvBn3x3s2, gemm.hpp).
//
// The maps are copied once with their zero border; the micro-kernel then
// reads each patch in place, as three runs of 3 * channels floats (one per
// kernel row), neighbouring output pixels 2 * channels apart. No im2col
// matrix is written: for the RGB stem (27-value patch rows, assembled from
// copies of 12-36 bytes) writing it took longer than the product.
// The same fused multiply-adds in the same order as im2col then gemm, over
// the same values (the border's zeros included): bitwise the same result.
#include <cstddef>
#include <cstring>

#include "lemevit/arch.hpp"
#include "lemevit/backend.hpp"
#include "lemevit/backend/simd/gemm.hpp"
#include "lemevit/backend/simd/parallel.hpp"

LEMEVIT_SIMD_DIAGNOSTICS_BEGIN

namespace lemevit::backend::simd {

// The most channels for which reading the patches in place beats writing
// the im2col matrix (Kernels::conv3x3_s2 chooses): one image, 1 thread, the
// stem's 224 x 224 x 3 -> 32 216-304 -> 159-164 us, 112 x 112 x 32 -> 64
// equal; with more channels the patch rows are long enough for im2col's
// copies to pay, and its contiguous rows stream better: 14 x 14 x 192 -> 320
// 6-8% slower in place, Base's downsampling convolutions (96 to 384
// channels) 10% slower in the model.
inline constexpr int kInPlaceChannels = 63;

// A map with the zero border its stride-2 windows read: one row and column
// before it, and one after where the side is odd.
struct PaddedMap {
  int h, w, c;
  int oh = conv_s2(h), ow = conv_s2(w);
  int ph = 2 * oh + 1, pw = 2 * ow + 1;
  constexpr std::size_t floats() const { return std::size_t(ph) * pw * c; }
};

// `batch` maps x -> their padded copies at p (batch * floats()).
inline void pad_maps(const float* x, int batch, const PaddedMap& m, float* p) {
  const std::size_t row = std::size_t(m.pw) * m.c, in_row = std::size_t(m.w) * m.c;
  for (int b = 0; b < batch; ++b) {
    const float* xb = x + std::size_t(b) * m.h * in_row;
    float* pb = p + std::size_t(b) * m.floats();
    std::memset(pb, 0, row * sizeof(float));
    for (int i = 0; i < m.ph - 1; ++i) {
      float* dst = pb + (i + 1) * row;
      if (i >= m.h) {
        std::memset(dst, 0, row * sizeof(float));
        continue;
      }
      std::memset(dst, 0, std::size_t(m.c) * sizeof(float));
      std::memcpy(dst + m.c, xb + i * in_row, in_row * sizeof(float));
      std::memset(dst + m.c + in_row, 0, (row - m.c - in_row) * sizeof(float));
    }
  }
}

// The patch rows of padded maps, read in place by gemm_rows: output pixel
// (oi, oj)'s patch is three runs of 3 c floats (kx, channel), one per kernel
// row, a padded row apart.
struct PaddedPatches {
  static constexpr bool in_runs = true;
  const float* padded;
  PaddedMap m;
  std::ptrdiff_t run_stride = std::ptrdiff_t(m.pw) * m.c;
  int run = 3 * m.c;
  // Rows r0 .. r0 + M - 1 (one division per tile: at the stem's K = 27 one
  // per row cost as much as the tile's products).
  template <int M>
  void rows(int r0, const float* (&p)[M]) const {
    const int per_image = m.oh * m.ow;
    int b = r0 / per_image, oi = r0 % per_image / m.ow, oj = r0 % m.ow;
    for (int r = 0; r < M; ++r) {
      p[r] = padded + b * m.floats() + 2 * (oi * run_stride + std::ptrdiff_t(oj) * m.c);
      if (++oj == m.ow) {
        oj = 0;
        if (++oi == m.oh) oi = 0, ++b;
      }
    }
  }
};

// y (batch maps, oh x ow x wt.out) = conv of x with the packed weights, epilogue
// E; `padded` holds batch * PaddedMap::floats().
template <class Arch, Epilogue E>
inline void conv3x3_s2(const float* x, int batch, int h, int w, int c, const PackedLinear<Arch>& wt,
                       float* y, float* padded) {
  const PaddedMap m{h, w, c};
  pad_maps(x, batch, m, padded);
  gemm_rows<Arch, E>(PaddedPatches{padded, m}, batch * m.oh * m.ow, wt, y, wt.out);
}

}  // namespace lemevit::backend::simd

LEMEVIT_SIMD_DIAGNOSTICS_END
