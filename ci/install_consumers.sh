#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# hakmem for users outside Bazel (the top-level Makefile, docs/INSTALL.md), checked the
# way a user meets it: builds with make, installs into a temporary prefix, and against
# the installed tree builds and runs a plain Make consumer (pkg-config) and a CMake
# consumer (find_package), shared and static, for every variant. Fails on any of:
#   - the Makefile disagreeing with hakmem/variants.bzl (ci/make_config_check.py);
#   - a compiler warning (the build uses -Werror), a missing installed file or symlink,
#     a DESTDIR install writing the staging directory into hakmem.pc or the CMake files;
#   - a shared library without SONAME libhakmem<v>.so.<major>, or NEEDED beyond libc;
#   - an installed library (archive or shared) whose global symbols are not exactly
#     those of hakmem/hakmem.map, or an archive of more than one object;
#   - a consumer that did not get hakmem's malloc (examples/which_malloc.c: the
#     block of a strdup must show in hakmem's in-use figures), including the one that
#     references no allocator symbol at all (libc_only);
#   - a control that must NOT get hakmem's malloc getting it (the same program linked
#     without -Wl,-u,malloc, or with --as-needed and without hakmem.pc's
#     --no-as-needed, or not linked with hakmem): the check above tells the difference.
# About half a minute on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup.sh

tmp=$(mktemp -d "${TMPDIR:-/tmp}/hakmem-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"
failures=0

step() { printf '\n---- ci/install_consumers.sh: %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
die() {
  echo "ci/install_consumers.sh: FAIL: $*" >&2
  exit 1
}
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

step "Makefile against hakmem/variants.bzl"
python3 ci/make_config_check.py || die "the Makefile and hakmem/variants.bzl disagree"

step "make -j2 (clean build, -Werror)"
make -s clean
make -j2 CFLAGS=-Werror >"$tmp/build.log" 2>&1 || {
  cat "$tmp/build.log"
  die "make failed"
}
echo "built: $(cd out/make/lib && echo *)"

# The variants and their library suffixes, as the Makefile has them (from variants.bzl).
config=$(make -s --no-print-directory print-config)
read -r -a variants <<<"$(sed -n 's/^variants: //p' <<<"$config")"
suffix_of() { sed -n "s/^suffix_$1: *//p" <<<"$config"; }
version=$(cat VERSION)
major=${version%%.*}

step "make install PREFIX=$prefix"
make -s install PREFIX="$prefix"
for v in "${variants[@]}"; do
  lib="libhakmem$(suffix_of "$v")"
  for f in "lib/$lib.a" "lib/$lib.so.$version" "lib/pkgconfig/hakmem$(suffix_of "$v").pc"; do
    [ -f "$prefix/$f" ] || fail "not installed: $f"
  done
  [ "$(readlink "$prefix/lib/$lib.so.$major")" = "$lib.so.$version" ] || fail "$lib.so.$major is not a link to $lib.so.$version"
  [ "$(readlink "$prefix/lib/$lib.so")" = "$lib.so.$major" ] || fail "$lib.so is not a link to $lib.so.$major"
done
for f in include/hakmem.h lib/cmake/hakmem/hakmemConfig.cmake lib/cmake/hakmem/hakmemConfigVersion.cmake; do
  [ -f "$prefix/$f" ] || fail "not installed: $f"
done
cmp -s hakmem/include/hakmem.h "$prefix/include/hakmem.h" || fail "installed hakmem.h differs from hakmem/include/hakmem.h"
echo "installed: $(cd "$prefix" && find . -type f -o -type l | sort | tr '\n' ' ')"

# A staged install (packaging) refers to the final prefix, not to the staging directory.
make -s install DESTDIR="$tmp/stage" PREFIX=/opt/hakmem
grep -qx 'libdir=/opt/hakmem/lib' "$tmp/stage/opt/hakmem/lib/pkgconfig/hakmem.pc" || fail "DESTDIR install: hakmem.pc has no libdir=/opt/hakmem/lib"
grep -q '"/opt/hakmem/lib"' "$tmp/stage/opt/hakmem/lib/cmake/hakmem/hakmemConfig.cmake" || fail "DESTDIR install: hakmemConfig.cmake does not name /opt/hakmem/lib"
! grep -rq "$tmp/stage" "$tmp/stage/opt/hakmem/lib/pkgconfig" "$tmp/stage/opt/hakmem/lib/cmake" || fail "DESTDIR install: the staging directory is written into the installed files"
echo "DESTDIR=$tmp/stage PREFIX=/opt/hakmem: files under the staging directory, paths of /opt/hakmem in them"

step "shared libraries: SONAME, NEEDED"
for v in "${variants[@]}"; do
  lib="libhakmem$(suffix_of "$v")"
  so="$prefix/lib/$lib.so.$version"
  soname=$(readelf -dW "$so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
  needed=$(readelf -dW "$so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
  echo "$lib.so.$version: SONAME $soname, NEEDED ${needed% }"
  [ "$soname" = "$lib.so.$major" ] || fail "$lib.so.$version: SONAME '$soname', expected $lib.so.$major"
  [ "$needed" = "libc.so.6 " ] || fail "$lib.so.$version: NEEDED '$needed', expected libc.so.6 only"
done

step "global symbols of the installed libraries against hakmem/hakmem.map"
# The map's global names: plain C names, and the C++ ones as written in its
# extern "C++" block (demangled), which is how c++filt prints nm's mangled names.
python3 - hakmem/hakmem.map >"$tmp/map.syms" <<'EOF'
import re, sys
text = re.sub(r"/\*.*?\*/", "", open(sys.argv[1]).read(), flags=re.S)
glob = text.split("global:", 1)[1].split("local:", 1)[0]
cxx = re.search(r'extern\s+"C\+\+"\s*\{(.*?)\}', glob, re.S)
names = re.findall(r'"([^"]+)"', cxx.group(1))
names += re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*;", glob[: cxx.start()] + glob[cxx.end():])
print("\n".join(sorted(set(names))))
EOF
LC_ALL=C sort -o "$tmp/map.syms" "$tmp/map.syms"
echo "hakmem.map: $(wc -l <"$tmp/map.syms") global symbols ($(grep -c 'operator' "$tmp/map.syms") of them C++ operator new/delete)"
for v in "${variants[@]}"; do
  lib="libhakmem$(suffix_of "$v")"
  members=$(ar t "$prefix/lib/$lib.a" | wc -l)
  [ "$members" -eq 1 ] || fail "$lib.a holds $members objects, expected one (ld -r)"
  nm -g --defined-only -P "$prefix/lib/$lib.a" | awk 'NF >= 3 {print $1}' | c++filt | LC_ALL=C sort -u >"$tmp/$lib.a.syms"
  nm -D --defined-only -P "$prefix/lib/$lib.so.$version" | awk 'NF >= 3 {print $1}' | c++filt | LC_ALL=C sort -u >"$tmp/$lib.so.syms"
  for kind in a so; do
    if diff "$tmp/map.syms" "$tmp/$lib.$kind.syms" >"$tmp/diff"; then
      echo "$lib.$kind: $(wc -l <"$tmp/$lib.$kind.syms") global symbols, exactly hakmem.map's$([ "$kind" = a ] && echo " (one object)")"
    else
      fail "$lib.$kind: global symbols differ from hakmem.map (< map only, > library only):"
      cat "$tmp/diff"
    fi
  done
done

# Runs one consumer program; $1: label, $2: program, $3: expected variant, $4: where
# malloc must be defined; further arguments: environment for the program.
expect_hakmem() {
  local label=$1 prog=$2 variant=$3 home=$4 out rc=0
  shift 4
  out=$(env "$@" "$prog" 2>&1) || rc=$?
  printf '%-6s %s\n' "${label%% *}" "$out"
  [ "$rc" -eq 0 ] || fail "$label: exit status $rc, expected 0"
  grep -q "malloc is hakmem's, variant $variant (defined in $home;" <<<"$out" ||
    fail "$label: expected hakmem's malloc, variant $variant, defined in $home"
}
# The controls: the program must see that malloc is not hakmem's (exit status 1).
expect_other() {
  local label=$1 prog=$2 out rc=0
  shift 2
  out=$(env "$@" "$prog" 2>&1) || rc=$?
  printf '%-22s %s\n' "$label:" "$out"
  [ "$rc" -eq 1 ] && grep -q "malloc is NOT hakmem's" <<<"$out" ||
    fail "$label: expected a malloc other than hakmem's (exit status 1), got status $rc"
}
# A shared consumer must depend on the library by its SONAME; a static one not at all.
check_needed() {
  local label=$1 prog=$2 lib=$3 kind=$4 needed
  needed=$(readelf -dW "$prog" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
  case "$kind" in
    shared) [[ " $needed" == *" $lib.so.$major "* ]] || fail "$label: NEEDED '$needed' lacks $lib.so.$major" ;;
    static) [[ " $needed" != *" $lib.so"* ]] || fail "$label: NEEDED '$needed' names $lib (static link)" ;;
  esac
}
run_consumers() {
  local tool=$1 dir=$2 v=$3 lib=$4 prog kind
  for prog in api_user libc_only; do
    for kind in shared static; do
      local home="the program itself"
      [ "$kind" = shared ] && home="$lib.so.$major"
      check_needed "$tool $prog/$kind" "$dir/${prog}_$kind" "$lib" "$kind"
      expect_hakmem "$tool ${prog}_$kind" "$dir/${prog}_$kind" "$v" "$home"
    done
  done
}

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
for v in "${variants[@]}"; do
  lib="libhakmem$(suffix_of "$v")"
  pc="hakmem$(suffix_of "$v")"
  step "$v variant: make consumer (pkg-config $pc), cmake consumer (hakmem::$pc, hakmem::${pc}_static)"
  mkdir -p "$tmp/make-$v"
  make -s -C examples/make_consumer OUT="$tmp/make-$v" HAKMEM="$pc" CFLAGS="-O2 -Wall -Wextra -Werror" >"$tmp/make-$v.log" 2>&1 || {
    cat "$tmp/make-$v.log"
    die "examples/make_consumer ($v) failed to build"
  }
  # libc_only must not reference the allocator itself, or it would not test the trap.
  refs=$(nm -u "$tmp/make-$v/libc_only.o" | awk '{print $2}' | grep -E '^(hak_|malloc|free|calloc|realloc|posix_memalign|aligned_alloc|memalign|valloc|pvalloc|_Zn|_Zd)' || true)
  [ -z "$refs" ] || fail "examples/which_malloc.c (HAKMEM_API=0) references allocator symbols: $refs"
  run_consumers make "$tmp/make-$v" "$v" "$lib"

  cmake -S examples/cmake_consumer -B "$tmp/cmake-$v" -DCMAKE_PREFIX_PATH="$prefix" -DHAKMEM_VARIANT="$v" \
    -DCMAKE_C_FLAGS="-Wall -Wextra -Werror" >"$tmp/cmake-$v.log" 2>&1 &&
    cmake --build "$tmp/cmake-$v" -j2 >>"$tmp/cmake-$v.log" 2>&1 || {
    cat "$tmp/cmake-$v.log"
    die "examples/cmake_consumer ($v) failed to configure or build"
  }
  run_consumers cmake "$tmp/cmake-$v" "$v" "$lib"
done

step "LD_PRELOAD, and the controls that must not get hakmem's malloc"
obj="$tmp/make-release/libc_only.o"
cc -o "$tmp/plain" "$obj"
expect_other "plain (no hakmem)" "$tmp/plain"
expect_hakmem "LD_PRELOAD plain" "$tmp/plain" release "libhakmem.so.$major" LD_PRELOAD="$prefix/lib/libhakmem.so.$major"
# The static library without -Wl,-u,malloc: nothing pulls its object into a program
# that references no allocator symbol.
cc -o "$tmp/static-without-u" "$obj" -L"$prefix/lib" -Wl,-Bstatic -lhakmem -Wl,-Bdynamic
expect_other "static, no -u malloc" "$tmp/static-without-u"
# The shared library under --as-needed without hakmem.pc's --no-as-needed: dropped.
cc -o "$tmp/shared-as-needed" "$obj" -Wl,--as-needed -L"$prefix/lib" -Wl,-u,malloc -lhakmem -Wl,-rpath,"$prefix/lib"
expect_other "shared, --as-needed" "$tmp/shared-as-needed"

# find_package's version check: the major version is the ABI.
cat >"$tmp/version_check.cmake" <<'EOF'
set(PACKAGE_FIND_VERSION "${REQ}")
string(REPLACE "." ";" _parts "${REQ}")
list(GET _parts 0 PACKAGE_FIND_VERSION_MAJOR)
include("${CONFIG_DIR}/hakmemConfigVersion.cmake")
if(NOT PACKAGE_VERSION_COMPATIBLE)
  message(FATAL_ERROR "not compatible")
endif()
EOF
for req in "0.1:1" "$version:1" "0.2:0" "1.0:0"; do
  want=${req#*:} req=${req%:*} got=0
  cmake -DCONFIG_DIR="$prefix/lib/cmake/hakmem" -DREQ="$req" -P "$tmp/version_check.cmake" >/dev/null 2>&1 && got=1
  [ "$got" = "$want" ] || fail "hakmemConfigVersion.cmake: request $req compatible=$got, expected $want"
done
echo "hakmemConfigVersion.cmake: $version satisfies find_package(hakmem 0.1) and ($version), not (0.2) or (1.0)"

step "make uninstall PREFIX=$prefix"
touch "$prefix/lib/not-hakmems.so" # someone else's file: must stay
make -s uninstall PREFIX="$prefix"
left=$(cd "$prefix" && find . -type f -o -type l | sort | tr '\n' ' ')
[ "$left" = "./lib/not-hakmems.so " ] || fail "make uninstall left: $left (want only ./lib/not-hakmems.so)"
echo "make uninstall removed every installed file and kept the others: $left"

if [ "$failures" -ne 0 ]; then
  die "$failures check(s) failed"
fi
printf '\nci/install_consumers.sh: all checks passed (%s)\n' "$(date -u +%H:%M:%S)"
