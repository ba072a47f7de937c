// Whole backbones as the input grows (224, 384, 512, 1024 pixels square):
// features mode, every stage's map out in NCHW as a detection backbone
// hands them to its neck, one image, 1 and 2 threads. LeMeViT-Tiny's dual
// cross-attention stages grow linearly with the pixels, vit_tiny's
// self-attention quadratically: at 1024, its first stage has 256 x 256 =
// 65536 tokens and one forward pass is ~3.7 TFLOP (~10 s on 2 cores), so
// the large runs take one timed iteration (Google Benchmark stops after the
// first run that exceeds MinTime). bench/plot_scaling.py draws the README's
// plot from this suite's JSON.
#include <array>
#include <vector>

#include <lemevit/lemevit.hpp>

#include "common.hpp"

namespace {

template <lemevit::ArchSpec A, int Side>
void BM_Backbone(benchmark::State& state) {
  using Net = lemevit::Model<A, lemevit::Input<Side, Side>, lemevit::Classes<1000>>;
  bench::set_threads(int(state.range(0)));
  static const Net net = Net::random(42);
  auto ws = net.make_workspace(1);
  std::vector<float> x(std::size_t(3) * Side * Side, 0.1f);
  std::array<std::vector<float>, Net::num_stages> maps;
  std::array<float*, Net::num_stages> out{};
  for (int i = 0; i < Net::num_stages; ++i) {
    maps[i].resize(std::size_t(Net::stage_channels(i)) * Net::stage_height(i) * Net::stage_width(i));
    out[i] = maps[i].data();
  }
  for (auto _ : state) {
    net.features(x.data(), 1, out, ws);
    benchmark::DoNotOptimize(out.back()[0]);
  }
  bench::count_flops(state, lemevit::flops_per_image(A, Side, Side, 3, /*classes*/ 0));  // no classifier head
  state.counters["ms/image"] = benchmark::Counter(
      1.0 / 1000.0, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.counters["pixels"] = double(Side) * Side;
  state.counters["activation_MiB"] = double(Net::activation_bytes_per_image) / (1 << 20);
}

void Args(benchmark::internal::Benchmark* b) {
  b->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.5);
}

}  // namespace

BENCHMARK_TEMPLATE(BM_Backbone, lemevit::variants::Tiny, 224)->Name("backbone/lemevit_tiny/224")->Apply(Args);
BENCHMARK_TEMPLATE(BM_Backbone, lemevit::variants::Tiny, 384)->Name("backbone/lemevit_tiny/384")->Apply(Args);
BENCHMARK_TEMPLATE(BM_Backbone, lemevit::variants::Tiny, 512)->Name("backbone/lemevit_tiny/512")->Apply(Args);
BENCHMARK_TEMPLATE(BM_Backbone, lemevit::variants::Tiny, 1024)->Name("backbone/lemevit_tiny/1024")->Apply(Args);
BENCHMARK_TEMPLATE(BM_Backbone, lemevit::variants::VitTiny, 224)->Name("backbone/vit_tiny/224")->Apply(Args);
BENCHMARK_TEMPLATE(BM_Backbone, lemevit::variants::VitTiny, 384)->Name("backbone/vit_tiny/384")->Apply(Args);
BENCHMARK_TEMPLATE(BM_Backbone, lemevit::variants::VitTiny, 512)->Name("backbone/vit_tiny/512")->Apply(Args);
BENCHMARK_TEMPLATE(BM_Backbone, lemevit::variants::VitTiny, 1024)->Name("backbone/vit_tiny/1024")->Apply(Args);
