#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Integration test of one hakmem variant: real programs run under LD_PRELOAD of the
# variant's shared library and their output is checked.
#
# Usage (Bazel passes both, see integration_test.bzl):
#   integration_test.sh VARIANT LIB_RUNFILES_PATH
#     VARIANT            release | stats | hardened (what hak_variant() returns)
#     LIB_RUNFILES_PATH  the library's path in the runfiles tree, e.g. hakmem/libhakmem.so
#
# Workloads (each one checks exit status and exact expected output):
#   maps     `cat /proc/self/maps` under LD_PRELOAD lists the library
#   symbols  every allocator entry point glibc's libc.so.6 exports (malloc ... mallopt,
#            the __libc_* names, cfree) is defined by the library: none of them may
#            hand out glibc memory that hakmem's free would misread; and every
#            operator new and delete libstdc++ defines, so C++ reaches hakmem directly
#   probe    a C program compiled here reports that malloc and free come from the
#            library and that hak_variant() is VARIANT
#   python   /usr/bin/python3 (PYTHONMALLOC=malloc) on workload.py: output equal to a run
#            without LD_PRELOAD; for the stats variant, HAKMEM_STATS=1 and the report is
#            checked (variant name, "Size classes", alloc fast > 10000)
#   git      init, 200 files, two commits, log, gc, fsck, diff --stat, object counts,
#            commit id equal to the same history built without LD_PRELOAD
#   sqlite3  100k rows in one transaction (recursive CTE), index, exact aggregates
#   gcc      compiles prog.c with -O2 (the compiler under LD_PRELOAD), runs it (also
#            under LD_PRELOAD), exact output
#   double_free  (hardened only) a double free dies with hakmem's fault message
#
# A failing check prints "FAIL [variant=V workload=W]: ..." with the failing command's
# stderr; the remaining workloads still run, and the script exits 1 at the end.

set -uo pipefail

VARIANT="${1:?usage: integration_test.sh VARIANT LIB_RUNFILES_PATH}"
LIB_REL="${2:?usage: integration_test.sh VARIANT LIB_RUNFILES_PATH}"

# ---- Environment --------------------------------------------------------------------

if [[ -n "${TEST_SRCDIR:-}" ]]; then
  RUNFILES="$TEST_SRCDIR"
elif [[ -n "${RUNFILES_DIR:-}" ]]; then
  RUNFILES="$RUNFILES_DIR"
else
  RUNFILES="$0.runfiles"
fi
WORKSPACE_DIR="$RUNFILES/${TEST_WORKSPACE:-hakmem}"
DATA_DIR="$WORKSPACE_DIR/tests/integration"
LIB="$WORKSPACE_DIR/$LIB_REL"
LIB_BASE="$(basename "$LIB_REL")"

SCRATCH="${TEST_TMPDIR:-$(mktemp -d)}/integ_$VARIANT"
rm -rf "$SCRATCH"
mkdir -p "$SCRATCH/home" "$SCRATCH/tmp"

export PATH=/usr/bin:/bin
export HOME="$SCRATCH/home"
export TMPDIR="$SCRATCH/tmp"
export LC_ALL=C
export GIT_CONFIG_NOSYSTEM=1
export GIT_AUTHOR_NAME="hakmem test" GIT_AUTHOR_EMAIL="test@hakmem.invalid"
export GIT_COMMITTER_NAME="hakmem test" GIT_COMMITTER_EMAIL="test@hakmem.invalid"
unset LD_PRELOAD HAKMEM_STATS PYTHONMALLOC PYTHONHASHSEED GIT_DIR GIT_WORK_TREE
ulimit -c 0 2>/dev/null || true # the hardened check aborts on purpose: no core files

CMD_TIMEOUT=120 # seconds for any one command; a hang is reported, not waited out

# ---- Helpers ------------------------------------------------------------------------

FAILED=()
OUT="$SCRATCH/step.out"
ERR="$SCRATCH/step.err"

fail() { # WORKLOAD MESSAGE
  echo "FAIL [variant=$VARIANT workload=$1]: $2" >&2
  FAILED+=("$1")
}

describe_status() { # STATUS
  local st=$1
  if ((st == 124)); then
    echo "timed out after ${CMD_TIMEOUT}s (hang?)"
  elif ((st > 128)); then
    echo "killed by signal SIG$(kill -l $((st - 128)) 2>/dev/null || echo $((st - 128))) (exit status $st)"
  else
    echo "exit status $st"
  fi
}

show() { # LABEL FILE: the end of a file, indented, for failure messages
  if [[ -s "$2" ]]; then
    echo "  --- $1 (last 25 lines of $2) ---" >&2
    tail -n 25 "$2" | sed 's/^/  | /' >&2
  else
    echo "  --- $1: (empty) ---" >&2
  fi
}

# Runs a command under LD_PRELOAD of the library under test.
pre() {
  timeout -k 10 "$CMD_TIMEOUT" env LD_PRELOAD="$LIB" "$@"
}

# Runs a command without hakmem, for reference results.
plain() {
  timeout -k 10 "$CMD_TIMEOUT" env -u LD_PRELOAD "$@"
}

# step WORKLOAD DESCRIPTION CMD...: runs CMD under LD_PRELOAD with stdout in $OUT and
# stderr in $ERR; on a non-zero status reports the failure and returns 1.
step() {
  local workload=$1 desc=$2
  shift 2
  pre "$@" >"$OUT" 2>"$ERR" </dev/null
  local st=$?
  if ((st != 0)); then
    fail "$workload" "'$desc' under LD_PRELOAD=$LIB_BASE: $(describe_status $st)"
    show stdout "$OUT"
    show stderr "$ERR"
    return 1
  fi
  return 0
}

# expect_file WORKLOAD DESCRIPTION EXPECTED_FILE ACTUAL_FILE
expect_file() {
  if ! cmp -s "$3" "$4"; then
    fail "$1" "$2: output differs from the expected output (diff expected actual):"
    diff "$3" "$4" | head -n 40 | sed 's/^/  | /' >&2
    return 1
  fi
  return 0
}

run_workload() { # NAME FUNCTION
  local name=$1 start=$SECONDS
  echo "== $name ($VARIANT)"
  if "$2"; then
    echo "   ok ($((SECONDS - start)) s)"
  else
    echo "   FAILED ($((SECONDS - start)) s)"
  fi
}

# ---- Workloads ----------------------------------------------------------------------

check_maps() {
  step maps "cat /proc/self/maps" cat /proc/self/maps || return 1
  if ! grep -qE "/${LIB_BASE//./\\.}\$" "$OUT"; then
    fail maps "/proc/self/maps of a preloaded 'cat' does not list $LIB_BASE"
    show "maps" "$OUT"
    return 1
  fi
}

# Allocator entry points: the malloc family, glibc's statistics and tuning calls, and
# their __libc_* names (glibc's debugging hooks, mcheck and mtrace are not entry points).
ALLOC_NAMES_RE='(__libc_)?(malloc|free|calloc|realloc|reallocarray|memalign|valloc|pvalloc|mallinfo2?|mallopt)|aligned_alloc|posix_memalign|cfree|malloc_(usable_size|trim|stats|info)'

check_symbols() {
  local libc
  libc="$(gcc -print-file-name=libc.so.6)"
  if [[ ! -f "$libc" ]]; then
    fail symbols "glibc's libc.so.6 not found (gcc -print-file-name=libc.so.6: $libc)"
    return 1
  fi
  nm -D --defined-only "$libc" | awk '{print $3}' | grep -v '@GLIBC_PRIVATE' | sed 's/@.*//' |
    grep -xE "$ALLOC_NAMES_RE" | sort -u >"$SCRATCH/glibc.names"
  nm -D --defined-only "$LIB" | awk '{print $3}' | sed 's/@.*//' | sort -u >"$SCRATCH/lib.names"
  local count missing
  count=$(wc -l <"$SCRATCH/glibc.names")
  if ((count < 20)); then
    fail symbols "only $count allocator names found in $libc: the list cannot be right"
    show "glibc names" "$SCRATCH/glibc.names"
    return 1
  fi
  missing="$(comm -23 "$SCRATCH/glibc.names" "$SCRATCH/lib.names" | tr '\n' ' ')"
  if [[ -n "$missing" ]]; then
    fail symbols "glibc exports allocator names $LIB_BASE does not define: $missing"
    return 1
  fi
  echo "   $count allocator names of glibc, all defined"
  local libstdcxx
  libstdcxx="$(g++ -print-file-name=libstdc++.so.6 2>/dev/null || true)"
  if [[ ! -f "$libstdcxx" ]]; then
    echo "   (no libstdc++.so.6 found: operator new and delete not compared)"
    return 0
  fi
  nm -D --defined-only "$libstdcxx" | awk '{print $3}' | sed 's/@.*//' | grep -E '^_Z(n[wa]|d[la])' |
    sort -u >"$SCRATCH/cxx.names"
  count=$(wc -l <"$SCRATCH/cxx.names")
  missing="$(comm -23 "$SCRATCH/cxx.names" "$SCRATCH/lib.names" | tr '\n' ' ')"
  if ((count < 20)) || [[ -n "$missing" ]]; then
    fail symbols "libstdc++ defines $count operator new/delete forms; $LIB_BASE lacks: ${missing:-none}"
    return 1
  fi
  echo "   $count operator new and delete forms of libstdc++, all defined"
}

check_probe() {
  step probe "gcc -O2 probe.c" gcc -O2 -Wall -o "$SCRATCH/probe" "$DATA_DIR/probe.c" -ldl || return 1
  step probe "run probe" "$SCRATCH/probe" || return 1
  local ok=1
  grep -qE "^malloc from .*/${LIB_BASE//./\\.}\$" "$OUT" || ok=0
  grep -qE "^free from .*/${LIB_BASE//./\\.}\$" "$OUT" || ok=0
  grep -qx "variant $VARIANT" "$OUT" || ok=0
  grep -qx "malloc(100) ok 1" "$OUT" || ok=0
  if ((ok == 0)); then
    fail probe "malloc/free are not $LIB_BASE's, or hak_variant() is not '$VARIANT'"
    show stdout "$OUT"
    return 1
  fi
}

check_python() {
  local base="$SCRATCH/python.base" extra=()
  plain env PYTHONMALLOC=malloc /usr/bin/python3 "$DATA_DIR/workload.py" >"$base" 2>"$ERR" </dev/null
  local st=$?
  if ((st != 0)) || ! grep -q '^checksum [0-9a-f]\{64\}$' "$base"; then
    fail python "reference run WITHOUT LD_PRELOAD failed ($(describe_status $st)): test environment problem"
    show stdout "$base"
    show stderr "$ERR"
    return 1
  fi
  [[ "$VARIANT" == stats ]] && extra=(HAKMEM_STATS=1)
  step python "python3 workload.py" env PYTHONMALLOC=malloc "${extra[@]}" \
    /usr/bin/python3 "$DATA_DIR/workload.py" || return 1
  expect_file python "python3 workload.py (checksum vs. the run without LD_PRELOAD)" "$base" "$OUT" || return 1

  if [[ "$VARIANT" != stats ]]; then
    if [[ -s "$ERR" ]]; then
      fail python "python3 wrote to stderr under LD_PRELOAD=$LIB_BASE"
      show stderr "$ERR"
      return 1
    fi
    return 0
  fi
  # Stats variant: the report proves the process's allocations went through hakmem.
  local reports fast
  reports=$(grep -c '^hakmem stats report (variant stats, pid [0-9]*)$' "$ERR")
  if ((reports != 1)); then
    fail python "HAKMEM_STATS=1: expected exactly one 'hakmem stats report (variant stats, pid N)' line on stderr, found $reports"
    show stderr "$ERR"
    return 1
  fi
  if ! grep -q '^Size classes' "$ERR"; then
    fail python "HAKMEM_STATS=1: stats report has no 'Size classes' section"
    show stderr "$ERR"
    return 1
  fi
  fast=$(awk '$1 == "alloc" && $2 == "fast" { print $3 }' "$ERR")
  if [[ ! "$fast" =~ ^[0-9]+$ ]] || ((fast <= 10000)); then
    fail python "HAKMEM_STATS=1: 'alloc fast' counter is '${fast:-missing}', expected > 10000"
    show stderr "$ERR"
    return 1
  fi
  echo "   stats report: alloc fast = $fast"
}

# Writes the scratch repository's files: 200 files in 10 directories (round 1), or
# modifies every fourth file (round 2: one line changed, one appended).
git_write_files() { # DIR ROUND
  local dir=$1 round=$2 i d
  for ((i = 0; i < 200; i++)); do
    d="$dir/dir$((i % 10))"
    mkdir -p "$d"
    if ((round == 1)); then
      printf 'file %03d line 1\nfile %03d line 2\nfile %03d line 3\n' $i $i $i >"$d/f$(printf %03d $i).txt"
    elif ((i % 4 == 0)); then
      printf 'file %03d line 1\nfile %03d line 2 CHANGED\nfile %03d line 3\nfile %03d line 4\n' \
        $i $i $i $i >"$d/f$(printf %03d $i).txt"
    fi
  done
}

# Builds the two-commit history in DIR, running git through RUNNER (pre or plain).
git_build_history() { # RUNNER DIR
  local run=$1 dir=$2
  local -a g=("$run" git -C "$dir" -c gc.autoDetach=false)
  $run git init -q -b main "$dir" >"$OUT" 2>"$ERR" </dev/null || return 1
  git_write_files "$dir" 1
  GIT_AUTHOR_DATE="2024-01-01T00:00:00Z" GIT_COMMITTER_DATE="2024-01-01T00:00:00Z" \
    "${g[@]}" add -A >"$OUT" 2>"$ERR" </dev/null || return 1
  GIT_AUTHOR_DATE="2024-01-01T00:00:00Z" GIT_COMMITTER_DATE="2024-01-01T00:00:00Z" \
    "${g[@]}" commit -q -m "first: 200 files" >"$OUT" 2>"$ERR" </dev/null || return 1
  git_write_files "$dir" 2
  GIT_AUTHOR_DATE="2024-01-02T00:00:00Z" GIT_COMMITTER_DATE="2024-01-02T00:00:00Z" \
    "${g[@]}" commit -q -a -m "second: modify 50 files" >"$OUT" 2>"$ERR" </dev/null || return 1
}

check_git() {
  local repo="$SCRATCH/repo" ref="$SCRATCH/repo_ref" g
  g=(git -C "$repo" -c gc.autoDetach=false)

  if ! git_build_history plain "$ref"; then
    fail git "reference history WITHOUT LD_PRELOAD could not be built: test environment problem"
    show stderr "$ERR"
    return 1
  fi
  local ref_head
  ref_head=$(git -C "$ref" rev-parse HEAD)

  step git "git init" git init -q -b main "$repo" || return 1
  git_write_files "$repo" 1
  export GIT_AUTHOR_DATE="2024-01-01T00:00:00Z" GIT_COMMITTER_DATE="2024-01-01T00:00:00Z"
  step git "git add -A (200 files)" "${g[@]}" add -A || return 1
  step git "git commit (first)" "${g[@]}" commit -q -m "first: 200 files" || return 1
  git_write_files "$repo" 2
  export GIT_AUTHOR_DATE="2024-01-02T00:00:00Z" GIT_COMMITTER_DATE="2024-01-02T00:00:00Z"
  step git "git commit -a (second)" "${g[@]}" commit -q -a -m "second: modify 50 files" || return 1
  unset GIT_AUTHOR_DATE GIT_COMMITTER_DATE

  step git "git status --porcelain" "${g[@]}" status --porcelain || return 1
  if [[ -s "$OUT" ]]; then
    fail git "'git status --porcelain' after the commits is not clean"
    show stdout "$OUT"
    return 1
  fi

  step git "git log --oneline" "${g[@]}" log --oneline || return 1
  local commits
  commits=$(wc -l <"$OUT")
  if ((commits != 2)); then
    fail git "'git log --oneline | wc -l' is $commits, expected 2"
    show stdout "$OUT"
    return 1
  fi

  step git "git rev-parse HEAD" "${g[@]}" rev-parse HEAD || return 1
  if [[ "$(cat "$OUT")" != "$ref_head" ]]; then
    fail git "HEAD is $(cat "$OUT"), but the same history built without LD_PRELOAD has HEAD $ref_head"
    return 1
  fi

  step git "git gc" "${g[@]}" gc --quiet || return 1
  step git "git count-objects -v" "${g[@]}" count-objects -v || return 1
  # 200 + 50 blobs, 10 + 1 and 5 + 1 trees, 2 commits; all packed by gc.
  if ! grep -qx "count: 0" "$OUT" || ! grep -qx "in-pack: 269" "$OUT" || ! grep -qx "packs: 1" "$OUT"; then
    fail git "after 'git gc', 'git count-objects -v' does not show 0 loose and 269 packed objects in 1 pack"
    show stdout "$OUT"
    return 1
  fi

  step git "git fsck --full --strict" "${g[@]}" fsck --full --strict --no-progress || return 1
  if [[ -s "$OUT" ]] || grep -qiE 'error|missing|dangling|broken|corrupt' "$ERR"; then
    fail git "'git fsck --full --strict' reported problems"
    show stdout "$OUT"
    show stderr "$ERR"
    return 1
  fi

  step git "git diff HEAD~1 --stat" "${g[@]}" diff HEAD~1 --stat || return 1
  local files summary
  files=$(grep -c '^ dir[0-9]/f[0-9]\{3\}\.txt *| *3 ++-$' "$OUT")
  summary=$(tail -n 1 "$OUT")
  if ((files != 50)) || [[ "$summary" != " 50 files changed, 100 insertions(+), 50 deletions(-)" ]]; then
    fail git "'git diff HEAD~1 --stat' lists $files files (expected 50) and ends with '$summary' (expected ' 50 files changed, 100 insertions(+), 50 deletions(-)')"
    show stdout "$OUT"
    return 1
  fi

  step git "git show HEAD:dir0/f100.txt" "${g[@]}" show HEAD:dir0/f100.txt || return 1
  printf 'file 100 line 1\nfile 100 line 2 CHANGED\nfile 100 line 3\nfile 100 line 4\n' >"$SCRATCH/git.expected"
  expect_file git "git show HEAD:dir0/f100.txt" "$SCRATCH/git.expected" "$OUT" || return 1
}

check_sqlite() {
  local db="$SCRATCH/test.db"
  cat >"$SCRATCH/sqlite.sql" <<'EOF'
PRAGMA journal_mode=WAL;
CREATE TABLE t(id INTEGER PRIMARY KEY, grp INTEGER NOT NULL, val INTEGER NOT NULL, name TEXT NOT NULL);
BEGIN;
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000)
INSERT INTO t(id, grp, val, name) SELECT x, x % 7, x * 3, 'name-' || x FROM c;
COMMIT;
CREATE INDEX t_grp_val ON t(grp, val);
SELECT 'count', count(*) FROM t;
SELECT 'sum', sum(val) FROM t;
SELECT 'namelen', sum(length(name)) FROM t;
SELECT 'group', grp, count(*), sum(val) FROM t GROUP BY grp ORDER BY grp;
SELECT 'range', count(*), sum(val) FROM t WHERE grp = 3 AND val BETWEEN 30000 AND 60000;
DELETE FROM t WHERE id % 10 = 0;
SELECT 'after_delete', count(*), sum(val) FROM t;
SELECT 'integrity', * FROM pragma_integrity_check;
EOF
  cat >"$SCRATCH/sqlite.expected" <<'EOF'
wal
count|100000
sum|15000150000
namelen|988895
group|0|14285|2142792855
group|1|14286|2142835713
group|2|14286|2142878571
group|3|14286|2142921429
group|4|14286|2142964287
group|5|14286|2143007145
group|6|14285|2142750000
range|1428|64262142
after_delete|90000|13500000000
integrity|ok
EOF
  step sqlite3 "sqlite3 (100k rows, index, aggregates)" sqlite3 -batch -bail "$db" ".read $SCRATCH/sqlite.sql" || return 1
  expect_file sqlite3 "sqlite3 query results" "$SCRATCH/sqlite.expected" "$OUT" || return 1
  # The database must also be intact when read back by a fresh process.
  step sqlite3 "sqlite3 reopen" sqlite3 -batch -bail "$db" "SELECT count(*), sum(val) FROM t WHERE grp = 5;" || return 1
  if [[ "$(cat "$OUT")" != "12857|1928571405" ]]; then
    fail sqlite3 "reopened database: 'SELECT count(*), sum(val) FROM t WHERE grp = 5' gave '$(cat "$OUT")', expected '12857|1928571405'"
    return 1
  fi
}

check_gcc() {
  step gcc "gcc -O2 prog.c" gcc -O2 -Wall -Wextra -o "$SCRATCH/prog" "$DATA_DIR/prog.c" || return 1
  if [[ -s "$ERR" ]]; then
    fail gcc "gcc -O2 prog.c printed diagnostics under LD_PRELOAD=$LIB_BASE"
    show stderr "$ERR"
    return 1
  fi
  step gcc "run the compiled program" "$SCRATCH/prog" || return 1
  cat >"$SCRATCH/prog.expected" <<'EOF'
primes below 2000000: 148933, sum 142913828922
list of 200000 sorted=1 weighted 592690655178
string of 1039825 bytes, fnv1a e7d0084a51b74f54
top: player00321=999 player01321=999 player02321=999
EOF
  expect_file gcc "compiled program" "$SCRATCH/prog.expected" "$OUT" || return 1
}

check_double_free() {
  step double_free "gcc -O0 double_free.c" gcc -O0 -o "$SCRATCH/double_free" "$DATA_DIR/double_free.c" || return 1
  local size st addr expected
  for size in 32 1048576; do
    pre "$SCRATCH/double_free" $size >"$OUT" 2>"$ERR" </dev/null
    st=$?
    if ((st == 0 || st == 124)) || grep -q survived "$OUT"; then
      fail double_free "double free of a $size-byte block: expected the process to die, got $(describe_status $st)"
      show stdout "$OUT"
      show stderr "$ERR"
      return 1
    fi
    addr=$(sed -n 's/^block \(0x[0-9a-f]*\)$/\1/p' "$OUT")
    # the size class: 32 B + the canary's 5 is class 2 (48 B); 1 MiB + 5 is above the pools
    expected="hakmem: fatal: double free at address $(printf '0x%016x' "${addr:-0}") ($([ $size = 32 ] && echo "size class 2" || echo "huge block"), hardened)"
    if ! grep -q "hakmem: fatal: double free at address 0x" "$ERR" || ! grep -qxF "$expected" "$ERR"; then
      fail double_free "double free of a $size-byte block ($(describe_status $st)): stderr lacks '$expected'"
      show stdout "$OUT"
      show stderr "$ERR"
      return 1
    fi
  done
}

# ---- Main ---------------------------------------------------------------------------

echo "hakmem integration test: variant $VARIANT, LD_PRELOAD=$LIB"
if [[ ! -f "$LIB" ]]; then
  fail setup "library $LIB not found in the runfiles (TEST_SRCDIR=${TEST_SRCDIR:-unset})"
  exit 1
fi
case "$LIB" in
  /*) ;;
  *) LIB="$PWD/$LIB" ;;
esac

run_workload maps check_maps
run_workload symbols check_symbols
run_workload probe check_probe
run_workload python check_python
run_workload git check_git
run_workload sqlite3 check_sqlite
run_workload gcc check_gcc
if [[ "$VARIANT" == hardened ]]; then
  run_workload double_free check_double_free
fi

if ((${#FAILED[@]} > 0)); then
  echo "FAILED [variant=$VARIANT]: workloads ${FAILED[*]}" >&2
  exit 1
fi
echo "PASSED [variant=$VARIANT]: all workloads"
