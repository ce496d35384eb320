#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Lists the fuzz targets of fuzz/BUILD with what builds them, for builds without Bazel
(.clusterfuzzlite/build.sh) and for ci/fuzz.sh: one line per target,

    <name> <harness sources, comma-separated> <define> <define> ...

the harness's defines (HAK_FUZZ_THREADS, HAK_FUZZ_CONCURRENT, HAK_FUZZ_TARGET) and the
hakmem variant's (hakmem/variants.bzl, HAK_INTERNAL_VARIANTS), exactly what
fuzz/fuzz.bzl gives Bazel. fuzz/BUILD and variants.bzl are read as Starlark (a subset of
Python): their load() lines are dropped and the rules they call are stubs.

    python3 fuzz/targets.py            all targets
    python3 fuzz/targets.py --names    names only
"""
import os
import re
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _starlark(path, env):
    with open(os.path.join(ROOT, path)) as f:
        src = re.sub(r"(?ms)^load\(.*?\)\s*$", "", f.read())
    exec(compile(src, path, "exec"), env)
    return env


def _stub(*args, **kwargs):
    return None


def targets():
    variants = _starlark("hakmem/variants.bzl", {"struct": types.SimpleNamespace, "native": None})
    internal = variants["HAK_INTERNAL_VARIANTS"]
    found = []

    def hak_fuzz_target(name, variant, threads=0, concurrent=0, src="hak_fuzz.c", extra_srcs=(), madvise="", **_):
        defines = ["HAK_FUZZ_THREADS=%d" % threads, "HAK_FUZZ_CONCURRENT=%d" % concurrent,
                   'HAK_FUZZ_TARGET="%s"' % name]
        if madvise:
            defines.append('HAK_FUZZ_MADVISE="%s"' % madvise)
        defines += list(internal[variant].defines)
        srcs = ",".join("fuzz/" + s for s in [src] + [s for s in extra_srcs if s.endswith(".c")])
        found.append((name, srcs, defines))

    env = {"hak_fuzz_target": hak_fuzz_target, "FUZZ_COPTS": []}
    for rule in ("package", "licenses", "config_setting", "cc_library", "cc_binary", "cc_test",
                 "filegroup", "exports_files", "glob"):
        env[rule] = _stub
    _starlark("fuzz/BUILD", env)
    return found


def main(argv):
    for name, src, defines in targets():
        print(name if "--names" in argv else " ".join([name, src] + defines))


if __name__ == "__main__":
    main(sys.argv[1:])
