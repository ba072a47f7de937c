#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) into build-fuzz/:
#   tests/fuzz/build.sh [TARGET...]     (default: safetensors npy image image_libjpeg)
# image_libjpeg is the image target with JPEG through libjpeg-turbo, as the
# Meson build decodes JPEG when libjpeg is found (libjpeg itself is not
# instrumented; the code around it is).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="${LEMEVIT_FUZZ_BUILD:-$root/build-fuzz}"
cxx="${CXX_FUZZ:-clang++}"
mkdir -p "$out"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors npy image image_libjpeg)
flags=(-std=c++20 -g -O1 -fno-omit-frame-pointer
       -fsanitize=fuzzer,address,undefined
       -I "$root/include" -I "$root/backends/reference" -I "$root/backends/simd"
       -Wall -Wextra)
# The targets compile side by side (one took 114 s, the other three 54 s
# together, one after another).
pids=()
for t in "${targets[@]}"; do
  src="$t" extra=()
  if [ "$t" = image_libjpeg ]; then
    src=image extra=(-DLEMEVIT_IMAGE_LIBJPEG -ljpeg)
  fi
  echo "build.sh: $out/$t" >&2
  "$cxx" "${flags[@]}" "$root/tests/fuzz/$src.cpp" -o "$out/$t" "${extra[@]}" &
  pids+=($!)
done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=1; done
[ "$failed" = 0 ] || { echo "build.sh: a fuzz target failed to build (its errors above)" >&2; exit 1; }
