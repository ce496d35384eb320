#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/stats_charts.py on real reports of the stats variant: two runs of
stats_workload (HAKMEM_STATS=json, HAKMEM_STATS_FILE) give two reports; the tool must
draw every chart as well-formed SVG holding the figures of the report, and refuse a
file that is not a report.

    stats_charts_test.py <stats_charts.py> <stats_workload>
"""
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

SVG = "{http://www.w3.org/2000/svg}"
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL: " + what)


def texts(path):
    root = ET.parse(path).getroot()  # raises on malformed SVG
    return [t.text or "" for t in root.iter(SVG + "text")], [t.text or "" for t in root.iter(SVG + "title")]


def main(tool, workload):
    tmp = os.environ.get("TEST_TMPDIR") or tempfile.mkdtemp()
    reports = []
    for rounds in (1, 3):
        path = os.path.join(tmp, "report-%d.json" % rounds)
        env = dict(os.environ, HAKMEM_STATS="json", HAKMEM_STATS_FILE=path)
        subprocess.run([workload, str(rounds)], env=env, check=True)
        with open(path) as f:
            reports.append(json.load(f))
        check(reports[-1]["counters_enabled"] == 1, "%s: a stats-variant report" % path)
    out = os.path.join(tmp, "charts")
    run = subprocess.run([sys.executable, tool, os.path.join(tmp, "report-1.json"), os.path.join(tmp, "report-3.json"),
                          "--out", out], capture_output=True, text=True)
    check(run.returncode == 0, "the tool succeeds (stderr: %s)" % run.stderr.strip())
    drawn = sorted(os.path.basename(p) for p in run.stdout.split())
    check(drawn == ["caches.svg", "classes.svg", "latency.svg", "os.svg", "rss.svg"], "every chart drawn: %s" % drawn)

    last = reports[-1]
    labels, tips = texts(os.path.join(out, "classes.svg"))
    for c in last["classes"]:
        # each class used has its bars, with the report's exact counts in their tooltips
        check(any(t.endswith(": %d allocs" % c["allocs"]) for t in tips), "classes.svg: allocs of class %d" % c["class"])
    check("huge" in labels, "classes.svg: the blocks above the pools")
    labels, tips = texts(os.path.join(out, "latency.svg"))
    for p, name in (("p50_ns", "P50"), ("p999_ns", "P99.9")):
        check(any(t.startswith("malloc") and (" %s: %d ns" % (name, last["latency"]["malloc"][p])) in t for t in tips),
              "latency.svg: malloc %s" % name)
    labels, tips = texts(os.path.join(out, "caches.svg"))
    whale = last["whale"]
    rate = 100.0 * whale["hits"] / (whale["hits"] + whale["misses"])
    check(whale["hits"] > 0, "the workload's second pass hits the whale cache")
    check(any(t.startswith("whale cache (") and t.endswith("): %.1f%%" % rate) for t in tips), "caches.svg: whale hit rate")
    check(any(t.startswith("pools: fast path") for t in tips), "caches.svg: the pools' fast path")
    labels, tips = texts(os.path.join(out, "os.svg"))
    check(any(t == "mmap (%.1f us each): %d calls" % (last["os"]["mmap"]["nanos"] / 1000.0 / last["os"]["mmap"]["count"],
                                                      last["os"]["mmap"]["count"]) for t in tips), "os.svg: mmap count")
    labels, tips = texts(os.path.join(out, "rss.svg"))
    check("report-1.json" in labels and "report-3.json" in labels, "rss.svg: one point per report")

    bogus = os.path.join(tmp, "bogus.json")
    with open(bogus, "w") as f:
        json.dump({"name": "not hakmem"}, f)
    run = subprocess.run([sys.executable, tool, bogus, "--out", out], capture_output=True, text=True)
    check(run.returncode != 0 and "not a hakmem stats report" in run.stderr, "a foreign JSON file is refused clearly")

    if failures:
        print("%d check(s) failed" % len(failures))
        return 1
    print("stats_charts: %d charts from 2 reports, all checks passed" % len(drawn))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
