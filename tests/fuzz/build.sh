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
# clang before 18 rejects float non-type template parameters, which
# include/lemevit/layers/layer_norm.hpp uses for its eps (LayerNorm<B, Dim, 1e-6f>).
# Until the header avoids them, such a clang gets a patched copy of that one
# header, found first on the include path (the same two eps values, as an index).
probe="$out/probe.cpp"
printf '#include <lemevit/layers/layer_norm.hpp>\n' > "$probe"
if ! "$cxx" -std=c++20 -fsyntax-only -I "$root/include" -I "$root/backends/reference" \
     -I "$root/backends/simd" "$probe" 2>/dev/null; then
  shim="$out/clang-shim"
  mkdir -p "$shim/lemevit/layers"
  sed -e 's/template <class B, int Dim, float Eps>/template <class B, int Dim, int EpsExponent>/' \
      -e 's/^class LayerNorm {$/class LayerNorm {\n  static constexpr float Eps = EpsExponent == 6 ? 1e-6f : 1e-5f;/' \
      -e 's/LayerNorm<B, Dim, 1e-6f>/LayerNorm<B, Dim, 6>/' -e 's/LayerNorm<B, Dim, 1e-5f>/LayerNorm<B, Dim, 5>/' \
      "$root/include/lemevit/layers/layer_norm.hpp" > "$shim/lemevit/layers/layer_norm.hpp"
  if ! "$cxx" -std=c++20 -fsyntax-only -I "$shim" -I "$root/include" -I "$root/backends/reference" \
       -I "$root/backends/simd" "$probe"; then
    echo "build.sh: $cxx cannot compile lemevit/layers/layer_norm.hpp, and the shim no longer applies" >&2
    exit 1
  fi
  echo "build.sh: $cxx lacks float template parameters: using $shim/lemevit/layers/layer_norm.hpp" >&2
  flags=(-I "$shim" "${flags[@]}")
fi
rm -f "$probe"
for t in "${targets[@]}"; do
  src="$t" extra=()
  if [ "$t" = image_libjpeg ]; then
    src=image extra=(-DLEMEVIT_IMAGE_LIBJPEG -ljpeg)
  fi
  echo "build.sh: $out/$t" >&2
  "$cxx" "${flags[@]}" "$root/tests/fuzz/$src.cpp" -o "$out/$t" "${extra[@]}"
done
