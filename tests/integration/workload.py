# SPDX-License-Identifier: MIT
"""Allocation-heavy Python workload for the hakmem integration test.

Builds dicts, lists, strings and sets, sorts, joins, round-trips JSON, and does the
same in a few threads that also hand objects to each other (so blocks are freed by a
thread other than the one that allocated them). Prints a few exact facts and a
checksum that depends only on the computed values (never on hash-randomised set
order), so a run under LD_PRELOAD must print exactly what a plain run prints.
Run with PYTHONMALLOC=malloc so small objects really go through malloc.
"""
import hashlib
import json
import queue
import sys
import threading

N = 300_000
THREADS = 4
THREAD_N = 40_000


def work(seed, n):
    """Returns (facts, digest) for one pass of the workload."""
    h = hashlib.sha256()
    d = {"key-%d-%d" % (seed, i): (i * 7919 + seed) % 1_000_003 for i in range(n)}
    for i in range(0, n, 3):  # deletions and re-insertions churn the table
        del d["key-%d-%d" % (seed, i)]
    for i in range(0, n, 6):
        d["key-%d-%d" % (seed, i)] = -i
    lst = [(i * 2_654_435_761 + seed) % 1_000_003 for i in range(n)]
    lst.sort()
    strs = ["s%x-%d-%s" % (i, seed, "x" * (i % 40)) for i in range(n)]
    joined = ",".join(strs)
    st = set(strs[::2]) | {s.upper() for s in strs[1::4]}
    st -= set(strs[::10])
    nested = [{"i": i, "name": strs[i], "tags": [i % 3, i % 5, str(i)]} for i in range(0, n, 7)]
    text = json.dumps({"nested": nested, "sorted_head": lst[:1000]}, sort_keys=True)
    back = json.loads(text)
    if back["nested"] != nested or back["sorted_head"] != lst[:1000]:
        raise SystemExit("json round trip mismatch (seed %d)" % seed)
    rev = sorted(d.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
    h.update(repr(rev[:5000]).encode())
    h.update(repr(lst[::97]).encode())
    h.update(joined.encode())
    h.update("\n".join(sorted(st)).encode())
    h.update(text.encode())
    facts = (len(d), sum(d.values()), len(lst), len(joined), len(st), len(text))
    return facts, h.hexdigest()


def threaded():
    results = [None] * THREADS
    handoff = queue.Queue(maxsize=64)
    consumed = []

    def worker(t):
        facts, digest = work(100 + t, THREAD_N)
        # Objects built here are freed by the consumer thread.
        for j in range(200):
            handoff.put([("blk-%d-%d" % (t, j)) * 3 for _ in range(50)])
        results[t] = (facts, digest)

    def consumer():
        total = 0
        for _ in range(THREADS * 200):
            item = handoff.get()
            total += sum(len(s) for s in item)
            del item
        consumed.append(total)

    c = threading.Thread(target=consumer)
    c.start()
    ts = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    c.join()
    return results, consumed[0]


def main():
    facts, digest = work(1, N)
    print("main dict=%d dictsum=%d list=%d joined=%d set=%d json=%d" % facts)
    results, consumed = threaded()
    h = hashlib.sha256(digest.encode())
    for t, (tf, td) in enumerate(results):
        print("thread%d dict=%d dictsum=%d list=%d joined=%d set=%d json=%d" % ((t,) + tf))
        h.update(td.encode())
    print("consumed %d" % consumed)
    print("checksum %s" % h.hexdigest())
    return 0


if __name__ == "__main__":
    sys.exit(main())
