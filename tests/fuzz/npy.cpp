// libFuzzer target: see targets.hpp (built by tests/fuzz/build.sh).
#include "targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return fuzz::npy_one(data, size);
}
