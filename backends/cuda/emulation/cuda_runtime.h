// A stand-in for <cuda_runtime.h> that lets g++ run the device code of
// ../kernels.cuh on the CPU (emulation_test.cpp), so the kernels' indexing,
// tiling and split logic are tested on machines without a GPU. Each CUDA
// thread of a block is a std::thread, __syncthreads a std::barrier; blocks run
// one after another, so function-static "__shared__" arrays serve one block
// at a time. Only what kernels.cuh uses is provided.
#pragma once
#include <algorithm>
#include <barrier>
#include <cmath>
#include <functional>
#include <thread>
#include <vector>

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;
inline std::barrier<>* g_block_barrier = nullptr;
inline float g_shuffle[1024];

inline void __syncthreads() { g_block_barrier->arrive_and_wait(); }
// Block-wide exchange; right as long as every live thread of the block calls it.
inline float __shfl_xor_sync(unsigned, float v, int lane_mask) {
  g_shuffle[threadIdx.x] = v;
  g_block_barrier->arrive_and_wait();
  const float r = g_shuffle[threadIdx.x ^ unsigned(lane_mask)];
  g_block_barrier->arrive_and_wait();
  return r;
}
using std::max;
using std::min;

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(n)

// kernel<<<grid, threads>>>(...) as emulate(grid, threads, [&] { kernel(...); }).
inline void emulate(dim3 grid, unsigned threads, const std::function<void()>& kernel) {
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        std::barrier<> barrier(threads);
        g_block_barrier = &barrier;
        std::vector<std::thread> block;
        for (unsigned t = 0; t < threads; ++t)
          block.emplace_back([&, t] {
            threadIdx = {t, 0, 0};
            blockIdx = {x, y, z};
            blockDim = {threads, 1, 1};
            gridDim = grid;
            kernel();
            barrier.arrive_and_drop();  // threads that returned early stop counting
          });
        for (auto& t : block) t.join();
      }
}
