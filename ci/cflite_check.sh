#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Checks .clusterfuzzlite/build.sh without Docker: runs it with the variables
# OSS-Fuzz's base-builder image sets, for libFuzzer + ASan, libFuzzer + UBSan and AFL++
# + ASan, then runs every built target: 1000 libFuzzer executions from its seed corpus
# (the zip build.sh wrote; 300 for the misuse target, which forks per input and must
# reach 200 edges: its children's coverage counts), each seed once through the AFL++
# driver, and 5 s of afl-fuzz on one target. Fails when a build fails, a target is
# missing, a run fails, or the misuse target's coverage stays at its harness's.
#
#   ci/cflite_check.sh [--keep]      (--keep: leave the scratch folder, printed)
#
# Differences from the real image, which this machine cannot run: Debian's clang-14
# and AFL++ 4.04c (/usr/lib/afl/libAFLDriver.a) instead of the image's own, and no
# -stdlib=libc++ in CXXFLAGS (Debian has no libc++ here; the targets are C).
set -euo pipefail
cd "$(dirname "$0")/.."
keep=0
[ "${1:-}" = --keep ] && keep=1

bash ci/setup.sh
scratch="$(mktemp -d /tmp/hakmem-cflite.XXXXXX)"
[ $keep -eq 1 ] || trap 'rm -rf "$scratch"' EXIT
targets=($(python3 fuzz/targets.py --names))
common="-O1 -fno-omit-frame-pointer -gline-tables-only"
asan="-fsanitize=address -fsanitize-address-use-after-scope"
ubsan="-fsanitize=array-bounds,bool,builtin,enum,float-divide-by-zero,function,integer-divide-by-zero,null,object-size,return,returns-nonnull-attribute,shift,signed-integer-overflow,unsigned-integer-overflow,unreachable,vla-bound -fno-sanitize-recover=array-bounds,bool,builtin,enum,float-divide-by-zero,function,integer-divide-by-zero,null,object-size,return,returns-nonnull-attribute,shift,signed-integer-overflow,unreachable,vla-bound"
failed=()

build() { # name engine sanitizer CC CXX CFLAGS LIB_FUZZING_ENGINE
  local out="$scratch/$1/out" t0=$SECONDS
  mkdir -p "$out" "$scratch/$1/work" "$scratch/$1/src"
  echo "== build.sh: $2 + $3 (CC=$4)"
  if ! env SRC="$scratch/$1/src" OUT="$out" WORK="$scratch/$1/work" FUZZING_ENGINE="$2" SANITIZER="$3" \
      FUZZING_LANGUAGE=c ARCHITECTURE=x86_64 CC="$4" CXX="$5" CFLAGS="$6" CXXFLAGS="$6" \
      LIB_FUZZING_ENGINE="$7" AFL_QUIET=1 bash .clusterfuzzlite/build.sh > "$scratch/$1/build.log" 2>&1; then
    tail -20 "$scratch/$1/build.log"
    failed+=("$1: build.sh failed (see $scratch/$1/build.log)")
    return 1
  fi
  echo "   built in $((SECONDS - t0)) s"
  local t
  for t in "${targets[@]}"; do
    for f in "$t" "${t}_seed_corpus.zip" "$t.dict"; do
      [ -f "$out/$f" ] || failed+=("$1: build.sh wrote no $out/$f")
    done
  done
}

seeds() { # config target -> a folder of its seeds
  local d="$scratch/$1/seeds-$2"
  rm -rf "$d" && mkdir -p "$d" && unzip -q "$scratch/$1/out/$2_seed_corpus.zip" -d "$d"
  echo "$d"
}

run_libfuzzer() { # config
  local t out="$scratch/$1/out" d rc runs
  for t in "${targets[@]}"; do
    d=$(seeds "$1" "$t")
    rc=0 runs=1000
    # misuse_hardened_small forks a child per input (a few hundred executions per second).
    [[ "$t" == misuse_* ]] && runs=300
    "$out/$t" -runs=$runs -dict="$out/$t.dict" -max_len=4096 -artifact_prefix="$scratch/$1/crash-$t-" "$d" > "$scratch/$1/run-$t.log" 2>&1 || rc=$?
    printf '   %-28s %s\n' "$t" "$(grep -E '^#[0-9]+[[:space:]]+DONE' "$scratch/$1/run-$t.log" | sed 's/ *rss.*//' || echo "exit $rc")"
    [ $rc -eq 0 ] || failed+=("$1: $t exited with $rc (see $scratch/$1/run-$t.log)")
    if [[ "$t" == misuse_* ]]; then
      # Its inputs run in children (fuzz/fork_server.c), whose coverage the engine adds
      # to its own: without that it sees only the harness's verdict code, about 30 edges.
      local cov
      cov=$(grep -oE 'DONE +cov: [0-9]+' "$scratch/$1/run-$t.log" | grep -oE '[0-9]+$' || echo 0)
      [ "$cov" -ge 200 ] || failed+=("$1: $t reached $cov edges: the children's coverage did not reach libFuzzer")
    fi
  done
}

run_afl() { # config
  local t out="$scratch/$1/out" d rc f n
  for t in "${targets[@]}"; do
    d=$(seeds "$1" "$t")
    rc=0 n=0
    for f in "$d"/*; do
      "$out/$t" "$f" >> "$scratch/$1/run-$t.log" 2>&1 || { rc=$?; break; }
      n=$((n + 1))
    done
    printf '   %-28s %s seeds through the AFL++ driver\n' "$t" "$n"
    [ $rc -eq 0 ] || failed+=("$1: $t exited with $rc on $f (see $scratch/$1/run-$t.log)")
  done
  t=alloc_small
  d=$(seeds "$1" "$t")
  rc=0
  AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_QUIET=1 \
    AFL_FAST_CAL=1 afl-fuzz -i "$d" -o "$scratch/$1/afl-$t" -x "$out/$t.dict" -t 2000 -V 5 -- "$out/$t" \
    > "$scratch/$1/afl-$t.log" 2>&1 || rc=$?
  local stats="$scratch/$1/afl-$t/default/fuzzer_stats"
  if [ $rc -ne 0 ] || [ ! -f "$stats" ]; then
    tail -5 "$scratch/$1/afl-$t.log"
    failed+=("$1: afl-fuzz on $t failed (exit $rc)")
    return
  fi
  local crashes
  crashes=$(find "$scratch/$1/afl-$t/default/crashes" -name 'id:*' | wc -l)
  echo "   afl-fuzz $t 5 s: $(grep -E '^execs_done' "$stats" | sed 's/ *: */ /'), $(grep -E '^execs_per_sec' "$stats" | sed 's/ *: */ /'), crashes $crashes"
  [ "$crashes" -eq 0 ] || failed+=("$1: afl-fuzz found $crashes crash(es) in $t")
}

start=$SECONDS
if build libfuzzer-address libfuzzer address clang clang++ "$common $asan -fsanitize=fuzzer-no-link" -fsanitize=fuzzer; then
  run_libfuzzer libfuzzer-address
fi
if build libfuzzer-undefined libfuzzer undefined clang clang++ "$common $ubsan -fsanitize=fuzzer-no-link" -fsanitize=fuzzer; then
  run_libfuzzer libfuzzer-undefined
fi
if build afl-address afl address afl-clang-fast afl-clang-fast++ "$common $asan" /usr/lib/afl/libAFLDriver.a; then
  run_afl afl-address
fi
echo "== ci/cflite_check.sh: $((SECONDS - start)) s"
[ $keep -eq 1 ] && echo "scratch: $scratch"
if [ ${#failed[@]} -gt 0 ]; then
  echo "ci/cflite_check.sh: FAILED:"
  printf '  %s\n' "${failed[@]}"
  exit 1
fi
echo "ci/cflite_check.sh: OK (${#targets[@]} targets, 3 builds)"
