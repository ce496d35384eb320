#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Fails when the Makefile builds hakmem differently from Bazel.

hakmem/variants.bzl is the source of truth. The Makefile reads its lists with
mk/variants.awk and repeats what the macro _hak_override_and_shared adds; this script
evaluates variants.bzl as Bazel would (its macros run against a stand-in `native` that
records every target) and compares each public variant's targets with `make
print-config`: compile flags, core sources (also against hakmem/hak_*.c on disk),
defines, the malloc-replacing sources with their extra flags and defines, and the
shared library's link options. Prints one line per difference; exit 1 if any.
"""
import glob
import os
import subprocess
import sys
import types

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def bazel_view():
    targets = {}

    def record(**kw):
        targets[kw["name"]] = kw

    native = types.SimpleNamespace(cc_library=record, cc_binary=record, genrule=record)
    g = {"struct": lambda **kw: types.SimpleNamespace(**kw), "native": native, "getattr": getattr}
    with open(os.path.join(ROOT, "hakmem/variants.bzl")) as f:
        exec(compile(f.read(), "hakmem/variants.bzl", "exec"), g)
    g["hak_library_variants"](internal_visibility=[])
    return g, targets


def make_view():
    out = subprocess.run(["make", "-s", "--no-print-directory", "-C", ROOT, "print-config"],
                         check=True, capture_output=True, text=True).stdout
    conf = {}
    for line in out.splitlines():
        key, _, value = line.partition(":")
        conf[key.strip()] = value.split()
    return conf


def main():
    g, targets = bazel_view()
    mk = make_view()
    errors = []

    def same(what, bazel, make, sides=("variants.bzl", "Makefile")):
        if list(bazel) != list(make):
            errors.append("%s: %s %s, %s %s" % (what, sides[0], list(bazel), sides[1], list(make)))

    copts, core = g["HAK_COPTS"], g["HAK_CORE_SRCS"]
    same("copts", copts, mk["copts"])
    same("core sources", core, mk["core_srcs"])
    override = mk["override_srcs"]
    on_disk = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "hakmem/hak_*.c")))
    same("core sources", [s for s in on_disk if s not in override], sorted(mk["core_srcs"]),
         ("hakmem/hak_*.c but %s" % " ".join(override), "Makefile"))
    same("public variants", list(g["HAK_VARIANTS"]), mk["variants"])
    same("version", [g["HAK_VERSION"]], mk["version"], ("variants.bzl", "VERSION"))
    for name, v in g["HAK_VARIANTS"].items():
        same("suffix of " + name, [v.suffix] if v.suffix else [], mk.get("suffix_" + name, []))
        same("defines of " + name, v.defines, mk.get("defines_" + name, []))
        core_lib = targets["hak_core" + v.suffix]
        same("core of %s: copts" % name, core_lib["copts"], mk["copts"])
        same("core of %s: defines" % name, core_lib["local_defines"], mk.get("defines_" + name, []))
        same("core of %s: sources" % name, core_lib["srcs"], mk["core_srcs"])
        lib = targets["hakmem" + v.suffix]
        same("hakmem%s: sources" % v.suffix, lib["srcs"], override)
        same("hakmem%s: copts" % v.suffix, lib["copts"], mk["copts"] + mk["override_copts"])
        same("hakmem%s: defines" % v.suffix, lib["local_defines"],
             mk.get("defines_" + name, []) + mk["override_defines"])
        so = targets["libhakmem%s.so" % v.suffix]
        # The SONAME and the version script: the Makefile adds both to every shared link
        # (from VERSION and hakmem/hakmem.map); Bazel's must name the same.
        soname = "-Wl,-soname,libhakmem%s.so.%s" % (v.suffix, mk["major"][0])
        script = "-Wl,--version-script=$(location :hakmem.map)"
        for want in (soname, script):
            if want not in so["linkopts"]:
                errors.append("libhakmem%s.so: variants.bzl lacks %s" % (v.suffix, want))
        rest = [o for o in so["linkopts"] if o not in (soname, script)]
        same("libhakmem%s.so: linkopts" % v.suffix, rest, mk["shared_linkopts"])
    for e in errors:
        print("ci/make_config_check.py: Makefile and hakmem/variants.bzl disagree: " + e, file=sys.stderr)
    if errors:
        return 1
    print("make config: the Makefile builds %d variants (%s) with variants.bzl's flags, sources and defines"
          % (len(mk["variants"]), " ".join(mk["variants"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
