#!/usr/bin/env bash
# Passes the tests on a fresh Debian 12 machine; this is what CI runs (.ci/run).
# Stages, in order (each stops the run on failure):
#   build      all six libraries and everything else, -Werror on hakmem's sources
#   unit       bazel test //...: unit tests of every variant, fuzz-corpus replays,
#              real programs under LD_PRELOAD of each shared library
#   sanitizers the tests again under ASan, UBSan and TSan (clang)
#   gate       the benchmark gate: callgrind instruction counts and time ratios
# ci/test.sh [stage ...] runs only the named stages (default: all of them).
set -euo pipefail
cd "$(dirname "$0")/.."

stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(build unit sanitizers gate)

bash ci/setup.sh

bazel_flags=()
[ "${CI:-}" = "true" ] && bazel_flags+=(--config=ci)

stage() { printf '\n==== ci/test.sh: %s (%s) ====\n' "$1" "$(date -u +%H:%M:%S)"; }

for s in "${stages[@]}"; do
  case "$s" in
    build)
      stage build
      bazel build "${bazel_flags[@]}" --config=werror //...
      ;;
    unit)
      stage unit
      bazel test "${bazel_flags[@]}" --config=werror //...
      ;;
    sanitizers)
      for san in asan ubsan tsan; do
        stage "sanitizer $san"
        bazel test "${bazel_flags[@]}" --config="$san" //...
      done
      ;;
    gate)
      stage "benchmark gate"
      bash ci/bench_gate.sh
      ;;
    *)
      echo "ci/test.sh: unknown stage '$s' (known: build unit sanitizers gate)" >&2
      exit 2
      ;;
  esac
done
printf '\nci/test.sh: all stages passed: %s\n' "${stages[*]}"
