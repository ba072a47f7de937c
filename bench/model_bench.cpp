// Whole models at 224x224: every variant, batch 1 and 8, 1 and 2 threads,
// LeMeViT-Tiny next to the all-standard-attention vit_tiny baseline. Random
// weights: speed does not depend on their values.
#include <vector>

#include <lemevit/lemevit.hpp>

#include "common.hpp"

namespace {

template <lemevit::ArchSpec A>
void BM_Model(benchmark::State& state) {
  using Net = lemevit::Model<A, lemevit::Input<224, 224>, lemevit::Classes<1000>>;
  const int batch = int(state.range(0));
  bench::set_threads(int(state.range(1)));
  static const Net net = Net::random(42);
  auto ws = net.make_workspace(batch);
  std::vector<float> x(std::size_t(batch) * 3 * 224 * 224, 0.1f), y(std::size_t(batch) * 1000);
  net.forward(x.data(), batch, y.data(), ws);  // warm-up
  for (auto _ : state) {
    net.forward(x.data(), batch, y.data(), ws);
    benchmark::DoNotOptimize(y.data());
  }
  bench::count_flops(state, Net::flops * batch);
  state.counters["ms/image"] = benchmark::Counter(
      double(batch) / 1000.0, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

void Args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"batch", "threads"})->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(1.0);
  for (int batch : {1, 8})
    for (int threads : {1, 2}) b->Args({batch, threads});
}

}  // namespace

BENCHMARK_TEMPLATE(BM_Model, lemevit::variants::Tiny)->Name("model/lemevit_tiny")->Apply(Args);
BENCHMARK_TEMPLATE(BM_Model, lemevit::variants::VitTiny)->Name("model/vit_tiny")->Apply(Args);
BENCHMARK_TEMPLATE(BM_Model, lemevit::variants::Small)->Name("model/lemevit_small")->Apply(Args);
BENCHMARK_TEMPLATE(BM_Model, lemevit::variants::Base)->Name("model/lemevit_base")->Apply(Args);
BENCHMARK_TEMPLATE(BM_Model, lemevit::variants::SmallV2)->Name("model/lemevit_small_v2")->Apply(Args);
BENCHMARK_TEMPLATE(BM_Model, lemevit::variants::TinyV2)->Name("model/lemevit_tiny_v2")->Apply(Args);
