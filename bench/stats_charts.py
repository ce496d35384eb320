#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Draws SVG charts from hakmem's JSON stats reports (HAKMEM_STATS=json, with
HAKMEM_STATS_FILE=path; hak_stats_print_json), with no dependency beyond Python:

    classes.svg   allocations and frees per size class (the classes used; log scale)
    latency.svg   sampled malloc and free latency, P50 / P95 / P99 / P99.9 (log scale)
    caches.svg    hit rates: the thread-local fast path of the pools, BigCache, whale cache
    os.svg        OS calls per kind, and the mean time of one
    rss.svg       RSS, its peak and the bytes in use, one point per report, when several
                  reports are given (in order: e.g. one per phase of a run)

    python3 bench/stats_charts.py REPORT.json [REPORT.json ...] --out DIR

Per-class counts and latencies exist in the stats variant only (counters_enabled 1);
from another variant's report only caches.svg (without the fast path) and os.svg
are drawn. A report that is not hakmem's JSON stops the tool with the reason.
"""
import argparse
import json
import math
import os
import sys
from xml.sax.saxutils import escape

COLOURS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948"]


def human_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return ("%d %s" % (n, unit)) if n == int(n) else ("%.1f %s" % (n, unit))
        n /= 1024.0
    return str(n)


def human_count(n):
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return "%.3g%s" % (n / div, unit)
    return "%d" % n


class Svg:
    """A bar or line chart in plain SVG: a plot area with a y axis (linear or log)."""

    def __init__(self, title, width, labels=(), left=80, right=20, top=60):
        # Room below the plot for the x labels, drawn at 45 degrees.
        bottom = 30 + int(5.2 * max([len(str(x)) for x in labels] + [8]))
        height = 300 + bottom
        left = max(left, int(3.8 * max([len(str(x)) for x in labels[:1]] + [0])) - 40)  # the first label
        self.w, self.h = width, height
        self.x0, self.x1 = left, width - right
        self.y0, self.y1 = height - bottom, top  # y0: the axis at the bottom
        self.parts = []
        self.text(width / 2, 28, title, size=16, anchor="middle", weight="bold")

    def text(self, x, y, s, size=12, anchor="start", weight="normal", rotate=None):
        rot = ' transform="rotate(%d %.1f %.1f)"' % (rotate, x, y) if rotate else ""
        self.parts.append('<text x="%.1f" y="%.1f" font-size="%d" text-anchor="%s" font-weight="%s"%s>%s</text>'
                          % (x, y, size, anchor, weight, rot, escape(str(s))))

    def line(self, x1, y1, x2, y2, colour="#888", width=1):
        self.parts.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="%g"/>'
                          % (x1, y1, x2, y2, colour, width))

    def rect(self, x, y, w, h, colour, tip):
        self.parts.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s</title></rect>'
                          % (x, y, max(w, 0.5), max(h, 0), colour, escape(tip)))

    def polyline(self, points, colour):
        pts = " ".join("%.1f,%.1f" % p for p in points)
        self.parts.append('<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>' % (pts, colour))
        for x, y in points:
            self.parts.append('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>' % (x, y, colour))

    def y_axis(self, top_value, log, fmt, label):
        """Sets the scale (0 or 1 .. top_value) and draws the axis with gridlines."""
        self.log = log
        if log:
            self.lo = math.log10(0.5)  # a count of 1 still shows
            self.hi = max(1.0, math.ceil(math.log10(max(top_value, 1))))
            ticks = [10 ** e for e in range(0, int(self.hi) + 1)]
        else:
            step = nice_step(top_value)
            self.lo, self.hi = 0.0, max(step, math.ceil(top_value / step) * step)
            ticks = [i * step for i in range(int(round(self.hi / step)) + 1)]
        for t in ticks:
            y = self.y_of(t)
            self.line(self.x0, y, self.x1, y, "#e0e0e0")
            self.text(self.x0 - 6, y + 4, fmt(t), size=11, anchor="end")
        self.line(self.x0, self.y0, self.x1, self.y0, "#444")
        self.line(self.x0, self.y0, self.x0, self.y1, "#444")
        self.text(self.x0 - 58, (self.y0 + self.y1) / 2, label, size=12, anchor="middle", rotate=-90)

    def y_of(self, v):
        if self.log:
            f = ((math.log10(v) if v > 0 else self.lo) - self.lo) / (self.hi - self.lo)
        else:
            f = (v - self.lo) / (self.hi - self.lo)
        return self.y0 - f * (self.y0 - self.y1)

    def legend(self, names):
        """Above the plot, at its right end."""
        x = self.x1 - sum(28 + 7 * len(n) for n in names)
        for i, n in enumerate(names):
            self.rect(x, self.y1 - 22, 12, 12, COLOURS[i % len(COLOURS)], n)
            self.text(x + 16, self.y1 - 12, n, size=12)
            x += 28 + 7 * len(n)

    def bars(self, groups, series, values, tip, value_label=None):
        """Grouped bars: values[g][s] for each group label and series name; value_label(v),
        when given, is written above each bar."""
        gw = (self.x1 - self.x0) / max(len(groups), 1)
        bw = gw * 0.8 / max(len(series), 1)
        for g, label in enumerate(groups):
            gx = self.x0 + g * gw + gw * 0.1
            for s in range(len(series)):
                v = values[g][s]
                if v is None:
                    continue
                y = self.y_of(v) if (v > 0 or not self.log) else self.y0
                self.rect(gx + s * bw, y, bw - 1, self.y0 - y, COLOURS[s % len(COLOURS)], tip(label, series[s], v))
                if value_label:
                    self.text(gx + s * bw + bw / 2, y - 4, value_label(v), size=11, anchor="middle")
            self.text(gx + gw * 0.5, self.y0 + 14, label, size=11, anchor="end", rotate=-45)
        self.legend(series)

    def save(self, path):
        with open(path, "w") as f:
            f.write('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
                    'font-family="sans-serif">\n<rect width="100%%" height="100%%" fill="white"/>\n'
                    % (self.w, self.h, self.w, self.h))
            f.write("\n".join(self.parts))
            f.write("\n</svg>\n")


def nice_step(top):
    if top <= 0:
        return 1
    raw = top / 5.0
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def load(path):
    try:
        with open(path) as f:
            r = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit("stats_charts.py: %s: not readable as JSON (%s)" % (path, e))
    if not isinstance(r, dict) or "hakmem" not in r or "os" not in r or "memory" not in r:
        sys.exit("stats_charts.py: %s: not a hakmem stats report (want the output of HAKMEM_STATS=json)" % path)
    return r


def chart_classes(r, out):
    classes = r.get("classes", [])
    if not classes:
        return None
    labels = [human_bytes(c["size"]) if c["size"] else "huge" for c in classes]
    values = [[c["allocs"], c["frees"]] for c in classes]
    top = max(max(v) for v in values)
    svg = Svg("Allocations per size class (%s, pid %d)" % (r["variant"], r["pid"]), max(700, 90 + 34 * len(labels)),
              labels)
    svg.y_axis(top, True, human_count, "calls")
    svg.bars(labels, ["allocs", "frees"], values, lambda g, s, v: "%s: %d %s" % (g, v, s))
    path = os.path.join(out, "classes.svg")
    svg.save(path)
    return path


def chart_latency(r, out):
    lat = r.get("latency")
    if not lat:
        return None
    pcts = [("p50_ns", "P50"), ("p95_ns", "P95"), ("p99_ns", "P99"), ("p999_ns", "P99.9")]
    ops = [op for op in ("malloc", "free") if lat.get(op, {}).get("samples", 0) > 0]
    if not ops:
        return None
    values = [[lat[op][k] for k, _ in pcts] for op in ops]
    labels = ["%s (%s samples, 1 in %d)" % (op, human_count(lat[op]["samples"]), lat["sample_every"]) for op in ops]
    svg = Svg("Sampled latency, ns (%s)" % r["variant"], 760, labels)
    svg.y_axis(max(max(v) for v in values), True, lambda t: "%g" % t, "nanoseconds")
    svg.bars(labels, [name for _, name in pcts], values, lambda g, s, v: "%s %s: %d ns" % (g, s, v),
             lambda v: "%d" % v)
    path = os.path.join(out, "latency.svg")
    svg.save(path)
    return path


def hit_rates(r):
    """(label, hits, total) for each cache that saw a lookup."""
    rows = []
    paths = r.get("paths")
    if paths:
        fast, slow = paths.get("alloc_fast", 0), paths.get("alloc_slow", 0)
        rows.append(("pools: fast path", fast, fast + slow))
    for key, name in (("bigcache", "BigCache"), ("whale", "whale cache")):
        c = r.get(key)
        if c:
            rows.append((name, c["hits"], c["hits"] + c["misses"]))
    return [row for row in rows if row[2] > 0]


def chart_caches(r, out):
    rows = hit_rates(r)
    if not rows:
        return None
    values = [[100.0 * h / t] for _, h, t in rows]
    labels = ["%s (%s of %s)" % (n, human_count(h), human_count(t)) for n, h, t in rows]
    svg = Svg("Hit rates (%s)" % r["variant"], max(600, 160 * len(rows) + 120), labels)
    svg.y_axis(100, False, lambda t: "%d%%" % t, "hits / lookups")
    svg.bars(labels, ["hit rate"], values, lambda g, s, v: "%s: %.1f%%" % (g, v), lambda v: "%.1f%%" % v)
    path = os.path.join(out, "caches.svg")
    svg.save(path)
    return path


def chart_os(r, out):
    kinds = [k for k in ("mmap", "munmap", "madvise", "mremap", "mprotect") if r["os"][k]["count"] > 0]
    if not kinds:
        return None
    counts = [[r["os"][k]["count"]] for k in kinds]
    means = [r["os"][k]["nanos"] / 1000.0 / r["os"][k]["count"] for k in kinds]
    labels = ["%s (%.1f us each)" % (k, m) for k, m in zip(kinds, means)]
    svg = Svg("OS calls (%s): count, and mean time per call" % r["variant"], 760, labels)
    svg.y_axis(max(c for c, in counts), True, human_count, "calls")
    svg.bars(labels, ["calls"], counts, lambda g, s, v: "%s: %d calls" % (g, v), human_count)
    path = os.path.join(out, "os.svg")
    svg.save(path)
    return path


def chart_rss(reports, names, out):
    if len(reports) < 2:
        return None
    series = [("RSS", lambda r: r["memory"]["rss_bytes"]), ("RSS peak", lambda r: r["memory"]["rss_peak_bytes"]),
              ("in use", lambda r: r["memory"]["in_use_bytes"])]
    top = max(f(r) for r in reports for _, f in series) / float(1 << 20)
    svg = Svg("Memory over the reports, MiB", max(700, 120 + 80 * len(reports)), names)
    svg.y_axis(max(top, 1), False, lambda t: "%g" % t, "MiB")
    step = (svg.x1 - svg.x0) / (len(reports) - 1) if len(reports) > 1 else 0
    for i, (name, f) in enumerate(series):
        pts = [(svg.x0 + k * step, svg.y_of(f(r) / float(1 << 20))) for k, r in enumerate(reports)]
        svg.polyline(pts, COLOURS[i])
    for k, n in enumerate(names):
        svg.text(svg.x0 + k * step, svg.y0 + 14, n, size=11, anchor="end", rotate=-45)
    svg.legend([name for name, _ in series])
    path = os.path.join(out, "rss.svg")
    svg.save(path)
    return path


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="+", help="JSON reports (HAKMEM_STATS=json), in order")
    ap.add_argument("--out", required=True, help="directory for the SVG files (created)")
    args = ap.parse_args(argv)
    reports = [load(p) for p in args.reports]
    os.makedirs(args.out, exist_ok=True)
    last = reports[-1]
    written = [chart_classes(last, args.out), chart_latency(last, args.out), chart_caches(last, args.out),
               chart_os(last, args.out), chart_rss(reports, [os.path.basename(p) for p in args.reports], args.out)]
    for path in written:
        if path:
            print(path)
    if not last.get("counters_enabled"):
        print("stats_charts.py: %s is a %s report: no per-class counts or latencies (the stats variant has them)"
              % (args.reports[-1], last["variant"]), file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
