#!/usr/bin/env bash
# Cross-architecture checks run by CI after the native suite (./setup.sh --test,
# which leaves the golden fixtures in build/tests/fixtures; both builds here
# reuse them):
#  - aarch64 (NEON): cross-compile the test suite for ARMv8.6 (NEON plus the
#    dot-product and bf16 instructions of the int8 and bf16 kernels; the
#    portable kernels are compiled and tested there too), run it under
#    qemu-aarch64, whose default CPU has those extensions;
#  - the other x86 vector width: where the native build is AVX-512 (CI's
#    machines), the AVX2 build's kernel tests run too; elsewhere the AVX-512
#    build is compiled (run only where the CPU has AVX-512F).
set -euo pipefail
cd "$(dirname "$0")/.."

fixtures=()
[ -f build/tests/fixtures/cases.json ] && fixtures=(-Dfixtures="$PWD/build/tests/fixtures")

echo "== aarch64 / NEON under qemu =="
[ -d build-aarch64 ] || meson setup build-aarch64 --cross-file cross/aarch64-linux-gnu.ini \
  -Dcpu=armv8.6 -Dbench=disabled -Dcli=false -Dlibjpeg=disabled "${fixtures[@]}"
ninja -C build-aarch64
meson test -C build-aarch64 --print-errorlogs --timeout-multiplier 4

# The x86 build the native one is not: its SIMD kernels against the Reference
# backend (kernels_test: fp32, bf16 and int8 at the model's and awkward shapes)
# and the fuzz corpora.
native_avx512=false
# grep reads all of it: with pipefail, grep -q exiting at the first match could
# SIGPIPE the compiler and fail the pipeline (seen: the AVX2 build skipped).
echo | ${CXX:-c++} -march=native -dM -E - 2>/dev/null | grep __AVX512F__ >/dev/null && native_avx512=true
if $native_avx512; then other=avx2; else other=avx512; fi
echo "== $other build =="
if [ "$other" = avx2 ] || grep -q avx512f /proc/cpuinfo; then
  [ -d "build-$other" ] || meson setup "build-$other" -Dcpu="$other" -Dgolden=false -Dbench=disabled -Dcli=false
  ninja -C "build-$other" tests/kernels_test tests/fuzz_replay
  meson test -C "build-$other" --no-rebuild --print-errorlogs kernels kernels_lowp kernels_determinism fuzz_replay
else
  # Every SIMD kernel of that width, compiled only, for the AVX-512 arch
  # alone: the AVX2 and SSE ones are the native build's, which ran them
  # (half the compile time).
  [ -d build-avx512-compile ] || meson setup build-avx512-compile -Dcpu=avx512 -Dgolden=false -Dbench=disabled \
    -Dcli=false -Dcpp_args=-DLEMEVIT_TEST_DEFAULT_ARCH_ONLY
  ninja -C build-avx512-compile tests/kernels_test
  echo "this CPU has no AVX-512F: compiled only"
fi
