#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Builds hakmem and its unit tests for aarch64 with Debian's cross toolchain, without
Bazel, and runs every test under qemu-user. Called by ci/aarch64.sh (which installs the
packages); see there for the options.

What is built comes from the Bazel files themselves, so the two never drift:
  - hakmem/variants.bzl (HAK_VARIANTS, HAK_INTERNAL_VARIANTS, HAK_COPTS, HAK_CORE_SRCS)
    is executed as Python: each variant's core, its hak_* API library and (public
    variants) its malloc-replacing library with C++'s new/delete (HAK_OVERRIDE=1);
  - every tests/**/BUILD is executed with stand-ins for the rules: each hak_cc_test
    gives one binary per variant exactly as tests/hak_cc_test.bzl declares it (its
    sources, C probes built against the variant's internals, copts, link kind, env);
    plain cc_tests (tests/startup) and the testonly helper binaries a test finds in its
    runfiles (tests/options) are built too. Integration tests (real programs of the
    host under LD_PRELOAD) have no aarch64 counterpart here.
Google Test is built from Debian's sources in /usr/src/googletest with the cross
compiler. Tests that cannot run under qemu-user are listed in EXCLUDED with the reason.
"""
import argparse
import concurrent.futures as futures
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRIPLE = "aarch64-linux-gnu"
CC = TRIPLE + "-gcc"
CXX = TRIPLE + "-g++"
SYSROOT = "/usr/" + TRIPLE
GTEST_SRC = "/usr/src/googletest/googletest"

# Test cases not run under qemu-user, with the reason: binary name prefix (a
# hak_cc_test's name gives <name>_<variant>), Google Test case ("*" for the whole
# binary), why, and whether only with a page size above 4 KiB (--page-size). Every
# other test in tests/ runs.
_STATM = "qemu -p: /proc/self/statm counts the host's 4 KiB pages, so RSS reads 16x (a qemu limit)"
_SMALL_PAGES = ("assumes 4 KiB pages: a request of one unit less 5 pages is a whale only there "
                "(with 64 KiB pages it is a big block); the test, not hakmem, still to adapt")
EXCLUDED = [
    ("fork_test_", "Fork.ChildOfBusyMultithreadedParentAllocatesFreesAndSpawnsThreads",
     "qemu-user 7.2 aborts (cpu-exec.c: assertion cpu == current_cpu) in a fork child of a multithreaded guest",
     False),
    ("fork_test_", "Fork.ForkWhileAnotherThreadHoldsBlocksThenBothContinue", "the same qemu-user abort in the child",
     False),
    ("fork_test_", "Fork.AChildThreadWithAVanishedThreadsIdentityFreesItsBlocksRemotely",
     "the same qemu-user abort in the child", False),
    ("options_test_", "Options.MadviseFreeLeavesPurgedPagesInLazyFree",
     "qemu-user ignores madvise(MADV_FREE): LazyFree in smaps_rollup stays 0", False),
    ("memory_return_test_", "MemoryReturn/*.L25AndBigBlocks64KiBTo4MiB", _STATM, True),
    ("memory_return_test_", "MemoryReturn/*.Whales", _STATM, True),
    ("memory_return_test_", "MemoryReturn/*.MixedPoolBigAndWhaleBlocks", _STATM, True),
    ("malloc_trim_test_", "MallocTrim.GivesBackWhatWasFreedAtOnce", _STATM, True),
    ("shrink_test_", "Shrink.RssFallsBackAsTheHeapShrinks", _STATM, True),
    ("page_size_test_", "PageSize.SixteenKiBPages",
     "pretends 16 KiB pages on a guest whose real pages are larger: the kernel refuses its calls", True),
    ("region_test_", "Region.CleanRunsGoToTheFullestChunkAndEmptyChunksGoBack", _SMALL_PAGES, True),
    ("zero_test_", "ZeroProvenance.UnitsLeftBehindByAWhaleMovedWithMremap", _SMALL_PAGES, True),
]

# Per-test timeouts: Bazel's by size, times this factor (qemu-user translates every
# instruction; threads run on the host's two cores).
TIMEOUTS = {"small": 60, "medium": 300, "large": 900}
QEMU_SLOWDOWN = 3


def log(msg):
    print("aarch64: " + msg, flush=True)


# ---- Reading the Bazel files ----------------------------------------------------------


def load_variants():
    g = {"struct": lambda **kw: types.SimpleNamespace(**kw)}
    with open(os.path.join(ROOT, "hakmem/variants.bzl")) as f:
        exec(compile(f.read(), "variants.bzl", "exec"), g)
    return g


class Select:
    def __init__(self, d):
        self.d = d

    def default(self):
        return self.d["//conditions:default"]


def plain(v):
    """A select() as the plain build sees it (no sanitizer config)."""
    if isinstance(v, Select):
        return v.default()
    if isinstance(v, list):
        out = []
        for x in v:
            out.extend(plain(x) if isinstance(x, (list, Select)) else [x])
        return out
    return v


def load_tests(variants):
    """Executes every tests/**/BUILD with stand-ins; returns (tests, helpers)."""
    tests, helpers = [], []
    all_variants = dict(variants["HAK_VARIANTS"])
    all_variants.update(variants["HAK_INTERNAL_VARIANTS"])
    for build in sorted(glob.glob(os.path.join(ROOT, "tests/**/BUILD"), recursive=True)):
        pkg = os.path.relpath(os.path.dirname(build), ROOT)

        def hak_cc_test(name, srcs, link="override", c_srcs=[], variants=None, deps=[], size="small", tags=[],
                        copts=[], env={}, data=[], **kwargs):
            for vname in variants or all_variants_public:
                tests.append(dict(name=name + "_" + vname, pkg=pkg, kind="gtest", srcs=srcs, c_srcs=c_srcs,
                                  link=link, variant=vname, size=size, copts=plain(copts), env=dict(env),
                                  data=list(data)))

        def cc_test(name, srcs, size="small", copts=[], local_defines=[], linkopts=[], deps=[], tags=[], **kwargs):
            tests.append(dict(name=name, pkg=pkg, kind="c", srcs=srcs, c_srcs=[], link="override",
                              variant=variant_of_deps(deps), size=size, copts=plain(copts),
                              linkopts=plain(linkopts), env={}, data=[]))

        def cc_binary(name, srcs=[], testonly=0, copts=[], local_defines=[], deps=[], **kwargs):
            if testonly:  # a test's helper, found in its runfiles
                api = any(d.endswith("_api") for d in deps)
                helpers.append(dict(name=name, pkg=pkg, srcs=srcs, copts=plain(copts),
                                    variant=variant_of_deps(deps), link="api" if api else "override"))

        def variant_of_deps(deps):
            for d in deps:
                lib = d.split(":")[-1]
                for vname, v in all_variants.items():
                    if lib in ("hakmem" + v.suffix, "hakmem" + v.suffix + "_api", "hak_core" + v.suffix):
                        return vname
            raise SystemExit("aarch64.py: no hakmem variant among the deps %r" % (deps,))

        all_variants_public = list(variants["HAK_VARIANTS"].keys())
        noop = lambda *a, **kw: None
        g = dict(variants)
        g.update(load=noop, hak_cc_test=hak_cc_test, cc_test=cc_test, cc_binary=cc_binary, cc_library=noop,
                 config_setting=noop, test_suite=noop, package=noop, licenses=noop, exports_files=noop,
                 hak_integration_tests=noop, sh_test=noop, genrule=noop, select=Select,
                 glob=lambda *a, **kw: [])
        with open(build) as f:
            exec(compile(f.read(), build, "exec"), g)
    return tests, helpers


# ---- Building ------------------------------------------------------------------------


class Builder:
    def __init__(self, out, jobs, variants):
        self.out = out
        self.pool = futures.ThreadPoolExecutor(max_workers=jobs)
        self.v = variants
        self.all_variants = dict(variants["HAK_VARIANTS"])
        self.all_variants.update(variants["HAK_INTERNAL_VARIANTS"])
        self.copts = list(variants["HAK_COPTS"])
        # Anything of these changed rebuilds everything (headers are not tracked per file).
        stamp_files = glob.glob(os.path.join(ROOT, "hakmem/**/*.h"), recursive=True)
        stamp_files += glob.glob(os.path.join(ROOT, "tests/**/*.h"), recursive=True)
        stamp_files += [os.path.abspath(__file__), os.path.join(ROOT, "hakmem/variants.bzl")]
        self.stamp = max(os.path.getmtime(f) for f in stamp_files)
        self.commands = 0

    def fresh(self, target, inputs):
        if not os.path.exists(target):
            return False
        t = os.path.getmtime(target)
        return t >= self.stamp and all(os.path.getmtime(i) <= t for i in inputs)

    def run(self, cmd, target, inputs):
        if self.fresh(target, inputs):
            return target
        os.makedirs(os.path.dirname(target), exist_ok=True)
        self.commands += 1
        r = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise RuntimeError("failed: %s\n%s" % (" ".join(shlex.quote(c) for c in cmd), r.stdout))
        return target

    def compile(self, src, obj, flags, cxx=False):
        cmd = [CXX if cxx else CC] + flags + ["-c", os.path.join(ROOT, src), "-o", obj]
        return self.pool.submit(self.run, cmd, obj, [os.path.join(ROOT, src)])

    def defines(self, vname, extra=()):
        return ["-D" + d for d in list(self.all_variants[vname].defines) + list(extra)]

    def hakmem(self, vname):
        """Futures of the objects of the core, the API library and the override library."""
        suffix = self.all_variants[vname].suffix or "_release"
        base = os.path.join(self.out, "obj", "hakmem" + suffix)
        inc = ["-I", os.path.join(ROOT, "hakmem/include")]
        core = [self.compile("hakmem/" + s, os.path.join(base, s + ".o"), self.copts + self.defines(vname) + inc)
                for s in self.v["HAK_CORE_SRCS"]]
        api = [self.compile("hakmem/hak_api.c", os.path.join(base, "hak_api.o"),
                            self.copts + self.defines(vname) + inc)]
        override = []
        if vname in self.v["HAK_VARIANTS"]:
            flags = self.copts + ["-fexceptions"] + self.defines(vname, ["HAK_OVERRIDE=1"]) + inc
            override = [self.compile("hakmem/" + s, os.path.join(base, "override", s + ".o"), flags)
                        for s in ("hak_api.c", "hak_new.c")]
        return dict(core=core, api=api, override=override)

    def gtest(self):
        base = os.path.join(self.out, "gtest")
        flags = ["-O1", "-g0", "-pthread", "-I", GTEST_SRC + "/include", "-I", GTEST_SRC]
        objs = [self.compile(GTEST_SRC + "/src/" + s, os.path.join(base, s + ".o"), flags, cxx=True)
                for s in ("gtest-all.cc", "gtest_main.cc")]
        return objs

    def link(self, target, objs, flags, cxx):
        cmd = [CXX if cxx else CC, "-o", target] + objs + flags
        return self.run(cmd, target, objs)


def build_all(args, variants, tests, helpers):
    b = Builder(args.out, args.jobs, variants)
    t0 = time.time()
    needed = sorted({t["variant"] for t in tests + helpers} | set(variants["HAK_VARIANTS"]))
    libs = {v: b.hakmem(v) for v in needed}
    gtest = b.gtest()
    shim = b.pool.submit(b.run, [CC, "-O2", "-shared", "-fPIC", "-o", os.path.join(args.out, "qemu_exec_shim.so"),
                                 os.path.join(ROOT, "ci/qemu_exec_shim.c")],
                         os.path.join(args.out, "qemu_exec_shim.so"), [os.path.join(ROOT, "ci/qemu_exec_shim.c")])
    inc = ["-I", os.path.join(ROOT, "hakmem/include"), "-I", os.path.join(ROOT, "tests"), "-I", ROOT]
    # HAK_TEST_EMULATED: fewer iterations where a test scales them (hak_test_env.h).
    test_flags = ["-O0", "-g0", "-pthread", "-DHAK_TEST_EMULATED=1", "-I", GTEST_SRC + "/include"] + inc

    def objs_of(unit, vname, tag, kind):
        base = os.path.join(args.out, "obj", unit["pkg"], tag)
        out = []
        for s in unit["srcs"]:
            if s.endswith(".h"):
                continue
            src = os.path.join(unit["pkg"], s)
            cxx = s.endswith(".cc")
            if cxx:
                flags = ["-std=gnu++17"] + test_flags + b.defines(vname) + unit["copts"]
            else:
                flags = b.copts + inc + b.defines(vname) + unit["copts"]
            out.append(b.compile(src, os.path.join(base, s + ".o"), flags, cxx=cxx))
        for s in unit.get("c_srcs", []):  # probes: the variant's internals, hakmem's copts
            out.append(b.compile(os.path.join(unit["pkg"], s), os.path.join(base, "probe", s + ".o"),
                                 b.copts + inc + b.defines(vname)))
        return out

    def lib_objs(vname, link):
        l = libs[vname]
        return l["core"] + (l["override"] if link == "override" else l["api"])

    jobs = []
    for t in tests:
        objs = objs_of(t, t["variant"], t["name"], t["kind"])
        binary = os.path.join(args.out, "bin", t["pkg"], t["name"])
        t["binary"] = binary
        if t["kind"] == "gtest":
            flags = ["-pthread"]
            jobs.append((t, binary, objs + lib_objs(t["variant"], t["link"]) + gtest, flags, True))
        else:
            jobs.append((t, binary, objs + lib_objs(t["variant"], t["link"]), t.get("linkopts", []) + ["-pthread"],
                         False))
    for h in helpers:
        objs = objs_of(h, h["variant"], h["name"], "c")
        binary = os.path.join(args.out, "runfiles", "hakmem", h["pkg"], h["name"])
        l = libs[h["variant"]]
        jobs.append((h, binary, objs + l["core"] + l["api"], ["-pthread"], False))
    linked = []
    for unit, binary, objs, flags, cxx in jobs:
        def do_link(binary=binary, objs=objs, flags=flags, cxx=cxx):
            return b.link(binary, [f.result() for f in objs], flags, cxx)
        linked.append((unit, b.pool.submit(do_link)))
    failed = []
    for unit, f in linked:
        try:
            f.result()
        except RuntimeError as e:
            failed.append(unit["name"])
            print(str(e)[-6000:], file=sys.stderr)
    shim.result()
    b.pool.shutdown()
    log("built %d test binaries and %d helpers for %d variants (%s) in %.0f s, %d commands"
        % (len(tests), len(helpers), len(needed), " ".join(needed), time.time() - t0, b.commands))
    return failed


# ---- Running -------------------------------------------------------------------------


def run_test(args, t, qemu_cmd, shim):
    tmp = os.path.join(args.out, "tmp", t["name"])
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    env = dict(os.environ)
    env.update(t["env"])
    env.update(TEST_TMPDIR=tmp, TEST_SRCDIR=os.path.join(os.path.abspath(args.out), "runfiles"),
               TEST_WORKSPACE="hakmem", HAK_QEMU_CMD=" ".join(qemu_cmd), HAK_QEMU_SHIM=shim)
    cmd = qemu_cmd + ["-E", "LD_PRELOAD=" + shim, os.path.abspath(t["binary"])]
    skip = [case for case, _ in excluded_cases(t["name"], args.page_size)]
    if skip:
        cmd.append("--gtest_filter=-" + ":".join(skip))
    timeout = TIMEOUTS[t["size"]] * QEMU_SLOWDOWN
    t0 = time.time()
    logfile = os.path.join(args.out, "logs", t["name"] + ".log")
    os.makedirs(os.path.dirname(logfile), exist_ok=True)
    with open(logfile, "w") as f:
        try:
            r = subprocess.run(cmd, cwd=tmp, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
            status = "PASS" if r.returncode == 0 else "FAIL (exit %d)" % r.returncode
        except subprocess.TimeoutExpired:
            status = "FAIL (timeout %d s)" % timeout
    return t, status, time.time() - t0, logfile


def summarise_gtest(logfile):
    """(cases run, passed, skipped, failed) from a Google Test log."""
    counts = {"ran": 0, "passed": 0, "skipped": 0, "failed": 0}
    patterns = {"ran": r"^\[==========\] (\d+) tests? from .* ran\.", "passed": r"^\[  PASSED  \] (\d+) test",
                "skipped": r"^\[  SKIPPED \] (\d+) tests?, listed below", "failed": r"^\[  FAILED  \] (\d+) tests?, listed below"}
    with open(logfile, errors="replace") as f:
        for line in f:
            for k, pat in patterns.items():
                m = re.match(pat, line)
                if m:
                    counts[k] = int(m.group(1))
    return counts


def excluded_cases(name, page_size):
    return [(case, why) for prefix, case, why, big_pages in EXCLUDED
            if name.startswith(prefix) and (not big_pages or page_size > 4096)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "aarch64-out"))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--page-size", type=int, default=0, help="qemu -p: the guest's page size (AT_PAGESZ)")
    ap.add_argument("--filter", default="", help="only tests whose name contains this")
    ap.add_argument("--build-only", action="store_true")
    args = ap.parse_args()
    start = time.time()
    variants = load_variants()
    tests, helpers = load_tests(variants)
    if args.filter:
        tests = [t for t in tests if args.filter in t["name"]]
    build_failed = build_all(args, variants, tests, helpers)
    if build_failed:
        log("build failed: " + " ".join(build_failed))
        return 1
    if args.build_only:
        return 0
    qemu = shutil.which("qemu-aarch64")
    qemu_cmd = [qemu, "-L", SYSROOT]
    if args.page_size:
        qemu_cmd += ["-p", str(args.page_size)]
    shim = os.path.abspath(os.path.join(args.out, "qemu_exec_shim.so"))
    to_run = [t for t in tests if not any(c == "*" for c, _ in excluded_cases(t["name"], args.page_size))]
    log("running %d test binaries under %s" % (len(to_run), " ".join(qemu_cmd)))
    results = []
    cases = {"ran": 0, "passed": 0, "skipped": 0, "failed": 0}
    # Longest first, so the slow ones do not start last.
    order = sorted(to_run, key=lambda t: -TIMEOUTS[t["size"]])
    with futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for t, status, secs, logfile in pool.map(lambda t: run_test(args, t, qemu_cmd, shim), order):
            if t["kind"] == "gtest":
                c = summarise_gtest(logfile)
                detail = "%d cases: %d passed, %d skipped, %d failed" % (c["ran"], c["passed"], c["skipped"],
                                                                         c["failed"])
            else:
                c = {"ran": 1, "passed": 1 if status == "PASS" else 0, "skipped": 0,
                     "failed": 0 if status == "PASS" else 1}
                detail = "plain C program"
            for k in cases:
                cases[k] += c[k]
            print("  %-40s %-20s %6.1f s  %s" % (t["name"], status, secs, detail), flush=True)
            results.append((t, status, logfile))
    failed = [(t, s, l) for t, s, l in results if s != "PASS"]
    for t, status, logfile in failed:
        print("\n---- %s: %s (log %s, last lines) ----" % (t["name"], status, logfile))
        with open(logfile, errors="replace") as f:
            lines = f.readlines()
        sys.stdout.write("".join(lines[-40:]))
    print("\nNot run under qemu-user:")
    for prefix, case, why, big_pages in EXCLUDED:
        if not big_pages or args.page_size > 4096:
            print("  %s* %s: %s" % (prefix, case, why))
    print("  tests/integration: real programs of the host (python3, git, sqlite3, gcc) under LD_PRELOAD")
    log("%d test binaries run: %d passed, %d failed; %d test cases: %d passed, %d skipped, %d failed; "
        "page size %s; %.0f s in all"
        % (len(results), len(results) - len(failed), len(failed), cases["ran"], cases["passed"], cases["skipped"],
           cases["failed"], args.page_size or "4096 (qemu's default)", time.time() - start))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
