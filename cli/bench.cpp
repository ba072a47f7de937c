// lemevit bench: median forward time of a converted model on random input.
#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>

#include <lemevit/io/json.hpp>

#include "common.hpp"
#include "models.hpp"

namespace cli {

namespace {
constexpr const char* kHelp =
    "usage: lemevit bench --weights W.safetensors [--batch B] [--threads T]\n"
    "                     [--iterations K] [--warmup W] [--json FILE|-]\n"
    "\n"
    "Times the forward pass on random input after warm-up and reports the median.\n"
    "  --batch       images per forward pass (default 1)\n"
    "  --threads     OpenMP threads (default: all cores)\n"
    "  --device      cpu (default) or cuda (when built with the CUDA backend)\n"
    "  --iterations  timed passes (default 10)\n"
    "  --warmup      untimed passes first (default 2)\n"
    "  --json        also write the result as JSON to FILE, or to stdout with '-'\n";
}  // namespace

int bench(int argc, char** argv) {
  Args args("bench", argc, argv,
            {"--weights", "--batch", "--threads", "--iterations", "--warmup", "--json", "--dca-scale", "--device"},
            {"--help"});
  if (args.has("--help")) {
    std::cout << kHelp;
    return 0;
  }
  if (!args.positional().empty()) args.fail("unexpected argument '" + args.positional()[0] + "'");
  const std::string weights = args.required("--weights");
  const int batch = args.integer("--batch", 1, 1, 4096);
  const int iterations = args.integer("--iterations", 10, 1, 1000000);
  const int warmup = args.integer("--warmup", 2, 0, 1000000);
  set_threads(args);
  auto model = open_model(args, weights);
  const std::size_t image = std::size_t(model->channels()) * model->height() * model->width();
  std::vector<float> x(image * batch), y(std::size_t(batch) * model->num_classes());
  std::mt19937 gen(0);
  std::normal_distribution<float> normal;
  for (auto& v : x) v = normal(gen);
  for (int i = 0; i < warmup; ++i) model->forward(x.data(), batch, y.data());
  std::vector<double> ms;
  for (int i = 0; i < iterations; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    model->forward(x.data(), batch, y.data());
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  const double median = ms.size() % 2 ? ms[ms.size() / 2] : 0.5 * (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]);
  const double per_image = median / batch;
  const double gflops = model->flops_per_image() * batch / (median * 1e-3) / 1e9;
  int threads = 1;
#ifdef _OPENMP
  threads = omp_get_max_threads();
#endif
  std::cout << model->info().variant << " batch " << batch << ", " << threads << " thread(s): median "
            << median << " ms per pass, " << per_image << " ms/image, " << gflops << " GFLOP/s (min "
            << ms.front() << " ms, max " << ms.back() << " ms over " << iterations << " passes)\n";
  if (args.has("--json")) {
    std::ostringstream j;
    j << "{\"model\": " << lemevit::json::quote(model->info().variant) << ", \"batch\": " << batch
      << ", \"threads\": " << threads << ", \"iterations\": " << iterations
      << ", \"median_ms\": " << median << ", \"ms_per_image\": " << per_image
      << ", \"min_ms\": " << ms.front() << ", \"max_ms\": " << ms.back()
      << ", \"gflop_per_image\": " << model->flops_per_image() / 1e9 << ", \"gflops\": " << gflops
      << "}\n";
    const std::string target = args.get("--json");
    if (target == "-") {
      std::cout << j.str();
    } else {
      std::ofstream f(target);
      if (!(f << j.str())) throw lemevit::Error(target + ": cannot write the JSON result");
    }
  }
  return 0;
}

}  // namespace cli
