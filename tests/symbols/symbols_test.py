#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""What hakmem's libraries show the world: exactly the public symbols, one version.

Arguments: hakmem/variants.bzl's HAK_VERSION, the VERSION file, hakmem/hakmem.map, include/hakmem.h, then any number of
libraries (shared .so, static .a/.lo archives; Bazel's $(locations) of the library
targets). Checks:
  - VERSION, variants.bzl's HAK_VERSION, hakmem.h's HAKMEM_VERSION and each shared library's SONAME agree
    (libhakmem{suffix}.so.MAJOR);
  - a shared library needs nothing but libc (no libstdc++, libm, libgcc_s);
  - its dynamic symbol table defines exactly the symbols of hakmem.map (globals and
    weaks; TLS variables stay local);
  - in an archive, every global symbol of default visibility is one of the map's:
    the core's internal functions are hidden (-fvisibility=hidden), so nothing of
    hakmem's inside leaks into a program that links it statically.
Exit status 1 lists every difference.
"""
import os
import re
import subprocess
import sys

ALLOWED_NEEDED = {"libc.so.6", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1", "libpthread.so.0"}
# Archives of the _api libraries and the core define only hakmem's own API; the
# override libraries add the C allocator names and C++ operators.


def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def map_symbols(path):
    """The public names of the version script: C names and demangled C++ ones."""
    text = re.sub(r"/\*.*?\*/", "", open(path).read(), flags=re.S)
    glob = text.split("global:", 1)[1].split("local:", 1)[0]
    block = re.search(r'extern\s+"C\+\+"\s*\{(.*?)\};', glob, flags=re.S)
    cxx = set(re.findall(r'"([^"]+)"', block.group(1))) if block else set()
    plain = glob.replace(block.group(0), "") if block else glob
    c_names = {s.strip() for s in plain.split(";") if s.strip()}
    return c_names, cxx


def demangle(names):
    if not names:
        return {}
    out = run("c++filt", *names).splitlines()
    return dict(zip(names, out))


def elf_symbols(path, dynamic):
    """(name, bind, visibility, ndx, type) of each symbol of an ELF file or archive."""
    args = ["readelf", "-W", "--dyn-syms" if dynamic else "-s", path]
    rows = []
    for line in run(*args).splitlines():
        f = line.split()
        if len(f) < 8 or not f[0].rstrip(":").isdigit():
            continue
        rows.append((f[7].split("@")[0], f[4], f[5], f[6], f[3]))
    return rows


def public_defined(path, dynamic):
    names = set()
    for name, bind, vis, ndx, _ in elf_symbols(path, dynamic):
        if ndx != "UND" and bind in ("GLOBAL", "WEAK") and vis in ("DEFAULT", "PROTECTED"):
            names.add(name)
    return names


def split_names(names, c_names, cxx):
    dm = demangle(sorted(n for n in names if n.startswith("_Z")))
    shown = {dm.get(n, n) for n in names}
    return shown - c_names - cxx, shown


def check_shared(path, version, c_names, cxx, errors):
    name = os.path.basename(path)
    major = version.split(".")[0]
    dyn = run("readelf", "-d", path)
    soname = re.findall(r"Library soname: \[([^\]]+)\]", dyn)
    want = name + "." + major
    if soname != [want]:
        errors.append("%s: SONAME %s, want %s" % (name, soname, want))
    needed = set(re.findall(r"Shared library: \[([^\]]+)\]", dyn))
    if needed - ALLOWED_NEEDED:
        errors.append("%s: needs %s beyond libc" % (name, sorted(needed - ALLOWED_NEEDED)))
    extra, shown = split_names(public_defined(path, True), c_names, cxx)
    if extra:
        errors.append("%s: exports symbols not in hakmem.map: %s" % (name, sorted(extra)))
    missing = (c_names | cxx) - shown
    if missing:
        errors.append("%s: does not export %s" % (name, sorted(missing)))
    print("%s: SONAME %s, NEEDED %s, %d public symbols" % (name, ",".join(soname), ",".join(sorted(needed)), len(shown)))


def check_archive(path, c_names, cxx, errors):
    name = os.path.basename(path)
    extra, shown = split_names(public_defined(path, False), c_names, cxx)
    if extra:
        errors.append("%s: global symbols of default visibility not in hakmem.map: %s" % (name, sorted(extra)))
    print("%s: %d global symbols of default visibility, all public" % (name, len(shown)))


def main(argv):
    bzl_version, version_file, map_file, header = argv[1:5]
    libs = argv[5:]
    errors = []
    version = open(version_file).read().strip()
    if bzl_version != version:
        errors.append("variants.bzl says HAK_VERSION %s, VERSION says %s" % (bzl_version, version))
    m = re.search(r'#define HAKMEM_VERSION "([^"]+)"', open(header).read())
    if not m or m.group(1) != version:
        errors.append("hakmem.h says HAKMEM_VERSION %s, VERSION says %s" % (m and m.group(1), version))
    parts = {k: re.search(r"#define HAKMEM_VERSION_%s (\d+)" % k, open(header).read()) for k in ("MAJOR", "MINOR", "PATCH")}
    if ".".join(p.group(1) if p else "?" for p in parts.values()) != version:
        errors.append("hakmem.h's HAKMEM_VERSION_MAJOR/MINOR/PATCH do not spell %s" % version)
    c_names, cxx = map_symbols(map_file)
    if len(c_names) < 40 or len(cxx) != 20:
        errors.append("hakmem.map parsed to %d C and %d C++ names: the parser or the map is broken" % (len(c_names), len(cxx)))
    seen = 0
    for lib in libs:
        if lib.endswith(".so"):
            check_shared(lib, version, c_names, cxx, errors)
        elif lib.endswith((".a", ".lo")):
            check_archive(lib, c_names, cxx, errors)
        else:
            continue
        seen += 1
    if seen == 0:
        errors.append("no library given")
    for e in errors:
        print("FAIL: " + e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
