#pragma once
// Helpers for the Google Benchmark suite: thread control and FLOP counters.
#include <benchmark/benchmark.h>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace bench {

inline void set_threads(int n) {
#ifdef _OPENMP
  omp_set_num_threads(n);
#else
  (void)n;
#endif
}

// Reports FLOP/s (`flops` per iteration) next to the time.
inline void count_flops(benchmark::State& state, double flops) {
  state.counters["FLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate,
                                                benchmark::Counter::kIs1000);
}

}  // namespace bench
