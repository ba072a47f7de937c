// main() of the GPU tests. Without a usable CUDA device only the test cases
// tagged [no-device] run (how the backend reports the missing device); then
// the program says why the rest did not run and exits 77, which `meson test`
// reports as SKIP rather than OK.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>

#include "lemevit/backend/cuda.hpp"

int main(int argc, char** argv) {
  if (lemevit::backend::cuda::available()) return Catch::Session().run(argc, argv);
  std::string reason = "no CUDA device";
  try {
    (void)lemevit::backend::cuda::device_name();
  } catch (const lemevit::Error& e) {
    reason = e.what();
  }
  char tag[] = "[no-device]";
  char* only[] = {argv[0], tag};
  const int failed = Catch::Session().run(2, only);
  if (failed) return failed == 77 ? 1 : failed;
  std::printf("SKIP: %s; the GPU test cases did not run\n", reason.c_str());
  return 77;
}
