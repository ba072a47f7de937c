// Every CUDA kernel against the Reference oracle, on seeded random data at
// the model's real shapes and at awkward ones (odd sizes, strides, pointer
// offsets), through both GEMM paths; plus run-to-run determinism. Without a
// CUDA device only the [no-device] case runs (the backend reports the missing
// device as a lemevit::Error) and the test exits 77, a SKIP (cuda_main.cpp).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "lemevit/backend/cuda.hpp"
#include "lemevit/backend/reference.hpp"
#include "compare.hpp"

namespace {

using lemevit::AttentionArgs;
using lemevit::Epilogue;
using lemevit::Kernels;
using Cuda = Kernels<lemevit::backend::Cuda>;
using Ref = Kernels<lemevit::backend::Reference>;
namespace cu = lemevit::backend::cuda;

using test_compare::random_vector;
using test_compare::require_close;
using test_compare::same_bits;

// Device memory holding a copy of a host vector, released at scope end.
class Dev {
 public:
  explicit Dev(std::size_t n) : p_(Cuda::allocate(n)), n_(n) {}
  explicit Dev(const std::vector<float>& h) : Dev(h.size()) { Cuda::upload(p_, h.data(), n_); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  ~Dev() { Cuda::release(p_); }
  float* get() { return p_; }
  std::vector<float> host() const {
    std::vector<float> h(n_);
    Cuda::download(h.data(), p_, n_);
    return h;
  }

 private:
  float* p_;
  std::size_t n_;
};


const char* epilogue_name(Epilogue e) {
  switch (e) {
    case Epilogue::Store: return "store";
    case Epilogue::Gelu: return "gelu";
    case Epilogue::Accumulate: return "accumulate";
  }
  return "?";
}

// Restores cuBLASLt as the GEMM path at the end of a test.
struct GemmPathGuard {
  ~GemmPathGuard() { cu::set_gemm_path(cu::GemmPath::Auto); }
};

}  // namespace

// ---------------------------------------------------------------- device / errors

TEST_CASE("the CUDA backend reports a missing device as an error", "[cuda][no-device]") {
  // Declaring weights and buffers touches no device.
  REQUIRE_NOTHROW(Cuda::Params());
  REQUIRE_NOTHROW(Cuda::LinearWeights());
  if (cu::available()) {
    const std::string name = cu::device_name();
    WARN("CUDA device: " << name);
    REQUIRE(!name.empty());
    return;
  }
  REQUIRE_THROWS_AS(Cuda::allocate(16), lemevit::Error);
  REQUIRE_THROWS_WITH(Cuda::allocate(16), Catch::Contains("no CUDA device"));
  const std::vector<float> w(12, 1.0f);
  Cuda::LinearWeights lw;
  REQUIRE_THROWS_WITH(Cuda::prepare_linear(w.data(), nullptr, 3, 4, lw), Catch::Contains("no CUDA device"));
  REQUIRE_THROWS_WITH(Cuda::make_params(w.data(), w.size()), Catch::Contains("no CUDA device"));
  REQUIRE_THROWS_WITH(Cuda::synchronize(), Catch::Contains("no CUDA device"));
  Cuda::release(nullptr);  // a no-op, as for host memory
}

TEST_CASE("CUDA memory round-trips and parameters copy", "[cuda]") {
  const auto h = random_vector(1000, 1);
  Dev d(h);
  REQUIRE(same_bits(d.host(), h));
  REQUIRE(reinterpret_cast<std::uintptr_t>(d.get()) % 256 == 0);
  const Cuda::Params p = Cuda::make_params(h.data(), h.size());
  const Cuda::Params copy = p;  // deep copy
  std::vector<float> back(h.size());
  Cuda::download(back.data(), Cuda::data(copy), back.size());
  REQUIRE(same_bits(back, h));
  REQUIRE(Cuda::data(copy) != Cuda::data(p));
  REQUIRE(Cuda::allocate(0) == nullptr);
}

// ---------------------------------------------------------------- linear

namespace {

struct LinearShape {
  int rows, in, out;
};

void check_linear(const LinearShape& s, Epilogue e, bool with_bias, int ldx_pad, int ldy_pad, int x_offset,
                  std::uint32_t seed, const char* path) {
  const int ldx = s.in + ldx_pad, ldy = s.out + ldy_pad;
  const auto x = random_vector(std::size_t(s.rows) * ldx + x_offset, seed);
  const auto w = random_vector(std::size_t(s.out) * s.in, seed + 1);
  const auto b = random_vector(std::size_t(s.out), seed + 2);
  auto y0 = random_vector(std::size_t(s.rows) * ldy, seed + 3);
  if (e != Epilogue::Accumulate)  // beta = 0: the old y must not be read
    for (int r = 0; r < s.rows; ++r)
      for (int c = 0; c < s.out; ++c) y0[std::size_t(r) * ldy + c] = NAN;
  Ref::LinearWeights rw;
  Ref::prepare_linear(w.data(), with_bias ? b.data() : nullptr, s.out, s.in, rw);
  Cuda::LinearWeights cw;
  Cuda::prepare_linear(w.data(), with_bias ? b.data() : nullptr, s.out, s.in, cw);
  auto want = y0;
  Ref::linear(x.data() + x_offset, s.rows, ldx, rw, want.data(), ldy, e);
  Dev dx(x), dy(y0);
  Cuda::linear(dx.get() + x_offset, s.rows, ldx, cw, dy.get(), ldy, e);
  const auto got = dy.host();
  std::ostringstream what;
  what << path << " linear rows " << s.rows << " in " << s.in << " out " << s.out << " " << epilogue_name(e)
       << (with_bias ? " bias" : " no bias") << " ldx " << ldx << " ldy " << ldy << " x offset " << x_offset;
  require_close(got, want, 1e-5, what.str());
  for (int r = 0; r < s.rows; ++r)  // padding columns of y are untouched
    for (int c = s.out; c < ldy; ++c) REQUIRE(got[std::size_t(r) * ldy + c] == y0[std::size_t(r) * ldy + c]);
}

}  // namespace

TEST_CASE("CUDA linear matches the reference at the model's shapes", "[cuda][linear]") {
  GemmPathGuard guard;
  // (rows, in, out): MLPs, fused projections, im2col convolutions, heads.
  const LinearShape shapes[] = {
      {3136, 64, 256}, {3136, 256, 64},  {3136, 64, 192},  {784, 128, 512}, {784, 512, 128},
      {196, 192, 768}, {196, 768, 192},  {49, 320, 960},   {49, 1280, 320}, {16, 64, 256},
      {16, 256, 64},   {16, 384, 1536},  {12544, 27, 32},  {3136, 288, 64}, {196, 1152, 192},
      {49, 2880, 384}, {1, 320, 1000},   {8, 512, 4},      {2, 384, 10}};
  const std::pair<cu::GemmPath, const char*> paths[] = {{cu::GemmPath::Auto, "cublasLt"},
                                                        {cu::GemmPath::Sgemm, "cublasSgemm"}};
  std::uint32_t seed = 100;
  for (const auto& [path, name] : paths) {
    cu::set_gemm_path(path);
    for (const auto& s : shapes)
      for (Epilogue e : {Epilogue::Store, Epilogue::Gelu, Epilogue::Accumulate})
        check_linear(s, e, true, 0, 0, 0, seed += 4, name);
  }
}

TEST_CASE("CUDA linear handles strides, offsets, odd sizes and a missing bias", "[cuda][linear]") {
  GemmPathGuard guard;
  const LinearShape shapes[] = {{1, 1, 1}, {3, 5, 7}, {37, 27, 33}, {129, 65, 31}, {16, 64, 192}, {3136, 64, 128}};
  std::uint32_t seed = 5000;
  for (cu::GemmPath path : {cu::GemmPath::Auto, cu::GemmPath::Sgemm}) {
    cu::set_gemm_path(path);
    const char* name = path == cu::GemmPath::Auto ? "cublasLt" : "cublasSgemm";
    for (const auto& s : shapes)
      for (Epilogue e : {Epilogue::Store, Epilogue::Gelu, Epilogue::Accumulate}) {
        check_linear(s, e, false, 0, 0, 0, seed += 4, name);
        check_linear(s, e, true, 3, 5, 1, seed += 4, name);      // misaligned rows and start
        check_linear(s, e, true, s.in, 2 * s.out, 0, seed += 4, name);  // fused-projection strides
      }
  }
}

TEST_CASE("CUDA linear is deterministic", "[cuda][linear]") {
  const int rows = 3136, in = 64, out = 256;
  const auto x = random_vector(std::size_t(rows) * in, 7), w = random_vector(std::size_t(out) * in, 8);
  const auto b = random_vector(out, 9);
  Cuda::LinearWeights cw;
  Cuda::prepare_linear(w.data(), b.data(), out, in, cw);
  Dev dx(x), dy(std::size_t(rows) * out);
  Cuda::linear(dx.get(), rows, in, cw, dy.get(), out, Epilogue::Gelu);
  const auto first = dy.host();
  for (int run = 0; run < 3; ++run) {
    Cuda::linear(dx.get(), rows, in, cw, dy.get(), out, Epilogue::Gelu);
    REQUIRE(same_bits(dy.host(), first));
  }
}

// ---------------------------------------------------------------- elementwise

TEST_CASE("CUDA layer_norm matches the reference", "[cuda][layer_norm]") {
  std::uint32_t seed = 200;
  for (int rows : {3136, 784, 196, 49, 16, 1, 5})
    for (int dim : {64, 96, 128, 192, 256, 320, 384, 512, 1536, 1, 7, 33})
      for (float eps : {1e-6f, 1e-5f}) {
        // An offset mean checks that the variance is of centred values.
        const auto x = random_vector(std::size_t(rows) * dim, ++seed, 2.0f, 4.0f);
        const auto g = random_vector(dim, ++seed), b = random_vector(dim, ++seed);
        std::vector<float> want(x.size());
        Ref::layer_norm(x.data(), rows, dim, g.data(), b.data(), eps, want.data());
        const Cuda::Params dg = Cuda::make_params(g.data(), g.size()), db = Cuda::make_params(b.data(), b.size());
        Dev dx(x), dy(x.size());
        Cuda::layer_norm(dx.get(), rows, dim, Cuda::data(dg), Cuda::data(db), eps, dy.get());
        std::ostringstream what;
        what << "layer_norm rows " << rows << " dim " << dim << " eps " << eps;
        if (dim > 1) require_close(dy.host(), want, 1e-5, what.str());
        Cuda::layer_norm(dx.get(), rows, dim, Cuda::data(dg), Cuda::data(db), eps, dx.get());  // in place
        if (dim > 1) require_close(dx.host(), want, 1e-5, what.str() + " in place");
      }
}

TEST_CASE("CUDA gelu is the exact erf form", "[cuda][gelu]") {
  auto x = random_vector(3136 * 256 + 3, 300, -8.0f, 8.0f);
  for (float v : {0.0f, -0.0f, 1e-30f, -1e-30f, 1e-3f, -1e-3f, 3.0f, -3.0f, 10.0f, -10.0f, 40.0f, -40.0f})
    x.push_back(v);
  Dev d(x);
  Cuda::gelu(d.get(), x.size());
  const auto got = d.host();
  auto want = x;
  Ref::gelu(want.data(), want.size());
  require_close(got, want, 1e-6, "gelu vs reference");
  double max_err = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double v = x[i], exact = 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
    max_err = std::max(max_err, std::fabs(got[i] - exact) / std::max(1.0, std::fabs(v)));
  }
  INFO("gelu vs double max error " << max_err);
  REQUIRE(max_err < 1e-6);
}

TEST_CASE("CUDA depthwise_conv3x3_residual matches the reference", "[cuda][conv]") {
  struct Shape {
    int h, w, c;
  };
  std::uint32_t seed = 400;
  for (const Shape s : {Shape{56, 56, 64}, Shape{56, 56, 96}, Shape{28, 28, 128}, Shape{14, 14, 192},
                        Shape{14, 14, 320}, Shape{7, 7, 512}, Shape{3, 5, 7}, Shape{1, 1, 4}, Shape{2, 9, 1}}) {
    const auto x = random_vector(std::size_t(s.h) * s.w * s.c, ++seed);
    const auto wt = random_vector(std::size_t(9) * s.c, ++seed), b = random_vector(s.c, ++seed);
    std::vector<float> want(x.size());
    Ref::depthwise_conv3x3_residual(x.data(), s.h, s.w, s.c, wt.data(), b.data(), want.data());
    const Cuda::Params dw = Cuda::make_params(wt.data(), wt.size()), db = Cuda::make_params(b.data(), b.size());
    Dev dx(x), dy(x.size());
    Cuda::depthwise_conv3x3_residual(dx.get(), s.h, s.w, s.c, Cuda::data(dw), Cuda::data(db), dy.get());
    std::ostringstream what;
    what << "depthwise " << s.h << "x" << s.w << "x" << s.c;
    require_close(dy.host(), want, 1e-6, what.str());
  }
}

// ---------------------------------------------------------------- attention

namespace {

struct AttentionCase {
  int queries, keys, heads, head_dim;
  float scale;
  bool fused;  // q, k, v inside one (rows x 3C) buffer, as a qkv projection leaves them
};

// Returns the CUDA output; checks it against the reference.
std::vector<float> check_attention(const AttentionCase& t, std::uint32_t seed, double rel = 1e-5) {
  const int dim = t.heads * t.head_dim;
  const int rows = std::max(t.queries, t.keys);
  AttentionArgs a{};
  a.queries = t.queries;
  a.keys = t.keys;
  a.heads = t.heads;
  a.head_dim = t.head_dim;
  a.scale = t.scale;
  std::vector<float> qkv, qs, ks, vs;
  std::size_t qoff = 0, koff = 0, voff = 0;
  if (t.fused) {
    qkv = random_vector(std::size_t(rows) * 3 * dim, seed);
    a.ldq = a.ldk = a.ldv = 3 * dim;
    koff = dim;
    voff = 2 * dim;
  } else {
    qs = random_vector(std::size_t(t.queries) * (dim + 1), seed);  // odd row pitches
    ks = random_vector(std::size_t(t.keys) * (dim + 3), seed + 1);
    vs = random_vector(std::size_t(t.keys) * (dim + 2), seed + 2);
    a.ldq = dim + 1;
    a.ldk = dim + 3;
    a.ldv = dim + 2;
  }
  a.ldo = dim + 5;
  const auto out0 = random_vector(std::size_t(t.queries) * a.ldo, seed + 3);

  auto want = out0;
  AttentionArgs r = a;
  r.q = t.fused ? qkv.data() + qoff : qs.data();
  r.k = t.fused ? qkv.data() + koff : ks.data();
  r.v = t.fused ? qkv.data() + voff : vs.data();
  r.out = want.data();
  Ref::attention(r);

  Dev dq(t.fused ? qkv : qs), dk(t.fused ? std::vector<float>(1) : ks), dv(t.fused ? std::vector<float>(1) : vs);
  Dev dout(out0);
  AttentionArgs c = a;
  c.q = dq.get() + qoff;
  c.k = t.fused ? dq.get() + koff : dk.get();
  c.v = t.fused ? dq.get() + voff : dv.get();
  c.out = dout.get();
  Cuda::attention(c);
  const auto got = dout.host();
  std::ostringstream what;
  what << "attention queries " << t.queries << " keys " << t.keys << " heads " << t.heads << " head_dim "
       << t.head_dim << " scale " << t.scale << (t.fused ? " fused" : " separate");
  require_close(got, want, rel, what.str());
  for (int i = 0; i < t.queries; ++i)  // padding columns of out are untouched
    for (int d = dim; d < a.ldo; ++d) REQUIRE(got[std::size_t(i) * a.ldo + d] == out0[std::size_t(i) * a.ldo + d]);
  return got;
}

}  // namespace

TEST_CASE("CUDA attention matches the reference at the model's shapes", "[cuda][attention]") {
  const float s32 = 1.0f / std::sqrt(32.0f);
  // D/D2 x branch (N queries over 16 meta keys) and c branch (16 over N),
  // C (16 over N), S on x and on c, stage by stage of a 224 input.
  const AttentionCase cases[] = {
      {3136, 16, 2, 32, 0.0431f, true}, {16, 3136, 2, 32, 0.125f, true},   {16, 3136, 2, 32, s32, false},
      {784, 16, 4, 32, 0.05f, true},    {16, 784, 4, 32, 0.088f, true},    {3136, 16, 3, 32, s32, false},
      {196, 196, 6, 32, s32, true},     {196, 196, 10, 32, s32, true},     {49, 49, 16, 32, s32, true},
      {49, 49, 12, 32, s32, true},      {16, 16, 10, 32, s32, true},       {16, 16, 16, 32, s32, true},
      {784, 784, 6, 32, s32, true}};
  std::uint32_t seed = 600;
  for (const auto& t : cases) check_attention(t, seed += 4);
}

TEST_CASE("CUDA attention: full 3136 x 3136 self attention", "[cuda][attention][large]") {
  check_attention({3136, 3136, 3, 32, 1.0f / std::sqrt(32.0f), true}, 700);
}

TEST_CASE("CUDA attention handles awkward shapes and peaked softmax", "[cuda][attention]") {
  const AttentionCase cases[] = {
      {1, 1, 1, 32, 0.2f, false},   {1, 1, 1, 1, 1.0f, false},       {5, 3, 2, 7, 0.4f, false},
      {37, 53, 3, 24, 0.3f, false}, {5, 1000, 1, 64, 0.125f, false}, {130, 17, 2, 64, 0.125f, true},
      {33, 129, 2, 48, 0.1f, true}, {17, 65, 1, 128, 0.09f, false},  {200, 300, 2, 100, 0.1f, false}};
  std::uint32_t seed = 800;
  for (const auto& t : cases) check_attention(t, seed += 4);
  // Nearly one-hot weights (the max subtraction matters): the reference's
  // own fp32 sums over thousands of keys drift by a few 1e-6 here.
  for (const AttentionCase t : {AttentionCase{16, 3136, 2, 32, 8.0f, true}, AttentionCase{3136, 16, 2, 32, 8.0f, true},
                                AttentionCase{64, 4097, 1, 32, 3.0f, false}})
    check_attention(t, seed += 4, 3e-5);
}

TEST_CASE("CUDA attention is deterministic, split or not", "[cuda][attention]") {
  for (const AttentionCase t : {AttentionCase{16, 3136, 2, 32, 0.125f, true}, AttentionCase{3136, 16, 2, 32, 0.04f, true},
                                AttentionCase{196, 196, 10, 32, 0.177f, true}}) {
    const auto first = check_attention(t, 900);
    REQUIRE(same_bits(check_attention(t, 900), first));
  }
}

TEST_CASE("CUDA attention rejects a head_dim beyond its limit", "[cuda][attention]") {
  AttentionArgs a{};
  a.queries = a.keys = a.heads = 1;
  a.head_dim = 129;
  REQUIRE_THROWS_AS(Cuda::attention(a), lemevit::Error);
}

// ---------------------------------------------------------------- data movement

TEST_CASE("CUDA layout changes and im2col are exact", "[cuda][ops]") {
  struct Shape {
    int batch, c, h, w;
  };
  std::uint32_t seed = 1000;
  for (const Shape s : {Shape{2, 3, 224, 224}, Shape{1, 32, 112, 112}, Shape{3, 64, 56, 56}, Shape{2, 320, 7, 7},
                        Shape{2, 5, 7, 3}, Shape{1, 1, 1, 1}, Shape{1, 4, 2, 1}}) {
    const std::size_t n = std::size_t(s.batch) * s.c * s.h * s.w;
    const auto x = random_vector(n, ++seed);
    std::ostringstream what;
    what << s.batch << "x" << s.c << "x" << s.h << "x" << s.w;
    INFO(what.str());
    std::vector<float> nhwc(n), nchw(n);
    Ref::nchw_to_nhwc(x.data(), s.batch, s.c, s.h, s.w, nhwc.data());
    Ref::nhwc_to_nchw(x.data(), s.batch, s.h, s.w, s.c, nchw.data());
    Dev dx(x), dy(n);
    Cuda::nchw_to_nhwc(dx.get(), s.batch, s.c, s.h, s.w, dy.get());
    REQUIRE(same_bits(dy.host(), nhwc));
    Cuda::nhwc_to_nchw(dx.get(), s.batch, s.h, s.w, s.c, dy.get());
    REQUIRE(same_bits(dy.host(), nchw));

    const int oh = (s.h - 1) / 2 + 1, ow = (s.w - 1) / 2 + 1;
    const std::size_t cn = std::size_t(s.batch) * oh * ow * 9 * s.c;
    std::vector<float> cols(cn);
    Ref::im2col_3x3_s2(x.data(), s.batch, s.h, s.w, s.c, cols.data());
    Dev dcols(random_vector(cn, ++seed));  // garbage: padding must be written as zeros
    Cuda::im2col_3x3_s2(dx.get(), s.batch, s.h, s.w, s.c, dcols.get());
    REQUIRE(same_bits(dcols.host(), cols));
  }
}

TEST_CASE("CUDA broadcast_rows and pool_head match the host kernels", "[cuda][ops]") {
  const auto src = random_vector(16 * 64, 1100);
  for (int copies : {1, 3, 64}) {
    std::vector<float> want(src.size() * copies);
    Ref::broadcast_rows(src.data(), src.size(), copies, want.data());
    Dev ds(src), dd(want.size());
    Cuda::broadcast_rows(ds.get(), src.size(), copies, dd.get());
    REQUIRE(same_bits(dd.host(), want));
  }
  struct Shape {
    int batch, tokens, meta, dim;
  };
  std::uint32_t seed = 1200;
  for (const Shape s : {Shape{1, 49, 16, 320}, Shape{3, 49, 16, 512}, Shape{2, 196, 16, 384}, Shape{5, 1, 1, 3},
                        Shape{2, 3136, 16, 64}}) {
    const auto x = random_vector(std::size_t(s.batch) * s.tokens * s.dim, ++seed);
    const auto c = random_vector(std::size_t(s.batch) * s.meta * s.dim, ++seed);
    const auto scale = random_vector(s.dim, ++seed, 0.5f, 2.0f), shift = random_vector(s.dim, ++seed);
    std::vector<float> want(std::size_t(s.batch) * s.dim);
    Ref::pool_head(x.data(), s.batch, s.tokens, c.data(), s.meta, s.dim, scale.data(), shift.data(), want.data());
    Dev dx(x), dc(c), dsc(scale), dsh(shift), dout(want.size());
    Cuda::pool_head(dx.get(), s.batch, s.tokens, dc.get(), s.meta, s.dim, dsc.get(), dsh.get(), dout.get());
    std::ostringstream what;
    what << "pool_head batch " << s.batch << " tokens " << s.tokens << " dim " << s.dim;
    require_close(dout.host(), want, 1e-6, what.str());
  }
}
