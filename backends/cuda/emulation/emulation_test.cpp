// The CUDA backend's device code (backends/cuda/kernels.cuh) run on the CPU
// through the stand-in emulation/cuda_runtime.h, against the Reference
// backend: catches indexing, tiling, split and merge mistakes without a GPU.
// CPU erff/expf stand in for CUDA's, so this checks logic, not CUDA's
// rounding; tests/cuda_kernels_test.cpp checks the real thing on a device.
// Build with this folder ahead of any CUDA include directory.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cuda_runtime.h"  // the emulation, found first
#include "kernels.cuh"
#include "lemevit/backend/reference.hpp"
#include "compare.hpp"  // tests/

namespace {

namespace k = lemevit::backend::cuda::kernels;
using Ref = lemevit::Kernels<lemevit::backend::Reference>;

using test_compare::random_vector;
using test_compare::require_close;

// Launches attention as kernels.cu does, on an H100's 132 SMs unless told.
template <int HD>
void check_attention(int queries, int keys, int heads, int head_dim, float scale, int sms = 132) {
  const int dim = heads * head_dim, ldq = dim + 1, ldk = dim + 3, ldv = dim + 2, ldo = dim + 5;
  const auto q = random_vector(std::size_t(queries) * ldq, 1), kk = random_vector(std::size_t(keys) * ldk, 2);
  const auto v = random_vector(std::size_t(keys) * ldv, 3), out0 = random_vector(std::size_t(queries) * ldo, 4);
  auto want = out0, got = out0;
  const lemevit::AttentionArgs a{q.data(), kk.data(), v.data(), ldq, ldk, ldv, queries, keys,
                                 heads, head_dim, scale, want.data(), ldo};
  Ref::attention(a);

  const k::AttentionPlan plan = k::plan_attention(queries, keys, heads, sms);
  k::AttentionParams p{q.data(), kk.data(), v.data(), ldq, ldk, ldv, queries, keys, heads, head_dim, scale,
                       got.data(), ldo, plan.split_keys, plan.splits, nullptr, nullptr};
  std::vector<float> scratch;
  if (plan.splits > 1) {
    const std::size_t states = std::size_t(plan.splits) * heads * queries;
    scratch.assign(states * (2 + head_dim), NAN);
    p.part_ml = scratch.data();
    p.part_acc = p.part_ml + 2 * states;
  }
  emulate({unsigned(plan.query_blocks), unsigned(heads), unsigned(plan.splits)}, unsigned(plan.threads),
          [&] { k::attention_tile<HD>(p); });
  if (plan.splits > 1) emulate({3, 1, 1}, 64, [&] { k::attention_merge(p); });

  std::ostringstream what;
  what << "attention queries " << queries << " keys " << keys << " heads " << heads << " head_dim " << head_dim
       << " (splits " << plan.splits << " of " << plan.split_keys << " keys, " << plan.threads << " threads)";
  require_close(got, want, 1e-5, what.str());
  for (int i = 0; i < queries; ++i)
    for (int d = dim; d < ldo; ++d) REQUIRE(got[std::size_t(i) * ldo + d] == out0[std::size_t(i) * ldo + d]);
}

}  // namespace

TEST_CASE("emulated CUDA attention matches the reference", "[cuda-emulation]") {
  check_attention<32>(3136, 16, 2, 32, 0.0431f);  // D x branch: one tile of keys
  check_attention<32>(16, 3136, 2, 32, 0.125f);   // D c branch: 49 splits merged
  check_attention<32>(196, 196, 10, 32, 0.177f);
  check_attention<32>(49, 49, 16, 32, 0.177f);
  check_attention<32>(100, 1000, 3, 32, 0.2f);
  check_attention<32>(37, 53, 3, 24, 0.3f);
  check_attention<32>(1, 1, 1, 1, 1.0f);
  check_attention<32>(16, 3136, 2, 32, 8.0f);
  check_attention<64>(130, 17, 2, 64, 0.125f);
  check_attention<64>(33, 129, 2, 48, 0.1f);
  check_attention<128>(17, 65, 1, 128, 0.09f);
  check_attention<128>(20, 300, 2, 100, 0.1f, 4);
  check_attention<32>(300, 700, 1, 32, 0.2f, 1);  // a tiny GPU: no split
}

TEST_CASE("emulated CUDA elementwise kernels match the reference", "[cuda-emulation]") {
  for (int dim : {7, 33, 64, 320}) {  // layer_norm, one warp per row, in place too
    const int rows = 11;
    const auto x = random_vector(std::size_t(rows) * dim, 21, 2.0f, 4.0f);
    const auto g = random_vector(dim, 22), b = random_vector(dim, 23);
    std::vector<float> want(x.size());
    Ref::layer_norm(x.data(), rows, dim, g.data(), b.data(), 1e-6f, want.data());
    auto got = x;
    emulate({2, 1, 1}, 256, [&] { k::layer_norm(got.data(), rows, dim, g.data(), b.data(), 1e-6f, got.data()); });
    require_close(got, want, 1e-5, "layer_norm dim " + std::to_string(dim));
  }
  {
    const int h = 5, w = 4, c = 6;
    const auto x = random_vector(std::size_t(h) * w * c, 11), wt = random_vector(9 * c, 12), b = random_vector(c, 13);
    std::vector<float> want(x.size()), got(x.size());
    Ref::depthwise_conv3x3_residual(x.data(), h, w, c, wt.data(), b.data(), want.data());
    emulate({2, 1, 1}, 32, [&] { k::depthwise_conv3x3_residual(x.data(), h, w, c, wt.data(), b.data(), got.data()); });
    require_close(got, want, 1e-6, "depthwise");
  }
  {
    const int rows = 5, cols = 7, ldy = 9;
    const auto y = random_vector(std::size_t(rows) * ldy, 19), b = random_vector(cols, 20);
    auto want = y, got = y;
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) want[r * ldy + c] = Ref::gelu(y[r * ldy + c] + b[c]);
    emulate({1, 1, 1}, 16, [&] { k::bias_epilogue<k::kAddBiasGelu>(got.data(), rows, cols, ldy, b.data()); });
    require_close(got, want, 1e-6, "bias + gelu epilogue");
  }
}

TEST_CASE("emulated CUDA data movement matches the host kernels", "[cuda-emulation]") {
  const int batch = 2, c = 5, h = 7, w = 3;
  const std::size_t n = std::size_t(batch) * c * h * w;
  const auto x = random_vector(n, 9);
  std::vector<float> want(n), got(n);
  Ref::nchw_to_nhwc(x.data(), batch, c, h, w, want.data());
  emulate({3, 1, 1}, 32, [&] { k::nchw_to_nhwc(x.data(), batch, c, h * w, got.data()); });
  REQUIRE(got == want);
  Ref::nhwc_to_nchw(x.data(), batch, h, w, c, want.data());
  emulate({3, 1, 1}, 32, [&] { k::nhwc_to_nchw(x.data(), batch, h * w, c, got.data()); });
  REQUIRE(got == want);
  const std::size_t cn = std::size_t(batch) * ((h + 1) / 2) * ((w + 1) / 2) * 9 * c;
  std::vector<float> cols_want(cn), cols_got(cn, NAN);
  Ref::im2col_3x3_s2(x.data(), batch, h, w, c, cols_want.data());
  emulate({3, 1, 1}, 32, [&] { k::im2col_3x3_s2(x.data(), batch, h, w, c, cols_got.data()); });
  REQUIRE(cols_got == cols_want);

  const auto src = random_vector(7, 18);
  std::vector<float> rows_want(21), rows_got(21);
  Ref::broadcast_rows(src.data(), 7, 3, rows_want.data());
  emulate({1, 1, 1}, 8, [&] { k::broadcast_rows(src.data(), 7, 3, rows_got.data()); });
  REQUIRE(rows_got == rows_want);

  const int tokens = 49, meta = 16, dim = 20;
  const auto px = random_vector(std::size_t(batch) * tokens * dim, 14);
  const auto pc = random_vector(std::size_t(batch) * meta * dim, 15);
  const auto scale = random_vector(dim, 16), shift = random_vector(dim, 17);
  std::vector<float> pool_want(std::size_t(batch) * dim), pool_got(pool_want.size());
  Ref::pool_head(px.data(), batch, tokens, pc.data(), meta, dim, scale.data(), shift.data(), pool_want.data());
  emulate({1, 1, 1}, 32, [&] {
    k::pool_head(px.data(), batch, tokens, pc.data(), meta, dim, scale.data(), shift.data(), pool_got.data());
  });
  require_close(pool_got, pool_want, 1e-6, "pool_head");
}
