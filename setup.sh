#!/usr/bin/env bash
# Installs the Debian 12 packages the project needs and builds it into ./build
# (the `lemevit` tool lands in ./build/cli/lemevit).
#   ./setup.sh            what the library, the tool and the example need; builds
#                         those only (no tests, no benchmarks, no PyTorch)
#   ./setup.sh --test     adds the test and reference dependencies (PyTorch,
#                         Fashion-MNIST, OpenMPI, qemu + aarch64 cross compiler,
#                         ...), builds everything and runs the whole test suite
set -euo pipefail
cd "$(dirname "$0")"

test=false
case "${1:-}" in
  "") ;;
  --test) test=true ;;
  *) echo "usage: ./setup.sh [--test]" >&2; exit 2 ;;
esac

packages=(g++ meson ninja-build pkg-config libeigen3-dev libxsimd-dev libstb-dev libjpeg62-turbo-dev)
test_packages=(
  catch2 libbenchmark-dev
  python3-torch python3-torchvision python3-pil python3-numpy libopenblas0-openmp python3-matplotlib
  dataset-fashion-mnist libopenmpi-dev openmpi-bin
  qemu-user g++-aarch64-linux-gnu
  python3-pybind11 python3-dev cmake  # the Python module; CMake for the install_consumers test
  python3-onnx  # bench/ort_quantize.py (ONNX Runtime int8 in compare.py) and its test
  clang libclang-rt-dev  # libFuzzer targets (tools/sanitize.sh fuzz, run by .ci/run)
)
$test && packages+=("${test_packages[@]}")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo > /dev/null || { echo "setup: run as root, or install sudo, to install them" >&2; exit 1; }
    sudo="sudo"
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The CUDA backend builds where nvcc is found (CUDA 13 lives in /usr/local/cuda).
[ -x /usr/local/cuda/bin/nvcc ] && export PATH="/usr/local/cuda/bin:$PATH"

# The plain build leaves the tests and benchmarks out; --test turns them on in
# the same build folder (meson then looks again for what was missing).
configured=false
[ -f build/meson-private/coredata.dat ] && configured=true
if $test; then
  if $configured; then
    # default_options reach only a new build folder: pass the ones a folder made
    # by an older checkout lacks (relocatable lemevit.pc, see meson.build)
    meson setup --reconfigure build -Dtests=true -Dbench=auto -Dpkgconfig.relocatable=true
  else
    meson setup build
  fi
elif ! $configured; then
  meson setup build -Dtests=false -Dbench=disabled
fi
ninja -C build

if $test; then
  meson test -C build --print-errorlogs
fi
