#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Cross-architecture proof (issue 9): hakmem's core in every variant (release, stats,
# hardened, and the internal ones the tests use) and all its unit tests, built for
# aarch64 with Debian's cross toolchain (gcc/g++-aarch64-linux-gnu; Google Test from
# Debian's sources in /usr/src/googletest) and run under qemu-user
# (qemu-aarch64 -L /usr/aarch64-linux-gnu; no binfmt_misc needed: tests that start
# programs of their own go through ci/qemu_exec_shim.c). Bazel is not involved: what to
# build comes from hakmem/variants.bzl and the tests' BUILD files (see ci/aarch64.py).
#
#   ci/aarch64.sh [--page-size 65536] [--jobs N] [--filter NAME] [--out DIR] [--build-only]
#
# --page-size runs the guest with that page size (qemu's -p: AT_PAGESZ of 16 KiB or
# 64 KiB, as on kernels configured so). Prints one line per test binary and a summary;
# exits non-zero if anything failed to build or any test failed. On this project's
# 2-core machines a cold run takes about 12 minutes (4 to build, 8 to run the tests;
# builds are incremental in --out, default aarch64-out/), so CI runs it nightly
# (.github/workflows/nightly-aarch64.yml), not as a stage of ci/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup.sh
for tool in aarch64-linux-gnu-gcc aarch64-linux-gnu-g++ qemu-aarch64 python3; do
  command -v "$tool" >/dev/null || { echo "ci/aarch64.sh: $tool missing (ci/setup.sh installs it)" >&2; exit 2; }
done
[ -f /usr/src/googletest/googletest/src/gtest-all.cc ] ||
  { echo "ci/aarch64.sh: Google Test sources missing (Debian's googletest)" >&2; exit 2; }

start=$(date +%s)
status=0
python3 ci/aarch64.py "$@" || status=$?
echo "ci/aarch64.sh: $(( $(date +%s) - start )) s, exit status $status"
exit "$status"
