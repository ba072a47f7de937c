// One loaded model, 8 threads running it at once for thousands of forward
// passes in total, each thread with its own Workspace: every result must be
// bitwise equal to the single-threaded run of the same input. Run under
// ThreadSanitizer by tools/sanitize.sh (there with OpenMP off: libgomp is not
// instrumented, and its barriers would be reported as races).
//
// LEMEVIT_CONCURRENCY_ITERATIONS overrides the passes per thread (default 300).
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <lemevit/lemevit.hpp>

#include "support.hpp"

using namespace lemevit;
using test_support::fixture;

namespace {

using test_support::kCustomSmall;
using Small = Model<kCustomSmall, Input<96, 64>, Classes<7>>;
constexpr std::size_t kImage = 3 * 96 * 64;
constexpr int kClasses = 7;
constexpr int kThreads = 8;

int iterations_per_thread() {
  if (const char* s = std::getenv("LEMEVIT_CONCURRENCY_ITERATIONS")) {
    const int n = std::atoi(s);
    if (n > 0) return n;
  }
  return 300;
}

// Inputs: the golden fixture's two images and seeded random ones.
std::vector<std::vector<float>> make_inputs() {
  std::vector<std::vector<float>> out;
  const io::NpyArray golden = io::read_npy(fixture("custom_small.input.npy"));
  REQUIRE(golden.data.size() == 2 * kImage);
  out.emplace_back(golden.data.begin(), golden.data.begin() + kImage);
  out.emplace_back(golden.data.begin() + kImage, golden.data.end());
  std::mt19937 gen(20240601);
  std::normal_distribution<float> normal;
  for (int i = 0; i < 6; ++i) {
    std::vector<float> x(kImage);
    for (auto& v : x) v = normal(gen) * (0.5f + 0.25f * float(i));
    out.push_back(std::move(x));
  }
  return out;
}

// A job is a batch of consecutive inputs (wrapping), batch 1 to 3.
struct Job {
  int first, batch;
};

std::vector<float> gather(const std::vector<std::vector<float>>& inputs, const Job& job) {
  std::vector<float> x;
  for (int b = 0; b < job.batch; ++b) {
    const auto& img = inputs[std::size_t((job.first + b) % int(inputs.size()))];
    x.insert(x.end(), img.begin(), img.end());
  }
  return x;
}

}  // namespace

TEST_CASE("8 threads share one model and get the single-threaded results bitwise", "[concurrency]") {
  const Small net = Small::load(fixture("custom_small.safetensors"));
  const auto inputs = make_inputs();
  std::vector<Job> jobs;
  for (int first = 0; first < int(inputs.size()); ++first)
    for (int batch = 1; batch <= 3; ++batch) jobs.push_back({first, batch});
  std::vector<std::vector<float>> batched_inputs;
  for (const auto& job : jobs) batched_inputs.push_back(gather(inputs, job));

  // Single-threaded references: logits of every job, and stage features of
  // every batch-1 job.
  std::vector<std::vector<float>> want_logits(jobs.size());
  std::vector<std::vector<std::vector<float>>> want_features(jobs.size());
  auto stage_floats = [](int s) {
    return std::size_t(Small::stage_channels(s)) * Small::stage_height(s) * Small::stage_width(s);
  };
  {
    auto ws = net.make_workspace(3);
    for (std::size_t j = 0; j < jobs.size(); ++j) {
      want_logits[j].resize(std::size_t(jobs[j].batch) * kClasses);
      net.forward(batched_inputs[j].data(), jobs[j].batch, want_logits[j].data(), ws);
      if (jobs[j].batch == 1) {
        std::vector<float*> ptrs;
        want_features[j].resize(Small::num_stages);
        for (int s = 0; s < Small::num_stages; ++s) {
          want_features[j][std::size_t(s)].resize(stage_floats(s));
          ptrs.push_back(want_features[j][std::size_t(s)].data());
        }
        net.features(batched_inputs[j].data(), 1, ptrs, ws);
      }
    }
  }

  const int per_thread = iterations_per_thread();
  std::atomic<long> passes{0}, mismatches{0}, errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      try {
        auto ws = net.make_workspace(3);  // each thread its own activation memory
        std::vector<float> logits(3 * kClasses);
        std::vector<std::vector<float>> features(Small::num_stages);
        std::vector<float*> ptrs;
        for (int s = 0; s < Small::num_stages; ++s) {
          features[std::size_t(s)].resize(stage_floats(s));
          ptrs.push_back(features[std::size_t(s)].data());
        }
        for (int i = 0; i < per_thread; ++i) {
          // Threads walk the jobs in different orders, so different inputs and
          // batch sizes run side by side.
          const std::size_t j = std::size_t(i * (2 * t + 1) + 5 * t) % jobs.size();
          const Job& job = jobs[j];
          if (job.batch == 1 && i % 7 == 3) {
            net.features(batched_inputs[j].data(), 1, ptrs, ws);
            for (int s = 0; s < Small::num_stages; ++s)
              if (std::memcmp(features[std::size_t(s)].data(), want_features[j][std::size_t(s)].data(),
                              stage_floats(s) * sizeof(float)) != 0)
                ++mismatches;
          } else {
            net.forward(batched_inputs[j].data(), job.batch, logits.data(), ws);
            if (std::memcmp(logits.data(), want_logits[j].data(), want_logits[j].size() * sizeof(float)) != 0)
              ++mismatches;
          }
          ++passes;
        }
      } catch (...) {
        ++errors;
      }
    });
  for (auto& th : threads) th.join();
  CHECK(errors == 0);
  CHECK(passes == long(kThreads) * per_thread);
  CHECK(mismatches == 0);
  INFO(passes << " forward passes on " << kThreads << " threads");
  SUCCEED();
}

TEST_CASE("models loaded concurrently from one file are identical", "[concurrency]") {
  // Loading is also safe to do from several threads (each its own mapping).
  const auto inputs = make_inputs();
  const std::string path = fixture("custom_small.safetensors");  // Catch2 macros: main thread only
  std::vector<float> want(kClasses);
  {
    const Small net = Small::load(path);
    auto ws = net.make_workspace(1);
    net.forward(inputs[0].data(), 1, want.data(), ws);
  }
  std::atomic<int> mismatches{0}, errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&] {
      try {
        const Small net = Small::load(path);
        auto ws = net.make_workspace(1);
        std::vector<float> y(kClasses);
        net.forward(inputs[0].data(), 1, y.data(), ws);
        if (std::memcmp(y.data(), want.data(), want.size() * sizeof(float)) != 0) ++mismatches;
      } catch (...) {
        ++errors;
      }
    });
  for (auto& th : threads) th.join();
  CHECK(errors == 0);
  CHECK(mismatches == 0);
}
