#!/usr/bin/env bash
# Passes the tests on a fresh Debian 12 machine: installs what is missing, builds all
# six libraries (and everything else) with warnings as errors in hakmem's own sources,
# then runs every test: unit tests of each variant, and real programs under LD_PRELOAD.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup.sh

bazel_flags=()
[ "${CI:-}" = "true" ] && bazel_flags+=(--config=ci)

bazel build "${bazel_flags[@]}" --config=werror //...
bazel test "${bazel_flags[@]}" --config=werror //...
