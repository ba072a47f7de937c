#pragma once
// The CUDA backend: fp32 kernels on one stream of the current device, GEMMs
// through cuBLASLt (cuBLAS as the fallback). Every pointer handed to these
// kernels is device memory from `allocate` or `make_params`, except those
// named `host`. This header needs no CUDA headers: the kernels live in the
// compiled library liblemevit_cuda (backends/cuda/kernels.cu), declared in
// backend::cuda below. Any CUDA or cuBLAS failure, and the lack of a device,
// is thrown as lemevit::Error naming the failing call.
//
// Calls are asynchronous: `download` and `synchronize` wait for the stream.
// Host threads may share the backend (one internal mutex orders enqueueing);
// they then share its single stream.
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "lemevit/backend.hpp"
#include "lemevit/error.hpp"

namespace lemevit {
namespace backend {

struct Cuda {};

namespace cuda {

// Implemented in kernels.cu.
bool available() noexcept;  // a usable CUDA device is present (never throws)
std::string device_name();  // e.g. "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs)"

float* device_alloc(std::size_t floats);  // 256-byte aligned; nullptr for 0 floats
void device_free(float* p) noexcept;      // errors are ignored (may run at exit)
void copy_to_device(float* dst, const float* host_src, std::size_t n);
void copy_to_host(float* host_dst, const float* src, std::size_t n);  // waits for the copy
void copy_on_device(float* dst, const float* src, std::size_t n);
void synchronize();

// How `linear` runs its GEMM (tests force each path; Auto is cuBLASLt with a
// bias epilogue, falling back to cublasSgemm where Lt finds no algorithm).
enum class GemmPath { Auto, Sgemm };
void set_gemm_path(GemmPath path);

// w: (out x in) row-major, bias: out floats (never null).
void linear(const float* x, int rows, int ldx, const float* w, const float* bias, int out, int in,
            float* y, int ldy, Epilogue e);
void layer_norm(const float* x, int rows, int dim, const float* gamma, const float* beta, float eps,
                float* y);
void gelu(float* x, std::size_t n);
void depthwise_conv3x3_residual(const float* x, int h, int w, int channels, const float* weight,
                                const float* bias, float* y);
void attention(const AttentionArgs& a);
void nchw_to_nhwc(const float* x, int batch, int channels, int h, int w, float* y);
void nhwc_to_nchw(const float* x, int batch, int h, int w, int channels, float* y);
void im2col_3x3_s2(const float* x, int batch, int h, int w, int channels, float* cols);
void broadcast_rows(const float* src, std::size_t n, int copies, float* dst);
void pool_head(const float* x, int batch, int tokens, const float* c, int meta_tokens, int dim,
               const float* scale, const float* shift, float* out);

// Owning device array of floats. Default construction touches no device, so
// models can be declared before one is known to exist.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const float* host, std::size_t n) : p_(device_alloc(n)), n_(n) {
    try {
      copy_to_device(p_, host, n);
    } catch (...) {
      device_free(p_);
      throw;
    }
  }
  DeviceBuffer(const DeviceBuffer& o) : p_(device_alloc(o.n_)), n_(o.n_) {
    try {
      copy_on_device(p_, o.p_, n_);
    } catch (...) {
      device_free(p_);
      throw;
    }
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  ~DeviceBuffer() { device_free(p_); }

  float* data() { return p_; }
  const float* data() const { return p_; }
  std::size_t size() const { return n_; }

 private:
  float* p_ = nullptr;
  std::size_t n_ = 0;
};

}  // namespace cuda
}  // namespace backend

template <>
struct Kernels<backend::Cuda> {
  static constexpr bool host_memory = false;  // backend pointers are device memory

  // ------------------------------------------------------------ memory
  using Params = backend::cuda::DeviceBuffer;
  static Params make_params(const float* host, std::size_t n) { return Params(host, n); }
  static const float* data(const Params& p) { return p.data(); }

  static float* allocate(std::size_t floats) { return backend::cuda::device_alloc(floats); }
  static void release(float* p) { backend::cuda::device_free(p); }
  static void upload(float* dst, const float* host_src, std::size_t n) {
    backend::cuda::copy_to_device(dst, host_src, n);
  }
  static void download(float* host_dst, const float* src, std::size_t n) {
    backend::cuda::copy_to_host(host_dst, src, n);
  }
  static void synchronize() { backend::cuda::synchronize(); }

  // ------------------------------------------------------------ kernels
  // Weights stay (out, in) row-major: the GEMM reads them transposed (TN).
  // A missing bias is stored as zeros so every GEMM takes the bias epilogue.
  struct LinearWeights {
    backend::cuda::DeviceBuffer w, b;
    int out = 0, in = 0;
  };

  static void prepare_linear(const float* w, const float* b, int out, int in, LinearWeights& dst) {
    if (out < 1 || in < 1)
      throw Error("CUDA prepare_linear: bad shape " + std::to_string(out) + " x " + std::to_string(in));
    dst.w = backend::cuda::DeviceBuffer(w, std::size_t(out) * in);
    if (b) {
      dst.b = backend::cuda::DeviceBuffer(b, std::size_t(out));
    } else {
      const std::vector<float> zeros(std::size_t(out), 0.0f);
      dst.b = backend::cuda::DeviceBuffer(zeros.data(), zeros.size());
    }
    dst.out = out;
    dst.in = in;
  }

  static void linear(const float* x, int rows, int ldx, const LinearWeights& w, float* y, int ldy,
                     Epilogue e) {
    backend::cuda::linear(x, rows, ldx, w.w.data(), w.b.data(), w.out, w.in, y, ldy, e);
  }
  static void layer_norm(const float* x, int rows, int dim, const float* gamma, const float* beta,
                         float eps, float* y) {
    backend::cuda::layer_norm(x, rows, dim, gamma, beta, eps, y);
  }
  static void gelu(float* x, std::size_t n) { backend::cuda::gelu(x, n); }
  static void depthwise_conv3x3_residual(const float* x, int h, int w, int channels,
                                         const float* weight, const float* bias, float* y) {
    backend::cuda::depthwise_conv3x3_residual(x, h, w, channels, weight, bias, y);
  }
  static void attention(const AttentionArgs& a) { backend::cuda::attention(a); }

  // ------------------------------------------------------------ data movement
  static void nchw_to_nhwc(const float* x, int batch, int channels, int h, int w, float* y) {
    backend::cuda::nchw_to_nhwc(x, batch, channels, h, w, y);
  }
  static void nhwc_to_nchw(const float* x, int batch, int h, int w, int channels, float* y) {
    backend::cuda::nhwc_to_nchw(x, batch, h, w, channels, y);
  }
  static void im2col_3x3_s2(const float* x, int batch, int h, int w, int channels, float* cols) {
    backend::cuda::im2col_3x3_s2(x, batch, h, w, channels, cols);
  }
  static void broadcast_rows(const float* src, std::size_t n, int copies, float* dst) {
    backend::cuda::broadcast_rows(src, n, copies, dst);
  }
  static void pool_head(const float* x, int batch, int tokens, const float* c, int meta_tokens,
                        int dim, const float* scale, const float* shift, float* out) {
    backend::cuda::pool_head(x, batch, tokens, c, meta_tokens, dim, scale, shift, out);
  }
};

}  // namespace lemevit
