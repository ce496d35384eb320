#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The main job: benchmarks hakmem against glibc, mimalloc, jemalloc and tcmalloc on
# the same machine in one interleaved run and prints the tables of time and RSS ratios.
# Results land in bench-out/: results.md, results.csv, results.json, meta.json, and the
# charts ratios.svg (time / mimalloc), rss_ratios.svg (peak RSS / mimalloc) and
# rss_over_time.svg (RSS over the run of the rss_over_time workload).
#   ci/bench.sh            full run: 24 workloads x 7 allocators (all three hakmem
#                          variants) x 5 repetitions; about 15 minutes
#   ci/bench.sh --quick    CI-sized: smaller workloads x 5 allocators (glibc, hakmem,
#                          mimalloc, jemalloc, tcmalloc) x 5 repetitions; about 2 minutes
#   ci/bench.sh --all      every allocator, also with --quick
# Other options go to bench/compare.py, e.g. --reps 7, --workloads json,mir,
# --allocators glibc,hakmem,mimalloc, --threads 4 (see bench/README.md).
# The exit status is 1 if a workload failed its self-check or crashed under an allocator.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup.sh

args=()
quick=0
all=0
for a in "$@"; do
  case "$a" in
    --all) all=1 ;;
    --quick) quick=1; args+=(--quick) ;;
    *) args+=("$a") ;;
  esac
done
if [ "$all" = 1 ] && [ "$quick" = 1 ]; then
  args+=(--allocators glibc,hakmem,hakmem_stats,hakmem_hardened,mimalloc,jemalloc,tcmalloc)
fi

source bench/stage.sh   # builds, copies the programs to bench-out/bin, sets BENCH_BIN
python3 bench/compare.py --bin-dir "$BENCH_BIN/bench" --hakmem-dir "$BENCH_BIN/hakmem" --out bench-out "${args[@]}"
