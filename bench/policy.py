#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The adaptive policy's evidence (issue 13): two workloads whose best fixed setting
differs, run under every candidate setting fixed and under the learner.

For each workload of bench/policy_phases (whales: large blocks reused across short
gaps, wants memory kept resident; bursts: a burst of large blocks then a long quiet
phase, wants it purged soon), this runs libhakmem.so (LD_PRELOAD) with
  default        no HAKMEM_* variable
  caps ... small-short
                 each of the policy's four candidates, fixed through the HAKMEM_*
                 variables they resolve to under the caps below (the table of
                 hakmem/hak_policy.c, mirrored in ARMS)
  learner        HAKMEM_POLICY=1 with the caps as the options (HAKMEM_POLICY_LOG=1
                 tells which arm it played each epoch)
and prints a table: time, peak and mean RSS, score, and for the learner the arm its
ratings end on, the epoch since which that arm has led, and how often it played each.

score = 1e6 * time / default's time + weight * mean RSS in MiB: the learner's own
objective (parts per million of time, plus HAKMEM_POLICY_RSS_WEIGHT per MiB), measured
from outside. Lower is better.

    source bench/stage.sh && python3 bench/policy.py [--reps N] [--out FILE]
"""

import argparse
import os
import re
import statistics
import subprocess
import sys

MiB = 1 << 20

# The caps every candidate scales down: four times the default caches and a tenth of
# the default purge delay (100 ms, the default until 2026-12), so that "small-cache" is
# hakmem's default caches at that delay and "default" (no option) differs from every
# candidate by its 1 s delay.
CAPS = {
    "WHALE_SLOTS": 32,
    "WHALE_BYTES": 256 * MiB,
    "BIGCACHE_SLOTS": 16,
    "BIGCACHE_BYTES": 64 * MiB,
    "PURGE_DELAY_MS": 100,
    "PURGE_BATCH_BYTES": 4 * MiB,
}

# hak_policy_arm_table: (name, cache per mille, delay per mille).
ARMS = [("caps", 1000, 1000), ("short-delay", 1000, 100), ("small-cache", 250, 1000), ("small-short", 250, 100)]

WORKLOADS = {
    "whales": ["--mode", "whales", "--rounds", "200", "--gap", "1000000"],
    "bursts": ["--mode", "bursts", "--rounds", "90", "--quiet", "10000000"],
}

RESULT_RE = re.compile(r"RESULT workload=(\S+) ops=(\d+) ns=(\d+) checksum=(\d+) peak_rss_kib=(\d+) rss_kib=(\d+)(.*)")
POLICY_RE = re.compile(r"hakmem: policy: epoch=(\d+) arm=(\d+) score=(\d+) reward_permille=(\d+) held_kib=(\d+) "
                       r"leader=(\d+) leader_since=(\d+) elo=(\S+)")


def resolve(arm):
    """hak_policy_resolve: the options an arm sets under CAPS."""
    _, cache, delay = ARMS[arm]
    def scale(v, pm):
        return v * pm // 1000
    def slots(v, pm):
        s = scale(v, pm)
        return 1 if s == 0 and v > 0 and pm > 0 else s
    return {
        "WHALE_SLOTS": slots(CAPS["WHALE_SLOTS"], cache),
        "WHALE_BYTES": scale(CAPS["WHALE_BYTES"], cache),
        "BIGCACHE_SLOTS": slots(CAPS["BIGCACHE_SLOTS"], cache),
        "BIGCACHE_BYTES": scale(CAPS["BIGCACHE_BYTES"], cache),
        "PURGE_DELAY_MS": scale(CAPS["PURGE_DELAY_MS"], delay),
        "PURGE_BATCH_BYTES": scale(CAPS["PURGE_BATCH_BYTES"], delay),
    }


def env_of(options):
    return {"HAKMEM_" + k: str(v) for k, v in options.items()}


def run(binary, lib, args, extra_env):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAKMEM_")}
    env.update(extra_env)
    env["LD_PRELOAD"] = lib
    p = subprocess.run([binary] + args, env=env, capture_output=True, text=True, timeout=900)
    m = RESULT_RE.search(p.stdout)
    if p.returncode != 0 or m is None:
        raise RuntimeError("%s %s failed (%d): %s" % (binary, " ".join(args), p.returncode, p.stderr[-2000:]))
    extra = dict(kv.split("=", 1) for kv in m.group(7).split() if "=" in kv)
    r = {"ns": int(m.group(3)), "peak_kib": int(m.group(5)), "mean_kib": int(extra.get("mean_rss_kib", 0)),
         "checksum": m.group(4)}
    epochs = [POLICY_RE.match(line) for line in p.stderr.splitlines()]
    epochs = [e for e in epochs if e is not None]
    if epochs:
        last = epochs[-1]
        pulls = [0] * len(ARMS)
        for e in epochs:
            pulls[int(e.group(2))] += 1
        r.update(epochs=int(last.group(1)), leader=int(last.group(6)), leader_since=int(last.group(7)),
                 elo=last.group(8), pulls=pulls)
    return r


def machine_state():
    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    vm = subprocess.run(["vmstat", "1", "2"], capture_output=True, text=True).stdout.splitlines()
    steal = "?"
    if len(vm) >= 3:
        head, last = vm[1].split(), vm[-1].split()
        if "st" in head:
            steal = last[head.index("st")]
    return "%s; vmstat steal %s%%" % (up, steal)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="bench-out/bin", help="staged binaries (bench/stage.sh)")
    ap.add_argument("--reps", type=int, default=1, help="runs of each setting; the median is shown")
    ap.add_argument("--epoch-ms", type=int, default=400)
    ap.add_argument("--rss-weight", type=int, default=1000, help="ppm per MiB, for the learner and the score")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--out", help="also write the table here")
    args = ap.parse_args(argv)
    binary = os.path.join(args.bin, "bench", "policy_phases")
    lib = os.path.abspath(os.path.join(args.bin, "hakmem", "libhakmem.so"))
    settings = [("default", {})]
    settings += [(ARMS[a][0], env_of(resolve(a))) for a in range(len(ARMS))]
    learner_env = env_of(CAPS)
    learner_env.update({"HAKMEM_POLICY": "1", "HAKMEM_POLICY_LOG": "1", "HAKMEM_POLICY_EPOCH_MS": str(args.epoch_ms),
                        "HAKMEM_POLICY_RSS_WEIGHT": str(args.rss_weight), "HAKMEM_POLICY_SEED": str(args.seed)})
    settings.append(("learner", learner_env))

    lines = ["machine before: " + machine_state(), ""]
    summary = []
    for wname in args.workloads.split(","):
        wargs = WORKLOADS[wname] + ["--expect-ms", "16000"]
        results = {}
        for rep in range(args.reps):  # settings interleaved, so drift hits them alike
            for name, env in settings:
                r = run(binary, lib, wargs, env)
                results.setdefault(name, []).append(r)
                print("%s %s rep %d: %.2f s, mean RSS %.1f MiB" % (wname, name, rep, r["ns"] / 1e9,
                                                                    r["mean_kib"] / 1024), file=sys.stderr)
        checks = {r["checksum"] for rs in results.values() for r in rs}
        if len(checks) != 1:
            raise RuntimeError("%s: checksums differ between settings: %s" % (wname, checks))
        med = {}
        for name, rs in results.items():
            med[name] = {k: statistics.median(r[k] for r in rs) for k in ("ns", "peak_kib", "mean_kib")}
            med[name]["runs"] = rs
        ref = med["default"]["ns"]
        for m in med.values():
            m["score"] = 1e6 * m["ns"] / ref + args.rss_weight * m["mean_kib"] / 1024
        lines.append("### %s (`policy_phases %s`)" % (wname, " ".join(WORKLOADS[wname])))
        lines.append("")
        lines.append("| setting | time s | peak RSS MiB | mean RSS MiB | score | learner: arm at the end, leader since epoch, "
                     "plays per arm |")
        lines.append("|---|---|---|---|---|---|")
        for name, _ in settings:
            m = med[name]
            note = ""
            if name == "learner":
                notes = []
                for r in m["runs"]:
                    if "leader" in r:
                        notes.append("%s since %d of %d, plays %s, elo %s" % (
                            ARMS[r["leader"]][0], r["leader_since"], r["epochs"], "/".join(map(str, r["pulls"])),
                            r["elo"]))
                note = "; ".join(notes) or "no epoch logged"
            lines.append("| %s | %.3f | %.1f | %.1f | %.0f | %s |" % (name, m["ns"] / 1e9, m["peak_kib"] / 1024,
                                                                   m["mean_kib"] / 1024, m["score"], note))
        fixed = [n for n, _ in settings if n not in ("learner", "default")]
        best = min(fixed, key=lambda n: med[n]["score"])
        lr, df, bs = med["learner"]["score"], med["default"]["score"], med[best]["score"]
        lines.append("")
        lines.append("best fixed: %s (score %.0f); learner %.0f: %+.1f%% vs best fixed, %+.1f%% vs default (%.0f)" % (
            best, bs, lr, 100 * (lr - bs) / bs, 100 * (lr - df) / df, df))
        lines.append("")
        summary.append((wname, best))
    lines.append("machine after: " + machine_state())
    lines.append("(arms as in hakmem/hak_policy.c under caps %s; score = 1e6 * time / default time + %d * mean RSS MiB; "
                 "epoch %d ms, seed %d, %d run(s) each, medians)" % (
                     " ".join("%s=%d" % kv for kv in CAPS.items()), args.rss_weight, args.epoch_ms, args.seed,
                     args.reps))
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
