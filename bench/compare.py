#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Runs the benchmark workloads under several allocators side by side and reports ratios.

Every workload is a plain program calling malloc/free/realloc; each allocator is loaded
with LD_PRELOAD (glibc: nothing preloaded). Runs are interleaved (A B C D E, A B C D E,
...) so that drift of a shared, noisy machine hits all allocators alike, and ratios are
taken between allocators measured in the same run. Absolute times are not comparable
across runs; the ratios are the result.

Each run prints a RESULT line (bench_util.h); its checksum must be the same under every
allocator, and a workload that finds wrong memory contents exits non-zero. Either is
reported as a failure of that allocator (the run goes on; the exit status is 1).

hakmem's own counters come from running each workload once more under
libhakmem_stats.so with HAKMEM_STATS=1 and reading its report (hakmem/hak_stats.c):
OS calls (mmap, munmap, madvise, mremap, mprotect), the BigCache and whale cache, the purge
batcher, and how realloc grew huge blocks.

Output (in --out, default bench-out/): the Markdown tables on stdout and in
results.md, results.csv and results.json (one row per workload and allocator),
meta.json, and the charts ratios.svg (time / mimalloc) and rss_ratios.svg
(peak RSS / mimalloc), drawn with gnuplot, and rss_over_time.svg (the RSS samples of
the rss_over_time workload, one line per allocator, from each allocator's run of
median time), written as SVG text by this script.
"""
import argparse
import csv
import datetime
import hashlib
import json
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from xml.sax.saxutils import escape

SYSTEM_LIBS = "/usr/lib/x86_64-linux-gnu"
PEERS = {
    "mimalloc": os.path.join(SYSTEM_LIBS, "libmimalloc.so.2"),
    "jemalloc": os.path.join(SYSTEM_LIBS, "libjemalloc.so.2"),
    "tcmalloc": os.path.join(SYSTEM_LIBS, "libtcmalloc_minimal.so.4"),
}
PEER_PACKAGES = {"glibc": "libc6", "mimalloc": "libmimalloc2.0", "jemalloc": "libjemalloc2",
                 "tcmalloc": "libtcmalloc-minimal4"}
ALL_ALLOCATORS = ["glibc", "hakmem", "hakmem_stats", "hakmem_hardened", "mimalloc", "jemalloc", "tcmalloc"]
QUICK_ALLOCATORS = ["glibc", "hakmem", "mimalloc", "jemalloc", "tcmalloc"]
# On request only: hardened level 1 alone (checked frees), an internal variant.
EXTRA_ALLOCATORS = ["hakmem_hardened1"]

RESULT_RE = re.compile(r"RESULT workload=(\S+) ops=(\d+) ns=(\d+) checksum=(\d+) peak_rss_kib=(\d+) rss_kib=(\d+)(.*)")
EXTRA_RE = re.compile(r"(\w+)=(\S+)")

# hakmem's stats report (hak_stats_print). Totals of OS calls are the only lines that
# start with the call's name (the per-user lines start with the user).
OS_CALLS = ("mmap", "munmap", "madvise", "mremap", "mprotect")
OS_CALL_RE = re.compile(r"^\s*(mmap|munmap|madvise|mremap|mprotect)\s+(\d+) calls\s+(\d+) failed\s+(\d+) us", re.M)
CACHE_RE = re.compile(r"^\s*(bigcache|whale)\s+hits\s+(\d+)\s+misses\s+(\d+)\s+hit rate\s+\d+%"
                      r"\s+puts\s+(\d+)\s+evictions\s+(\d+)", re.M)
LABEL_VALUE_RE = re.compile(r"^  (\S.*?)\s+(\d+)$")
# (section, label) of a "  label   value" line of the report -> the key in results.
REPORT_COUNTERS = {
    ("Purge batcher", "flushes"): "purge_flushes",
    ("Purge batcher", "madvise ranges"): "purge_ranges",
    ("Purge batcher", "bytes purged"): "purge_bytes",
    ("Purge batcher", "bytes reused in time"): "purge_cancelled_bytes",
    ("Huge-block caches", "realloc grown in place"): "huge_grow_in_place",
    ("Huge-block caches", "realloc moved by mremap"): "huge_moved_by_remap",
    ("Huge-block caches", "realloc moved by copy"): "huge_moved_by_copy",
}
CACHES = ("bigcache", "whale")
CACHE_FIELDS = ("hits", "misses", "puts", "evictions")
# Every key the stats run adds to hakmem's rows, in the order of results.csv.
HAKMEM_COUNTER_KEYS = (["os_" + c for c in OS_CALLS] + ["os_calls_per_op"]
                       + ["%s_%s" % (cache, f) for cache in CACHES for f in CACHE_FIELDS + ("hit_rate_pct",)]
                       + list(REPORT_COUNTERS.values()))

# name -> (binary, arguments of the full run, arguments of the quick run). Sizes are
# chosen so that a full run of a workload takes about a second under most allocators
# (and a few seconds under the slowest), a quick run about a fifth of that.
# tiny_pairs: 10M malloc/free pairs per thread, as its issue asks.
# abandon, thread_churn, rss_over_time (issue 8, memory return over time): their point
# is the RSS columns and rss_over_time.svg more than the time; thread_churn's time is
# mostly thread creation, and each allocator's per-thread set-up and tear-down.
# realloc_grow: its size is fixed (1 to 32 MiB in 64 KiB steps), so only whole rounds
# can be dropped; a round takes ~0.15 s under glibc on this project's machines (virtual
# machines with slow page faults) and ~2 s under mimalloc, which moves the block into
# fresh memory dozens of times per round.


def workload_table(threads):
    t = str(threads)
    return [
        ("tiny_pairs_t1", "tiny_pairs", ["--pairs", "10000000", "--threads", "1"], ["--pairs", "3000000", "--threads", "1"]),
        ("tiny_pairs_t2", "tiny_pairs", ["--pairs", "10000000", "--threads", "2"], ["--pairs", "3000000", "--threads", "2"]),
        ("json", "json", ["--docs", "1000"], ["--docs", "300"]),
        ("mir", "mir", ["--funcs", "40000"], ["--funcs", "12000"]),
        ("vm_touch", "vm", ["--iters", "3000", "--touch", "1"], ["--iters", "1000", "--touch", "1"]),
        ("vm_notouch", "vm", ["--iters", "100000", "--touch", "0"], ["--iters", "30000", "--touch", "0"]),
        ("mixed", "mixed", ["--allocs", "500000"], ["--allocs", "150000"]),
        ("eviction", "eviction", ["--mode", "eviction", "--iters", "40000"], ["--mode", "eviction", "--iters", "12000"]),
        ("multisize", "eviction", ["--mode", "multisize", "--rounds", "200"], ["--mode", "multisize", "--rounds", "60"]),
        ("threads_xfree_t" + t, "threads", ["--mode", "xfree", "--objs", "5000000", "--threads", t],
         ["--mode", "xfree", "--objs", "1500000", "--threads", t]),
        ("threads_churn_t1", "threads", ["--mode", "churn", "--steps", "8000000", "--threads", "1"],
         ["--mode", "churn", "--steps", "2500000", "--threads", "1"]),
        ("threads_churn_t" + t, "threads", ["--mode", "churn", "--steps", "8000000", "--threads", t],
         ["--mode", "churn", "--steps", "2500000", "--threads", t]),
        ("random_replace_t1", "random_replace", ["--slots", "32768", "--steps", "2000000", "--threads", "1"],
         ["--slots", "8192", "--steps", "600000", "--threads", "1"]),
        ("random_replace_t" + t, "random_replace", ["--slots", "32768", "--steps", "2000000", "--threads", t],
         ["--slots", "8192", "--steps", "600000", "--threads", t]),
        ("generations_t" + t, "generations", ["--threads", t, "--generations", "60", "--replace", "10000"],
         ["--threads", t, "--generations", "40", "--replace", "10000", "--blocks", "10000"]),
        ("retain_stress_t" + t, "retain_stress", ["--threads", t, "--rounds", "40", "--allocs", "50000"],
         ["--threads", t, "--rounds", "20", "--allocs", "30000"]),
        ("stress_t" + t, "stress", ["--threads", t, "--iters", "10", "--steps", "300000"],
         ["--threads", t, "--iters", "5", "--steps", "200000"]),
        ("realloc", "realloc", ["--rounds", "10"], ["--rounds", "3"]),
        ("realloc_grow", "realloc_grow", ["--rounds", "2"], ["--rounds", "1"]),
        ("large_replace", "large_replace", ["--iters", "60"], ["--iters", "20"]),
        ("rss", "rss", ["--objs", "150000"], ["--objs", "50000"]),
        ("abandon", "abandon", ["--mib", "10", "--pairs", "2000000", "--rounds", "4"],
         ["--mib", "10", "--pairs", "1000000", "--rounds", "2"]),
        ("thread_churn", "thread_churn", ["--threads-total", "2000", "--alive", "8", "--blocks", "256"],
         ["--threads-total", "600", "--alive", "8", "--blocks", "256"]),
        ("rss_over_time", "rss_over_time", ["--cycles", "16", "--blocks", "6000"], ["--cycles", "8", "--blocks", "2000"]),
    ]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", default="bazel-bin/bench",
                    help="folder with the workload binaries (default bazel-bin/bench; ci/bench.sh passes its copies)")
    ap.add_argument("--hakmem-dir", default="bazel-bin/hakmem",
                    help="folder with libhakmem*.so (default bazel-bin/hakmem)")
    ap.add_argument("--out", default="bench-out", help="folder for the result files (default bench-out)")
    ap.add_argument("--quick", action="store_true", help="CI-sized workloads and 5 allocators (not hakmem's "
                    "stats and hardened variants)")
    ap.add_argument("--reps", type=int, default=5, help="repetitions per allocator (default 5)")
    ap.add_argument("--allocators", default="",
                    help="comma list from: %s (default: all of them but %s; with --quick: %s)"
                    % (", ".join(ALL_ALLOCATORS + EXTRA_ALLOCATORS), ", ".join(EXTRA_ALLOCATORS),
                       ", ".join(QUICK_ALLOCATORS)))
    ap.add_argument("--workloads", default="", help="comma list of workload names (default: all)")
    ap.add_argument("--threads", type=int, default=2, help="threads of the threads_* workloads (default 2)")
    ap.add_argument("--no-os-stats", action="store_true", help="skip the extra run under libhakmem_stats.so")
    ap.add_argument("--no-plot", action="store_true", help="do not draw the SVG charts")
    ap.add_argument("--timeout", type=float, default=600, help="seconds before one run counts as failed")
    ap.add_argument("--list", action="store_true", help="print the workloads and their arguments, then exit")
    args = ap.parse_args(argv)
    if args.reps <= 0:
        ap.error("--reps must be at least 1")
    return args


def allocator_paths(names, hakmem_dir):
    paths = {"glibc": None}
    for suffix in ("", "_stats", "_hardened", "_hardened1"):
        paths["hakmem" + suffix] = os.path.join(hakmem_dir, "libhakmem%s.so" % suffix)
    paths.update(PEERS)
    chosen = {}
    for name in names:
        if name not in paths:
            sys.exit("compare.py: unknown allocator %r (known: %s)" % (name, ", ".join(paths)))
        if paths[name] is not None and not os.path.exists(paths[name]):
            sys.exit("compare.py: %s not found at %s (run ci/setup.sh and the Bazel build)" % (name, paths[name]))
        chosen[name] = paths[name]
    return chosen


def select_workloads(args):
    """(name, argv) pairs for this mode."""
    wl = []
    seen = set()
    for name, binary, full, quick in workload_table(args.threads):
        if name in seen:  # --threads 1: the _t1 rows are there already
            continue
        seen.add(name)
        wl.append((name, [os.path.join(args.bin_dir, binary)] + (quick if args.quick else full)))
    if args.workloads:
        wanted = [w.strip() for w in args.workloads.split(",") if w.strip()]
        known = {name for name, _ in wl}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            sys.exit("compare.py: unknown workload(s): %s (known: %s)" % (", ".join(unknown), ", ".join(sorted(known))))
        wl = [w for w in wl if w[0] in wanted]
    return wl


class RunError(Exception):
    pass


def run_once(argv, preload, extra_env=None, timeout=600):
    """Runs one workload; returns its parsed RESULT line (and stderr), or raises RunError."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env.pop("HAKMEM_STATS", None)
    if preload:
        env["LD_PRELOAD"] = preload
    if extra_env:
        env.update(extra_env)
    start = time.monotonic()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RunError("timed out after %.0f s" % timeout)
    wall = time.monotonic() - start
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # The one child waited for in between: its user + system CPU time, whole process.
    cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    out = proc.stdout.decode(errors="replace")
    err = proc.stderr.decode(errors="replace")
    m = RESULT_RE.search(out)
    if proc.returncode != 0 or m is None:
        how = ("killed by signal %d" % -proc.returncode) if proc.returncode < 0 else ("exit %d" % proc.returncode)
        raise RunError("%s; output: %s" % (how, (out + err).strip()[-600:] or "(none)"))
    extra = dict(EXTRA_RE.findall(m.group(7)))
    return {
        "ops": int(m.group(2)),
        "ns": int(m.group(3)),
        "checksum": m.group(4),
        "peak_rss_kib": int(m.group(5)),
        "end_rss_kib": int(m.group(6)),
        "extra": {k: int(v) if v.isdigit() else v for k, v in extra.items()},
        "wall_s": wall,
        "cpu_s": cpu,
        "stderr": err,
    }


def repro(argv, preload, stats=False):
    env = ("HAKMEM_STATS=1 " if stats else "") + ("LD_PRELOAD=%s " % preload if preload else "")
    return env + " ".join(argv)


def measure(args, allocs, wls, log=sys.stderr):
    """The interleaved runs. Returns samples[(workload, allocator)] and failures."""
    samples = {(w, a): [] for w, _ in wls for a in allocs}
    failures = {}  # (workload, allocator) -> message
    reference = {}  # workload -> (allocator, checksum) of the first good run
    for rep in range(args.reps):
        t0 = time.monotonic()
        for wname, argv in wls:
            for aname, path in allocs.items():
                if (wname, aname) in failures:
                    continue
                try:
                    r = run_once(argv, path, timeout=args.timeout)
                except RunError as e:
                    failures[(wname, aname)] = "%s\n    reproduce: %s" % (e, repro(argv, path))
                    print("compare.py: FAILED %s under %s: %s" % (wname, aname, e), file=log)
                    continue
                ref = reference.setdefault(wname, (aname, r["checksum"]))
                if ref[1] != r["checksum"]:
                    failures[(wname, aname)] = ("checksum %s, but %s gave %s: wrong results\n    reproduce: %s"
                                                % (r["checksum"], ref[0], ref[1], repro(argv, path)))
                    print("compare.py: FAILED %s under %s: checksum mismatch" % (wname, aname), file=log)
                    continue
                samples[(wname, aname)].append(r)
        print("compare.py: repetition %d/%d done (%.0f s)" % (rep + 1, args.reps, time.monotonic() - t0), file=log)
    return samples, failures, reference


def report_sections(text):
    """{section: {label: value}} of the report's "  label   value" lines; a section
    starts at an unindented line ("Purge batcher:")."""
    sections, current = {}, None
    for line in text.splitlines():
        if line and not line[0].isspace():
            current = sections.setdefault(line.rstrip(":"), {})
        elif current is not None:
            m = LABEL_VALUE_RE.match(line)
            if m:
                current[m.group(1)] = int(m.group(2))
    return sections


def parse_stats_report(text, ops):
    """hakmem's counters from its stats report, keyed as in HAKMEM_COUNTER_KEYS; the
    names of the groups the report lacks (an older report format, say) go to missing."""
    counters, missing = {}, []
    calls = {m.group(1): int(m.group(2)) for m in OS_CALL_RE.finditer(text)}
    if len(calls) == len(OS_CALLS):
        counters.update({"os_" + c: n for c, n in calls.items()})
        if ops > 0:
            counters["os_calls_per_op"] = sum(calls.values()) / ops
    else:
        missing.append("OS calls")
    caches = {m.group(1): dict(zip(CACHE_FIELDS, map(int, m.groups()[1:]))) for m in CACHE_RE.finditer(text)}
    for cache in CACHES:
        if cache not in caches:
            missing.append(cache)
            continue
        c = caches[cache]
        counters.update({"%s_%s" % (cache, f): c[f] for f in CACHE_FIELDS})
        lookups = c["hits"] + c["misses"]
        if lookups > 0:  # the report's own rate is a whole percent, and 0 with no lookups
            counters[cache + "_hit_rate_pct"] = 100.0 * c["hits"] / lookups
    sections = report_sections(text)
    for (section, label), key in REPORT_COUNTERS.items():
        if label in sections.get(section, {}):
            counters[key] = sections[section][label]
        else:
            missing.append("%s / %s" % (section, label))
    return counters, missing


def hakmem_counters(args, wls, reference, failures, log=sys.stderr):
    """One run of each workload under libhakmem_stats.so with HAKMEM_STATS=1:
    {workload: counters of parse_stats_report}."""
    lib = os.path.join(args.hakmem_dir, "libhakmem_stats.so")
    counts = {}
    if args.no_os_stats:
        return counts
    if not os.path.exists(lib):
        print("compare.py: %s missing; no OS-call counts" % lib, file=log)
        return counts
    for wname, argv in wls:
        try:
            r = run_once(argv, lib, {"HAKMEM_STATS": "1"}, timeout=args.timeout)
        except RunError as e:
            failures[(wname, "hakmem_stats (HAKMEM_STATS=1)")] = "%s\n    reproduce: %s" % (e, repro(argv, lib, True))
            continue
        ref = reference.get(wname)
        if ref is not None and ref[1] != r["checksum"]:
            failures[(wname, "hakmem_stats (HAKMEM_STATS=1)")] = (
                "checksum %s, but %s gave %s\n    reproduce: %s" % (r["checksum"], ref[0], ref[1], repro(argv, lib, True)))
        found, missing = parse_stats_report(r["stderr"], r["ops"])
        if missing:
            print("compare.py: the stats report of %s lacks: %s" % (wname, ", ".join(missing)), file=log)
        if found:
            counts[wname] = found
    print("compare.py: hakmem's counters from libhakmem_stats.so done", file=log)
    return counts


def median_run(runs):
    """The run of median time (the lower middle one of an even number): a real run,
    whose per-run fields (such as RSS samples) belong together."""
    return sorted(runs, key=lambda x: x["ns"] / max(x["ops"], 1))[(len(runs) - 1) // 2]


def rss_samples(run):
    """A run's RSS samples in KiB (the samples=k1,k2,... field of rss_over_time), or None."""
    text = run["extra"].get("samples")
    if text is None:
        return None
    text = str(text)
    if not re.fullmatch(r"\d+(,\d+)*", text):
        return None
    return [int(v) for v in text.split(",")]


def summarize(allocs, wls, samples, counters, failures):
    """One row per (workload, allocator); an allocator that failed a workload in any
    repetition gets no row there (the tables show FAILED)."""
    rows = []
    for wname, argv in wls:
        med, rss = {}, {}
        block = []
        for aname in allocs:
            s = samples[(wname, aname)]
            if not s or (wname, aname) in failures:
                continue
            per_op = [x["ns"] / x["ops"] for x in s]
            med[aname] = statistics.median(per_op)
            rss[aname] = statistics.median(x["peak_rss_kib"] for x in s)
            row = {
                "workload": wname,
                "allocator": aname,
                "ns_per_op": med[aname],
                "spread_pct": 100.0 * (max(per_op) - min(per_op)) / med[aname] if med[aname] > 0 else 0.0,
                "ops": s[0]["ops"],
                "peak_rss_kib": rss[aname],
                "end_rss_kib": statistics.median(x["end_rss_kib"] for x in s),
                "cpu_s": statistics.median(x["cpu_s"] for x in s),
                "reps": len(s),
                "samples_ns_per_op": per_op,
                "command": " ".join([os.path.basename(argv[0])] + argv[1:]),
            }
            for key in sorted(s[0]["extra"]):
                vals = [x["extra"].get(key) for x in s]
                if all(isinstance(v, int) for v in vals):
                    row[key] = statistics.median(vals)
            samples_kib = rss_samples(median_run(s))
            if samples_kib:
                row["rss_samples_kib"] = samples_kib
                row["mean_rss_kib"] = statistics.mean(samples_kib)
            if aname == "hakmem":
                row.update(counters.get(wname, {}))
            block.append(row)
        for row in block:
            for ref in ("glibc", "mimalloc"):
                if ref in med and med[ref] > 0:
                    row["time_ratio_to_" + ref] = row["ns_per_op"] / med[ref]
            if "mimalloc" in rss and rss["mimalloc"] > 0:
                row["rss_ratio_to_mimalloc"] = row["peak_rss_kib"] / rss["mimalloc"]
            mi_cpu = next((r["cpu_s"] for r in block if r["allocator"] == "mimalloc"), 0)
            if mi_cpu > 0:
                row["cpu_ratio_to_mimalloc"] = row["cpu_s"] / mi_cpu
        rows.extend(block)
    return rows


def geomean(xs):
    xs = [x for x in xs if x is not None and x > 0 and math.isfinite(x)]
    return statistics.geometric_mean(xs) if xs else float("nan")


def fmt(x, spec="%.3f"):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else spec % x


def mib(n):
    return None if n is None else n / (1024.0 * 1024.0)


def cache_columns(cache, title):
    return ([("%s %s" % (title, f), "%s_%s" % (cache, f), "%d", None) for f in CACHE_FIELDS]
            + [("%s hit rate" % title, cache + "_hit_rate_pct", "%.1f%%", None)])


# Columns of the counters table: (header, key in hakmem's row, format, transform).
COUNTER_COLUMNS = (
    [("OS calls/op", "os_calls_per_op", "%.4f", None)]
    + cache_columns("bigcache", "BigCache") + cache_columns("whale", "whale")
    + [("purge flushes", "purge_flushes", "%d", None),
       ("madvise ranges", "purge_ranges", "%d", None),
       ("MiB purged", "purge_bytes", "%.1f", mib),
       ("MiB reused before purge", "purge_cancelled_bytes", "%.1f", mib),
       ("realloc in place", "huge_grow_in_place", "%d", None),
       ("realloc by mremap", "huge_moved_by_remap", "%d", None),
       ("realloc by copy", "huge_moved_by_copy", "%d", None)])


def counters_table(by_key, wnames):
    """hakmem's cache and batching counters, one row per workload (lines of Markdown;
    none if no workload has them)."""
    have = [w for w in wnames if any(k in by_key.get((w, "hakmem"), {}) for k in HAKMEM_COUNTER_KEYS)]
    if not have:
        return []
    out = ["hakmem's caches and batches, from the same stats run (OS calls/op = (mmap + munmap + madvise + mremap + mprotect) "
           "/ ops; hit rate = hits / (hits + misses); realloc: huge blocks grown in place, moved by mremap, copied):",
           "",
           "| workload | " + " | ".join(c[0] for c in COUNTER_COLUMNS) + " |",
           "|---|" + "---:|" * len(COUNTER_COLUMNS)]
    for w in have:
        r = by_key[(w, "hakmem")]
        cells = [fmt(t(r.get(key)) if t else r.get(key), spec) for _, key, spec, t in COUNTER_COLUMNS]
        out.append("| %s | %s |" % (w, " | ".join(cells)))
    out.append("")
    return out


# Workloads whose extra RESULT fields are RSS at their phases: (workload, the key a
# row must have, title, columns of (header, key in the row, in KiB)).
# rss_over_time's mean_rss_kib is the mean of the samples of its median run.
PHASE_TABLES = (
    ("rss", "sparse_rss_kib", "rss workload, MiB: live set filled / 1 in 16 blocks left (scattered) / everything freed:",
     [("live data", "live_bytes_kib"), ("RSS live", "live_rss_kib"), ("RSS 1/16 left", "sparse_rss_kib"),
      ("RSS all freed", "end_rss_kib")]),
    ("abandon", "freed_rss_kib", "abandon workload, MiB (last round): the exited thread's blocks live / freed by the main "
     "thread / after the 64 B pairs:",
     [("abandoned data", "abandoned_kib"), ("RSS live", "live_rss_kib"), ("RSS freed", "freed_rss_kib"),
      ("RSS at the end", "end_rss_kib"), ("peak RSS", "peak_rss_kib")]),
    ("thread_churn", "left_rss_kib", "thread_churn workload, MiB: 4 blocks of every thread left / everything freed:",
     [("peak RSS", "peak_rss_kib"), ("RSS blocks left", "left_rss_kib"), ("RSS all freed", "end_rss_kib")]),
    ("rss_over_time", "final_rss_kib", "rss_over_time workload, MiB (rss_over_time.svg draws the samples):",
     [("peak RSS", "peak_rss_kib"), ("mean of samples", "mean_rss_kib"), ("residue data", "residue_kib"),
      ("RSS end (residue live)", "final_rss_kib"), ("RSS all freed", "end_rss_kib")]),
)


# Workloads run at 1 and at N threads (same work per thread): N-thread throughput over
# 1-thread throughput is how far an allocator lets the threads scale.
SCALING_BASES = ("tiny_pairs", "random_replace", "threads_churn")


def scaling_table(by_key, allocs, wnames):
    """Lines of the scaling table: throughput at tN / throughput at t1 per allocator."""
    pairs = []
    for base in SCALING_BASES:
        many = [w for w in wnames if w.startswith(base + "_t") and w != base + "_t1"]
        if base + "_t1" in wnames and many:
            pairs.append((base + "_t1", many[0]))
    if not pairs:
        return []
    out = ["Scaling: throughput (operations per second, all threads) at N threads over 1 thread "
           "(N = the machine's cores is the most one can get):", "",
           "| workloads | " + " | ".join(allocs) + " |", "|---|" + "---:|" * len(allocs)]
    for one, many in pairs:
        cells = []
        for a in allocs:
            r1, rn = by_key.get((one, a)), by_key.get((many, a))
            cells.append(fmt(r1["ns_per_op"] / rn["ns_per_op"], "%.2f") if r1 and rn and rn["ns_per_op"] > 0
                         else "-")
        out.append("| %s / %s | %s |" % (many, one, " | ".join(cells)))
    out.append("")
    return out


def tables(rows, allocs, wnames, failures):
    """The Markdown report, as a list of lines."""
    out = []
    out.append("| workload | allocator | ns/op (median) | spread | peak RSS MiB | end RSS MiB | time / glibc "
               "| time / mimalloc | RSS / mimalloc | " + " | ".join(OS_CALLS) + " |")
    out.append("|---|---|" + "---:|" * (7 + len(OS_CALLS)))
    by_key = {(r["workload"], r["allocator"]): r for r in rows}
    for w in wnames:
        for a in allocs:
            r = by_key.get((w, a))
            if r is None:
                out.append("| %s | %s | FAILED |" % (w, a) + " |" * (6 + len(OS_CALLS)))
                continue
            out.append(("| %s | %s | %.2f | %.1f%% | %.1f | %.1f | %s | %s | %s |" + " %s |" * len(OS_CALLS)) % (
                w, a, r["ns_per_op"], r["spread_pct"], r["peak_rss_kib"] / 1024.0, r["end_rss_kib"] / 1024.0,
                fmt(r.get("time_ratio_to_glibc")), fmt(r.get("time_ratio_to_mimalloc")),
                fmt(r.get("rss_ratio_to_mimalloc")),
                *(fmt(r.get("os_" + c), "%d") for c in OS_CALLS)))
    for a in allocs:
        mine = [r for r in rows if r["allocator"] == a]
        missing = len(wnames) - len(mine)
        out.append("| **geomean** | %s | | | | | %s | %s | %s | | | | |" % (
            a + (" (%d failed, left out)" % missing if missing else ""), fmt(geomean([r.get("time_ratio_to_glibc") for r in mine])),
            fmt(geomean([r.get("time_ratio_to_mimalloc") for r in mine])),
            fmt(geomean([r.get("rss_ratio_to_mimalloc") for r in mine]))))
    out.append("")
    out.append("mmap/munmap/madvise/mremap: hakmem's OS calls in one run of the workload (stats variant, "
               "HAKMEM_STATS=1).")
    out.append("")
    out.extend(counters_table(by_key, wnames))
    for title, key in (("Time per operation / mimalloc (lower is better)", "time_ratio_to_mimalloc"),
                       ("CPU time (user + system, whole process) / mimalloc (lower is better)",
                        "cpu_ratio_to_mimalloc"),
                       ("Peak RSS / mimalloc (lower is better)", "rss_ratio_to_mimalloc")):
        out.append("%s:" % title)
        out.append("")
        out.append("| workload | " + " | ".join(allocs) + " |")
        out.append("|---|" + "---:|" * len(allocs))
        for w in wnames:
            out.append("| %s | %s |" % (w, " | ".join(fmt(by_key.get((w, a), {}).get(key), "%.2f") for a in allocs)))
        out.append("| **geomean** | %s |" % " | ".join(
            fmt(geomean([by_key.get((w, a), {}).get(key) for w in wnames]), "%.2f") for a in allocs))
        out.append("")
    out.extend(scaling_table(by_key, allocs, wnames))
    for workload, need, title, columns in PHASE_TABLES:
        have = [r for r in rows if r["workload"] == workload and need in r]
        if not have:
            continue
        out.append(title)
        out.append("")
        out.append("| allocator | " + " | ".join(c[0] for c in columns) + " |")
        out.append("|---|" + "---:|" * len(columns))
        for r in have:
            out.append("| %s | %s |" % (r["allocator"], " | ".join(
                fmt(r.get(key) / 1024.0 if isinstance(r.get(key), (int, float)) else None, "%.1f")
                for _, key in columns)))
        out.append("")
    behind = sorted(((r["time_ratio_to_mimalloc"], r["workload"]) for r in rows
                     if r["allocator"] == "hakmem" and r.get("time_ratio_to_mimalloc", 0) > 1.1), reverse=True)
    if behind:
        out.append("hakmem is behind mimalloc (time ratio > 1.1) on: " +
                   ", ".join("%s %.2fx" % (w, x) for x, w in behind))
        out.append("")
    if failures:
        out.append("FAILURES (wrong results or crashes; a bug of that allocator or of the workload):")
        for (w, a), msg in sorted(failures.items()):
            out.append("- %s under %s: %s" % (w, a, msg))
        out.append("")
    return out


def write_outputs(out, rows, meta, report_lines):
    keys = ["workload", "allocator", "ns_per_op", "spread_pct", "reps", "ops", "peak_rss_kib", "end_rss_kib",
            "time_ratio_to_glibc", "time_ratio_to_mimalloc", "rss_ratio_to_mimalloc"] + HAKMEM_COUNTER_KEYS
    keys += sorted({k for r in rows for k in r} - set(keys) - {"samples_ns_per_op", "rss_samples_kib", "command"})
    keys += ["command"]
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(rows, f, indent=1)
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(report_lines) + "\n")


GNUPLOT_SCRIPT = """\
set terminal svg size {width},600 dynamic enhanced font 'sans,12' background rgb 'white'
set output '{svg}'
set title "{title}" font 'sans,14'
set datafile missing 'NaN'
set style fill solid 0.85 border rgb '#333333'
set logscale y 2
set yrange [{ymin}:{ymax}]
set ytics ({ytics})
set xrange [-0.6:{xmax}]
set xtics ({xtics}) rotate by -35 scale 0 nomirror noenhanced
set grid ytics lc rgb '#cccccc'
set key outside right top vertical noenhanced
set ylabel "{ylabel}"
set bmargin 7
set arrow from graph 0, first 1 to graph 1, first 1 nohead lc rgb '#000000' lw 1.5 front
{linetypes}
{plot}
"""

# Colours by allocator, so a chart keeps them when allocators are left out.
ALLOC_COLOURS = {"glibc": "#9e9e9e", "hakmem": "#d62728", "hakmem_stats": "#ff9896", "hakmem_hardened": "#8c564b",
                 "hakmem_hardened1": "#c49c94",
                 "mimalloc": "#1f77b4", "jemalloc": "#2ca02c", "tcmalloc": "#ff7f0e"}


def plot(out, rows, allocs, wnames, key, stem, title, ylabel, log=sys.stderr):
    """Writes <stem>.dat, <stem>.gp and <stem>.svg; returns the SVG path or None.

    One bar group per workload (and a geomean group), one bar per allocator, on a log
    scale; each bar starts at 1 (the reference), so slower than mimalloc points up and
    faster points down."""
    if shutil.which("gnuplot") is None:
        print("compare.py: gnuplot not installed (Debian: gnuplot-nox); no chart", file=log)
        return None
    by_key = {(r["workload"], r["allocator"]): r for r in rows}
    groups = list(wnames) + ["geomean"]
    table = {}
    for w in wnames:
        for a in allocs:
            table[(w, a)] = by_key.get((w, a), {}).get(key)
    for a in allocs:
        g = geomean([table[(w, a)] for w in wnames])
        table[("geomean", a)] = None if math.isnan(g) else g
    values = [v for v in table.values() if v is not None]
    if not values:
        return None
    ymin = 2.0 ** math.floor(math.log2(min(min(values), 1.0) / 1.2))
    ymax = 2.0 ** math.ceil(math.log2(max(max(values), 1.0) * 1.2))
    ticks = []
    e = int(round(math.log2(ymin)))
    while 2.0 ** e <= ymax:
        v = 2.0 ** e
        ticks.append('"%s" %s' % (("%g" % v) if v >= 1 else "1/%d" % round(1 / v), repr(v)))
        e += 1
    n = len(allocs)
    width = 0.8 / n
    dat = os.path.join(out, stem + ".dat")
    with open(dat, "w") as f:  # x of the group, then one column per allocator
        f.write("# %s: %s\n" % (key, title))
        f.write("x " + " ".join(allocs) + "\n")
        for i, w in enumerate(groups):
            f.write("%d %s  # %s\n" % (i, " ".join("NaN" if table[(w, a)] is None else "%.5g" % table[(w, a)]
                                                    for a in allocs), w))
    parts = []
    for j, a in enumerate(allocs):
        off = (j - (n - 1) / 2.0) * width
        col = j + 2
        parts.append("'%s' skip 2 using ($1+%.4f):(1):($1+%.4f):($1+%.4f):(1<$%d?1:$%d):(1<$%d?$%d:1) "
                     "with boxxyerror lt %d title '%s'" % (os.path.basename(dat), off, off - width / 2,
                                                           off + width / 2, col, col, col, col, j + 1, a))
    linetypes = "\n".join("set linetype %d lc rgb '%s'" % (j + 1, ALLOC_COLOURS.get(a, "#17becf"))
                           for j, a in enumerate(allocs))
    script = GNUPLOT_SCRIPT.format(
        width=max(900, int(len(groups) * (40 + 14 * n)) + 250), svg=os.path.basename(stem + ".svg"), title=title,
        ymin=ymin, ymax=ymax, ytics=", ".join(ticks), xmax=len(groups) - 0.4,
        xtics=", ".join('"%s" %d' % (w, i) for i, w in enumerate(groups)), ylabel=ylabel, linetypes=linetypes,
        plot="plot " + ", \\\n     ".join(parts))
    gp = os.path.join(out, stem + ".gp")
    with open(gp, "w") as f:
        f.write(script)
    proc = subprocess.run(["gnuplot", os.path.basename(gp)], cwd=out, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        print("compare.py: gnuplot failed:\n%s" % proc.stdout.decode(errors="replace"), file=log)
        return None
    return os.path.join(out, stem + ".svg")


def nice_step(span, ticks):
    """A tick step of 1, 2 or 5 times a power of ten giving about `ticks` ticks over span."""
    raw = max(span, 1e-9) / ticks
    power = 10.0 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * power >= raw:
            return m * power
    return 10 * power


def plot_rss_over_time(out, rows, allocs, title, workload="rss_over_time"):
    """Writes <out>/rss_over_time.svg: one polyline per allocator, RSS in MiB over the
    sample index, from the rows' rss_samples_kib (each allocator's run of median time).
    Plain SVG text, no gnuplot needed. Returns the path, or None without samples."""
    series = [(a, r["rss_samples_kib"]) for a in allocs for r in rows
              if r["workload"] == workload and r["allocator"] == a and r.get("rss_samples_kib")]
    if not series:
        return None
    every = next((r.get("samples_every") for r in rows if r["workload"] == workload and r.get("samples_every")), None)
    width, height = 960, 540
    left, right, top, bottom = 80, 230, 50, 70
    pw, ph = width - left - right, height - top - bottom
    n = max(len(s) for _, s in series)
    ymax_mib = max(max(s) for _, s in series) / 1024.0
    ystep = nice_step(ymax_mib, 6)
    ytop = ystep * max(1, math.ceil(ymax_mib / ystep))
    xstep = max(1, int(nice_step(max(n - 1, 1), 10)))

    def x(i):
        return left + pw * (i / float(max(n - 1, 1)))

    def y(mib_value):
        return top + ph * (1.0 - mib_value / ytop)

    svg = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
           'font-family="sans-serif" font-size="12">' % (width, height, width, height),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%d" y="28" font-size="15" text-anchor="middle">%s</text>' % (left + pw // 2, escape(title))]
    v = 0.0
    while v <= ytop + 1e-9:  # horizontal grid and y tick labels
        svg.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#dddddd"/>' % (left, y(v), left + pw, y(v)))
        svg.append('<text x="%d" y="%.1f" text-anchor="end">%g</text>' % (left - 8, y(v) + 4, round(v, 6)))
        v += ystep
    for i in range(0, n, xstep):  # x ticks
        svg.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#333333"/>' % (x(i), top + ph, x(i), top + ph + 5))
        svg.append('<text x="%.1f" y="%d" text-anchor="middle">%d</text>' % (x(i), top + ph + 19, i))
    svg.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333333"/>' % (left, top, pw, ph))
    xlabel = "sample (every %s steps of the workload; the last one at its end)" % every if every else "sample"
    svg.append('<text x="%d" y="%d" text-anchor="middle">%s</text>' % (left + pw // 2, height - 22, escape(xlabel)))
    svg.append('<text x="20" y="%d" text-anchor="middle" transform="rotate(-90 20 %d)">RSS (MiB)</text>'
               % (top + ph // 2, top + ph // 2))
    for j, (a, s) in enumerate(series):
        colour = ALLOC_COLOURS.get(a, "#17becf")
        points = " ".join("%.1f,%.1f" % (x(i), y(kib / 1024.0)) for i, kib in enumerate(s))
        svg.append('<polyline fill="none" stroke="%s" stroke-width="2" stroke-linejoin="round" points="%s">'
                   '<title>%s</title></polyline>' % (colour, points, escape(a)))
        ly = top + 10 + 22 * j  # legend entry: line, name, RSS at the end
        svg.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>'
                   % (left + pw + 15, ly, left + pw + 40, ly, colour))
        svg.append('<text x="%d" y="%d">%s (end %.1f MiB)</text>' % (left + pw + 46, ly + 4, escape(a), s[-1] / 1024.0))
    svg.append("</svg>")
    path = os.path.join(out, "rss_over_time.svg")
    with open(path, "w") as f:
        f.write("\n".join(svg) + "\n")
    return path


def sha256(path):
    if path is None:
        return None
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def package_version(pkg):
    try:
        return subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL).stdout.decode() or None
    except OSError:
        return None


def main(argv=None):
    sys.stdout.reconfigure(line_buffering=True)
    args = parse_args(argv)
    names = [a.strip() for a in args.allocators.split(",") if a.strip()] if args.allocators else (
        QUICK_ALLOCATORS if args.quick else ALL_ALLOCATORS)
    wls = select_workloads(args)
    if args.list:
        for name, wargv in wls:
            print("%-20s %s" % (name, " ".join(wargv)))
        return 0
    allocs = allocator_paths(names, args.hakmem_dir)
    for _, wargv in wls:
        if not os.path.exists(wargv[0]):
            sys.exit("compare.py: %s not found (build //bench:all)" % wargv[0])
    os.makedirs(args.out, exist_ok=True)
    started = time.monotonic()
    print("compare.py: %d workloads x %d allocators x %d repetitions (%s mode)"
          % (len(wls), len(allocs), args.reps, "quick" if args.quick else "full"), file=sys.stderr)
    samples, failures, reference = measure(args, allocs, wls)
    counters = hakmem_counters(args, wls, reference, failures) if "hakmem" in allocs else {}
    rows = summarize(allocs, wls, samples, counters, failures)
    wnames = [w for w, _ in wls]
    report = tables(rows, list(allocs), wnames, failures)
    charts = []
    if not args.no_plot:
        reps = "median of %d runs, %s mode" % (args.reps, "quick" if args.quick else "full")
        for key, stem, title, ylabel in (
                ("time_ratio_to_mimalloc", "ratios", "Time per operation relative to mimalloc (%s)" % reps,
                 "time / mimalloc (log scale, lower is better)"),
                ("rss_ratio_to_mimalloc", "rss_ratios", "Peak RSS relative to mimalloc (%s)" % reps,
                 "peak RSS / mimalloc (log scale, lower is better)")):
            if "mimalloc" in allocs:
                svg = plot(args.out, rows, list(allocs), wnames, key, stem, title, ylabel)
                if svg:
                    charts.append(svg)
        svg = plot_rss_over_time(args.out, rows, list(allocs), "RSS of rss_over_time over its run (each allocator's "
                                 "run of median time of %d, %s mode)" % (args.reps, "quick" if args.quick else "full"))
        if svg:
            charts.append(svg)
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "reps": args.reps,
        "allocators": {a: {"path": p, "sha256": sha256(p)} for a, p in allocs.items()},
        "versions": {a: package_version(p) for a, p in PEER_PACKAGES.items()},
        "workloads": {w: " ".join(a) for w, a in wls},
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "loadavg_at_end": os.getloadavg(),
        "duration_s": round(time.monotonic() - started, 1),
        "charts": charts,
        "failures": {"%s/%s" % k: v for k, v in failures.items()},
    }
    write_outputs(args.out, rows, meta, report)
    print("\n".join(report))
    print("Results: %s (results.md, results.csv, results.json, meta.json%s); took %.0f s"
          % (args.out, "".join(", " + os.path.basename(c) for c in charts), time.monotonic() - started))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
