// The CUDA backend's kernels (interface: lemevit/backend/cuda.hpp). fp32
// throughout; one stream; every reduction runs in a fixed order (warp
// butterflies, sequential loops, no atomics), so results are bitwise the same
// from run to run on a given device.
//
//   linear      cuBLASLt TN GEMM with the bias epilogue (beta = 1 for
//               Accumulate); the exact erf GELU as a separate pass, because
//               cuBLASLt's GELU epilogue is the tanh approximation.
//               cublasSgemm + own epilogue where Lt finds no algorithm.
//   layer_norm  one warp per row, two passes (mean, then centred variance).
//   attention   one thread per (query, head) with q and the output row in
//               registers; keys/values stream through shared memory in tiles
//               of 16 with a blocked online softmax. When the query side is
//               small (16 meta tokens over 3136 image tokens) the keys are
//               split across blocks and the partial softmax states merged by
//               a second kernel in split order.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "kernels.cuh"
#include "lemevit/backend/cuda.hpp"

namespace lemevit {
namespace backend {
namespace cuda {
namespace {

// ---------------------------------------------------------------- errors

[[noreturn]] void fail(const std::string& what, const char* call, const char* file, int line) {
  throw Error("CUDA backend: " + what + " in " + call + " (" + file + ":" + std::to_string(line) + ")");
}
void check_cuda(cudaError_t e, const char* call, const char* file, int line) {
  if (e != cudaSuccess) fail(std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e), call, file, line);
}
void check_cublas(cublasStatus_t s, const char* call, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS) fail(std::string("cuBLAS ") + cublasGetStatusString(s), call, file, line);
}
#define LEMEVIT_CUDA(call) check_cuda((call), #call, __FILE__, __LINE__)
#define LEMEVIT_CUBLAS(call) check_cublas((call), #call, __FILE__, __LINE__)
#define LEMEVIT_LAUNCHED(kernel) check_cuda(cudaGetLastError(), kernel, __FILE__, __LINE__)

// ---------------------------------------------------------------- context

// cuBLASLt plans, cached by shape and alignment (heuristics cost microseconds).
struct LtKey {
  int m, n, k, lda, ldb, ldc, align_a, align_b, align_c;
  bool operator<(const LtKey& o) const {
    return std::tie(m, n, k, lda, ldb, ldc, align_a, align_b, align_c) <
           std::tie(o.m, o.n, o.k, o.lda, o.ldb, o.ldc, o.align_a, o.align_b, o.align_c);
  }
};
struct LtPlan {
  bool ok = false;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

struct Context {
  int device = 0, sms = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  cublasLtHandle_t lt = nullptr;
  void* lt_workspace = nullptr;
  std::size_t lt_workspace_bytes = std::size_t(32) << 20;  // NVIDIA's recommendation for Hopper
  std::mutex mutex;             // guards plans, scratch and the Lt descriptors' bias pointer
  std::map<LtKey, LtPlan> plans;
  float* scratch = nullptr;     // attention split partials
  std::size_t scratch_floats = 0;
};

std::atomic<int> g_gemm_path{int(GemmPath::Auto)};

Context* create_context() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count < 1) {
    (void)cudaGetLastError();
    throw Error(std::string("CUDA backend: no CUDA device available (cudaGetDeviceCount: ") +
                (e != cudaSuccess ? std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e)
                                  : std::string("0 devices")) +
                ")");
  }
  auto c = std::make_unique<Context>();
  LEMEVIT_CUDA(cudaGetDevice(&c->device));
  LEMEVIT_CUDA(cudaDeviceGetAttribute(&c->sms, cudaDevAttrMultiProcessorCount, c->device));
  // A blocking stream: it also orders with work the caller puts on the legacy default stream.
  LEMEVIT_CUDA(cudaStreamCreate(&c->stream));
  LEMEVIT_CUBLAS(cublasCreate(&c->blas));
  LEMEVIT_CUBLAS(cublasSetStream(c->blas, c->stream));
  LEMEVIT_CUBLAS(cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH));  // plain fp32, no TF32
  LEMEVIT_CUBLAS(cublasLtCreate(&c->lt));
  LEMEVIT_CUDA(cudaMalloc(&c->lt_workspace, c->lt_workspace_bytes));
  return c.release();
}

// Created on first use and never destroyed: device memory may be released
// by static destructors after this translation unit's statics are gone.
Context& context() {
  static Context* c = create_context();  // a throw leaves it to be retried
  return *c;
}

float* scratch(Context& c, std::size_t floats) {
  if (floats > c.scratch_floats) {
    LEMEVIT_CUDA(cudaStreamSynchronize(c.stream));  // earlier kernels may still read it
    if (c.scratch) LEMEVIT_CUDA(cudaFree(c.scratch));
    c.scratch = nullptr;
    c.scratch_floats = 0;
    LEMEVIT_CUDA(cudaMalloc(&c.scratch, floats * sizeof(float)));
    c.scratch_floats = floats;
  }
  return c.scratch;
}

// Grid for a grid-stride loop over n elements.
constexpr int kThreads = 256;
unsigned grid_for(std::size_t n, const Context& c) {
  const std::size_t blocks = (n + kThreads - 1) / kThreads;
  return unsigned(std::max<std::size_t>(1, std::min<std::size_t>(blocks, std::size_t(c.sms) * 32)));
}

// Argument checks; the message is only built on failure.
#define LEMEVIT_REQUIRE(ok, what)                                   \
  do {                                                              \
    if (!(ok)) throw Error(std::string("CUDA backend: ") + what);   \
  } while (0)

// ---------------------------------------------------------------- GEMM

// Largest power of two (<= 256 bytes) dividing both the address and the row pitch.
int alignment(const void* p, int ld) {
  const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(p) | (std::uintptr_t(ld) * sizeof(float));
  int al = 256;
  while (al > 4 && (a % al) != 0) al /= 2;
  return al;
}

template <class T>
void set_desc(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, T value, const char* name) {
  check_cublas(cublasLtMatmulDescSetAttribute(d, attr, &value, sizeof(value)), name, __FILE__, __LINE__);
}

// Column-major view of the row-major problem: D (out x rows, ld ldy) =
// W^T' (W is in x out, ld in, transposed) * X^T (in x rows, ld ldx) + bias.
LtPlan make_plan(Context& c, const LtKey& k) {
  LtPlan p;
  LEMEVIT_CUBLAS(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  set_desc(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T, "TRANSA");
  set_desc(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N, "TRANSB");
  set_desc(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, CUBLASLT_EPILOGUE_BIAS, "EPILOGUE");
  LEMEVIT_CUBLAS(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_32F, k.k, k.m, k.lda));
  LEMEVIT_CUBLAS(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_32F, k.k, k.n, k.ldb));
  LEMEVIT_CUBLAS(cublasLtMatrixLayoutCreate(&p.c, CUDA_R_32F, k.m, k.n, k.ldc));
  cublasLtMatmulPreference_t pref = nullptr;
  LEMEVIT_CUBLAS(cublasLtMatmulPreferenceCreate(&pref));
  const std::uint64_t ws = c.lt_workspace_bytes;
  const std::uint32_t aa = k.align_a, ab = k.align_b, ac = k.align_c;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa, sizeof(aa));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab, sizeof(ab));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ac, sizeof(ac));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ac, sizeof(ac));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t s =
      cublasLtMatmulAlgoGetHeuristic(c.lt, p.desc, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  p.ok = s == CUBLAS_STATUS_SUCCESS && found > 0 && result.state == CUBLAS_STATUS_SUCCESS;
  if (p.ok) p.algo = result.algo;
  return p;
}

}  // namespace

// ---------------------------------------------------------------- memory

bool available() noexcept {
  int count = 0;
  const bool ok = cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
  (void)cudaGetLastError();
  return ok;
}

std::string device_name() {
  Context& c = context();
  cudaDeviceProp p{};
  LEMEVIT_CUDA(cudaGetDeviceProperties(&p, c.device));
  return std::string(p.name) + " (sm_" + std::to_string(p.major) + std::to_string(p.minor) + ", " +
         std::to_string(p.multiProcessorCount) + " SMs)";
}

float* device_alloc(std::size_t floats) {
  context();  // the no-device error comes first
  if (floats == 0) return nullptr;
  void* p = nullptr;
  LEMEVIT_CUDA(cudaMalloc(&p, floats * sizeof(float)));
  return static_cast<float*>(p);
}

void device_free(float* p) noexcept {
  if (!p) return;  // a non-null p implies a live context
  // Kernels still queued may read p; errors are dropped (this runs in
  // destructors, possibly while the CUDA runtime shuts down at exit).
  (void)cudaStreamSynchronize(context().stream);
  (void)cudaFree(p);
  (void)cudaGetLastError();
}

void copy_to_device(float* dst, const float* host_src, std::size_t n) {
  Context& c = context();
  if (n == 0) return;
  LEMEVIT_CUDA(cudaMemcpyAsync(dst, host_src, n * sizeof(float), cudaMemcpyHostToDevice, c.stream));
  // The caller may reuse host_src at once, pinned memory included.
  LEMEVIT_CUDA(cudaStreamSynchronize(c.stream));
}

void copy_to_host(float* host_dst, const float* src, std::size_t n) {
  Context& c = context();
  if (n == 0) return;
  LEMEVIT_CUDA(cudaMemcpyAsync(host_dst, src, n * sizeof(float), cudaMemcpyDeviceToHost, c.stream));
  LEMEVIT_CUDA(cudaStreamSynchronize(c.stream));
}

void copy_on_device(float* dst, const float* src, std::size_t n) {
  Context& c = context();
  if (n == 0) return;
  LEMEVIT_CUDA(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, c.stream));
}

void synchronize() { LEMEVIT_CUDA(cudaStreamSynchronize(context().stream)); }

void set_gemm_path(GemmPath path) { g_gemm_path = int(path); }

// ---------------------------------------------------------------- linear

void linear(const float* x, int rows, int ldx, const float* w, const float* bias, int out, int in,
            float* y, int ldy, Epilogue e) {
  Context& c = context();
  LEMEVIT_REQUIRE(rows >= 0 && in >= 1 && out >= 1 && ldx >= in && ldy >= out,
                  "linear: bad shape rows " + std::to_string(rows) + " in " + std::to_string(in) +
                      " out " + std::to_string(out) + " ldx " + std::to_string(ldx) + " ldy " +
                      std::to_string(ldy));
  if (rows == 0) return;
  std::lock_guard<std::mutex> lock(c.mutex);
  const float alpha = 1.0f, beta = e == Epilogue::Accumulate ? 1.0f : 0.0f;
  bool bias_done = false;
  if (GemmPath(g_gemm_path.load()) == GemmPath::Auto) {
    const LtKey key{out, rows, in, in, ldx, ldy, alignment(w, in), alignment(x, ldx), alignment(y, ldy)};
    auto it = c.plans.find(key);
    if (it == c.plans.end()) it = c.plans.emplace(key, make_plan(c, key)).first;
    LtPlan& p = it->second;
    if (p.ok) {
      set_desc(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias, "BIAS_POINTER");
      const cublasStatus_t s = cublasLtMatmul(c.lt, p.desc, &alpha, w, p.a, x, p.b, &beta, y, p.c, y,
                                              p.c, &p.algo, c.lt_workspace, c.lt_workspace_bytes, c.stream);
      if (s == CUBLAS_STATUS_SUCCESS)
        bias_done = true;
      else if (s == CUBLAS_STATUS_NOT_SUPPORTED)
        p.ok = false;  // use cublasSgemm for this shape from now on
      else
        check_cublas(s, "cublasLtMatmul", __FILE__, __LINE__);
    }
  }
  if (!bias_done)
    LEMEVIT_CUBLAS(cublasSgemm(c.blas, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &alpha, w, in, x, ldx,
                               &beta, y, ldy));
  if (bias_done && e != Epilogue::Gelu) return;
  const std::size_t n = std::size_t(rows) * out;
  if (!bias_done && e != Epilogue::Gelu)
    kernels::bias_epilogue<kernels::kAddBias><<<grid_for(n, c), kThreads, 0, c.stream>>>(y, rows, out, ldy, bias);
  else if (!bias_done)
    kernels::bias_epilogue<kernels::kAddBiasGelu><<<grid_for(n, c), kThreads, 0, c.stream>>>(y, rows, out, ldy, bias);
  else
    kernels::bias_epilogue<kernels::kGelu><<<grid_for(n, c), kThreads, 0, c.stream>>>(y, rows, out, ldy, bias);
  LEMEVIT_LAUNCHED("bias_epilogue");
}

// ---------------------------------------------------------------- elementwise

void layer_norm(const float* x, int rows, int dim, const float* gamma, const float* beta, float eps,
                float* y) {
  Context& c = context();
  LEMEVIT_REQUIRE(rows >= 0 && dim >= 1, "layer_norm: bad shape");
  if (rows == 0) return;
  constexpr int warps = kThreads / 32;
  kernels::layer_norm<<<unsigned((rows + warps - 1) / warps), kThreads, 0, c.stream>>>(x, rows, dim, gamma,
                                                                                       beta, eps, y);
  LEMEVIT_LAUNCHED("layer_norm");
}

void gelu(float* x, std::size_t n) {
  Context& c = context();
  if (n == 0) return;
  kernels::gelu<<<grid_for(n, c), kThreads, 0, c.stream>>>(x, n);
  LEMEVIT_LAUNCHED("gelu");
}

void depthwise_conv3x3_residual(const float* x, int h, int w, int channels, const float* weight,
                                const float* bias, float* y) {
  Context& c = context();
  LEMEVIT_REQUIRE(h >= 1 && w >= 1 && channels >= 1, "depthwise_conv3x3_residual: bad shape");
  const std::size_t n = std::size_t(h) * w * channels;
  kernels::depthwise_conv3x3_residual<<<grid_for(n, c), kThreads, 0, c.stream>>>(x, h, w, channels,
                                                                                 weight, bias, y);
  LEMEVIT_LAUNCHED("depthwise_conv3x3_residual");
}

// ---------------------------------------------------------------- attention

namespace {
template <int HD>
void launch_attention(Context& c, const kernels::AttentionParams& p, dim3 grid, int threads) {
  kernels::attention_tile<HD><<<grid, threads, 0, c.stream>>>(p);
  LEMEVIT_LAUNCHED("attention_tile");
}
}  // namespace

void attention(const AttentionArgs& a) {
  Context& c = context();
  LEMEVIT_REQUIRE(a.queries >= 0 && a.keys >= 1 && a.heads >= 1 && a.head_dim >= 1,
                  "attention: bad shape (queries " + std::to_string(a.queries) + ", keys " +
                      std::to_string(a.keys) + ", heads " + std::to_string(a.heads) + ", head_dim " +
                      std::to_string(a.head_dim) + ")");
  LEMEVIT_REQUIRE(a.head_dim <= kernels::kMaxHeadDim,
                  "attention: head_dim " + std::to_string(a.head_dim) + " exceeds the supported " +
                      std::to_string(kernels::kMaxHeadDim));
  if (a.queries == 0) return;

  const kernels::AttentionPlan plan = kernels::plan_attention(a.queries, a.keys, a.heads, c.sms);
  kernels::AttentionParams p{};
  p.q = a.q;
  p.k = a.k;
  p.v = a.v;
  p.ldq = a.ldq;
  p.ldk = a.ldk;
  p.ldv = a.ldv;
  p.queries = a.queries;
  p.keys = a.keys;
  p.heads = a.heads;
  p.head_dim = a.head_dim;
  p.scale = a.scale;
  p.out = a.out;
  p.ldo = a.ldo;
  p.split_keys = plan.split_keys;
  p.splits = plan.splits;

  std::lock_guard<std::mutex> lock(c.mutex);  // the partials live in shared scratch
  if (plan.splits > 1) {
    const std::size_t states = std::size_t(plan.splits) * a.heads * a.queries;
    p.part_ml = scratch(c, states * (2 + a.head_dim));
    p.part_acc = p.part_ml + 2 * states;
  }
  const dim3 grid(unsigned(plan.query_blocks), unsigned(a.heads), unsigned(plan.splits));
  const int threads = plan.threads;
  if (a.head_dim <= 32)
    launch_attention<32>(c, p, grid, threads);
  else if (a.head_dim <= 64)
    launch_attention<64>(c, p, grid, threads);
  else
    launch_attention<kernels::kMaxHeadDim>(c, p, grid, threads);
  if (plan.splits > 1) {
    const std::size_t n = std::size_t(a.queries) * a.heads * a.head_dim;
    kernels::attention_merge<<<grid_for(n, c), kThreads, 0, c.stream>>>(p);
    LEMEVIT_LAUNCHED("attention_merge");
  }
}

// ---------------------------------------------------------------- data movement

void nchw_to_nhwc(const float* x, int batch, int channels, int h, int w, float* y) {
  Context& c = context();
  const std::size_t n = std::size_t(batch) * channels * h * w;
  if (n == 0) return;
  kernels::nchw_to_nhwc<<<grid_for(n, c), kThreads, 0, c.stream>>>(x, batch, channels, h * w, y);
  LEMEVIT_LAUNCHED("nchw_to_nhwc");
}

void nhwc_to_nchw(const float* x, int batch, int h, int w, int channels, float* y) {
  Context& c = context();
  const std::size_t n = std::size_t(batch) * channels * h * w;
  if (n == 0) return;
  kernels::nhwc_to_nchw<<<grid_for(n, c), kThreads, 0, c.stream>>>(x, batch, h * w, channels, y);
  LEMEVIT_LAUNCHED("nhwc_to_nchw");
}

void im2col_3x3_s2(const float* x, int batch, int h, int w, int channels, float* cols) {
  Context& c = context();
  const int oh = (h - 1) / 2 + 1, ow = (w - 1) / 2 + 1;
  const std::size_t n = std::size_t(batch) * oh * ow * 9 * channels;
  if (batch < 1 || h < 1 || w < 1 || channels < 1) return;
  kernels::im2col_3x3_s2<<<grid_for(n, c), kThreads, 0, c.stream>>>(x, batch, h, w, channels, cols);
  LEMEVIT_LAUNCHED("im2col_3x3_s2");
}

void broadcast_rows(const float* src, std::size_t n, int copies, float* dst) {
  Context& c = context();
  if (n == 0 || copies < 1) return;
  kernels::broadcast_rows<<<grid_for(n * copies, c), kThreads, 0, c.stream>>>(src, n, copies, dst);
  LEMEVIT_LAUNCHED("broadcast_rows");
}

void pool_head(const float* x, int batch, int tokens, const float* cm, int meta_tokens, int dim,
               const float* scale, const float* shift, float* out) {
  Context& c = context();
  LEMEVIT_REQUIRE(tokens >= 1 && meta_tokens >= 1 && dim >= 1, "pool_head: bad shape");
  const std::size_t n = std::size_t(batch) * dim;
  if (n == 0) return;
  kernels::pool_head<<<grid_for(n, c), kThreads, 0, c.stream>>>(x, batch, tokens, cm, meta_tokens, dim,
                                                                 scale, shift, out);
  LEMEVIT_LAUNCHED("pool_head");
}

}  // namespace cuda
}  // namespace backend
}  // namespace lemevit
