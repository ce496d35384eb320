#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Fuzzing campaign from a fresh clone: installs what is missing (ci/setup.sh), builds the
# fuzz targets of fuzz/ for one engine, fuzzes each target from its committed corpus into
# a scratch corpus under fuzz-out/, and reports executions per second and coverage.
#
#   ci/fuzz.sh --engine libfuzzer|afl [--seconds N] [--target NAME]... [--jobs N]
#              [--min-execs N] [--coverage]
#
#   --engine      libfuzzer (clang-14, libFuzzer + ASan + LeakSanitizer) or afl (AFL++
#                 4.04c persistent mode + ASan); both built through Bazel (fuzz/fuzz.bazelrc)
#   --seconds N   total campaign time, split evenly over the targets (default 240;
#                 120 with CI=true, so each engine's job stays near 2 minutes)
#   --target T    fuzz only T (repeatable): alloc_small, alloc_hardened_small,
#                 threads_small, threads_hardened_small, concurrent_small,
#                 concurrent_hardened_small, misuse_hardened_small (default: every
#                 target of fuzz/BUILD, as python3 fuzz/targets.py --names lists them)
#   --jobs N      N fuzzing processes per target at once, sharing its corpus (default 1):
#                 libFuzzer with -fork=N; AFL++ as one main (-M) and N-1 secondary (-S)
#                 instances in one output folder. Executions and exec/s are their sums
#   --min-execs N fail a target that ran fewer than N executions (default: 5 per
#                 second of the target's share, 100 in the CI-sized campaign of 20 s per
#                 target; a heavily loaded 2-core machine ran at least 260 there, see
#                 fuzz/README.md; 0 turns the check off)
#   --coverage    afterwards, replay each target's final corpus through a clang
#                 source-coverage build and report the lines of hakmem/*.c reached
#                 (llvm-cov-14); default outside CI (--no-coverage turns it off)
#   BAZEL         environment: the Bazel command (default "bazel")
#
# Before fuzzing, each target's seeds are replayed once (each in a process of its own);
# a crashing seed fails the run (it would hide what the campaign finds). Exits non-zero,
# with the reason, when a seed crashes, a target crashed (a failed check, a sanitizer
# or leak report), AFL++ recorded a hang, the engine exited with an error, or a target
# ran fewer executions than the minimum. Crash and hang inputs are copied to
# fuzz-out/crashes/<engine>-<target>-<name>. To keep one as a regression test, commit it
# as fuzz/corpus/<target>/crash-<what-it-shows>. Known regression inputs (crash-*
# files) are replayed by the tests, not fuzzed from.
set -euo pipefail
cd "$(dirname "$0")/.."

# The targets of fuzz/BUILD, as fuzz/targets.py reads them (one list for Bazel,
# ClusterFuzzLite and this script).
mapfile -t ALL_TARGETS < <(python3 fuzz/targets.py --names)
[ ${#ALL_TARGETS[@]} -gt 0 ] || { echo "ci/fuzz.sh: fuzz/targets.py listed no targets" >&2; exit 2; }

usage() {
  sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

engine="" seconds="" coverage="" min_execs="" jobs=1 targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --engine) engine="${2:-}"; shift 2 ;;
    --engine=*) engine="${1#*=}"; shift ;;
    --seconds) seconds="${2:-}"; shift 2 ;;
    --seconds=*) seconds="${1#*=}"; shift ;;
    --target) targets+=("${2:-}"); shift 2 ;;
    --target=*) targets+=("${1#*=}"); shift ;;
    --jobs) jobs="${2:-}"; shift 2 ;;
    --jobs=*) jobs="${1#*=}"; shift ;;
    --min-execs) min_execs="${2:-}"; shift 2 ;;
    --min-execs=*) min_execs="${1#*=}"; shift ;;
    --coverage) coverage=1; shift ;;
    --no-coverage) coverage=0; shift ;;
    -h|--help) usage ;;
    *) echo "ci/fuzz.sh: unknown argument '$1'" >&2; usage ;;
  esac
done
case "$engine" in
  libfuzzer|afl) ;;
  *) echo "ci/fuzz.sh: --engine libfuzzer|afl is required" >&2; usage ;;
esac
[ ${#targets[@]} -eq 0 ] && targets=("${ALL_TARGETS[@]}")
if ! [[ "$jobs" =~ ^[0-9]+$ ]] || [ "$jobs" -lt 1 ]; then
  echo "ci/fuzz.sh: --jobs wants a positive number" >&2
  exit 2
fi
for t in "${targets[@]}"; do
  [ -d "fuzz/corpus/$t" ] || { echo "ci/fuzz.sh: unknown target '$t' (have: ${ALL_TARGETS[*]})" >&2; exit 2; }
done

ci=0
[ "${CI:-}" = "true" ] && ci=1
if [ -z "$seconds" ]; then
  seconds=$((ci ? 120 : 240))
elif ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "ci/fuzz.sh: --seconds wants a positive number" >&2
  exit 2
fi
[ -z "$coverage" ] && coverage=$((ci ? 0 : 1))
per_target=$((seconds / ${#targets[@]}))
[ "$per_target" -lt 5 ] && per_target=5
# Minimum executions per target. Measured in the CI-sized campaign (CI=true: 120 s, 20 s
# per target) on a 2-core machine at load average 11 plus two busy loops: libFuzzer ran
# 260 to 528 per target, AFL++ 1463 to 10052 (fuzz/README.md). 5 per second (100 per
# 20 s) is 2.6 times below the slowest: it fails a harness or engine that stalls, not a
# busy machine.
if [ -z "$min_execs" ]; then
  min_execs=$((5 * per_target))
elif ! [[ "$min_execs" =~ ^[0-9]+$ ]]; then
  echo "ci/fuzz.sh: --min-execs wants a number" >&2
  exit 2
fi

bash ci/setup.sh

# BAZEL: the Bazel command (e.g. "bazel --output_base=..." to keep a separate server).
read -ra bazel <<< "${BAZEL:-bazel}"
bazel_flags=()
[ $ci -eq 1 ] && bazel_flags+=(--config=ci)

out="fuzz-out"
mkdir -p "$out/crashes"
echo '*' > "$out/.gitignore" # scratch space: never committed
rm -rf "${out:?}/$engine" "$out"/crashes/"$engine"-*
mkdir -p "$out/$engine/bin"

echo "== building the $engine targets (bazel build --config=$engine //fuzz:fuzzers)"
"${bazel[@]}" build "${bazel_flags[@]}" --config="$engine" //fuzz:fuzzers
bin_dir="$("${bazel[@]}" info "${bazel_flags[@]}" --config="$engine" bazel-bin 2>/dev/null)/fuzz"
for t in "${targets[@]}"; do
  # A copy: the next build of another configuration overwrites bazel-bin.
  cp -f "$bin_dir/${t}_fuzzer" "$out/$engine/bin/"
done

dict="fuzz/dict/hakmem.dict"
summary="$out/$engine/summary.txt"
crashes_total=0
printf '%-10s %-24s %7s %10s %9s  %-34s %s\n' engine target seconds execs "exec/s" coverage crashes > "$summary"

# Seeds for a campaign: the committed corpus without the known regressions (a campaign
# that starts from a crashing input stops at once).
seed_corpus() { # target dest
  mkdir -p "$2"
  find "fuzz/corpus/$1" -maxdepth 1 -type f ! -name 'crash-*' -exec cp {} "$2/" \;
}

run_libfuzzer() { # target -> sets execs eps cov crashes
  local t="$1" dir="$out/libfuzzer/$1"
  seed_corpus "$t" "$dir/corpus"
  mkdir -p "$dir/artifacts"
  local rc=0 fork=()
  # --jobs N: N child processes fuzz at once and merge what they find into the corpus
  # (-fork=N); crashes are artifacts as usual, and the first one stops the run.
  [ "$jobs" -gt 1 ] && fork=(-fork="$jobs")
  # -detect_leaks=1: LeakSanitizer checks the harness's own allocations (the input's
  # operation lists; the harness joins every thread it starts), hakmem's leaks are the
  # harness's exact per-input checks. It costs nothing per input: libFuzzer runs LSan
  # only after an input that did more mallocs than frees.
  ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1}" \
    "$out/libfuzzer/bin/${t}_fuzzer" "$dir/corpus" "${fork[@]}" \
    -max_total_time="$per_target" -dict="$dict" -max_len=4096 -timeout=30 -rss_limit_mb=4096 \
    -detect_leaks=1 -print_final_stats=1 -artifact_prefix="$dir/artifacts/" \
    > "$dir/log.txt" 2>&1 || rc=$?
  local total
  total=$(grep -m1 -oE 'Loaded [0-9]+ modules +\([0-9]+ inline 8-bit counters' "$dir/log.txt" | grep -oE '[0-9]+ inline' | grep -oE '[0-9]+' || true)
  local last
  last=$(grep -E '^#[0-9]+' "$dir/log.txt" | grep -E 'cov: [0-9]+' | tail -1 || true)
  cov=$(echo "$last" | grep -oE 'cov: [0-9]+' | grep -oE '[0-9]+' || echo 0)
  local ft
  ft=$(echo "$last" | grep -oE 'ft: [0-9]+' | grep -oE '[0-9]+' || echo 0)
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$dir/log.txt" | grep -oE '[0-9]+$' || echo "${last%% *}" | tr -d '#:')
  eps=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$dir/log.txt" | grep -oE '[0-9]+$' || echo "?")
  if [ "$jobs" -gt 1 ]; then
    # Fork mode prints no final stats: its progress lines count every child's
    # executions, over the whole run.
    eps=$((execs / per_target))
  fi
  if [ "$jobs" -gt 1 ]; then
    cov="$cov edges (fork mode, counted its own way), ft $ft"
  elif [ -n "$total" ] && [ "$total" -gt 0 ]; then
    cov="$cov/$total edges ($((100 * cov / total))%), ft $ft"
  else
    cov="$cov edges, ft $ft"
  fi
  crashes=0
  for f in "$dir"/artifacts/*; do
    [ -f "$f" ] || continue
    cp "$f" "$out/crashes/libfuzzer-$t-$(basename "$f")"
    crashes=$((crashes + 1))
  done
  if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
    problems+=("$t: libFuzzer exited with $rc and left no artifact; see $dir/log.txt")
  fi
}

run_afl() { # target -> sets execs eps cov crashes
  local t="$1" dir="$out/afl/$1"
  seed_corpus "$t" "$dir/seeds"
  local rc=0
  # No AFL_SKIP_CRASHES: the seeds were replayed first (replay_seeds), so a seed that
  # crashes now is a problem of its own, and afl-fuzz stops on it.
  # AFL_FAST_CAL: calibrate seeds with fewer runs (the concurrent targets are unstable
  # by design, and slow calibration would eat their share of a short campaign).
  # One instance (--jobs 1) is AFL's "default"; --jobs N runs a main (-M main: the
  # deterministic stages) and N-1 secondaries (-S secN) in one output folder, where
  # they pick up each other's finds.
  local names=(default) i pids=() name
  if [ "$jobs" -gt 1 ]; then
    names=(main)
    for ((i = 1; i < jobs; i++)); do names+=("sec$i"); done
  fi
  for name in "${names[@]}"; do
    local role=()
    [ "$name" = main ] && role=(-M main)
    [[ "$name" == sec* ]] && role=(-S "$name")
    AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 \
      AFL_NO_AFFINITY=1 AFL_QUIET=1 AFL_FAST_CAL=1 \
      afl-fuzz -i "$dir/seeds" -o "$dir/out" "${role[@]}" -x "$dict" -t 2000 -V "$per_target" \
      -- "$out/afl/bin/${t}_fuzzer" > "$dir/log-$name.txt" 2>&1 &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { rc=$?; problems+=("$t: afl-fuzz (${names[$i]}) exited with $rc; see $dir/log-${names[$i]}.txt"); }
  done
  ln -sf "log-${names[0]}.txt" "$dir/log.txt"
  execs=0 eps=0 cov="-" crashes=0
  local started=0 e p hangs=0 f stats
  field() { grep -E "^$1 *:" "$stats" | sed 's/^[^:]*: *//'; }
  for name in "${names[@]}"; do
    stats="$dir/out/$name/fuzzer_stats"
    if [ ! -f "$stats" ]; then
      tail -5 "$dir/log-$name.txt" >&2 || true
      problems+=("$t: afl-fuzz ($name) did not start; see $dir/log-$name.txt")
      continue
    fi
    started=$((started + 1))
    e=$(field execs_done) p=$(field execs_per_sec)
    execs=$((execs + e))
    eps=$(awk -v a="$eps" -v b="$p" 'BEGIN { printf "%.2f", a + b }')
    # Coverage: the main instance's view (each instance's bitmap holds what it saw).
    [ "$name" = "${names[0]}" ] && cov="$(field edges_found)/$(field total_edges) edges ($(field bitmap_cvg)), stability $(field stability)"
    for f in "$dir/out/$name"/crashes/id:*; do
      [ -f "$f" ] || continue
      cp "$f" "$out/crashes/afl-$t-$name-$(basename "$f" | tr ':,' '_-')"
      crashes=$((crashes + 1))
    done
    # A hang: an input that ran past -t (2 s; the harness bounds its work to ~1 ms).
    for f in "$dir/out/$name"/hangs/id:*; do
      [ -f "$f" ] || continue
      cp "$f" "$out/crashes/afl-$t-hang-$name-$(basename "$f" | tr ':,' '_-')"
      hangs=$((hangs + 1))
    done
  done
  [ "$started" -eq 0 ] && eps="?"
  if [ "$hangs" -gt 0 ]; then
    problems+=("$t: AFL++ recorded $hangs hang(s) (inputs over 2 s), copied to $out/crashes/afl-$t-hang-*")
  fi
  # The campaign's corpus (every instance's queue), flat, for --coverage.
  mkdir -p "$dir/corpus"
  find "$dir"/out/*/queue -maxdepth 1 -type f -exec cp {} "$dir/corpus/" \; 2>/dev/null || true
}

# Every seed once, through the engine's binary, in one process (libFuzzer's with
# -runs=0; AFL's replays files given as arguments). A crashing seed would stop the
# campaign (or, skipped, hide); it fails the run instead. Only then is each seed run
# in a process of its own, to count the crashing ones.
replay_seeds() { # target
  local t="$1" dir="$out/$engine/$1" bin="$out/$engine/bin/$1_fuzzer" rc=0 n=0 f
  local log="$dir/seeds-replay.txt"
  rm -rf "$dir/seeds-check"
  seed_corpus "$t" "$dir/seeds-check"
  local asan="${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1}" args=()
  [ "$engine" = libfuzzer ] && args=(-runs=0 -detect_leaks=1)
  ASAN_OPTIONS="$asan" "$bin" "${args[@]}" "$dir/seeds-check" > "$log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    for f in "$dir"/seeds-check/*; do
      ASAN_OPTIONS="$asan" "$bin" "${args[@]}" "$f" >> "$log" 2>&1 || { n=$((n + 1)); echo "crashing seed: $f" >> "$log"; }
    done
    # A crash that needs the state earlier seeds left behind still counts, as one.
    [ "$n" -eq 0 ] && n=1
    problems+=("$t: $n committed seed(s) crash before any fuzzing (fuzz/corpus/$t; see $log)")
  fi
  rm -rf "$dir/seeds-check"
  return "$rc"
}

problems=()
for t in "${targets[@]}"; do
  echo "== $engine: $t for ${per_target}s (log: $out/$engine/$t/log.txt)"
  execs=0 eps="?" cov="-" crashes=0
  mkdir -p "$out/$engine/$t"
  if replay_seeds "$t"; then
    "run_$engine" "$t"
  fi
  crashes_total=$((crashes_total + crashes))
  if [ "$min_execs" -gt 0 ] && [[ "$execs" =~ ^[0-9]+$ ]] && [ "$execs" -lt "$min_execs" ]; then
    problems+=("$t: only $execs executions in ${per_target}s, fewer than the minimum of $min_execs (--min-execs)")
  fi
  printf '%-10s %-24s %7s %10s %9s  %-34s %s\n' "$engine" "$t" "$per_target" "$execs" "$eps" "$cov" "$crashes" | tee -a "$summary"
done

if [ "$coverage" -eq 1 ]; then
  echo "== line coverage of hakmem by each final corpus (bazel build --config=fuzzcov; llvm-cov-14)"
  "${bazel[@]}" build "${bazel_flags[@]}" --config=fuzzcov //fuzz:fuzzers
  cov_bin="$("${bazel[@]}" info "${bazel_flags[@]}" --config=fuzzcov bazel-bin 2>/dev/null)/fuzz"
  for t in "${targets[@]}"; do
    dir="$out/$engine/$t"
    [ -d "$dir/corpus" ] || continue
    rm -rf "$dir/profiles"
    mkdir -p "$dir/profiles"
    # Crashing inputs would stop the replay: the corpus holds none (libFuzzer keeps
    # them in artifacts/, AFL in crashes/), so every input runs.
    LLVM_PROFILE_FILE="$dir/profiles/%p.profraw" \
      "$cov_bin/${t}_fuzzer" "$dir/corpus" > "$dir/coverage-replay.txt" 2>&1 || true
    llvm-profdata-14 merge -sparse "$dir"/profiles/*.profraw -o "$dir/corpus.profdata"
    llvm-cov-14 report "$cov_bin/${t}_fuzzer" -instr-profile="$dir/corpus.profdata" \
      -ignore-filename-regex='(fuzz/|bazel-out/)' > "$dir/coverage.txt" 2>/dev/null || true
    line=$(grep -E '^TOTAL' "$dir/coverage.txt" | awk '{print "lines " $(NF-3) " of hakmem/*.c (" $(NF-4) " missed of " $(NF-5) "), functions " $(NF-6) ", regions " $(NF-9)}')
    echo "$engine $t: ${line:-no report, see $dir/coverage.txt}" | tee -a "$summary"
  done
fi

echo
echo "== summary ($summary)"
cat "$summary"
status=0
if [ "$crashes_total" -gt 0 ]; then
  echo
  echo "ci/fuzz.sh: $crashes_total crash(es); inputs in $out/crashes/:"
  ls -1 "$out/crashes/" | grep "^$engine-" | sed 's/^/  /'
  echo "Reproduce: $out/$engine/bin/<target>_fuzzer <input>   (HAK_FUZZ_TRACE=1 lists its operations)"
  echo "Keep as a regression test: cp <input> fuzz/corpus/<target>/crash-<what-it-shows>"
  status=1
fi
if [ ${#problems[@]} -gt 0 ]; then
  echo
  echo "ci/fuzz.sh: FAILED ($engine):"
  printf '  %s\n' "${problems[@]}"
  status=1
fi
exit $status
