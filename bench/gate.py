#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The benchmark gate: fails (exit 1) when hakmem's hot paths get slower.

Two checks, both against bench/thresholds.json:

1. Instruction counts (exact, not fooled by a noisy machine). gate_driver_hakmem, a
   small program with hakmem linked in statically, runs fixed scenarios under
   `valgrind --tool=callgrind`, counting only inside the measured function. Instructions
   per operation (Ir/op) above the baseline by more than the tolerance fail; so does a
   single OS call (mmap + munmap + madvise + mremap) in the measured round beyond the
   baseline's exact count, or more per operation than os_calls_max_per_op (a policy: after warm-up, no scenario may need the OS;
   --update cannot raise it). The same program with the stats variant linked in
   (gate_driver_hakmem_stats) is held to a baseline of its own the same way, and its
   overhead over release printed: the cost of its counters and latency sampling on
   the fast paths. The same program built with glibc's malloc is counted too, for
   reference only.
2. Time ratios to glibc (a sanity check with a generous margin). A few workloads run
   interleaved under glibc and hakmem (LD_PRELOAD) on this machine; the median time of
   hakmem divided by glibc's must stay below each workload's limit. A ratio over its
   limit is measured again with as many repetitions before it counts, so one burst of
   load from elsewhere does not fail the gate.

Updating the baseline on purpose (a change that makes hakmem do more work for a
reason, or an improvement to lock in):
    bench/gate.py --bin-dir ... --hakmem-dir ... --update
(ci/bench_gate.sh --update does the build and this) rewrites the callgrind baselines
in thresholds.json from this run; commit the file with the change that explains it.
Time limits are policy and are edited by hand.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (same folder)

HERE = os.path.dirname(os.path.abspath(__file__))
GATE_RE = re.compile(r"GATE scenario=(\S+) ops=(\d+) checksum=(\d+) os_calls=(-?\d+)")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", required=True, help="folder with gate_driver_* and the workloads (bazel-bin/bench)")
    ap.add_argument("--hakmem-dir", required=True, help="folder with libhakmem.so (bazel-bin/hakmem)")
    ap.add_argument("--thresholds", default=os.path.join(HERE, "thresholds.json"))
    ap.add_argument("--out", default="bench-out", help="folder for gate.json (default bench-out)")
    ap.add_argument("--update", action="store_true",
                    help="write this run's instruction counts into the thresholds file as the new baseline")
    ap.add_argument("--skip-time", action="store_true", help="only the instruction-count check")
    ap.add_argument("--skip-callgrind", action="store_true", help="only the time-ratio check")
    return ap.parse_args(argv)


def callgrind_ir(binary, scenario, ops):
    """Runs one scenario under callgrind; returns (Ir, ops, os_calls, checksum)."""
    with tempfile.TemporaryDirectory(prefix="hak-gate-") as tmp:
        out = os.path.join(tmp, "callgrind.out")
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, "--toggle-collect=gate_measured_*",
               binary, scenario, str(ops)]
        # Purges come due by the clock, and callgrind runs slower the busier the machine:
        # with a delay of an hour none does, so the OS-call count is exact and can be
        # held to its baseline. (Budget-driven purges and every other call still count;
        # purging on time has its own tests.)
        env = dict(os.environ, HAKMEM_PURGE_DELAY_MS="3600000")
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        text = proc.stdout.decode(errors="replace")
        m = GATE_RE.search(text)
        if proc.returncode != 0 or m is None:
            raise RuntimeError("%s failed (exit %d):\n%s%s" % (" ".join(cmd), proc.returncode, text,
                                                             proc.stderr.decode(errors="replace")[-2000:]))
        ir = None
        with open(out) as f:
            for line in f:
                if line.startswith("summary:") or line.startswith("totals:"):
                    ir = int(line.split()[1])
        if ir is None:
            raise RuntimeError("no instruction total in %s" % out)
        return ir, int(m.group(2)), int(m.group(4)), m.group(3)


def check_callgrind(args, th):
    cfg = th["callgrind"]
    tol = cfg["tolerance_pct"] / 100.0
    os_max = cfg.get("os_calls_max_per_op")
    results, failed = [], False
    for name, base in cfg["scenarios"].items():
        ops = base["ops"]
        ir, done, os_calls, checksum = callgrind_ir(os.path.join(args.bin_dir, "gate_driver_hakmem"), name, ops)
        ref_ir, _, _, ref_checksum = callgrind_ir(os.path.join(args.bin_dir, "gate_driver_glibc"), name, ops)
        stats_ir, stats_done, _, stats_checksum = callgrind_ir(
            os.path.join(args.bin_dir, "gate_driver_hakmem_stats"), name, ops)
        r = {"scenario": name, "ops": done, "ir_per_op": ir / done, "os_calls": os_calls,
             "os_calls_per_op": os_calls / done, "glibc_ir_per_op": ref_ir / done,
             "baseline_ir_per_op": base.get("ir_per_op"), "baseline_os_calls": base.get("os_calls"),
             "stats_ir_per_op": stats_ir / stats_done, "baseline_stats_ir_per_op": base.get("stats_ir_per_op"),
             "status": "ok", "notes": []}
        r["stats_overhead_pct"] = 100.0 * (r["stats_ir_per_op"] / r["ir_per_op"] - 1)
        ob = r["baseline_os_calls"]
        r["baseline_os_calls_per_op"] = None if ob is None else ob / done
        if checksum != ref_checksum or stats_checksum != ref_checksum:
            r["status"] = "FAIL"
            r["wrong_results"] = True
            r["notes"].append("checksum %s (stats variant %s), glibc %s: wrong results"
                              % (checksum, stats_checksum, ref_checksum))
        sb = r["baseline_stats_ir_per_op"]
        if sb is None:
            r["notes"].append("stats variant: no baseline (run with --update)")
        elif r["stats_ir_per_op"] > sb * (1 + tol):
            r["status"] = "FAIL"
            r["notes"].append("stats variant: %.1f Ir/op is %+.1f%% over its baseline %.1f (tolerance %g%%)"
                              % (r["stats_ir_per_op"], 100.0 * (r["stats_ir_per_op"] / sb - 1), sb,
                                 cfg["tolerance_pct"]))
        b = r["baseline_ir_per_op"]
        if b is None:
            r["notes"].append("no baseline (run with --update)")
        else:
            r["limit_ir_per_op"] = b * (1 + tol)
            r["change_pct"] = 100.0 * (r["ir_per_op"] / b - 1)
            if r["ir_per_op"] > r["limit_ir_per_op"]:
                r["status"] = "FAIL"
                r["notes"].append("%.1f Ir/op is %+.1f%% over the baseline %.1f (tolerance %g%%)"
                                  % (r["ir_per_op"], r["change_pct"], b, cfg["tolerance_pct"]))
            elif r["ir_per_op"] < b * (1 - tol):
                r["notes"].append("%.1f%% fewer instructions than the baseline: lock it in with --update"
                                  % -r["change_pct"])
        # OS calls are counted exactly (the measured round is deterministic): one more
        # than the baseline fails, since a leak of one call per round is what to catch.
        if ob is not None and os_calls > ob:
            r["status"] = "FAIL"
            r["notes"].append("%d OS calls in the measured round, baseline %d" % (os_calls, ob))
        elif ob is not None and os_calls < ob:
            r["notes"].append("%d OS calls, fewer than the baseline %d: lock it in with --update" % (os_calls, ob))
        if os_max is not None and r["os_calls_per_op"] > os_max:
            r["status"] = "FAIL"
            r["over_os_limit"] = True
            r["notes"].append("%.4f OS calls/op, over the limit of %g for every scenario"
                              % (r["os_calls_per_op"], os_max))
        failed |= r["status"] != "ok"
        results.append(r)
    print("Instruction counts (valgrind --tool=callgrind, inside gate_measured_*; tolerance %g%%):"
          % cfg["tolerance_pct"])
    print()
    print("| scenario | ops | Ir/op | baseline | change | limit | OS calls | baseline | stats Ir/op | baseline "
          "| stats over release | glibc Ir/op | result |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        print("| %s | %d | %.1f | %s | %s | %s | %d | %s | %.1f | %s | %+.1f%% | %.1f | %s |" % (
            r["scenario"], r["ops"], r["ir_per_op"], compare.fmt(r["baseline_ir_per_op"], "%.1f"),
            compare.fmt(r.get("change_pct"), "%+.1f%%"), compare.fmt(r.get("limit_ir_per_op"), "%.1f"),
            r["os_calls"], compare.fmt(r["baseline_os_calls"], "%d"), r["stats_ir_per_op"],
            compare.fmt(r["baseline_stats_ir_per_op"], "%.1f"), r["stats_overhead_pct"], r["glibc_ir_per_op"],
            r["status"] + ("" if not r["notes"] else ": " + "; ".join(r["notes"]))))
    print()
    return results, failed


def time_args(args, workloads, reps):
    ns = compare.parse_args(["--bin-dir", args.bin_dir, "--hakmem-dir", args.hakmem_dir, "--quick",
                             "--reps", str(reps), "--allocators", "glibc,hakmem", "--workloads", ",".join(workloads),
                             "--no-os-stats", "--no-plot"])
    return ns


def time_ratios(samples, wnames):
    ratios = {}
    for w in wnames:
        g = [x["ns"] / x["ops"] for x in samples[(w, "glibc")]]
        h = [x["ns"] / x["ops"] for x in samples[(w, "hakmem")]]
        if g and h:
            ratios[w] = statistics.median(h) / statistics.median(g)
    return ratios


def check_time(args, th):
    cfg = th["time_ratio_to_glibc"]
    limits = cfg["max"]
    reps = cfg.get("reps", 5)
    cargs = time_args(args, list(limits), reps)
    allocs = compare.allocator_paths(["glibc", "hakmem"], args.hakmem_dir)
    wls = compare.select_workloads(cargs)
    samples, failures, _ = compare.measure(cargs, allocs, wls)
    ratios = time_ratios(samples, limits)
    over = [w for w in limits if w in ratios and ratios[w] > limits[w]]
    retried = []
    if over:  # measure again before failing: load from elsewhere comes in bursts
        print("gate.py: over the limit on %s; measuring again (%d more repetitions)" % (", ".join(over), reps),
              file=sys.stderr)
        wls2 = [w for w in wls if w[0] in over]
        more, failures2, _ = compare.measure(cargs, allocs, wls2)
        failures.update(failures2)
        for key, s in more.items():
            samples[key].extend(s)
        ratios.update(time_ratios(samples, over))
        retried = over
    results, failed = [], False
    for w, limit in limits.items():
        r = {"workload": w, "ratio": ratios.get(w), "limit": limit, "reps": len(samples.get((w, "hakmem"), [])),
             "status": "ok", "notes": []}
        for a in ("glibc", "hakmem"):
            if (w, a) in failures:
                r["status"] = "FAIL"
                r["notes"].append("%s: %s" % (a, failures[(w, a)]))
        if r["ratio"] is None:
            r["status"] = "FAIL"
        elif r["ratio"] > limit:
            r["status"] = "FAIL"
            r["notes"].append("hakmem takes %.2fx glibc's time (limit %.2fx)" % (r["ratio"], limit))
        if w in retried:
            r["notes"].append("measured twice")
        r["glibc_ns_per_op"] = statistics.median(x["ns"] / x["ops"] for x in samples[(w, "glibc")]) \
            if samples[(w, "glibc")] else None
        r["hakmem_ns_per_op"] = statistics.median(x["ns"] / x["ops"] for x in samples[(w, "hakmem")]) \
            if samples[(w, "hakmem")] else None
        failed |= r["status"] != "ok"
        results.append(r)
    print("Time ratio hakmem / glibc (quick workloads, interleaved, median of %d runs each; generous limits):" % reps)
    print()
    print("| workload | glibc ns/op | hakmem ns/op | hakmem / glibc | limit | result |")
    print("|---|---:|---:|---:|---:|---|")
    for r in results:
        print("| %s | %s | %s | %s | %.2f | %s |" % (
            r["workload"], compare.fmt(r["glibc_ns_per_op"], "%.2f"), compare.fmt(r["hakmem_ns_per_op"], "%.2f"),
            compare.fmt(r["ratio"], "%.3f"), r["limit"],
            r["status"] + ("" if not r["notes"] else ": " + "; ".join(r["notes"]))))
    print()
    return results, failed


def update_baseline(args, th, cg_results):
    for r in cg_results:
        base = th["callgrind"]["scenarios"][r["scenario"]]
        old = base.get("ir_per_op")
        old_stats = base.get("stats_ir_per_op")
        base["ir_per_op"] = round(r["ir_per_op"], 2)
        base.pop("os_calls_per_op", None)
        base["os_calls"] = r["os_calls"]
        base["stats_ir_per_op"] = round(r["stats_ir_per_op"], 2)
        print("gate.py: %s: baseline %s -> %.2f Ir/op, %d OS calls; stats variant %s -> %.2f Ir/op"
              % (r["scenario"], old, base["ir_per_op"], base["os_calls"], old_stats, base["stats_ir_per_op"]))
    with open(args.thresholds, "w") as f:
        json.dump(th, f, indent=2)
        f.write("\n")
    print("gate.py: wrote %s; commit it with the change that explains the new counts" % args.thresholds)


def main(argv=None):
    sys.stdout.reconfigure(line_buffering=True)  # keep the tables in order with progress on stderr
    args = parse_args(argv)
    with open(args.thresholds) as f:
        th = json.load(f)
    started = time.monotonic()
    failed = False
    report = {"thresholds": os.path.abspath(args.thresholds)}
    if not args.skip_callgrind:
        if shutil.which("valgrind") is None:
            sys.exit("gate.py: valgrind not installed (run ci/setup.sh)")
        cg, f = check_callgrind(args, th)
        report["callgrind"] = cg
        if args.update:  # a new baseline on purpose: only wrong results and the OS-call policy still fail
            f = any(r.get("wrong_results") or r.get("over_os_limit") for r in cg)
            if f:
                print("gate.py: baseline not updated: a scenario gave wrong results or broke the OS-call limit")
            else:
                update_baseline(args, th, cg)
        failed |= f
    if not args.skip_time and not args.update:
        tr, f = check_time(args, th)
        report["time_ratio_to_glibc"] = tr
        failed |= f
    os.makedirs(args.out, exist_ok=True)
    report["passed"] = not failed
    report["duration_s"] = round(time.monotonic() - started, 1)
    with open(os.path.join(args.out, "gate.json"), "w") as f:
        json.dump(report, f, indent=1)
    print("GATE %s (%.0f s; details in %s)" % ("FAILED" if failed else "PASSED", time.monotonic() - started,
                                              os.path.join(args.out, "gate.json")))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
