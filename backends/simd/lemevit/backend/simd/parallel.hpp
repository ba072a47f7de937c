#pragma once
// OpenMP glue of the SIMD backend. Kernels split work over rows, columns,
// heads and query panels only, never over a reduction, so a result does not
// depend on the thread count; without -fopenmp everything runs on the
// calling thread and the pragmas vanish.
#if defined(_OPENMP)
#include <omp.h>
#endif

// `#pragma omp ...` that also compiles silently without -fopenmp.
#if defined(_OPENMP)
#define LEMEVIT_SIMD_OMP(directive) _Pragma(#directive)
#else
#define LEMEVIT_SIMD_OMP(directive)
#endif

namespace lemevit::backend::simd {

inline int max_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// Runs task(slot, i) for every i in [0, tasks) on up to `slots` threads, each
// i on one thread; `slot` (< slots) names the thread, so that a task knows
// which scratch memory is its own. The kernels a task calls run on its thread
// alone (a nested region gets one thread).
template <class F>
inline void run_concurrently(int tasks, int slots, F&& task) {
#if defined(_OPENMP)
#pragma omp parallel num_threads(slots)
  {
    omp_set_num_threads(1);  // this thread's nested regions only
    const int slot = omp_get_thread_num();
#pragma omp for schedule(dynamic)
    for (int i = 0; i < tasks; ++i) task(slot, i);
  }
#else
  (void)slots;
  for (int i = 0; i < tasks; ++i) task(0, i);
#endif
}

// Work below this many flops runs on the calling thread: starting a parallel
// region costs more than it saves.
inline constexpr double kParallelFlops = 1.0e6;

}  // namespace lemevit::backend::simd
