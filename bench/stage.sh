#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Sourced by ci/bench.sh and ci/bench_gate.sh from the workspace root: builds hakmem's
# libraries and the benchmark programs in a configuration of their own and copies them
# to bench-out/bin/, so that a build with other flags (a sanitizer build, say) in the
# same workspace cannot replace them during a run. Sets BENCH_BIN.
bazel_flags=(--platform_suffix=-bench)   # outputs in bazel-out/k8-fastbuild-bench/
[ "${CI:-}" = "true" ] && bazel_flags+=(--config=ci)
# libhakmem_hardened1.so is an internal ("manual") target: //hakmem:all leaves it out.
bazel build "${bazel_flags[@]}" //hakmem:all //hakmem:libhakmem_hardened1.so //bench:all
built="$(bazel info "${bazel_flags[@]}" bazel-bin)"
BENCH_BIN="$PWD/bench-out/bin"
rm -rf "$BENCH_BIN"
mkdir -p "$BENCH_BIN/bench" "$BENCH_BIN/hakmem"
find "$built/bench" -maxdepth 1 -type f -perm -u+x ! -name '*.*' -exec cp {} "$BENCH_BIN/bench/" \;
cp "$built"/hakmem/libhakmem*.so "$BENCH_BIN/hakmem/"
