#!/usr/bin/env bash
# Runs one fuzz target for SECONDS (built by tests/fuzz/build.sh), niced:
#   tests/fuzz/run.sh TARGET SECONDS [extra libFuzzer flags...]
# New inputs go to build-fuzz/corpus/TARGET (the committed seeds in
# tests/fuzz/corpus/TARGET and the regressions are read, never written);
# a crash is written to build-fuzz/artifacts/TARGET/ and the script fails.
# Keep a crashing input as tests/fuzz/regressions/TARGET/<name> once fixed:
# the `fuzz_replay` Meson test replays every file there.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 TARGET SECONDS [libFuzzer flags...]" >&2
  exit 2
fi
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="${LEMEVIT_FUZZ_BUILD:-$root/build-fuzz}"
target="$1" seconds="$2"
shift 2
bin="$out/$target"
[ -x "$bin" ] || "$root/tests/fuzz/build.sh" "$target"
seeds="${target%_libjpeg}"  # image_libjpeg shares the image corpus
work="$out/corpus/$target"
artifacts="$out/artifacts/$target"
mkdir -p "$work" "$artifacts"
dirs=("$work" "$root/tests/fuzz/corpus/$seeds")
[ -d "$root/tests/fuzz/regressions/$seeds" ] && dirs+=("$root/tests/fuzz/regressions/$seeds")
dict="$root/tests/fuzz/$seeds.dict"
flags=(-max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 -max_len=65536
       -print_final_stats=1 -artifact_prefix="$artifacts/")
[ -f "$dict" ] && flags+=(-dict="$dict")
ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}" \
UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1:suppressions=$root/tests/fuzz/ubsan.supp}" \
  nice -n 19 "$bin" "${flags[@]}" "$@" "${dirs[@]}"
