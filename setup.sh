#!/usr/bin/env bash
# Installs every dependency from Debian 12's archive and builds the project
# into ./build (the `lemevit` tool lands in ./build/cli/lemevit).
#   ./setup.sh            install + build
#   ./setup.sh --test     install + build + run the whole test suite
set -euo pipefail
cd "$(dirname "$0")"

packages=(
  g++ meson ninja-build pkg-config
  libeigen3-dev libxsimd-dev catch2 libbenchmark-dev libstb-dev libjpeg62-turbo-dev
  python3-torch python3-torchvision python3-pil python3-numpy libopenblas0-openmp
  dataset-fashion-mnist libopenmpi-dev openmpi-bin python3-matplotlib
  qemu-user g++-aarch64-linux-gnu
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The CUDA backend builds where nvcc is found (CUDA 13 lives in /usr/local/cuda).
[ -x /usr/local/cuda/bin/nvcc ] && export PATH="/usr/local/cuda/bin:$PATH"

[ -d build ] || meson setup build
ninja -C build

if [ "${1:-}" = "--test" ]; then
  meson test -C build --print-errorlogs
fi
