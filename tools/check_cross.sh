#!/usr/bin/env bash
# Cross-architecture checks run by CI after the native suite:
#  - aarch64 (NEON): cross-compile the test suite, run it under qemu-aarch64;
#  - AVX-512: compile the suite (run it only where the CPU has AVX-512F).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== aarch64 / NEON under qemu =="
[ -d build-aarch64 ] || meson setup build-aarch64 --cross-file cross/aarch64-linux-gnu.ini \
  -Dcpu=generic -Dbench=disabled -Dcli=false -Dlibjpeg=disabled
ninja -C build-aarch64
meson test -C build-aarch64 --print-errorlogs --timeout-multiplier 4

echo "== AVX-512 build =="
[ -d build-avx512 ] || meson setup build-avx512 -Dcpu=avx512 -Dgolden=false -Dbench=disabled -Dcli=false
ninja -C build-avx512
if grep -q avx512f /proc/cpuinfo; then
  meson test -C build-avx512 --print-errorlogs
else
  echo "this CPU has no AVX-512F: compiled only"
fi
