#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# misuse_table.sh - the misuse table of issue 10: every case of misuse_cases.c (and the
# C++ sized-delete case) run under each allocator given, one Markdown row per case.
#
#   tests/misuse/misuse_table.sh [LIB.so ...]
#
# Default: hakmem's release, hardened level 1 and hardened libraries, built here. A cell
# reads "caught: <fault>" when the process stopped with hakmem's fatal line, "made
# harmless" when the case exited 42 (a freed block read back as zeros, an impossible
# request refused), "fault only (signal N)" for a crash without a diagnostic, "MISSED"
# when the misuse went unseen. Each case runs in a process of its own.
set -u
cd "$(dirname "$0")/../.."
bazel build //tests/misuse:all //hakmem:libhakmem.so //hakmem:libhakmem_hardened1.so \
  //hakmem:libhakmem_hardened.so >&2 || exit 1
bin="$(bazel info bazel-bin 2>/dev/null)"
libs=("$@")
if [ ${#libs[@]} -eq 0 ]; then
  libs=("$bin/hakmem/libhakmem.so" "$bin/hakmem/libhakmem_hardened1.so" "$bin/hakmem/libhakmem_hardened.so")
fi
cases=$(grep -o 'CASE("[a-z_0-9]*")' tests/misuse/misuse_cases.c | sed 's/CASE("\(.*\)")/\1/')

judge() {  # judge LIB CASE
  local out rc
  if [ "$2" = sized_delete ]; then
    out=$(LD_PRELOAD="$1" "$bin/tests/misuse/sized_delete" 2>&1)
  else
    out=$(LD_PRELOAD="$1" "$bin/tests/misuse/misuse_cases" "$2" 2>&1)
  fi
  rc=$?
  local fault
  fault=$(echo "$out" | grep -o 'hakmem: fatal: .* at address' | head -1 | sed 's/hakmem: fatal: //; s/ at address$//')
  if [ -n "$fault" ]; then echo "caught: $fault"
  elif [ $rc -eq 42 ]; then echo "made harmless"
  elif [ $rc -ge 128 ]; then echo "fault only (signal $((rc - 128)))"
  else echo "MISSED (exit $rc)"
  fi
}

header="| misuse |"
rule="|---|"
for lib in "${libs[@]}"; do
  header+=" $(basename "$lib" .so) |"
  rule+="---|"
done
echo "$header"
echo "$rule"
declare -A caught
for c in $cases sized_delete; do
  row="| $c |"
  for lib in "${libs[@]}"; do
    cell=$(judge "$lib" "$c")
    row+=" $cell |"
    case "$cell" in caught*|"made harmless") caught[$lib]=$((${caught[$lib]:-0} + 1)) ;; esac
  done
  echo "$row"
done
total=$(($(echo "$cases" | wc -l) + 1))
row="| **caught or made harmless** |"
for lib in "${libs[@]}"; do row+=" ${caught[$lib]:-0} of $total |"; done
echo "$row"
