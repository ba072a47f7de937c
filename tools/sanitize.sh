#!/usr/bin/env bash
# The sanitizer runs, CI-sized:
#   1. asan: the whole `meson test` suite built with AddressSanitizer +
#      UndefinedBehaviorSanitizer (build-asan/, gcc, -O1 -g1: at -O2 the
#      instrumented template-heavy tests took 4-6x longer to compile, ~40
#      minutes of CI's 2 cores for five tests; at -O0 xsimd's one-instruction
#      functions stay calls and the tests ran 5-7x longer than at -O1). -O1
#      goes in cpp_args: meson 1.0 lets --buildtype=plain override
#      -Doptimization, so that option gave -O0 (tests/meson.build spares the
#      two template-heavy tests ASan's use-after-scope checks, which took
#      most of their compile time);
#   2. tsan: tests/concurrency_test.cpp (8 threads sharing one model) built
#      with ThreadSanitizer (build-tsan/), without OpenMP: libgomp is not
#      TSan-instrumented and its barriers would be reported as races, so that
#      test is compiled with -fno-openmp (tests/meson.build) and each forward
#      pass runs on its calling thread;
#   3. fuzz: each libFuzzer target (tests/fuzz, clang ASan + UBSan) for
#      $FUZZ_SECONDS seconds (default 60), after replaying the committed
#      corpora and regressions.
#
#   tools/sanitize.sh [asan] [tsan] [fuzz]     (default: all three, in that order)
#
# Environment: FUZZ_SECONDS, FUZZ_TARGETS (default "safetensors npy image
# image_libjpeg"), MESON_TEST_ARGS (extra `meson test` arguments for the asan
# step, e.g. "--suite lemevit:fuzz" or test names), ASAN_TESTS (build and run
# only these tests under ASan, e.g. "model errors image"; CI uses it),
# LEMEVIT_CONCURRENCY_ITERATIONS.
# Everything runs under `nice -n 19`. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(asan tsan fuzz)
fuzz_seconds="${FUZZ_SECONDS:-60}"
read -r -a fuzz_targets <<< "${FUZZ_TARGETS:-safetensors npy image image_libjpeg}"

# UBSan: every finding is fatal except the few third-party ones listed (with
# their reasons) in tests/fuzz/ubsan.supp; LSan likewise (tests/fuzz/lsan.supp).
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1:print_summary=1:suppressions=$root/tests/fuzz/ubsan.supp"
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1"
export LSAN_OPTIONS="suppressions=$root/tests/fuzz/lsan.supp:print_suppressions=0"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1"
export OMP_WAIT_POLICY=PASSIVE  # idle OpenMP workers sleep: the machines are shared

say() { printf '\n=== sanitize.sh: %s\n' "$*" >&2; }

setup() {  # setup DIR ARGS...: configure once, reconfigure when it exists
  local dir="$1"
  shift
  if [ -f "$dir/build.ninja" ]; then
    nice -n 19 meson setup --reconfigure "$dir" "$@" > /dev/null
  else
    nice -n 19 meson setup "$dir" "$@" > /dev/null
  fi
}

run_asan() {
  say "ASan + UBSan build (build-asan): meson test"
  # The golden fixtures of the native build when it has made them (generating
  # them again takes minutes of PyTorch).
  local fixtures=(-Dfixtures=)
  [ -f build/tests/fixtures/cases.json ] && fixtures=(-Dfixtures="$root/build/tests/fixtures")
  setup build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbench=disabled \
    --buildtype=plain "-Dcpp_args=-O1 -g1" -Db_ndebug=false "${fixtures[@]}"
  if [ -n "${ASAN_TESTS:-}" ]; then
    # A subset (CI on 2 cores: the instrumented golden and CLI builds alone
    # take longer than the whole CI budget): build just those tests' programs
    # and their data.
    local targets=(image_refs) t
    [ "${fixtures[0]}" = "-Dfixtures=" ] && targets+=(fixtures)
    for t in $ASAN_TESTS; do
      case "$t" in
        fuzz_replay) targets+=(fuzz_replay) ;;
        kernels*) targets+=(kernels_test) ;;
        *) targets+=("${t}_test") ;;
      esac
    done
    nice -n 19 meson compile -C build-asan "${targets[@]}"
    # shellcheck disable=SC2086
    nice -n 19 meson test -C build-asan --no-rebuild --print-errorlogs --timeout-multiplier 4 $ASAN_TESTS
    return
  fi
  nice -n 19 meson compile -C build-asan
  # The Python tests run Debian's python3 (not instrumented, nothing preloaded);
  # the instrumented `lemevit` binary they start reports its own findings.
  # shellcheck disable=SC2086
  nice -n 19 meson test -C build-asan --print-errorlogs --timeout-multiplier 4 ${MESON_TEST_ARGS:-}
}

run_tsan() {
  say "ThreadSanitizer build (build-tsan): concurrency test, OpenMP off"
  setup build-tsan -Db_sanitize=thread -Db_lundef=false -Dbench=disabled -Dcli=false \
    --buildtype=debugoptimized -Db_ndebug=false
  nice -n 19 meson compile -C build-tsan concurrency_test
  # Only the fixture this test reads (the whole golden set is the asan step's;
  # this one takes seconds).
  local fixtures="$root/build-tsan/fixtures-concurrency"
  nice -n 19 /usr/bin/python3 tools/make_fixtures.py --out "$fixtures" --only custom_small --no-src --threads 1
  LEMEVIT_FIXTURES="$fixtures" nice -n 19 build-tsan/tests/concurrency_test
}

run_fuzz() {
  say "libFuzzer targets (build-fuzz): ${fuzz_targets[*]}, ${fuzz_seconds} s each"
  tests/fuzz/build.sh "${fuzz_targets[@]}"
  local t
  for t in "${fuzz_targets[@]}"; do
    say "fuzz $t: ${fuzz_seconds} s"
    # ASan's leak check and UBSan findings are fatal; run.sh writes a crash
    # to build-fuzz/artifacts/$t/ and fails.
    local log="build-fuzz/$t.sanitize.log"
    if ! tests/fuzz/run.sh "$t" "$fuzz_seconds" > "$log" 2>&1; then
      tail -n 80 "$log" >&2
      say "fuzz $t FAILED (log: $log)"
      exit 1
    fi
    grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" >&2 || true
  done
}

for step in "${steps[@]}"; do
  case "$step" in
    asan) run_asan ;;
    tsan) run_tsan ;;
    fuzz) run_fuzz ;;
    *) echo "usage: $0 [asan] [tsan] [fuzz]" >&2; exit 2 ;;
  esac
done
say "all clean: ${steps[*]}"
