#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs every Debian package hakmem needs to build, test, fuzz and benchmark.
# Idempotent and quiet: packages already present are skipped, and `apt-get update`
# runs at most once per machine (a stamp file records it).
set -euo pipefail

HAK_PACKAGES=(
  bazel-bootstrap          # Bazel 4.2.3, the only Bazel that works offline here
  gcc g++ clang-14 libclang-rt-14-dev   # compilers, sanitizer and libFuzzer runtimes
  llvm-14                  # llvm-cov-14, llvm-profdata-14: coverage of fuzz corpora (ci/fuzz.sh)
  libgtest-dev googletest  # Google Test for cc_test
  afl++                    # AFL++ fuzzing engine
  libmimalloc2.0 libjemalloc2 libtcmalloc-minimal4   # peer allocators for benchmarks
  valgrind gnuplot-nox hyperfine   # instruction-count gate, charts, command timing
  python3 git sqlite3      # real programs run under LD_PRELOAD in the integration test
  gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross   # ci/aarch64.sh: cross build
  qemu-user                # ci/aarch64.sh: qemu-aarch64 runs the aarch64 tests
  make cmake pkg-config    # ci/install_consumers.sh: the Makefile build, its Make and CMake consumers
)

missing=()
for p in "${HAK_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
stamp=/var/lib/apt/.hakmem-apt-updated
if [ ! -f "$stamp" ]; then
  $SUDO apt-get update -qq >/dev/null
  $SUDO touch "$stamp"
fi
echo "ci/setup.sh: installing ${missing[*]}" >&2
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
  "${missing[@]}" >/dev/null
