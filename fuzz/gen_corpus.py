#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Writes the seed corpora (fuzz/corpus/<target>/seed-*) and the dictionary
(fuzz/dict/hakmem.dict) of the hakmem fuzz harness.

The encoder below mirrors the decoder of fuzz/hak_fuzz.c (decode_op, rd_size,
rd_align, rd_count, rd_burst_count); change both together. Each seed is a scenario
aimed at one part of hakmem (size-class edges, realloc chains, alignments, bursts that
fill pages and release segments, remote and delayed frees, thread exit and adoption),
so that a fresh campaign starts from inputs that already reach them.

    python3 fuzz/gen_corpus.py            # rewrite the seeds and the dictionary
    python3 fuzz/gen_corpus.py --check BIN  # also check BIN (a replay or fuzz binary,
                                            # e.g. bazel-bin/fuzz/alloc_small_fuzzer)
                                            # decodes the sizes as this encoder meant

It also writes the regression inputs of hakmem bugs the fuzzers found (crash-*, see
REGRESSIONS below), as short deterministic inputs. Any other file in a corpus folder
(inputs a campaign found and someone committed) is never touched by this script.
"""
import argparse
import os
import random
import re
import subprocess
import sys
import tempfile

KIB, MIB = 1 << 10, 1 << 20
PTRDIFF_MAX, SIZE_MAX = (1 << 63) - 1, (1 << 64) - 1

# fuzz/hak_fuzz.c kEdgeSizes, in order.
EDGE_SIZES = [
    0, 1, 2, 8, 15, 16, 17, 31, 32, 33, 127, 128, 129, 255, 256, 257,
    511, 512, 513, 1023, 1024, 1025, 2047, 2048, 2049, 4095, 4096, 4097, 8191, 8192, 8193, 9216,
    61440, 61441, 65535, 65536, 65537, 128 * KIB, MIB - 1, MIB, MIB + 1, 2 * MIB - 1, 2 * MIB,
    2 * MIB + 1, 3 * MIB, 4 * MIB - 4097, 4 * MIB - 1, 4 * MIB, 4 * MIB + 1, 5 * MIB, 8 * MIB + 1,
    24 * MIB,
    1 << 48, (1 << 48) + 1, PTRDIFF_MAX - 12288, PTRDIFF_MAX - 8192,
    PTRDIFF_MAX - 4096, PTRDIFF_MAX, PTRDIFF_MAX + 1, 1 << 63,
    SIZE_MAX - 4095, SIZE_MAX - 15, SIZE_MAX, 1 << 56,
]
assert len(EDGE_SIZES) == 64
ABSURD = EDGE_SIZES[52:]

# Operation kinds (enum in hak_fuzz.c).
(MALLOC, CALLOC, REALLOC, REALLOC_REL, FREE, POSIX_MEMALIGN, ALIGNED_ALLOC, MEMALIGN,
 VALLOC, USABLE, CHECK_ALL, REALLOCARRAY, EDGE, BURST_ALLOC, BURST_FREE, THREAD) = range(16)

# kOdd alignments (selector 0xe0 + index).
ODD_ALIGNS = [0, 3, 24, 48, 4096 + 16, 100, MIB + 4096, SIZE_MAX,
              1 << 63, 1 << 62, 1 << 47, 1 << 48, SIZE_MAX // 2 + 2, PTRDIFF_MAX, 12, 1 << 31]
# kCounts (selector 0xc0 + index).
COUNTS = [0, 1, 2, 3, 4096, 65536, MIB, 1 << 32, (1 << 32) + 1, 1 << 47, SIZE_MAX // 2 + 1,
          SIZE_MAX, PTRDIFF_MAX, 255, 256, 1000]


def class_block_size(c):
    if c < 16:
        return (c + 1) * 16
    doubling, step = (c - 16) // 8, (c - 16) % 8 + 1
    base = 256 << doubling
    return base + step * (base // 8)


CLASS_SIZES = [class_block_size(c) for c in range(80)]


def u16(v):
    return bytes([v & 255, (v >> 8) & 255])


def enc_size(n):
    """Bytes that rd_size decodes to exactly n (or the closest it can express)."""
    if n in EDGE_SIZES:
        return bytes([EDGE_SIZES.index(n)])
    for delta_idx, delta in enumerate((-1, 0, 1, -16)):
        if n - delta in CLASS_SIZES:
            return bytes([0x40 | delta_idx, CLASS_SIZES.index(n - delta)])
    if n < 8192:
        return bytes([0x80 | (n >> 8), n & 255])
    if n < 128 * KIB:
        return bytes([0xa0 | (n >> 16), *u16(n & 0xffff)])
    for k in range(1, 9):  # large: (u16 << k) + u8
        hi = n >> k
        if hi <= 0xffff and n - (hi << k) <= 255:
            return bytes([0xc0 | (k - 1), *u16(hi), n - (hi << k)])
    for k in range(27):  # power of two and neighbours
        for d_idx, d in enumerate((-1, 0, 1, 4096)):
            if (1 << k) + d == n:
                return bytes([0xe0 | d_idx, k])
    raise ValueError("size %d cannot be encoded exactly" % n)


def enc_align(a):
    if a > 0 and a & (a - 1) == 0 and a < (1 << 27):
        return bytes([a.bit_length() - 1])
    if a in ODD_ALIGNS:
        return bytes([0xe0 + ODD_ALIGNS.index(a)])
    if a <= 0xffff:
        return bytes([0xf0, *u16(a)])
    raise ValueError("alignment %d cannot be encoded" % a)


def enc_count(c):
    if c < 64:
        return bytes([c])
    return bytes([0xc0 + COUNTS.index(c)])


def enc_burst_count(c):
    if 1 <= c <= 128:
        return bytes([c - 1])
    assert c % 32 == 0 and 32 <= c <= 4096
    return bytes([c // 32 + 127])


def kind_byte(kind, flags=0, worker=False):
    return bytes([kind | (flags << 4) | (0x80 if worker else 0)])


class Prog:
    """Builds one input. `worker=True` runs the operation on the second thread (in the
    concurrent harness: in the second stream). `all_worker=True` puts every operation
    there (a whole scenario for the second stream)."""

    def __init__(self, all_worker=False):
        self.b = bytearray()
        self.all_worker = all_worker

    def kb(self, kind, flags=0, worker=False):
        return kind_byte(kind, flags, worker or self.all_worker)

    def malloc(self, slot, n, worker=False):
        self.b += self.kb(MALLOC, 0, worker) + bytes([slot]) + enc_size(n)

    def calloc(self, slot, count, n, worker=False):
        self.b += self.kb(CALLOC, 0, worker) + bytes([slot]) + enc_count(count) + enc_size(n)

    def realloc(self, slot, n, worker=False):
        self.b += self.kb(REALLOC, 0, worker) + bytes([slot]) + enc_size(n)

    def realloc_rel(self, slot, mode, d, worker=False):
        self.b += self.kb(REALLOC_REL, mode, worker) + bytes([slot, d])

    def free(self, slot, worker=False):
        self.b += self.kb(FREE, 0, worker) + bytes([slot])

    def aligned(self, kind, slot, align, n, worker=False):
        self.b += self.kb(kind, 0, worker) + bytes([slot]) + enc_align(align) + enc_size(n)

    def valloc(self, slot, n, pvalloc=False, worker=False):
        self.b += self.kb(VALLOC, 1 if pvalloc else 0, worker) + bytes([slot]) + enc_size(n)

    def usable(self, slot, use_all=False, worker=False):
        self.b += self.kb(USABLE, 1 if use_all else 0, worker) + bytes([slot])

    def check_all(self, worker=False):
        self.b += self.kb(CHECK_ALL, 0, worker)

    def reallocarray(self, slot, count, n, worker=False):
        self.b += self.kb(REALLOCARRAY, 0, worker) + bytes([slot]) + enc_count(count) + enc_size(n)

    def edge(self, sub, slot=0, worker=False):
        self.b += self.kb(EDGE, 0, worker) + bytes([sub, slot])

    def burst_alloc(self, base16, count, n, calloc=False, free_every_other=False, worker=False):
        flags = (1 if calloc else 0) | (2 if free_every_other else 0)
        self.b += self.kb(BURST_ALLOC, flags, worker) + bytes([base16]) + enc_burst_count(count) + enc_size(n)

    def burst_free(self, base16, count, stride=1, backwards=False, worker=False):
        self.b += self.kb(BURST_FREE, 1 if backwards else 0, worker) + bytes([base16]) + \
            enc_burst_count(count) + bytes([stride - 1])

    def thread_exit(self, worker=False):
        """Threads harness: ends the second thread. Concurrent harness: the thread running
        the stream (worker: the second) exits and a fresh one runs the rest."""
        self.b += self.kb(THREAD, 0, worker)

    # Concurrent harness only (elsewhere a plain free): the block goes to the other
    # stream, which frees it, reallocs it (grow: x2 + 1, else halves it) or keeps it.
    def handoff(self, slot, action, grow=False, worker=False):
        flags = {"free": 1, "realloc": 2, "keep": 3}[action] | (4 if grow else 0)
        self.b += self.kb(FREE, flags, worker) + bytes([slot])

    def burst_handoff(self, base16, count, stride=1, backwards=False, worker=False):
        """Concurrent harness: hands every block off, for the other stream to free."""
        self.b += self.kb(BURST_FREE, 2 | (1 if backwards else 0), worker) + bytes([base16]) + \
            enc_burst_count(count) + bytes([stride - 1])


# ---- Scenarios ----------------------------------------------------------------------------

def s_edge_sizes(p):
    for i, n in enumerate(EDGE_SIZES):
        p.malloc(i, n)
        p.usable(i)
    p.check_all()
    for i in range(len(EDGE_SIZES)):
        p.free(i)


def s_class_boundaries(p):
    for c in range(80):
        for k, d in enumerate((-1, 0, 1)):
            n = CLASS_SIZES[c] + d
            slot = (c * 3 + k) % 200
            p.malloc(slot, n)
            p.usable(slot, use_all=True)
        p.realloc_rel((c * 3) % 200, 0, 1)  # grow x2 + 1
        p.free((c * 3 + 1) % 200)
    p.check_all()


def s_calloc(p):
    for i, (c, n) in enumerate([(1, 0), (0, 16), (1, 1), (3, 33), (255, 4), (256, 256), (1000, 65),
                                (2, 65536), (1, 5 * MIB), (4096, 1024), (MIB, 1),
                                (1 << 32, 65536), ((1 << 32) + 1, 65537), (SIZE_MAX, 2), (SIZE_MAX // 2 + 1, 2),
                                (PTRDIFF_MAX, 1), (1 << 47, 8192), (65536, 65536)]):
        p.calloc(i, c, n)
    p.reallocarray(20, 3, 1000)
    p.reallocarray(20, 7, 1000)
    p.reallocarray(20, SIZE_MAX, 16)
    p.reallocarray(20, 0, 16)
    p.reallocarray(21, 0, 0)
    p.burst_alloc(2, 64, 48, calloc=True)
    p.check_all()


def s_realloc_chain(p):
    n = 1
    while n <= 8 * MIB:
        p.realloc(0, n)
        p.realloc(1, n + 1)
        n *= 2
    p.edge(5, 0)
    p.edge(5 + 0x80, 1)
    for _ in range(26):
        p.realloc_rel(0, 1, 0)  # halve
        p.realloc_rel(1, 3, 0)  # - 1
    p.realloc(0, 0)
    p.realloc(1, 0)
    p.realloc(2, 0)  # realloc(NULL, 0): malloc(0)
    for n in (100, 1024, 1025, 65536, 65537, 3 * MIB, 65537, 1025, 1):
        p.realloc(3, n)
        p.realloc_rel(3, 2, 200)
    p.realloc(4, 5 * MIB)
    p.realloc(4, 100 * KIB)  # huge shrink in place
    p.realloc(4, 5 * MIB)
    p.realloc(4, 1)
    for a in ABSURD:
        p.realloc(3, a)
        p.realloc(5, a)


def s_aligned(p):
    slot = 0
    for shift in range(27):
        a = 1 << shift
        for kind, n in ((POSIX_MEMALIGN, 1), (ALIGNED_ALLOC, 4096), (MEMALIGN, 65537), (POSIX_MEMALIGN, 0)):
            if a >= 4 * MIB and n > 1:
                n = 1
            p.aligned(kind, slot % 250, a, n)
            slot += 1
        p.free((slot - 3) % 250)
    for a in ODD_ALIGNS + [4, 2, 1, 6, 40, 4097]:
        for kind in (POSIX_MEMALIGN, ALIGNED_ALLOC, MEMALIGN):
            p.aligned(kind, slot % 250, a, 100)
            slot += 1
    for sub in range(1, 5):
        for k in range(11):
            p.edge(sub + 6 * k)
    for n in (0, 1, 4095, 4096, 4097, 65536, 3 * MIB):
        p.valloc(251, n)
        p.valloc(252, n, pvalloc=True)
    for a in ABSURD[:4]:
        p.valloc(253, a)
        p.valloc(254, a, pvalloc=True)
        p.aligned(POSIX_MEMALIGN, 253, 64, a)
    p.check_all()


def s_absurd(p):
    for i, a in enumerate(ABSURD):
        p.malloc(i, a)
        p.calloc(i, 1, a)
        p.realloc(i, a)
        p.reallocarray(i, 2, a)
        p.aligned(ALIGNED_ALLOC, i, 4096, a)
    p.edge(0)
    p.usable(200)


def s_bursts(p):
    # Fill pages of tiny, small and medium classes, punch holes, refill, release all:
    # page and segment release, the segment cache of one, reuse.
    for n in (16, 256, 1024, 8192, 9216, 65536):
        p.burst_alloc(0, 4096 if n <= 256 else 640, n)
        p.burst_free(0, 4096, stride=2)
        p.burst_alloc(0, 2048, n, free_every_other=True)
        p.check_all()
        p.burst_free(0, 4096, backwards=True)
    p.burst_alloc(16, 96, 65537)
    p.burst_free(16, 96)


def s_huge(p):
    for i, n in enumerate((65537, MIB - 1, MIB + 1, 2 * MIB - 1, 2 * MIB + 1, 4 * MIB - 1, 4 * MIB,
                           4 * MIB + 1, 24 * MIB)):
        p.malloc(i, n)
        p.usable(i, use_all=True)
        p.realloc_rel(i, 1, 0)
        p.realloc_rel(i, 0, 7)
    p.aligned(POSIX_MEMALIGN, 20, 4 * MIB, 4 * MIB)
    p.aligned(ALIGNED_ALLOC, 21, 8 * MIB, 1)
    p.aligned(MEMALIGN, 22, 64 * MIB, 65536)
    p.check_all()


def s_remote_free(p):
    # Main fills pages; the second thread frees them (remote frees); main reuses them.
    for n in (16, 256, 2048, 16384):
        p.burst_alloc(0, 1024, n)
        p.burst_free(0, 1024, stride=2, worker=True)
        p.burst_alloc(0, 512, n)
        p.burst_free(0, 1024, worker=True)
    p.check_all()


def s_delayed_free(p):
    # A full page in the owner's full queue, freed into by the other thread: the block
    # goes to the owner heap's delayed list, the page comes back on the next malloc.
    for n in (256, 1024, 8192):
        p.burst_alloc(0, 512, n)
        p.malloc(255, n)
        p.free(3, worker=True)
        p.free(7, worker=True)
        p.burst_free(64, 32, worker=True)
        p.malloc(254, n)
        p.burst_alloc(0, 96, n)
        p.burst_free(0, 512, backwards=True)
        p.free(255)
        p.free(254)


def s_worker_allocs(p):
    # The second thread allocates; main frees and reallocs (remote frees into its heap).
    for n in (32, 512, 4096, 40000, 70000):
        p.burst_alloc(8, 192, n, worker=True)
        p.burst_free(8, 192, stride=3)
        p.realloc_rel(130, 0, 5)
        p.realloc_rel(131, 1, 0)
        p.burst_alloc(8, 100, n, worker=True)
        p.burst_free(8, 192)
    p.realloc(1, 3000, worker=True)
    p.realloc(1, 30000)
    p.realloc(1, 300000, worker=True)
    p.realloc(1, 10)
    p.free(1, worker=True)


def s_abandon_adopt(p):
    # The second thread exits with blocks live: its segments are abandoned; main frees
    # some (remote free into an abandoned segment) and adopts them on its next pages.
    for n in (48, 1500, 20000):
        p.burst_alloc(0, 288, n, worker=True)
        p.thread_exit()
        p.burst_free(0, 288, stride=2)
        p.burst_alloc(32, 288, n)
        p.burst_free(0, 1024)
    p.malloc(0, 100, worker=True)
    p.thread_exit()
    p.malloc(1, 100, worker=True)
    p.free(0, worker=True)
    p.thread_exit()
    p.free(1)


def s_cross_realloc(p):
    for i, n in enumerate((1, 100, 1000, 5000, 50000, 500000, 3 * MIB)):
        p.malloc(i, n)
        p.realloc_rel(i, 0, 3, worker=True)
        p.realloc_rel(i, 1, 0)
        p.realloc_rel(i, 2, 255, worker=True)
        p.usable(i, use_all=True, worker=True)
        p.calloc(100 + i, 3, n, worker=True)
        p.reallocarray(100 + i, 2, n)
    p.check_all(worker=True)


# ---- Concurrent harness: two streams at once, handing blocks to each other ---------------------
# Stream 0's operations have worker=False, stream 1's worker=True; only the order within
# a stream matters (the harness splits the input, then runs both at once).

def c_remote_free_race(p):
    # Each stream fills pages of a class and hands every other block to the other
    # stream, then refills and frees at home while the other's remote frees arrive:
    # remote frees racing the owner's allocations, frees and page retirement.
    for n in (16, 48, 256, 1024, 4096, 16384):
        for w in (False, True):
            p.burst_alloc(0, 256, n, worker=w)
            p.burst_handoff(0, 256, stride=2, worker=w)
            p.burst_alloc(0, 128, n, worker=w)
            p.burst_free(0, 256, backwards=True, worker=w)


def c_full_pages(p):
    # Full pages, freed into by the other thread (delayed frees through the owner heap)
    # while the owner keeps allocating the same class.
    for n in (256, 1024, 8192):
        for w in (False, True):
            p.burst_alloc(0, 384, n, worker=w)
            for slot in (3, 7, 11, 64, 65, 200):
                p.handoff(slot, "free", worker=w)
            p.burst_alloc(16, 64, n, worker=w)
            p.burst_handoff(32, 64, worker=w)
            p.burst_free(0, 1024, worker=w)


def c_realloc_keep(p):
    # Blocks change hands to be realloc'ed (grown, shrunk: cross-thread copies and
    # in-place resizes) or kept and freed later by the receiver.
    sizes = (1, 100, 1000, 5000, 50000, 70000, 300000)  # copies count against the budget
    for w in (False, True):
        for i, n in enumerate(sizes):
            p.malloc(i, n, worker=w)
            p.malloc(20 + i, n + 7, worker=w)
            p.calloc(40 + i, 3, min(n, 5000), worker=w)
        for i in range(len(sizes)):
            p.handoff(i, "realloc", grow=i % 2 == 0, worker=w)
            p.handoff(20 + i, "keep", worker=w)
            p.handoff(40 + i, "realloc", grow=False, worker=w)
        p.burst_alloc(64, 128, 200, worker=w)
        p.check_all(worker=w)
        p.burst_free(64, 128, worker=w)


def c_exit_race(p):
    # A stream's thread exits (its heap is abandoned) while the other still frees the
    # blocks it was handed: remote frees into abandoned segments, racing adoption.
    for n in (48, 1500, 20000):
        for w in (False, True):
            p.burst_alloc(0, 192, n, worker=w)
            p.burst_handoff(0, 96, worker=w)
            p.thread_exit(worker=w)
            p.burst_free(96, 96, worker=w)
            p.burst_alloc(0, 64, n, worker=w)
            for slot in range(0, 64, 4):
                p.handoff(slot, "keep", worker=w)
            p.thread_exit(worker=w)


def c_big_blocks(p):
    # Big blocks and whales change hands (freed by whichever thread) while both streams
    # map and unmap their own.
    sizes = (65537, MIB - 1, MIB + 1, 2 * MIB + 1, 4 * MIB, 4 * MIB + 1, 5 * MIB)
    for w in (False, True):
        for i, n in enumerate(sizes):
            p.malloc(i, n, worker=w)
            p.aligned(POSIX_MEMALIGN, 10 + i, 4 * MIB, n, worker=w)
        for i, n in enumerate(sizes):
            p.handoff(i, "free" if i % 2 or n > MIB else "realloc", grow=False, worker=w)
            p.handoff(10 + i, "keep", worker=w)
        p.malloc(30, 3 * MIB, worker=w)
        p.realloc_rel(30, 0, 1, worker=w)
        p.free(30, worker=w)


def c_twin(scenario):
    """A single-thread scenario run by both streams at once."""
    def fn(p):
        scenario(p)
        twin = Prog(all_worker=True)
        scenario(twin)
        p.b += twin.b
    return fn


CONCURRENT = {
    "remote_free_race": c_remote_free_race,
    "full_pages": c_full_pages,
    "realloc_keep": c_realloc_keep,
    "exit_race": c_exit_race,
    "big_blocks": c_big_blocks,
    "twin_bursts": c_twin(s_bursts),
    "twin_class_boundaries": c_twin(s_class_boundaries),
    "twin_aligned": c_twin(s_aligned),
    "twin_realloc_chain": c_twin(s_realloc_chain),
    "edge_sizes": s_edge_sizes,
    "calloc": s_calloc,
    "absurd": s_absurd,
}


# ---- Regressions: hakmem bugs the fuzzers found, as short deterministic inputs ----------------

def r_adopted_pages_never_collected(p):
    """Found by threads_small under libFuzzer (hakmem's mapped memory grew without bound
    over a campaign with every block freed). Per cycle: the second thread allocates one
    block in each medium class (3 segments) and exits with them live, so its segments
    are abandoned; main allocates and frees 16 bytes, and its slow path adopts them; a
    new second thread frees the blocks: remote frees into pages main now owns, which
    main never collects because it never allocates those classes. Each cycle strands 3
    segments (4 MiB each) for good: the per-input leak check fails (78 segments)."""
    for _ in range(40):
        for i, c in enumerate(range(56, 80)):  # 9216 .. 65536 B: medium pages
            p.malloc(i, CLASS_SIZES[c], worker=True)
        p.thread_exit()
        p.malloc(100, 16)
        p.free(100)
        p.burst_free(0, 24, worker=True)


REGRESSIONS = {
    "threads_small": {"crash-adopted-pages-never-collected": r_adopted_pages_never_collected},
    "threads_hardened_small": {"crash-adopted-pages-never-collected": r_adopted_pages_never_collected},
}


COMMON = {
    "edge_sizes": s_edge_sizes,
    "class_boundaries": s_class_boundaries,
    "calloc": s_calloc,
    "realloc_chain": s_realloc_chain,
    "aligned": s_aligned,
    "absurd": s_absurd,
    "bursts": s_bursts,
    "huge": s_huge,
}
THREADED = {
    "remote_free": s_remote_free,
    "delayed_free": s_delayed_free,
    "worker_allocs": s_worker_allocs,
    "abandon_adopt": s_abandon_adopt,
    "cross_realloc": s_cross_realloc,
}
TARGETS = {
    "alloc_small": COMMON,
    "alloc_hardened_small": COMMON,
    "threads_small": {**COMMON, **THREADED},
    "threads_hardened_small": {**COMMON, **THREADED},
    "concurrent_small": CONCURRENT,
    "concurrent_hardened_small": CONCURRENT,
}


def random_seeds(rng, count, threaded):
    """Short unstructured inputs: variety for the mutators to start from."""
    out = []
    for _ in range(count):
        data = bytearray(rng.randrange(16, 400))
        for i in range(len(data)):
            data[i] = rng.randrange(256)
        if not threaded:  # keep the second-thread bit off: same meaning in both harnesses
            data = bytearray(b & 0x7f if i == 0 else b for i, b in enumerate(data))
        out.append(bytes(data))
    return out


# ---- Dictionary ------------------------------------------------------------------------------

def dictionary():
    """Whole operations and argument encodings worth splicing in."""
    entries = {}

    def add(name, data):
        entries[name] = bytes(data)

    for n in (0, 16, 256, 1024, 1025, 8192, 65536, 65537, 4 * MIB, 1 << 48, SIZE_MAX, PTRDIFF_MAX + 1):
        add("size_%d" % n if n < (1 << 40) else "size_absurd_%x" % n, enc_size(n))
    for c in (0, 15, 16, 31, 32, 47, 48, 79):
        for d in (-1, 1):
            add("class%d_%s" % (c, "minus1" if d < 0 else "plus1"), enc_size(CLASS_SIZES[c] + d))
    for shift in (4, 6, 12, 13, 22, 23):
        add("align_2p%d" % shift, enc_align(1 << shift))
    ops = {
        "op_malloc_1k": lambda p: p.malloc(1, 1024),
        "op_malloc_absurd": lambda p: p.malloc(1, SIZE_MAX),
        "op_free": lambda p: p.free(1),
        "op_realloc_grow": lambda p: p.realloc_rel(1, 0, 1),
        "op_realloc_shrink": lambda p: p.realloc_rel(1, 1, 0),
        "op_realloc_zero": lambda p: p.realloc(1, 0),
        "op_calloc_overflow": lambda p: p.calloc(1, SIZE_MAX, 2),
        "op_posix_memalign_4k": lambda p: p.aligned(POSIX_MEMALIGN, 1, 4096, 100),
        "op_aligned_alloc_8m": lambda p: p.aligned(ALIGNED_ALLOC, 1, 8 * MIB, 1),
        "op_memalign_odd": lambda p: p.aligned(MEMALIGN, 1, 48, 100),
        "op_pvalloc": lambda p: p.valloc(1, 1, pvalloc=True),
        "op_usable_all": lambda p: p.usable(1, use_all=True),
        "op_check_all": lambda p: p.check_all(),
        "op_burst_4096x16": lambda p: p.burst_alloc(0, 4096, 16),
        "op_burst_256x256": lambda p: p.burst_alloc(0, 256, 256),
        "op_burst_64x8k": lambda p: p.burst_alloc(0, 64, 8192),
        "op_burst_free_all": lambda p: p.burst_free(0, 4096),
        "op_burst_free_half": lambda p: p.burst_free(0, 4096, stride=2),
        "op_t2_burst_free": lambda p: p.burst_free(0, 512, worker=True),
        "op_t2_free": lambda p: p.free(1, worker=True),
        "op_t2_burst_256x1k": lambda p: p.burst_alloc(0, 256, 1024, worker=True),
        "op_t2_realloc_grow": lambda p: p.realloc_rel(1, 0, 1, worker=True),
        "op_thread_exit": lambda p: p.thread_exit(),
        "op_handoff_free": lambda p: p.handoff(1, "free"),
        "op_handoff_realloc": lambda p: p.handoff(1, "realloc", grow=True),
        "op_handoff_keep": lambda p: p.handoff(1, "keep", worker=True),
        "op_burst_handoff": lambda p: p.burst_handoff(0, 512),
    }
    for name, fn in ops.items():
        p = Prog()
        fn(p)
        add(name, p.b)
    return entries


def write_dict(path):
    lines = ["# hakmem fuzz dictionary: generated by fuzz/gen_corpus.py (operation encodings",
             "# of fuzz/hak_fuzz.c). Used by libFuzzer (-dict=) and AFL++ (-x)."]
    for name, data in dictionary().items():
        lines.append('%s="%s"' % (name, "".join("\\x%02x" % b for b in data)))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


# ---- Self-check against the C decoder ------------------------------------------------------------

def check_decoder(binary, tmpdir):
    """Runs one input through BINARY with HAK_FUZZ_TRACE=1 and compares decoded sizes."""
    p = Prog()
    sizes = EDGE_SIZES + [CLASS_SIZES[c] + d for c in range(80) for d in (-1, 0, 1, -16)] + \
        [5000, 100000, 3 * MIB + 17, 9 * MIB, (1 << 20) + 4096]
    for n in sizes:
        p.malloc(0, n)
    path = os.path.join(tmpdir, "decoder-check")
    with open(path, "wb") as f:
        f.write(p.b)
    env = dict(os.environ, HAK_FUZZ_TRACE="1")
    out = subprocess.run([binary, path], env=env, capture_output=True, text=True)
    got = [int(m) for m in re.findall(r"malloc slot=\d+ size=(\d+)", out.stderr)]
    if got != sizes:
        bad = next(i for i in range(min(len(got), len(sizes))) if got[i] != sizes[i]) if got else 0
        sys.exit("decoder mismatch at #%d: encoder %s, harness %s" % (bad, sizes[bad:bad + 3], got[bad:bad + 3]))
    print("decoder check: %d sizes decode as encoded" % len(sizes))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", metavar="BIN", help="also check BIN decodes sizes as encoded")
    args = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    for target, scenarios in TARGETS.items():
        d = os.path.join(here, "corpus", target)
        os.makedirs(d, exist_ok=True)
        for old in os.listdir(d):
            if old.startswith("seed-"):
                os.remove(os.path.join(d, old))
        for name, fn in scenarios.items():
            p = Prog()
            fn(p)
            with open(os.path.join(d, "seed-" + name), "wb") as f:
                f.write(p.b)
        for name, fn in REGRESSIONS.get(target, {}).items():
            p = Prog()
            fn(p)
            with open(os.path.join(d, name), "wb") as f:
                f.write(p.b)
        rng = random.Random(target)  # deterministic
        for i, data in enumerate(random_seeds(rng, 6, "threads" in target or "concurrent" in target)):
            with open(os.path.join(d, "seed-random-%d" % i), "wb") as f:
                f.write(data)
    os.makedirs(os.path.join(here, "dict"), exist_ok=True)
    write_dict(os.path.join(here, "dict", "hakmem.dict"))
    print("wrote seeds for %s and dict/hakmem.dict" % ", ".join(TARGETS))
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            check_decoder(args.check, tmp)


if __name__ == "__main__":
    main()
