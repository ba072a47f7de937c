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

// Work below this many flops runs on the calling thread: starting a parallel
// region costs more than it saves.
inline constexpr double kParallelFlops = 1.0e6;

}  // namespace lemevit::backend::simd
