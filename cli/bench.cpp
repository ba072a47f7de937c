// lemevit bench: median forward time of a converted model on random input,
// and with --profile where it goes, layer kind by layer kind.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <lemevit/io/json.hpp>
#include <lemevit/profile.hpp>

#if __has_include(<xsimd/xsimd.hpp>)
#include "../bench/fma_peak.hpp"
#endif

#include "common.hpp"
#include "models.hpp"

namespace cli {

namespace {
constexpr const char* kHelp =
    "usage: lemevit bench --weights W.safetensors [--batch B] [--threads T]\n"
    "                     [--iterations K] [--warmup W] [--profile] [--precision P] [--json FILE|-]\n"
    "\n"
    "Times the forward pass on random input after warm-up and reports the median.\n"
    "  --batch       images per forward pass (default 1)\n"
    "  --threads     OpenMP threads (default: all cores)\n"
    "  --device      cpu (default) or cuda (when built with the CUDA backend)\n"
    "  --iterations  timed passes (default 10)\n"
    "  --warmup      untimed passes first (default 2)\n"
    "  --profile     then K more passes timed per layer kind (stem, downsample, meta-token\n"
    "                downsample, LayerNorm, position-encoding conv, q/k/v and output\n"
    "                projections, attention, MLP, pooling/head): time, share, GFLOP/s and\n"
    "                % of this machine's FMA peak (measured now), then the same by stage;\n"
    "                passes that run side by side are timed so, each thread its own\n"
    "                (times averaged over the threads); the plain timing above runs\n"
    "                without any profiling code\n"
    "  --json        also write the result as JSON to FILE, or to stdout with '-'\n";

// The FMA peak (bench/fma_peak.hpp's register-only loop) on `threads`
// threads, GFLOP/s: the best of a few runs of ~30 ms. 0 when unknown.
double fma_peak_gflops(int threads) {
#if __has_include(<xsimd/xsimd.hpp>)
  constexpr std::int64_t iterations = 1 << 20;
  double best = 0.0;
  for (int run = 0; run < 5; ++run) {
    float sink = 0.0f;
    const auto t0 = std::chrono::steady_clock::now();
    for (int rep = 0; rep < 16; ++rep) {
#pragma omp parallel for num_threads(threads) reduction(+ : sink)
      for (int t = 0; t < threads; ++t) sink += bench::fma_loop(iterations);
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    volatile float used = sink;  // the loops' result must be computed
    (void)used;
    best = std::max(best, 16 * threads * bench::fma_loop_flops(iterations) / s / 1e9);
  }
  return best;
#else
  (void)threads;
  return 0.0;
#endif
}

// Tables of a profile over `passes` forward passes, by part, by stage, and
// ms by part and stage (which part of which stage to work on); `peak` in
// GFLOP/s (0: unknown).
struct ProfileReport {
  std::string text, json;
};
ProfileReport report(const lemevit::Profile& p, const lemevit::AnyModel& model, int passes, double peak) {
  const double total = p.seconds();
  std::ostringstream t, j;
  j.precision(10);
  char line[160];
  const auto percent = [](double f) { return std::to_string(int(100 * f + 0.5)) + "%"; };
  // One line of text and one JSON object ("key": name, ...) per entry.
  const auto row = [&](const char* key, const std::string& name, const lemevit::Profile::Entry& e, bool first) {
    const double ms = e.seconds * 1e3 / passes, share = total > 0 ? e.seconds / total : 0.0;
    const double gflops = e.seconds > 0 ? e.flops / e.seconds / 1e9 : 0.0;
    const bool rated = e.flops > 0 && peak > 0;
    std::snprintf(line, sizeof line, "%-22s %9.3f %6.1f%% %9s %10s %6ld\n", name.c_str(), ms, 100 * share,
                  e.flops > 0 ? std::to_string(int(gflops + 0.5)).c_str() : "-",
                  rated ? percent(gflops / peak).c_str() : "-", e.calls / passes);
    t << line;
    j << (first ? "" : ", ") << "{\"" << key << "\": " << lemevit::json::quote(name) << ", \"ms\": " << ms
      << ", \"share\": " << share << ", \"gflop\": " << e.flops / 1e9 / passes << ", \"gflops\": " << gflops
      << ", \"peak_fraction\": " << (rated ? gflops / peak : 0.0) << ", \"calls\": " << e.calls / passes << "}";
  };
  const auto header = [&](const char* first) {
    std::snprintf(line, sizeof line, "%-22s %9s %7s %9s %10s %6s\n", first, "ms/pass", "share", "GFLOP/s",
                  "% of peak", "calls");
    t << line;
  };
  header("part");
  j << "{\"passes\": " << passes << ", \"fma_peak_gflops\": " << peak << ", \"total_ms\": " << total * 1e3 / passes
    << ", \"gflop\": " << p.flops() / 1e9 / passes << ", \"parts\": [";
  for (int i = 0; i < lemevit::kParts; ++i)
    row("part", lemevit::part_name(lemevit::Part(i)), p[lemevit::Part(i)], i == 0);
  const double gflops = total > 0 ? p.flops() / total / 1e9 : 0.0;
  std::snprintf(line, sizeof line, "%-22s %9.3f %6.1f%% %9d %10s\n\n", "total", total * 1e3 / passes, 100.0,
                int(gflops + 0.5), peak > 0 ? percent(gflops / peak).c_str() : "-");
  t << line;
  header("stage");
  j << "], \"stages\": [";
  // Each stage by index and kind ("1 D"), then its shape in the stage table.
  std::vector<std::string> stage_names{"stem, head"};
  for (int i = 0; i < p.stages(); ++i) {
    const auto& kinds = model.info().kinds;
    stage_names.push_back(std::to_string(i) + " " + (i < int(kinds.size()) ? kinds[i] : std::string("?")));
  }
  for (int i = -1; i < p.stages(); ++i) {
    std::string name = stage_names[i + 1];
    if (i >= 0) {
      const auto [c, h, w] = model.stage_shape(i);
      name += " " + std::to_string(h) + "x" + std::to_string(w) + "x" + std::to_string(c);
    }
    row("stage", name, p.stage(i), i < 0);
  }
  // ms per pass by part (rows) and stage (columns); "-": the part has no
  // work there. JSON: "by_stage": {part: [ms of each stage, stem/head first]}.
  std::snprintf(line, sizeof line, "\n%-22s", "ms/pass by part, stage");
  t << line;
  for (const std::string& name : stage_names) {
    std::snprintf(line, sizeof line, " %10s", name.c_str());
    t << line;
  }
  t << "\n";
  j << "], \"by_stage\": {";
  for (int k = 0; k < lemevit::kParts; ++k) {
    const auto part = lemevit::Part(k);
    std::snprintf(line, sizeof line, "%-22s", lemevit::part_name(part));
    t << line;
    j << (k ? ", " : "") << lemevit::json::quote(lemevit::part_name(part)) << ": [";
    for (int i = -1; i < p.stages(); ++i) {
      const lemevit::Profile::Entry e = p.at(i, part);
      const double ms = e.seconds * 1e3 / passes;
      if (e.calls > 0)
        std::snprintf(line, sizeof line, " %10.3f", ms);
      else
        std::snprintf(line, sizeof line, " %10s", "-");
      t << line;
      j << (i >= 0 ? ", " : "") << ms;
    }
    t << "\n";
    j << "]";
  }
  j << "}}";
  return {t.str(), j.str()};
}
}  // namespace

int bench(int argc, char** argv) {
  Args args("bench", argc, argv,
            {"--weights", "--batch", "--threads", "--iterations", "--warmup", "--json", "--dca-scale", "--device", "--precision"},
            {"--help", "--profile"});
  if (args.has("--help")) {
    std::cout << kHelp << kPrecisionHelp;
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
  const std::string path = device(args) == Device::Cuda ? "cuda" : model->gemm_path();
  const std::string attention_path = device(args) == Device::Cuda ? "cuda" : model->attention_path();
  int threads = 1;
#ifdef _OPENMP
  threads = omp_get_max_threads();
#endif
  std::cout << model->info().variant << " " << model->precision() << " (" << path
            << (attention_path != "fp32" && attention_path != path ? ", attention " + attention_path : "")
            << ") batch " << batch
            << ", " << threads << " thread(s): median "
            << median << " ms per pass, " << per_image << " ms/image, " << gflops << " GFLOP/s (min "
            << ms.front() << " ms, max " << ms.back() << " ms over " << iterations << " passes)\n";
  std::string profile_json;
  if (args.has("--profile")) {
    lemevit::Profile profile;
    for (int i = 0; i < iterations; ++i) model->forward(x.data(), batch, y.data(), profile);
    const double peak = device(args) == Device::Cpu ? fma_peak_gflops(threads) : 0.0;
    const ProfileReport r = report(profile, *model, iterations, peak);
    std::cout << "profile over " << iterations << " passes (mean per pass; FMA peak "
              << (peak > 0 ? std::to_string(int(peak + 0.5)) + " GFLOP/s" : std::string("unknown"))
              << " on " << threads << " thread(s), measured now):\n"
              << r.text;
    profile_json = ", \"profile\": " + r.json;
  }
  if (args.has("--json")) {
    std::ostringstream j;
    j.precision(10);
    j << "{\"model\": " << lemevit::json::quote(model->info().variant)
      << ", \"precision\": \"" << model->precision() << "\", \"path\": " << lemevit::json::quote(path)
      << ", \"attention_path\": " << lemevit::json::quote(attention_path)
      << ", \"batch\": " << batch
      << ", \"threads\": " << threads << ", \"iterations\": " << iterations
      << ", \"median_ms\": " << median << ", \"ms_per_image\": " << per_image
      << ", \"min_ms\": " << ms.front() << ", \"max_ms\": " << ms.back()
      << ", \"gflop_per_image\": " << model->flops_per_image() / 1e9 << ", \"gflops\": " << gflops
      << profile_json << "}\n";
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
