#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# hakmem refuses 32-bit targets at compile time (issue 9, item 3): hak_config.h, which
# every hakmem source includes first, stops a 32-bit build with an #error naming why,
# and lets a 64-bit one through. Only the header is compiled (-fsyntax-only, no system
# header needed), so no 32-bit C library has to be installed.
set -euo pipefail
config="$PWD/$1"
dir="${TEST_TMPDIR:-$(mktemp -d)}"
printf '#include "%s"\nint hak_word_size_probe;\n' "$config" > "$dir/probe.c"
for cc in gcc clang; do
  command -v "$cc" > /dev/null || continue
  if ! "$cc" -m64 -fsyntax-only "$dir/probe.c" 2> "$dir/err64"; then
    echo "FAIL: $cc -m64 rejected hak_config.h:"; cat "$dir/err64"; exit 1
  fi
  if "$cc" -m32 -fsyntax-only "$dir/probe.c" 2> "$dir/err32"; then
    echo "FAIL: $cc -m32 accepted hak_config.h: a 32-bit build must stop there"; exit 1
  fi
  if ! grep -q "hakmem needs a 64-bit target" "$dir/err32"; then
    echo "FAIL: $cc -m32 failed, but not with hakmem's message:"; cat "$dir/err32"; exit 1
  fi
  echo "$cc: 64-bit accepted, 32-bit refused with hakmem's message"
done
