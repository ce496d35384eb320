#!/bin/bash -eu
# SPDX-License-Identifier: MIT
# ClusterFuzzLite (OSS-Fuzz base-builder) build of every fuzz target of fuzz/BUILD, for
# whichever engine and sanitizer the image asks for: plain compiler calls, since the
# base image has no Bazel. The target list and each target's defines come from
# fuzz/BUILD and hakmem/variants.bzl (fuzz/targets.py), the sources from hakmem/hak_*.c,
# so a new target or source file needs no change here.
#
# Uses what the base image sets: CC, CXX, CFLAGS, CXXFLAGS, LIB_FUZZING_ENGINE, SRC,
# OUT, WORK (SANITIZER, FUZZING_ENGINE when present). Writes, per target, $OUT/<target>
# (the fuzz binary), $OUT/<target>_seed_corpus.zip (its committed corpus, crash-*
# regressions included: ClusterFuzzLite runs the seeds first) and
# $OUT/<target>.dict. ci/cflite_check.sh runs this with the base image's settings.
set -euo pipefail
# The repository: around this script, or (ClusterFuzzLite runs a copy in $SRC) $SRC/hakmem.
root="$(cd "$(dirname "$0")/.." && pwd)"
[ -f "$root/fuzz/targets.py" ] || root="$SRC/hakmem"
cd "$root"
: "${OUT:?}" "${WORK:=$(mktemp -d)}"
CC="${CC:-clang}" CXX="${CXX:-clang++}"
read -ra engine <<< "${LIB_FUZZING_ENGINE:--fsanitize=fuzzer}"
read -ra cflags <<< "${CFLAGS:-}"
read -ra cxxflags <<< "${CXXFLAGS:-${CFLAGS:-}}"

# hakmem/variants.bzl's HAK_COPTS that matter for behaviour (the optimisation level is
# the image's), fuzz/fuzz.bzl's FUZZ_COPTS for the harness.
hak_copts=(-std=gnu11 -fvisibility=hidden -ftls-model=initial-exec -fno-builtin-malloc
  -fno-builtin-free -fno-builtin-calloc -fno-builtin-realloc -fno-omit-frame-pointer)
fuzz_copts=(-std=gnu11 -fno-builtin)
# UBSan has no feature macro: hakmem and the misuse harness learn it from HAK_UBSAN
# (as with .bazelrc's --config=ubsan).
[ "${SANITIZER:-}" = undefined ] && hak_copts+=(-DHAK_UBSAN=1) && fuzz_copts+=(-DHAK_UBSAN=1)

hak_srcs=(hakmem/hak_*.c)
obj="$WORK/hakmem-fuzz-obj"
mkdir -p "$obj"

# hakmem once per variant (its defines), shared by the targets of that variant.
build_variant() { # key defines... -> objects in $obj/<key>/
  local key="$1" d=() s pids=() p
  shift
  for s in "$@"; do d+=("-D$s"); done
  [ -d "$obj/$key" ] && return 0
  mkdir -p "$obj/$key.tmp"
  for s in "${hak_srcs[@]}"; do
    "$CC" "${cflags[@]}" "${hak_copts[@]}" "${d[@]}" -Ihakmem/include -c "$s" \
      -o "$obj/$key.tmp/$(basename "${s%.c}").o" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  mv "$obj/$key.tmp" "$obj/$key"
}

n=0
while read -r name src defines_line; do
  read -ra defines <<< "$defines_line"
  hak_defs=() harness_defs=()
  for d in "${defines[@]}"; do
    case "$d" in
      HAK_FUZZ_*) harness_defs+=("-D$d") ;;
      *) hak_defs+=("$d") ;;
    esac
  done
  key="variant-$(printf '%s_' "${hak_defs[@]}" | tr -c 'A-Za-z0-9_\n' '_')"
  build_variant "$key" "${hak_defs[@]}"
  # The harness's sources, comma-separated (fuzz/targets.py): each compiled alike.
  IFS=, read -ra srcs <<< "$src"
  harness_objs=()
  for s in "${srcs[@]}"; do
    harness_objs+=("$obj/$name-$(basename "${s%.c}").o")
    "$CC" "${cflags[@]}" "${fuzz_copts[@]}" "${harness_defs[@]}" "${hak_defs[@]/#/-D}" -Ihakmem/include \
      -c "$s" -o "${harness_objs[-1]}"
  done
  "$CXX" "${cxxflags[@]}" "${harness_objs[@]}" "$obj/$key"/*.o "${engine[@]}" -pthread -o "$OUT/$name"
  rm -f "$OUT/${name}_seed_corpus.zip"
  (cd "fuzz/corpus/$name" && zip -q -j "$OUT/${name}_seed_corpus.zip" ./*)
  cp fuzz/dict/hakmem.dict "$OUT/$name.dict"
  n=$((n + 1))
  echo "build.sh: $OUT/$name"
done < <(python3 fuzz/targets.py)
[ "$n" -gt 0 ] || { echo "build.sh: no fuzz targets found in fuzz/BUILD" >&2; exit 1; }
