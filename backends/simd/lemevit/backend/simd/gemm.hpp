#pragma once
// Register-blocked fp32 GEMM for the SIMD backend: y = x W^T + b with a fused
// epilogue, W packed once at load time.
//
// Packed layout: the output columns are cut into panels of `Tile::cols`
// columns (zero-padded at the end); a panel stores its K x cols block k-major
// (64-byte aligned), so the micro-kernel streams it. The bias is padded the
// same way.
//
// Micro-kernel (Tile::rows x Tile::cols: 6x16 on AVX2, 12x32 on AVX-512,
// 6x16 on NEON, 6x8 on SSE): the accumulators live in registers; per k it loads
// `vectors` vectors of the panel, broadcasts x[r][k] for each row and issues
// one fused multiply-add per accumulator. An output element is therefore
//     acc = fma(x[r][K-1], w, ... fma(x[r][1], w, fma(x[r][0], w, 0)))
// whatever the tile, the remainder rows, the blocking and the thread count:
// K is never split, and the row-remainder kernels are the same template
// instantiated for fewer rows. A row's result depends on nothing but that row.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include "lemevit/backend.hpp"
#include "lemevit/backend/simd/math.hpp"
#include "lemevit/backend/simd/parallel.hpp"
#include "lemevit/backend/simd/xsimd_compat.hpp"

LEMEVIT_SIMD_DIAGNOSTICS_BEGIN

namespace lemevit::backend::simd {

// Register tile of the micro-kernel for an instruction set. 16 architectural
// vector registers (SSE, AVX2) hold 6x2 accumulators plus the panel vectors
// and a broadcast; 32 (AVX-512, NEON64) hold 12x2 or 6x4.
template <class Arch>
struct GemmTile {
  static constexpr int lanes = kLanes<Arch>;
  static constexpr bool wide_file = lanes >= 16 || std::is_base_of_v<xsimd::neon64, Arch>;
  static constexpr int rows = lanes >= 16 ? 12 : 6;
  static constexpr int vectors = (wide_file && lanes < 16) ? 4 : 2;
  static constexpr int cols = vectors * lanes;
};

// std::allocator with 64-byte alignment, for packed panels.
template <class T>
struct AlignedAllocator {
  using value_type = T;
  static constexpr std::align_val_t alignment{64};
  AlignedAllocator() = default;
  template <class U>
  AlignedAllocator(const AlignedAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), alignment));
  }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, alignment); }
  template <class U>
  bool operator==(const AlignedAllocator<U>&) const noexcept { return true; }
};

using AlignedFloats = std::vector<float, AlignedAllocator<float>>;

// Calls f(std::integral_constant<int, m>) for a runtime 1 <= m <= Max.
template <int Max, int M = 1, class F>
inline void dispatch_rows(int m, F&& f) {
  if constexpr (M < Max) {
    if (m == M) {
      f(std::integral_constant<int, M>{});
      return;
    }
    dispatch_rows<Max, M + 1>(m, std::forward<F>(f));
  } else {
    f(std::integral_constant<int, Max>{});
  }
}

template <int N, class F>
inline void static_for(F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) {
    (f(std::integral_constant<int, I>{}), ...);
  }(std::make_integer_sequence<int, N>{});
}

// The micro-kernel, general form:
//   acc[r][v] = sum_{k < K} ar[r][off(k)] * b[k * ldb + v * lanes + lane]
// k ascending, one fused multiply-add per step, accumulators starting at 0;
// then epi(r, v, acc[r][v]). off(k) = k when kUnitK (rows stored whole), else
// (k / run) * a_k + k % run: a row's values come in runs of `run` contiguous
// floats, a_k apart (run 1: a column of a strided A; conv3x3_s2: a patch's
// kernel rows).
template <class Arch, int M, int NV, bool kUnitK, class Epi>
inline void micro_kernel_rows(int K, const float* const (&rows)[M], std::ptrdiff_t a_k, int run,
                              const float* b, std::ptrdiff_t ldb, Epi&& epi) {
  using B = Batch<Arch>;
  constexpr int L = kLanes<Arch>;
  B acc[M][NV];
  static_for<M>([&](auto r) {
    static_for<NV>([&](auto v) { acc[r][v] = B(0.0f); });
  });
  const float* ar[M];
  static_for<M>([&](auto r) { ar[r] = rows[r]; });
  std::ptrdiff_t ka = 0;  // off(k)
  int in_run = 0;
  for (int k = 0; k < K; ++k) {
    B w[NV];
    static_for<NV>([&](auto v) { w[v] = load<Arch>(b + k * ldb + v * L); });
    static_for<M>([&](auto r) {
      const B xr(ar[r][kUnitK ? k : ka]);
      static_for<NV>([&](auto v) { acc[r][v] = fmadd<Arch>(xr, w[v], acc[r][v]); });
    });
    if constexpr (!kUnitK) {
      ++ka;
      if (++in_run == run) {
        in_run = 0;
        ka += a_k - run;
      }
    }
  }
  static_for<M>([&](auto r) {
    static_for<NV>([&](auto v) { epi(int(r), int(v), acc[r][v]); });
  });
}

// Rows a_row apart, each with its values a_k apart (kUnitK: a_k == 1).
template <class Arch, int M, int NV, bool kUnitK, class Epi>
inline void micro_kernel_strided(int K, const float* a, std::ptrdiff_t a_row, std::ptrdiff_t a_k,
                                 const float* b, std::ptrdiff_t ldb, Epi&& epi) {
  const float* rows[M];
  static_for<M>([&](auto r) { rows[r] = a + r * a_row; });
  micro_kernel_rows<Arch, M, NV, kUnitK>(K, rows, a_k, 1, b, ldb, std::forward<Epi>(epi));
}

// Row-major A (lda) times a packed panel (NV * lanes floats per k).
template <class Arch, int M, int NV, class Epi>
inline void micro_kernel(int K, const float* a, std::ptrdiff_t lda, const float* b, Epi&& epi) {
  micro_kernel_strided<Arch, M, NV, true>(K, a, lda, 1, b, NV * kLanes<Arch>,
                                          std::forward<Epi>(epi));
}

// Where a GEMM driver reads the rows of x: rows as stored, row r at x + r ldx.
// (conv.hpp's PaddedPatches reads a convolution's patches in place;
// gemm_lowp.hpp's Patches3x3s2 gathers them.)
struct DenseRows {
  static constexpr bool gathers = false;  // row() returns x's own memory
  static constexpr bool in_runs = false;  // a row's values are contiguous
  const float* x;
  int ldx;
  const float* row(int r, float* = nullptr) const { return x + std::ptrdiff_t(r) * ldx; }
  template <int M>
  void rows(int r0, const float* (&p)[M]) const {
    for (int r = 0; r < M; ++r) p[r] = row(r0 + r);
  }
};

// W (out x in, PyTorch layout) packed into column panels; see the top of the file.
template <class Arch>
struct PackedLinear {
  using Tile = GemmTile<Arch>;
  AlignedFloats panels;  // panel_count x in x Tile::cols
  AlignedFloats bias;    // panel_count x Tile::cols
  int out = 0, in = 0;

  int panel_count() const { return (out + Tile::cols - 1) / Tile::cols; }

  void pack(const float* w, const float* b, int out_, int in_) {
    out = out_;
    in = in_;
    constexpr int NR = Tile::cols;
    const int np = panel_count();
    panels.assign(std::size_t(np) * in * NR, 0.0f);
    bias.assign(std::size_t(np) * NR, 0.0f);
    for (int p = 0; p < np; ++p) {
      float* dst = panels.data() + std::size_t(p) * in * NR;
      for (int c = 0; c < NR && p * NR + c < out; ++c) {
        const float* src = w + std::size_t(p * NR + c) * in;
        for (int k = 0; k < in; ++k) dst[std::size_t(k) * NR + c] = src[k];
      }
    }
    if (b)
      for (int o = 0; o < out; ++o) bias[o] = b[o];
  }
};

// Epilogue of `linear` for Store and Accumulate (GELU goes through
// TileEpilogue): bias, then store / accumulate into y. The panel's bias is
// held in registers (a store to y may alias it, which made every vector
// reload it). Full: all Cols columns are valid (every panel but a layer's
// last when out is not a multiple of Cols), so no column count is checked
// per vector; 1 thread, int8 3136 x 64 -> 256 (Store) 284 -> 229 us, where
// those checks and reloads cost a fifth of the kernel.
template <class Arch, Epilogue E, int Cols, bool Full>
struct LinearEpilogue {
  static_assert(E != Epilogue::Gelu, "GELU goes through TileEpilogue");
  static constexpr int L = kLanes<Arch>;
  Batch<Arch> bias[Cols / L];  // this panel's (padded to Cols) bias
  float* y;                    // y[row 0 of the tile][column 0 of the panel]
  std::ptrdiff_t ldy;
  int ncols;  // valid columns of this panel (Cols when Full)

  LinearEpilogue(const float* b, float* y_, std::ptrdiff_t ldy_, int ncols_) : y(y_), ldy(ldy_), ncols(ncols_) {
    for (int v = 0; v < Cols / L; ++v) bias[v] = Batch<Arch>::load_aligned(b + v * L);
  }
  void operator()(int r, int v, Batch<Arch> acc) const {
    float* dst = y + r * ldy + v * L;
    acc = acc + bias[v];
    if constexpr (Full) {
      if constexpr (E == Epilogue::Accumulate) acc = load<Arch>(dst) + acc;
      store<Arch>(dst, acc);
    } else {
      const int n = ncols - v * L;
      if (n <= 0) return;
      if constexpr (E == Epilogue::Accumulate) acc = load_n<Arch>(dst, n) + acc;
      store_n<Arch>(dst, n, acc);
    }
  }
};

// The sums plus the bias into an L1 tile of Cols columns; then
// store_gelu_tile. The GELU epilogue goes this way: as a loop over the tile,
// its constants stay in registers, where one out-of-line call per vector
// from the micro-kernel's epilogue reloaded them (and GCC does not inline
// 24 GELUs into a micro-kernel without spilling).
template <class Arch, int Cols>
struct TileEpilogue {
  const float* bias;  // this panel's (padded) bias
  float* tile;
  void operator()(int r, int v, Batch<Arch> acc) const {
    constexpr int L = kLanes<Arch>;
    (acc + Batch<Arch>::load_aligned(bias + v * L)).store_aligned(tile + r * Cols + v * L);
  }
};

// y[r][c] = GELU(tile[r][c]) for the tile's M rows and its first ncols
// columns, GELU's polynomial of degree GeluDegree (see gelu in math.hpp).
template <class Arch, int M, int Cols, int GeluDegree>
inline void store_gelu_tile(const float (&tile)[M][Cols], float* y, std::ptrdiff_t ldy, int ncols) {
  constexpr int L = kLanes<Arch>;
  for (int r = 0; r < M; ++r)
    for (int v = 0; v < Cols / L && v * L < ncols; ++v)
      store_n<Arch>(y + r * ldy + v * L, ncols - v * L,
                    gelu<Arch, GeluDegree>(Batch<Arch>::load_aligned(tile[r] + v * L)));
}

// kernel(epi) with the epilogue E for one panel of a tile: Store and
// Accumulate write y directly; GELU goes through the L1 tile. Both GEMM
// drivers (fp32 here, bf16/int8 in gemm_lowp.hpp) place their epilogues here;
// GeluDegree as for gelu (math.hpp).
template <class Arch, Epilogue E, int M, int Cols, int GeluDegree = kGeluDegree, class F>
inline void with_panel_epilogue(const float* bias, float* y, std::ptrdiff_t ldy, int ncols, F&& kernel) {
  if constexpr (E == Epilogue::Gelu) {
    alignas(64) float tile[M][Cols];
    kernel(TileEpilogue<Arch, Cols>{bias, tile[0]});
    store_gelu_tile<Arch, M, Cols, GeluDegree>(tile, y, ldy, ncols);
  } else if (ncols == Cols) {
    kernel(LinearEpilogue<Arch, E, Cols, true>(bias, y, ldy, ncols));
  } else {
    kernel(LinearEpilogue<Arch, E, Cols, false>(bias, y, ldy, ncols));
  }
}

// Blocking of one `linear` call: tasks are (row block, column block) pairs.
struct GemmBlocking {
  int row_tiles, tiles_per_block, row_blocks;
  int panels, panels_per_block, col_blocks;
};

// MR x NR tiles of ElemBytes-byte weights (the low-precision GEMMs use it too).
template <class Arch, int MR = GemmTile<Arch>::rows, int NR = GemmTile<Arch>::cols, int ElemBytes = 4,
          int L2Bytes = 256 * 1024>
inline GemmBlocking gemm_blocking(int rows, int K, int out) {
  GemmBlocking g{};
  g.row_tiles = (rows + MR - 1) / MR;
  g.panels = (out + NR - 1) / NR;
  // A column block of W (K x cols x panels) stays within L2Bytes (fp32: 256
  // KiB of L2) while a row block streams through it.
  const int per_panel = std::max(1, K * NR * ElemBytes);
  g.panels_per_block = std::clamp(L2Bytes / per_panel, 1, std::max(1, g.panels));
  // Row blocks of up to 16 tiles. While there are fewer than four tasks per
  // thread, halve the row blocks, then the column blocks. This only moves
  // work between threads: no result depends on it.
  const int want = 4 * max_threads();
  int tpb = std::clamp(g.row_tiles, 1, 16);
  auto tasks = [&] {
    const int col_blocks = (g.panels + g.panels_per_block - 1) / g.panels_per_block;
    return ((g.row_tiles + tpb - 1) / tpb) * col_blocks;
  };
  while (tasks() < want) {
    if (tpb > 1)
      tpb = (tpb + 1) / 2;
    else if (g.panels_per_block > 1)
      g.panels_per_block = (g.panels_per_block + 1) / 2;
    else
      break;
  }
  g.tiles_per_block = tpb;
  g.row_blocks = (g.row_tiles + tpb - 1) / tpb;
  g.col_blocks = (g.panels + g.panels_per_block - 1) / g.panels_per_block;
  return g;
}

// y = rows of src times W, epilogue E. Src: DenseRows, or a source whose
// rows come in runs (in_runs, with members run and run_stride).
template <class Arch, Epilogue E, class Src>
inline void gemm_rows(const Src& src, int rows, const PackedLinear<Arch>& w, float* y, int ldy) {
  using Tile = GemmTile<Arch>;
  constexpr int MR = Tile::rows, NV = Tile::vectors, NR = Tile::cols;
  if (rows <= 0 || w.out <= 0) return;
  const int K = w.in;
  const GemmBlocking g = gemm_blocking<Arch>(rows, K, w.out);
  [[maybe_unused]] const double flops = 2.0 * rows * double(K) * w.out;
  const int tasks = g.row_blocks * g.col_blocks;
  LEMEVIT_SIMD_OMP(omp parallel for schedule(dynamic) if (flops >= kParallelFlops && tasks > 1))
  for (int task = 0; task < tasks; ++task) {
    const int rb = task / g.col_blocks, cb = task % g.col_blocks;
    const int t_end = std::min(g.row_tiles, (rb + 1) * g.tiles_per_block);
    const int p_end = std::min(g.panels, (cb + 1) * g.panels_per_block);
    for (int t = rb * g.tiles_per_block; t < t_end; ++t) {
      const int r0 = t * MR;
      const int m = std::min(MR, rows - r0);
      dispatch_rows<MR>(m, [&](auto mc) {
        constexpr int M = decltype(mc)::value;
        const float* xt[M];
        src.rows(r0, xt);
        for (int p = cb * g.panels_per_block; p < p_end; ++p) {
          const float* bias = w.bias.data() + std::ptrdiff_t(p) * NR;
          const float* panel = w.panels.data() + std::ptrdiff_t(p) * K * NR;
          float* yt = y + std::ptrdiff_t(r0) * ldy + p * NR;
          const int ncols = std::min(NR, w.out - p * NR);
          with_panel_epilogue<Arch, E, M, NR>(bias, yt, ldy, ncols, [&](const auto& epi) {
            if constexpr (Src::in_runs)
              micro_kernel_rows<Arch, M, NV, false>(K, xt, src.run_stride, src.run, panel, NR, epi);
            else
              micro_kernel_rows<Arch, M, NV, true>(K, xt, 1, K, panel, NR, epi);
          });
        }
      });
    }
  }
}

template <class Arch, Epilogue E>
inline void gemm(const float* x, int rows, int ldx, const PackedLinear<Arch>& w, float* y, int ldy) {
  gemm_rows<Arch, E>(DenseRows{x, ldx}, rows, w, y, ldy);
}

}  // namespace lemevit::backend::simd

LEMEVIT_SIMD_DIAGNOSTICS_END
