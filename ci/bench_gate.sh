#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The benchmark gate (bench/gate.py): instruction counts of hakmem's hot paths under
# valgrind --tool=callgrind against the baseline in bench/thresholds.json (tolerance
# 10%), plus time ratios to glibc with generous limits. Exit status 1 on a regression.
#   ci/bench_gate.sh            check (about a minute)
#   ci/bench_gate.sh --update   make this run's instruction counts the new baseline in
#                               bench/thresholds.json (on purpose; commit it with the
#                               change that explains it; see bench/README.md)
# Other options go to bench/gate.py (--skip-time, --skip-callgrind).
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup.sh

source bench/stage.sh   # builds, copies the programs to bench-out/bin, sets BENCH_BIN
python3 bench/gate.py --bin-dir "$BENCH_BIN/bench" --hakmem-dir "$BENCH_BIN/hakmem" --out bench-out "$@"
