#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Passes the tests on a fresh Debian 12 machine; this is what CI runs (.ci/run).
# Stages, in order (the first failure stops the run):
#   build   licence lines; all six libraries and everything else, -Werror on hakmem's
#           own sources
#   install the Makefile build (no Bazel), make install, Make and CMake consumers
#           against the installed tree (ci/install_consumers.sh)
#   unit    bazel test //...: unit tests of every variant, fuzz-corpus replays, and
#           real programs (python3, git, sqlite3, gcc) under LD_PRELOAD of each .so
#   consumer examples/bazel_consumer: hakmem from another Bazel workspace
#           (ci/bazel_consumer.sh)
#   asan    the unit tests again under AddressSanitizer (clang)
#   ubsan   ... under UndefinedBehaviorSanitizer
#   tsan    ... under ThreadSanitizer
#   fuzz    time-bounded libFuzzer and AFL++ campaigns (ci/fuzz.sh)
#   cflite  .clusterfuzzlite/build.sh without Docker, with the base image's variables,
#           for libFuzzer + ASan, libFuzzer + UBSan and AFL++, each target run briefly
#           (ci/cflite_check.sh)
#   gate    the benchmark gate: callgrind instruction counts and time ratios
# ci/test.sh [stage ...] runs only the named stages (default: all, in this order);
# "sanitizers" is short for asan ubsan tsan.
set -euo pipefail
cd "$(dirname "$0")/.."

all_stages=(build install unit consumer asan ubsan tsan fuzz cflite gate)
stages=()
for a in "$@"; do
  case "$a" in
    sanitizers) stages+=(asan ubsan tsan) ;;
    *) stages+=("$a") ;;
  esac
done
[ ${#stages[@]} -eq 0 ] && stages=("${all_stages[@]}")

bash ci/setup.sh

bazel_flags=()
[ "${CI:-}" = "true" ] && bazel_flags+=(--config=ci)
fuzz_seconds="${HAK_FUZZ_SECONDS:-120}"

stage() { printf '\n==== ci/test.sh: %s (%s) ====\n' "$1" "$(date -u +%H:%M:%S)"; }

for s in "${stages[@]}"; do
  stage "$s"
  case "$s" in
    build)
      python3 ci/license_headers.py
      bazel build "${bazel_flags[@]}" --config=werror //...
      ;;
    install) bash ci/install_consumers.sh ;;
    unit) bazel test "${bazel_flags[@]}" --config=werror //... ;;
    consumer) bash ci/bazel_consumer.sh ;;
    asan | ubsan | tsan) bazel test "${bazel_flags[@]}" --config="$s" //... ;;
    fuzz)
      bash ci/fuzz.sh --engine libfuzzer --seconds "$fuzz_seconds"
      bash ci/fuzz.sh --engine afl --seconds "$fuzz_seconds"
      ;;
    cflite) bash ci/cflite_check.sh ;;
    gate) bash ci/bench_gate.sh ;;
    *)
      echo "ci/test.sh: unknown stage '$s' (known: ${all_stages[*]} sanitizers)" >&2
      exit 2
      ;;
  esac
done
printf '\nci/test.sh: all stages passed: %s (%s)\n' "${stages[*]}" "$(date -u +%H:%M:%S)"
