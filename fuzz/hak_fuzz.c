/* SPDX-License-Identifier: MIT */
/* hak_fuzz.c - the fuzz harness of hakmem: one source for libFuzzer, AFL++ and corpus
 * replay (fuzz/README.md). It calls hakmem only through the hak_* API.
 *
 * The input is a program: each operation is a kind byte followed by its arguments
 * (slot, size, alignment, count), decoded below. Sizes and alignments are drawn mostly
 * from edge tables (0, 1, every class boundary and its neighbours, 1 KiB, 64 KiB, 1 MiB,
 * 2 MiB and the 4 MiB segment +-1, absurd sizes >= 2^48 and > PTRDIFF_MAX) so that a
 * short input reaches them.
 *
 * A shadow model keeps every live block (slot table plus an address-sorted index) and
 * checks after each call:
 *  - NULL only where required: sizes >= 2^48 (so also > PTRDIFF_MAX), calloc and
 *    reallocarray overflow, alignments >= 2^47 must fail with ENOMEM (posix_memalign:
 *    returns ENOMEM, errno untouched); bad alignments give EINVAL; realloc(p, 0) frees
 *    and returns NULL; a failed realloc leaves the block intact. Every other request
 *    within the memory cap must succeed;
 *  - alignment: 16 always, and the requested (memalign: rounded up) alignment;
 *  - hak_usable_size >= the request (pvalloc: whole pages), stable while the block
 *    lives, and internal waste within the documented bounds for fresh blocks (12.5%
 *    for size classes, a slice for big blocks, a page for whales);
 *  - no overlap of [p, p + usable) with any other live block;
 *  - contents: a position-dependent pattern written on allocation (calloc: checked to
 *    be zero first), verified before every free and realloc (the preserved prefix),
 *    plus a canary in the last usable byte. Blocks above 8 KiB are checked at their
 *    first and last KiB and 16 stripes of 64 bytes in between (each on its own OS
 *    page), so big blocks cost a bounded number of page touches.
 *
 * Concurrent streams (HAK_FUZZ_CONCURRENT=1): bit 7 of the kind byte puts an operation
 * in the second of two streams, which run at the same time on two threads, each with a
 * model of its own (so the overlap check covers a stream's own blocks; the contents
 * checks catch a block the other stream also holds). Frees with flags hand blocks to the
 * other stream through a small queue: it frees, reallocs or keeps them, racing the
 * owner's allocations, page retirement and (OP_THREAD) exit. Decoding is deterministic,
 * the interleaving is not. Every thread is joined before the leak checks.
 *
 * Thread hand-offs (HAK_FUZZ_THREADS=1): an operation whose kind byte has bit 7 set runs
 * on a second thread. Consecutive such operations form a batch that the main thread
 * hands over and then waits for, so the two threads never run at once: runs are
 * reproducible, while every call still happens on the thread the input chose (remote
 * frees, delayed frees of full pages, reallocs of the other thread's blocks). A THREAD
 * operation ends the second thread (its heap is abandoned, the main thread adopts it
 * later) and the next hand-off starts a fresh one.
 *
 * Live memory is capped (256 MiB of requests); requests beyond the cap are skipped, so
 * a fuzzer never runs out of memory. Everything still live is freed at the end of each
 * input, and hakmem must then be back exactly where it was before it (leak checks, see
 * META_MAP_MAX_BYTES).
 * A failed check prints what was expected and what hakmem did, then aborts. Set
 * HAK_FUZZ_TRACE=1 to print every operation (for triage of a crashing input).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hakmem.h"

#ifndef HAK_FUZZ_THREADS
#define HAK_FUZZ_THREADS 0
#endif
#ifndef HAK_FUZZ_TARGET
#define HAK_FUZZ_TARGET "hak_fuzz"
#endif

#ifndef HAK_FUZZ_CONCURRENT
#define HAK_FUZZ_CONCURRENT 0
#endif
#if HAK_FUZZ_THREADS && HAK_FUZZ_CONCURRENT
#error "HAK_FUZZ_THREADS and HAK_FUZZ_CONCURRENT are two different harnesses: pick one"
#endif

#if HAK_FUZZ_THREADS || HAK_FUZZ_CONCURRENT
#include <pthread.h>
#include <stdatomic.h>
#endif
#if HAK_FUZZ_CONCURRENT
#include <sched.h>
/* Per-thread harness state (the model pointer, the operation being reported). */
#define HAK_FUZZ_TLS __thread
#else
#define HAK_FUZZ_TLS
#endif

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

/* ---- Limits ------------------------------------------------------------------------- */

#define KIB ((size_t)1 << 10)
#define PAGE ((size_t)4096)
#define MIB ((size_t)1 << 20)
#define NSLOTS 4096                        /* live blocks at most */
#define LIVE_CAP (256 * MIB)               /* requests beyond this much live are skipped */
#define MUST_FAIL_SIZE ((size_t)1 << 48)   /* no mapping this big can exist (47-bit VA) */
#define MUST_FAIL_ALIGN ((size_t)1 << 47)  /* no address this aligned is a user address */
#define MAX_TRY_ALIGN ((size_t)1 << 30)    /* larger (valid) alignments are skipped */
/* Work per input is bounded, and so is each execution's time. Units are about a
 * microsecond on this project's machines under ASan (measured per operation kind with
 * the time-stamp counter, 0.6 to 0.9 us each; fuzz/README.md, Throughput): one per
 * allocator call, 64 more per block above 64 KiB (an mmap and an munmap of its own)
 * and one per 128 KiB of it (ASan's shadow), one per KiB the harness writes or checks
 * (first touches of pages purged by the last input cost about that), one per page a
 * realloc may copy, one per 4 pages a calloc may zero (memset runs faster than the
 * harness's patterns; see affordable), 200 per start and end of a thread (ASan maps and
 * unmaps each thread's state; with the wake-ups, about 250 us). 500 units keep a
 * single-thread campaign near 2,000 executions per second and target; an input that
 * needs more work is a longer input. */
#ifndef HAK_FUZZ_MAX_WORK
#define HAK_FUZZ_MAX_WORK 500
#endif
#define MAX_WORK HAK_FUZZ_MAX_WORK
#if HAK_FUZZ_CONCURRENT
#define NSTREAMS 2
#define WORK_LIMIT (MAX_WORK / NSTREAMS) /* per stream: the streams share the input's budget */
#else
#define WORK_LIMIT MAX_WORK
#endif
#define WORK_PER_MAPPING 64
#define WORK_PER_THREAD 200 /* starting and ending a thread */
/* Leak checks, per input, after everything is freed and hak_collect has run on every
 * thread that owns a heap (check_no_leak): no block in use; live segments, region units
 * and chunks, dedicated whale mappings exactly as before the input; nothing dirty,
 * pending or cached. Mapped bytes exactly as before too, with one slack: metadata that
 * hakmem maps once and keeps for the process (heap structs, carved from 64 KiB chunks
 * and pooled, so a chunk more only when more threads are alive at once than ever
 * before; the hardened variant's 4 MiB ownership map, on its first segment). It is
 * allowed only in an input during which hakmem called mmap for metadata, at most
 * META_MAP_MAX_BYTES (the largest such mapping) per call. Exact, so a block lost on a
 * remote free shows at the end of the very input that lost it. */
#define META_MAP_MAX_BYTES (4 * MIB)
/* The region reserves address space in chunks of 256 MiB (hakmem.h). The small-limits
 * variants keep no idle chunk (HAKMEM_REGION_KEEP=0), so every input that allocated
 * anything would map a chunk and hak_collect unmap it again; under ASan each unmap
 * unpoisons the chunk's shadow, a 32 MiB memset: about 4 ms, most of an input's time.
 * The harness keeps idle chunks instead (KEEP_CHUNK_OPTION: up to four, as many as an
 * input's 256 MiB of live requests may need; set before hakmem reads its options), lets the per-input checks ignore idle chunks mapped or unmapped whole, and
 * every FULL_CHECK_EVERY inputs (the first included, so a replay of one input per
 * process checks as strictly as ever) runs hak_collect(true), which unmaps every idle
 * chunk, and checks exactly against the last such check: mapped bytes, chunks and all. */
#define REGION_CHUNK_BYTES (256 * MIB)
#define KEEP_CHUNK_OPTION "1g"
#define FULL_CHECK_EVERY 1024
#define FULL_CHECK_LIMIT (8 * KIB)         /* blocks up to this are patterned entirely */
#define EDGE_LEN KIB                       /* bigger ones: head and tail, */
#define STRIPE_LEN 64                      /* and up to STRIPES stripes in between */
#define STRIPES 16
#define ZEROS_LEN (8 * KIB)
#define PAT_PERIOD 4093                    /* prime: the pattern never repeats per page */

/* ---- Reporting ---------------------------------------------------------------------- */

static HAK_FUZZ_TLS size_t g_op_index; /* operation number within the input, for reports */
static HAK_FUZZ_TLS const char* g_op_name = "";
static HAK_FUZZ_TLS int g_stream = -1; /* concurrent harness: the stream this thread runs */
static bool g_trace;

__attribute__((noreturn, format(printf, 1, 2))) static void fail(const char* fmt, ...) {
  va_list ap;
  if (g_stream >= 0) {
    fprintf(stderr, "\nhak_fuzz[%s, hakmem %s]: FAILED in stream %d at operation #%zu (%s): ", HAK_FUZZ_TARGET,
            hak_variant(), g_stream, g_op_index, g_op_name);
  } else {
    fprintf(stderr, "\nhak_fuzz[%s, hakmem %s]: FAILED at operation #%zu (%s): ", HAK_FUZZ_TARGET,
            hak_variant(), g_op_index, g_op_name);
  }
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n");
  const char* input = getenv("HAK_FUZZ_CURRENT_INPUT");
  if (input != NULL) fprintf(stderr, "hak_fuzz: input file: %s (HAK_FUZZ_TRACE=1 lists its operations)\n", input);
  fflush(stderr);
  abort();
}

#define TRACE(...)                        \
  do {                                    \
    if (g_trace) fprintf(stderr, __VA_ARGS__); \
  } while (0)

/* ---- Input decoding ----------------------------------------------------------------- */

typedef struct reader_s {
  const uint8_t* data;
  size_t size, pos;
} reader_t;

static uint8_t rd_u8(reader_t* r) {
  return r->pos < r->size ? r->data[r->pos++] : 0;
}

static uint16_t rd_u16(reader_t* r) {
  uint16_t lo = rd_u8(r);
  return (uint16_t)(lo | (uint16_t)(rd_u8(r) << 8));
}

/* Block size of size class c (docs/ARCHITECTURE.md: 16..256 by 16, then 8 per doubling). */
static size_t class_block_size(unsigned c) {
  if (c < 16) return (size_t)(c + 1) * 16;
  size_t doubling = (c - 16) / 8, step = (c - 16) % 8 + 1, base = (size_t)256 << doubling;
  return base + step * (base / 8);
}
#define NCLASSES 80

static const size_t kEdgeSizes[] = {
    0, 1, 2, 8, 15, 16, 17, 31, 32, 33, 127, 128, 129, 255, 256, 257,
    511, 512, 513, 1023, 1024, 1025, 2047, 2048, 2049, 4095, 4096, 4097, 8191, 8192, 8193, 9216,
    61440, 61441, 65535, 65536, 65537, 128 * KIB, MIB - 1, MIB, MIB + 1, 2 * MIB - 1, 2 * MIB,
    2 * MIB + 1, 3 * MIB, 4 * MIB - 4097, 4 * MIB - 1, 4 * MIB, 4 * MIB + 1, 5 * MIB, 8 * MIB + 1,
    24 * MIB,
    /* absurd: must fail */
    (size_t)1 << 48, ((size_t)1 << 48) + 1, (size_t)PTRDIFF_MAX - 12288, (size_t)PTRDIFF_MAX - 8192,
    (size_t)PTRDIFF_MAX - 4096, (size_t)PTRDIFF_MAX, (size_t)PTRDIFF_MAX + 1, (size_t)1 << 63,
    SIZE_MAX - 4095, SIZE_MAX - 15, SIZE_MAX, (size_t)1 << 56,
};
#define NEDGE (sizeof(kEdgeSizes) / sizeof(kEdgeSizes[0]))

/* Size selector byte s, then its arguments:
 *   0x00-0x3f  kEdgeSizes[s % NEDGE]
 *   0x40-0x7f  class boundary: class u8 % 80, block size + (s & 3: -1, 0, +1, -16)
 *   0x80-0x9f  small: (s & 31) * 256 + u8               (0 .. 8 KiB)
 *   0xa0-0xbf  mid: u16 + (s & 1) * 64 KiB               (0 .. 128 KiB)
 *   0xc0-0xdf  large: (u16 << ((s & 7) + 1)) + u8        (.. 16 MiB)
 *   0xe0-0xff  power of two 2^(u8 % 27) + (s & 3: -1, 0, +1, +4096), or, for s >= 0xfc,
 *              2^(48 + u8 % 16) (absurd) */
static size_t rd_size(reader_t* r) {
  uint8_t s = rd_u8(r);
  switch (s >> 5) {
    case 0:
    case 1:
      return kEdgeSizes[s % NEDGE];
    case 2:
    case 3: {
      size_t b = class_block_size(rd_u8(r) % NCLASSES);
      static const int kDelta[4] = {-1, 0, 1, -16};
      return (size_t)((long)b + kDelta[s & 3]);
    }
    case 4:
      return (size_t)(s & 31) * 256 + rd_u8(r);
    case 5:
      return (size_t)rd_u16(r) + (size_t)(s & 1) * 64 * KIB;
    case 6: {
      size_t v = (size_t)rd_u16(r) << ((s & 7) + 1);
      return v + rd_u8(r);
    }
    default: {
      uint8_t e = rd_u8(r);
      if (s >= 0xfc) return (size_t)1 << (48 + e % 16);
      size_t p = (size_t)1 << (e % 27);
      static const long kDelta[4] = {-1, 0, 1, 4096};
      return (size_t)((long)p + kDelta[s & 3]);
    }
  }
}

/* Alignment byte a: 0x00-0xdf: 2^(a % 27) (1 B .. 64 MiB); 0xe0-0xff: odd and absurd
 * values (or, from 0xf0, a raw u16). */
static size_t rd_align(reader_t* r) {
  uint8_t a = rd_u8(r);
  if (a < 0xe0) return (size_t)1 << (a % 27);
  static const size_t kOdd[16] = {
      0, 3, 24, 48, 4096 + 16, 100, MIB + 4096, SIZE_MAX,
      (size_t)1 << 63, (size_t)1 << 62, (size_t)1 << 47, (size_t)1 << 48,
      SIZE_MAX / 2 + 2, (size_t)PTRDIFF_MAX, 12, (size_t)1 << 31,
  };
  if (a < 0xf0) return kOdd[a & 15];
  return rd_u16(r);
}

/* Element counts for calloc and reallocarray. */
static size_t rd_count(reader_t* r) {
  uint8_t c = rd_u8(r);
  if (c < 0xc0) return c & 63;
  static const size_t kCounts[16] = {
      0, 1, 2, 3, 4096, 65536, MIB, (size_t)1 << 32,
      ((size_t)1 << 32) + 1, (size_t)1 << 47, SIZE_MAX / 2 + 1, SIZE_MAX, (size_t)PTRDIFF_MAX, 255, 256, 1000,
  };
  return kCounts[c & 15];
}

/* Count of a burst: 1..128, or 32..4096 in steps of 32. */
static size_t rd_burst_count(reader_t* r) {
  uint8_t c = rd_u8(r);
  return c < 128 ? (size_t)c + 1 : (size_t)(c - 127) * 32;
}

/* ---- Operations ------------------------------------------------------------------------ */

enum {
  OP_MALLOC,          /* slot size */
  OP_CALLOC,          /* slot count size */
  OP_REALLOC,         /* slot size (empty slot: realloc(NULL, n); 0: frees) */
  OP_REALLOC_REL,     /* slot delta; flags & 3: grow x2 + d, shrink /2, + d, - (d + 1) */
  OP_FREE,            /* slot */
  OP_POSIX_MEMALIGN,  /* slot align size */
  OP_ALIGNED_ALLOC,   /* slot align size */
  OP_MEMALIGN,        /* slot align size */
  OP_VALLOC,          /* slot size; flags & 1: pvalloc */
  OP_USABLE,          /* slot; flags & 1: start using the whole usable size */
  OP_CHECK_ALL,       /* verify every live block */
  OP_REALLOCARRAY,    /* slot count size */
  OP_EDGE,            /* sub [slot]: calls with fixed outcomes (free(NULL), bad alignments) */
  OP_BURST_ALLOC,     /* base count size; flags & 1: calloc; flags & 2: free every other */
  OP_BURST_FREE,      /* base count stride; flags & 1: backwards */
  OP_THREAD,          /* end the second thread (its heap is abandoned) */
  OP_KINDS,
};

static const char* const kOpNames[OP_KINDS] = {
    "malloc", "calloc", "realloc", "realloc_rel", "free", "posix_memalign", "aligned_alloc",
    "memalign", "valloc", "usable_size", "check_all", "reallocarray", "edge", "burst_alloc",
    "burst_free", "thread",
};

typedef struct op_s {
  uint8_t kind, flags, sub;
  bool on_worker;
  uint16_t slot;
  size_t size, count, align, stride;
  size_t index; /* operation number within the input */
} op_t;

static void decode_op(reader_t* r, op_t* op) {
  uint8_t k = rd_u8(r);
  memset(op, 0, sizeof(*op));
  op->kind = k & 15;
  op->flags = (k >> 4) & 7;
  op->on_worker = (k & 0x80) != 0;
  switch (op->kind) {
    case OP_MALLOC:
    case OP_REALLOC:
    case OP_VALLOC:
      op->slot = rd_u8(r);
      op->size = rd_size(r);
      break;
    case OP_CALLOC:
    case OP_REALLOCARRAY:
      op->slot = rd_u8(r);
      op->count = rd_count(r);
      op->size = rd_size(r);
      break;
    case OP_REALLOC_REL:
      op->slot = rd_u8(r);
      op->size = rd_u8(r);
      break;
    case OP_FREE:
    case OP_USABLE:
      op->slot = rd_u8(r);
      break;
    case OP_POSIX_MEMALIGN:
    case OP_ALIGNED_ALLOC:
    case OP_MEMALIGN:
      op->slot = rd_u8(r);
      op->align = rd_align(r);
      op->size = rd_size(r);
      break;
    case OP_EDGE:
      op->sub = rd_u8(r);
      op->slot = rd_u8(r);
      break;
    case OP_BURST_ALLOC:
      op->slot = (uint16_t)(rd_u8(r) * 16u);
      op->count = rd_burst_count(r);
      op->size = rd_size(r);
      break;
    case OP_BURST_FREE:
      op->slot = (uint16_t)(rd_u8(r) * 16u);
      op->count = rd_burst_count(r);
      op->stride = (size_t)(rd_u8(r) % 16) + 1;
      break;
    default:
      break;
  }
}

/* ---- Shadow model ------------------------------------------------------------------------ */

typedef struct block_s {
  uint8_t* p;       /* NULL: slot empty */
  size_t req;       /* bytes the program uses: the pattern covers [0, req) */
  size_t usable;    /* hak_usable_size at allocation */
  uint32_t seed;    /* pattern phase */
  bool canary;      /* p[usable - 1] holds the canary byte (usable > req) */
} block_t;

/* The shadow model of one thread of operations: its live blocks (slot table plus an
 * address-sorted index) and its work so far. One model in the single-thread and the
 * hand-off harnesses; one per operation stream in the concurrent one (each stream owns
 * its slots; blocks move between streams only through the hand-off queues). */
typedef struct model_s {
  block_t slots[NSLOTS];
  uint16_t sorted[NSLOTS]; /* live slots by address */
  size_t nsorted;
  size_t live_bytes;       /* sum of usable sizes of live blocks */
  uint32_t next_seed;
  size_t work;             /* see MAX_WORK */
  size_t touched;          /* bytes written or checked not yet charged (under 1 KiB) */
} model_t;

static model_t g_model;
static HAK_FUZZ_TLS model_t* M = &g_model; /* the calling thread's model */

/* Bytes live for the memory cap (LIVE_CAP): the model's, or in the concurrent harness
 * every stream's plus the blocks in flight between them. */
#if HAK_FUZZ_CONCURRENT
static _Atomic size_t g_total_live;
static void total_add(size_t n) {
  atomic_fetch_add_explicit(&g_total_live, n, memory_order_relaxed);
}
static void total_sub(size_t n) {
  atomic_fetch_sub_explicit(&g_total_live, n, memory_order_relaxed);
}
static size_t total_live(void) {
  return atomic_load_explicit(&g_total_live, memory_order_relaxed);
}
#else
static void total_add(size_t n) {
  (void)n;
}
static void total_sub(size_t n) {
  (void)n;
}
static size_t total_live(void) {
  return M->live_bytes;
}
#endif
static uint8_t g_pattern[2 * PAT_PERIOD];
static const uint8_t g_zeros[ZEROS_LEN];

static void pattern_init(void) {
  uint64_t x = 0x9E3779B97F4A7C15u;
  for (size_t i = 0; i < PAT_PERIOD; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    uint8_t b = (uint8_t)(x >> 24);
    g_pattern[i] = g_pattern[i + PAT_PERIOD] = b == 0 ? 0x5a : b; /* never zero */
  }
}

static uint8_t canary_of(const block_t* b) {
  return (uint8_t)(0xa5 ^ b->seed);
}

/* Regions of a block of `req` bytes that carry the pattern: all of it up to 8 KiB, else
 * the first and last KiB and up to 16 stripes of 64 bytes in between. */
typedef void region_fn(block_t* b, size_t from, size_t to, void* arg);

static void for_each_region(block_t* b, size_t req, size_t limit, region_fn* fn, void* arg) {
  if (limit > req) limit = req;
  if (req <= FULL_CHECK_LIMIT) {
    if (limit > 0) fn(b, 0, limit, arg);
    return;
  }
  fn(b, 0, limit < EDGE_LEN ? limit : EDGE_LEN, arg);
  /* Stripes land on different OS pages, at an odd offset within each. */
  size_t step = ((req / (STRIPES + 1)) & ~(size_t)4095) + 4096 + 1000;
  for (size_t off = step; off + STRIPE_LEN <= req - EDGE_LEN && off < limit; off += step) {
    fn(b, off, off + STRIPE_LEN < limit ? off + STRIPE_LEN : limit, arg);
  }
  if (req - EDGE_LEN < limit) fn(b, req - EDGE_LEN, limit, arg);
}

/* A unit per KiB written or checked, carried over between regions: a burst of blocks
 * under 1 KiB each would otherwise write megabytes for free. */
static void charge_bytes(size_t n) {
  M->touched += n;
  M->work += M->touched / 1024;
  M->touched %= 1024;
}

static void region_fill(block_t* b, size_t from, size_t to, void* arg) {
  (void)arg;
  charge_bytes(to - from);
  for (size_t off = from; off < to;) {
    size_t phase = (b->seed + off) % PAT_PERIOD;
    size_t n = to - off < PAT_PERIOD ? to - off : PAT_PERIOD;
    memcpy(b->p + off, g_pattern + phase, n);
    off += n;
  }
}

static void report_mismatch(block_t* b, size_t off, uint8_t want, const char* what) {
  /* A block in flight between streams is checked before it has a slot. */
  long slot = b >= M->slots && b < M->slots + NSLOTS ? (long)(b - M->slots) : -1;
  fail("%s: block of slot %ld at %p (request %zu, usable %zu) has byte 0x%02x at offset %zu, want 0x%02x",
       what, slot, (void*)b->p, b->req, b->usable, b->p[off], off, want);
}

static void region_verify(block_t* b, size_t from, size_t to, void* arg) {
  charge_bytes(to - from);
  for (size_t off = from; off < to;) {
    size_t phase = (b->seed + off) % PAT_PERIOD;
    size_t n = to - off < PAT_PERIOD ? to - off : PAT_PERIOD;
    if (memcmp(b->p + off, g_pattern + phase, n) != 0) {
      for (size_t i = 0; i < n; i++) {
        if (b->p[off + i] != g_pattern[phase + i]) report_mismatch(b, off + i, g_pattern[phase + i], (const char*)arg);
      }
    }
    off += n;
  }
}

static void region_verify_zero(block_t* b, size_t from, size_t to, void* arg) {
  (void)arg;
  charge_bytes(to - from);
  for (size_t off = from; off < to;) {
    size_t n = to - off < sizeof(g_zeros) ? to - off : sizeof(g_zeros);
    if (memcmp(b->p + off, g_zeros, n) != 0) {
      for (size_t i = 0; i < n; i++) {
        if (b->p[off + i] != 0) report_mismatch(b, off + i, 0, "calloc memory not zero");
      }
    }
    off += n;
  }
}

static void block_write(block_t* b) {
  for_each_region(b, b->req, b->req, region_fill, NULL);
  b->canary = b->usable > b->req;
  if (b->canary) b->p[b->usable - 1] = canary_of(b);
}

/* Contents intact: the pattern up to `limit` bytes, and the canary. */
static void block_verify(block_t* b, size_t limit, const char* when) {
  for_each_region(b, b->req, limit, region_verify, (void*)when);
  if (b->canary && b->p[b->usable - 1] != canary_of(b)) report_mismatch(b, b->usable - 1, canary_of(b), when);
}

/* Index of the first live block at or above address a. */
static size_t sorted_lower_bound(uintptr_t a) {
  size_t lo = 0, hi = M->nsorted;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if ((uintptr_t)M->slots[M->sorted[mid]].p < a) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

static void live_insert(unsigned slot) {
  block_t* b = &M->slots[slot];
  uintptr_t lo = (uintptr_t)b->p, hi = lo + b->usable;
  size_t i = sorted_lower_bound(lo);
  if (i < M->nsorted) {
    block_t* n = &M->slots[M->sorted[i]];
    if ((uintptr_t)n->p < hi) {
      fail("new block [%p, +%zu) of slot %u overlaps live block [%p, +%zu) of slot %u", (void*)b->p, b->usable, slot,
           (void*)n->p, n->usable, M->sorted[i]);
    }
  }
  if (i > 0) {
    block_t* prev = &M->slots[M->sorted[i - 1]];
    if ((uintptr_t)prev->p + prev->usable > lo) {
      fail("new block [%p, +%zu) of slot %u overlaps live block [%p, +%zu) of slot %u", (void*)b->p, b->usable, slot,
           (void*)prev->p, prev->usable, M->sorted[i - 1]);
    }
  }
  memmove(&M->sorted[i + 1], &M->sorted[i], (M->nsorted - i) * sizeof(M->sorted[0]));
  M->sorted[i] = (uint16_t)slot;
  M->nsorted++;
  M->live_bytes += b->usable;
  total_add(b->usable);
}

static void live_remove(unsigned slot) {
  block_t* b = &M->slots[slot];
  size_t i = sorted_lower_bound((uintptr_t)b->p);
  if (i >= M->nsorted || M->sorted[i] != slot) fail("harness: slot %u missing from the index", slot);
  memmove(&M->sorted[i], &M->sorted[i + 1], (M->nsorted - i - 1) * sizeof(M->sorted[0]));
  M->nsorted--;
  M->live_bytes -= b->usable;
  total_sub(b->usable);
}

/* ---- Expectations ------------------------------------------------------------------------- */

typedef enum expect_e { EXPECT_OK, EXPECT_FAIL, EXPECT_SKIP } expect_t;

/* For a request of n bytes aligned to `align` (already valid), given `freed` bytes that
 * the call itself gives back first. */
static expect_t expect_for(size_t n, size_t align, size_t freed) {
  if (n >= MUST_FAIL_SIZE || align >= MUST_FAIL_ALIGN) return EXPECT_FAIL;
  if (align > MAX_TRY_ALIGN) return EXPECT_SKIP;
  /* Concurrent harness: the other stream's blocks count too. It may allocate between
   * this check and the call, so two streams can overshoot the cap by one request each. */
  size_t live = total_live() - freed;
  if (n > LIVE_CAP || live + n + (align > 4096 ? 4096 : 0) > LIVE_CAP) return EXPECT_SKIP;
  return EXPECT_OK;
}

/* A realloc that may copy `units` pages runs only within what is left of the input's
 * budget, else it is skipped: a few copies of megabytes each would take longer than a
 * hundred ordinary inputs. Whales (requests above WHALE_MIN) are exempt: hakmem moves
 * them with mremap rather than copying, so their calls stay cheap and every size stays
 * reachable. (calloc has no such exemption: a whale from hakmem's cache is zeroed with
 * memset, and whale callocs took a third of a campaign's time when they had one.) */
#define WHALE_MIN (4032 * KIB)
static bool affordable(size_t units, size_t size) {
  return size > WHALE_MIN || M->work + units <= WORK_LIMIT;
}

static bool is_pow2(size_t n) {
  return n != 0 && (n & (n - 1)) == 0;
}

static void expect_errno(int want, const char* call, size_t n) {
  if (errno != want) fail("%s(%zu) failed with errno %d, want %d", call, n, errno, want);
}

/* Takes a block hakmem just handed out: checks it and writes its pattern. `waste_check`:
 * fresh block of a plain request, so the documented internal-waste bound applies. */
static void adopt_block(unsigned slot, void* p, size_t req, size_t align, size_t min_usable, bool zeroed,
                        bool waste_check) {
  if (p == NULL) fail("NULL for a request of %zu bytes (alignment %zu) that must succeed", req, align);
  uintptr_t a = (uintptr_t)p;
  if (a % 16 != 0) fail("block %p for %zu bytes is not 16-byte aligned", p, req);
  if (align > 16 && a % align != 0) fail("block %p for %zu bytes is not aligned to %zu", p, req, align);
  size_t usable = hak_usable_size(p);
  if (usable < min_usable) fail("usable size %zu of %p is below the request %zu", usable, p, min_usable);
  if (waste_check) {
    /* docs/ARCHITECTURE.md: size classes up to 1 MiB waste under 12.5% above 128 B, at
     * most 15 B below (16 for malloc(0)); big blocks (up to 4032 KiB) are rounded to
     * whole 64 KiB slices, whales to whole OS pages. */
    size_t waste = usable - req;
    bool ok = req > 4032 * KIB ? waste < 4096
              : req > 1024 * KIB ? waste < 64 * KIB
              : req > 128        ? waste * 8 < usable
                                 : waste <= 16;
    if (!ok) fail("usable size %zu for a request of %zu bytes wastes more than documented", usable, req);
  }
  block_t* b = &M->slots[slot];
  /* Big blocks: an mmap and an munmap of their own, and under ASan hakmem unpoisons
   * the whole block (a memset of its shadow, about a microsecond per 128 KiB). */
  if (usable > 64 * KIB) M->work += WORK_PER_MAPPING + usable / (128 * KIB);
  b->p = p;
  b->req = req;
  b->usable = usable;
  b->seed = M->next_seed++;
  live_insert(slot);
  if (zeroed) for_each_region(b, req, req, region_verify_zero, NULL);
  block_write(b);
}

static void free_slot(unsigned slot) {
  block_t* b = &M->slots[slot];
  if (b->p == NULL) return;
  block_verify(b, SIZE_MAX, "contents changed before free");
  live_remove(slot);
  M->work++;
  hak_free(b->p);
  b->p = NULL;
}

/* ---- Executing operations ----------------------------------------------------------------- */

static void do_malloc(unsigned slot, size_t n) {
  free_slot(slot);
  expect_t e = expect_for(n, 0, 0);
  if (e == EXPECT_SKIP) return;
  errno = 0;
  M->work++;
  void* p = hak_malloc(n);
  if (e == EXPECT_FAIL) {
    if (p != NULL) fail("malloc(%zu) returned %p, want NULL", n, p);
    expect_errno(ENOMEM, "malloc", n);
    return;
  }
  adopt_block(slot, p, n, 0, n, false, true);
}

static void do_calloc(unsigned slot, size_t count, size_t n) {
  size_t total;
  bool overflow = __builtin_mul_overflow(count, n, &total);
  free_slot(slot);
  expect_t e = overflow ? EXPECT_FAIL : expect_for(total, 0, 0);
  if (e == EXPECT_SKIP) return;
  errno = 0;
  /* hakmem zeroes memory it reuses (whales too, when they come from its cache): a
   * unit per 4 pages, within the budget whatever the size (so calloc reaches whales
   * up to 8 MiB; malloc and realloc reach every size); a request that must fail costs
   * a call. */
  size_t zeroing = total / (4 * PAGE);
  if (e == EXPECT_OK && M->work + zeroing > WORK_LIMIT) return;
  M->work += 1 + (e == EXPECT_OK ? zeroing : 0);
  void* p = hak_calloc(count, n);
  if (e == EXPECT_FAIL) {
    if (p != NULL) fail("calloc(%zu, %zu) returned %p, want NULL", count, n, p);
    expect_errno(ENOMEM, "calloc", total);
    return;
  }
  adopt_block(slot, p, total, 0, total, true, true);
}

/* realloc(p, n), or reallocarray(p, count, n / count) when `array` (with `overflow`
 * when count * size does not fit: then it must fail and leave p alone). glibc rules:
 * realloc(NULL, n) is malloc(n), also for n == 0; realloc(p, 0) frees p and returns
 * NULL; on failure p is untouched. */
static void do_realloc_any(unsigned slot, size_t n, bool array, size_t count, size_t elem, bool overflow) {
  const char* name = array ? "reallocarray" : "realloc";
  block_t* b = &M->slots[slot];
  void* old_p = b->p;
  if (old_p != NULL) block_verify(b, SIZE_MAX, "contents changed before realloc");
  bool frees = old_p != NULL && n == 0 && !overflow;
  expect_t e = overflow ? EXPECT_FAIL : frees ? EXPECT_OK : expect_for(n, 0, old_p != NULL ? b->usable : 0);
  if (e == EXPECT_SKIP) return;
  size_t copy = old_p != NULL && !overflow ? (n < b->usable ? n : b->usable) : 0;
  if (e == EXPECT_OK && !frees && !affordable(copy / PAGE, copy)) return;
  if (frees) live_remove(slot);
  errno = 0;
  M->work++;
  M->work += copy / PAGE; /* hakmem's copy */
  void* q = array ? hak_reallocarray(old_p, count, elem) : hak_realloc(old_p, n);
  if (frees) {
    if (q != NULL) fail("%s(%p, 0) returned %p, want NULL (the block is freed)", name, old_p, q);
    b->p = NULL;
    return;
  }
  if (e == EXPECT_FAIL) {
    if (q != NULL) fail("%s(%p, %zu) returned %p, want NULL", name, old_p, n, q);
    expect_errno(ENOMEM, name, n);
    if (old_p != NULL) block_verify(b, SIZE_MAX, "block changed by a failed realloc");
    return;
  }
  if (q == NULL) fail("%s(%p, %zu) returned NULL, want a block", name, old_p, n);
  if (old_p == NULL) {
    adopt_block(slot, q, n, 0, n, false, true);
    return;
  }
  block_t old = *b;
  live_remove(slot);
  b->p = NULL;
  block_t moved = old; /* the old contents, now at q: the prefix must have survived */
  moved.p = q;
  moved.canary = false;
  block_verify(&moved, n, "contents not preserved by realloc");
  adopt_block(slot, q, n, 0, n, false, false);
  b->seed = old.seed; /* keep the phase of the preserved prefix */
  block_write(b);
}

static void do_realloc(unsigned slot, size_t n) {
  do_realloc_any(slot, n, false, 0, 0, false);
}

static void do_reallocarray(unsigned slot, size_t count, size_t elem) {
  size_t total;
  bool overflow = __builtin_mul_overflow(count, elem, &total);
  do_realloc_any(slot, overflow ? SIZE_MAX : total, true, count, elem, overflow);
}

static void do_realloc_rel(unsigned slot, unsigned mode, size_t d) {
  block_t* b = &M->slots[slot];
  size_t cur = b->p != NULL ? b->req : 0, n;
  switch (mode & 3) {
    case 0: n = cur * 2 + d; break;
    case 1: n = cur / 2; break;
    case 2: n = cur + d; break;
    default: n = cur > d ? cur - d - 1 : 0; break;
  }
  do_realloc(slot, n);
}

/* posix_memalign, aligned_alloc, memalign with their glibc validity rules. */
static void do_aligned(unsigned slot, int kind, size_t align, size_t n) {
  free_slot(slot);
  size_t eff = align; /* the alignment the block must have */
  bool einval;
  switch (kind) {
    case OP_POSIX_MEMALIGN: einval = align % sizeof(void*) != 0 || !is_pow2(align); break;
    case OP_ALIGNED_ALLOC: einval = !is_pow2(align); break;
    default: /* memalign rounds up to a power of two; rejects only > SIZE_MAX / 2 + 1 */
      einval = align > SIZE_MAX / 2 + 1;
      if (!einval && !is_pow2(align)) {
        eff = 16;
        while (eff < align) eff <<= 1;
      }
      break;
  }
  expect_t e = einval ? EXPECT_FAIL : expect_for(n, eff, 0);
  if (e == EXPECT_SKIP) return;
  M->work++;
  if (kind == OP_POSIX_MEMALIGN) {
    void* out = (void*)(uintptr_t)0xdeadbeef;
    errno = 12345;
    int rc = hak_posix_memalign(&out, align, n);
    if (errno != 12345) fail("posix_memalign(%zu, %zu) changed errno to %d", align, n, errno);
    if (e == EXPECT_FAIL) {
      int want = einval ? EINVAL : ENOMEM;
      if (rc != want) fail("posix_memalign(%zu, %zu) returned %d, want %d", align, n, rc, want);
      if (out != (void*)(uintptr_t)0xdeadbeef) fail("failed posix_memalign(%zu, %zu) wrote its output", align, n);
      return;
    }
    if (rc != 0) fail("posix_memalign(%zu, %zu) returned %d, want 0", align, n, rc);
    adopt_block(slot, out, n, eff, n, false, false);
    return;
  }
  errno = 0;
  void* p = kind == OP_ALIGNED_ALLOC ? hak_aligned_alloc(align, n) : hak_memalign(align, n);
  const char* name = kind == OP_ALIGNED_ALLOC ? "aligned_alloc" : "memalign";
  if (e == EXPECT_FAIL) {
    if (p != NULL) fail("%s(%zu, %zu) returned %p, want NULL", name, align, n, p);
    if (errno != (einval ? EINVAL : ENOMEM)) {
      fail("%s(%zu, %zu) failed with errno %d, want %d", name, align, n, errno, einval ? EINVAL : ENOMEM);
    }
    return;
  }
  adopt_block(slot, p, n, eff, n, false, false);
}

static void do_valloc(unsigned slot, size_t n, bool page_rounded) {
  free_slot(slot);
  size_t min = n;
  if (page_rounded && n < MUST_FAIL_SIZE) min = n == 0 ? 4096 : (n + 4095) & ~(size_t)4095;
  expect_t e = expect_for(min, 4096, 0);
  if (e == EXPECT_SKIP) return;
  errno = 0;
  M->work++;
  void* p = page_rounded ? hak_pvalloc(n) : hak_valloc(n);
  const char* name = page_rounded ? "pvalloc" : "valloc";
  if (e == EXPECT_FAIL) {
    if (p != NULL) fail("%s(%zu) returned %p, want NULL", name, n, p);
    expect_errno(ENOMEM, name, n);
    return;
  }
  adopt_block(slot, p, n, 4096, min, false, false);
}

static void do_usable(unsigned slot, bool use_all) {
  block_t* b = &M->slots[slot];
  M->work++;
  if (b->p == NULL) {
    if (hak_usable_size(NULL) != 0) fail("usable_size(NULL) is %zu, want 0", hak_usable_size(NULL));
    return;
  }
  size_t u = hak_usable_size(b->p);
  if (u != b->usable) fail("usable size of %p changed from %zu to %zu while live", (void*)b->p, b->usable, u);
  block_verify(b, SIZE_MAX, "contents changed");
  if (use_all && b->req != u) { /* the program now uses every usable byte */
    b->req = u;
    block_write(b);
  }
}

static void check_all(void) {
  for (size_t i = 0; i < M->nsorted; i++) block_verify(&M->slots[M->sorted[i]], SIZE_MAX, "contents changed");
}

/* Calls whose outcome is fixed whatever the state. */
static void do_edge(unsigned sub, unsigned slot) {
  static const size_t kBadAlign[] = {0, 1, 2, 4, 3, 12, 24, 48, 4096 + 16, SIZE_MAX, (size_t)PTRDIFF_MAX};
  block_t* b = &M->slots[slot];
  M->work++;
  switch (sub % 6) {
    case 0:
      hak_free(NULL);
      break;
    case 1: { /* posix_memalign with an invalid alignment: EINVAL, nothing written */
      size_t align = kBadAlign[(sub / 6) % (sizeof(kBadAlign) / sizeof(kBadAlign[0]))];
      void* out = NULL;
      errno = 777;
      int rc = hak_posix_memalign(&out, align, 64);
      if (rc != EINVAL || out != NULL || errno != 777) {
        fail("posix_memalign(%zu, 64) gave %d, out %p, errno %d; want EINVAL, untouched", align, rc, out, errno);
      }
      break;
    }
    case 2: { /* aligned_alloc with a non-power of two */
      size_t align = sub / 6 % 2 ? 0 : 3 * (sub + 1);
      errno = 0;
      void* p = hak_aligned_alloc(align, 64);
      if (p != NULL || errno != EINVAL) fail("aligned_alloc(%zu, 64) gave %p, errno %d; want NULL EINVAL", align, p, errno);
      break;
    }
    case 3: { /* memalign beyond SIZE_MAX / 2 + 1 */
      errno = 0;
      void* p = hak_memalign(SIZE_MAX / 2 + 2 + sub, 64);
      if (p != NULL || errno != EINVAL) fail("memalign(huge, 64) gave %p, errno %d; want NULL EINVAL", p, errno);
      break;
    }
    case 4: { /* calloc whose product overflows by a hair */
      size_t c = ((size_t)1 << (32 + sub % 32)) + 1, n = SIZE_MAX / c + 1;
      errno = 0;
      void* p = hak_calloc(c, n);
      if (p != NULL || errno != ENOMEM) fail("calloc(%zu, %zu) gave %p, errno %d; want NULL ENOMEM", c, n, p, errno);
      break;
    }
    default: /* realloc of a live block to an absurd size: fails, block intact */
      if (b->p == NULL) break;
      errno = 0;
      size_t n = sub & 0x80 ? SIZE_MAX - sub : (size_t)PTRDIFF_MAX + 1 + sub;
      void* q = hak_realloc(b->p, n);
      if (q != NULL || errno != ENOMEM) fail("realloc(%p, %zu) gave %p, errno %d; want NULL ENOMEM", (void*)b->p, n, q, errno);
      block_verify(b, SIZE_MAX, "block changed by a failed realloc");
      break;
  }
}

/* Concurrent harness: takes a block waiting in this stream's inbox, if any, so remote
 * frees land in the middle of the receiver's own bursts. */
static void poll_inbox(void);

static void do_burst_alloc(unsigned base, size_t count, size_t n, unsigned flags) {
  for (size_t i = 0; i < count && M->work < WORK_LIMIT; i++) {
    poll_inbox();
    unsigned slot = (unsigned)((base + i) % NSLOTS);
    if (flags & 1) do_calloc(slot, 1, n);
    else do_malloc(slot, n);
  }
  if (flags & 2) {
    for (size_t i = 0; i < count; i += 2) free_slot((unsigned)((base + i) % NSLOTS));
  }
}

static void do_burst_free(unsigned base, size_t count, size_t stride, bool backwards) {
  for (size_t k = 0; k < count; k += stride) {
    size_t i = backwards ? count - 1 - k : k;
    poll_inbox();
    free_slot((unsigned)((base + i) % NSLOTS));
  }
}

/* ---- Hand-offs between concurrent streams ------------------------------------------------ */

#if HAK_FUZZ_CONCURRENT
/* The concurrent harness runs NSTREAMS streams of operations at once, one thread each.
 * A stream owns its model (slots); it passes blocks to the other stream through that
 * stream's inbox, a small queue under g_cmu. The receiver checks what arrives
 * (contents, canary, usable size) and frees it, reallocs it or keeps it in its own
 * slots: remote frees and reallocs that race the owner's allocations, its frees, page
 * retirement and (OP_THREAD) its exit. */
#define INBOX_CAP 256 /* a burst hands off up to 4096 blocks; the receiver takes them as it goes */
enum { HANDOFF_NONE, HANDOFF_FREE, HANDOFF_REALLOC, HANDOFF_KEEP };

typedef struct msg_s {
  block_t b;         /* the block, with the pattern and canary its sender wrote */
  uint8_t action;    /* HANDOFF_* */
  bool grow;         /* HANDOFF_REALLOC: to twice the size + 1, else to half */
  uint16_t slot;     /* HANDOFF_REALLOC, HANDOFF_KEEP: the receiver's slot for it (the
                        sender's ^ 128: still within reach of a one-byte slot) */
  size_t from_op;    /* the sender's operation, for reports */
} msg_t;

typedef struct stream_s {
  model_t model;
  const op_t* ops;
  size_t nops, pos;
  msg_t inbox[INBOX_CAP]; /* ring, under g_cmu */
  size_t head;
  _Atomic size_t len;     /* written under g_cmu; read without it to skip an empty inbox */
  bool done;              /* under g_cmu: ran its operations, freed its blocks, sends no more */
  bool finished;          /* under g_cmu: its last thread is returning */
  pthread_t last;         /* ... that thread, for the join */
  bool has_pred;          /* OP_THREAD: the thread that ran the stream before this one, */
  pthread_t pred;         /* ... joined by its successor */
  size_t sent, sent_full, received, threads;
} stream_t;

static stream_t g_streams[NSTREAMS];
static pthread_mutex_t g_cmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_ccv = PTHREAD_COND_INITIALIZER;

static stream_t* my_stream(void) {
  return &g_streams[g_stream];
}

static stream_t* other_stream(void) {
  return &g_streams[(g_stream + 1) % NSTREAMS];
}

/* The block of `slot` leaves this stream for the other one, which `action`s it. A full
 * inbox (the receiver is slow or has finished) and the sender frees the block itself. */
static void handoff(unsigned slot, unsigned action, bool grow) {
  block_t* b = &M->slots[slot];
  if (b->p == NULL) return;
  block_verify(b, SIZE_MAX, "contents changed before a hand-off");
  live_remove(slot);
  msg_t m = {.b = *b, .action = (uint8_t)action, .grow = grow, .slot = (uint16_t)(slot ^ 128), .from_op = g_op_index};
  b->p = NULL;
  M->work++;
  stream_t* to = other_stream();
  pthread_mutex_lock(&g_cmu);
  size_t len = atomic_load_explicit(&to->len, memory_order_relaxed);
  bool queued = len < INBOX_CAP;
  if (queued) {
    to->inbox[(to->head + len) % INBOX_CAP] = m;
    atomic_store_explicit(&to->len, len + 1, memory_order_relaxed);
    total_add(m.b.usable); /* in flight: still counts for the cap */
    pthread_cond_broadcast(&g_ccv);
  }
  pthread_mutex_unlock(&g_cmu);
  if (queued) {
    my_stream()->sent++;
    return;
  }
  my_stream()->sent_full++;
  hak_free(m.b.p);
}

/* A block that arrived: the sender's pattern must be intact and its usable size the
 * same, whichever thread now asks. */
static void receive(const msg_t* m) {
  const char* name = g_op_name;
  g_op_name = "receive a handed-off block";
  block_t b = m->b;
  total_sub(b.usable);
  M->work++;
  my_stream()->received++;
  TRACE("[S%d] receive %p (usable %zu) from operation #%zu of the other stream: %s\n", g_stream, (void*)b.p, b.usable,
        m->from_op, m->action == HANDOFF_FREE ? "free" : m->action == HANDOFF_REALLOC ? "realloc" : "keep");
  size_t u = hak_usable_size(b.p);
  if (u != b.usable) {
    fail("usable size of %p, handed off by operation #%zu of the other stream, changed from %zu to %zu in flight",
         (void*)b.p, m->from_op, b.usable, u);
  }
  block_verify(&b, SIZE_MAX, "contents of a handed-off block changed in flight");
  if (m->action == HANDOFF_FREE) {
    M->work++;
    hak_free(b.p);
  } else {
    free_slot(m->slot);
    M->slots[m->slot] = b;
    live_insert(m->slot); /* must not overlap any block this stream holds */
    if (m->action == HANDOFF_REALLOC) do_realloc_rel(m->slot, m->grow ? 0 : 1, 1);
  }
  g_op_name = name;
}

/* Takes what waits in this stream's inbox, up to `max` blocks. */
static void drain(size_t max) {
  stream_t* s = my_stream();
  for (size_t i = 0; i < max; i++) {
    /* Relaxed: an empty inbox costs no lock, so the streams synchronise only where a
     * block really changes hands (ThreadSanitizer sees no ordering the harness adds). */
    if (atomic_load_explicit(&s->len, memory_order_relaxed) == 0) return;
    pthread_mutex_lock(&g_cmu);
    msg_t m = s->inbox[s->head];
    s->head = (s->head + 1) % INBOX_CAP;
    atomic_store_explicit(&s->len, atomic_load_explicit(&s->len, memory_order_relaxed) - 1, memory_order_relaxed);
    pthread_mutex_unlock(&g_cmu);
    receive(&m);
  }
}

static void poll_inbox(void) {
  drain(1);
}

static void do_burst_handoff(unsigned base, size_t count, size_t stride, bool backwards) {
  for (size_t k = 0; k < count; k += stride) {
    size_t i = backwards ? count - 1 - k : k;
    poll_inbox();
    handoff((unsigned)((base + i) % NSLOTS), HANDOFF_FREE, false);
  }
}
#else
static void poll_inbox(void) {}
#endif

static void execute(const op_t* op) {
  g_op_name = kOpNames[op->kind];
#if HAK_FUZZ_CONCURRENT
  TRACE("#%zu [S%d] %s slot=%u size=%zu count=%zu align=%zu flags=%u sub=%u\n", g_op_index, g_stream, g_op_name,
        op->slot, op->size, op->count, op->align, op->flags, op->sub);
#else
  TRACE("#%zu %s%s slot=%u size=%zu count=%zu align=%zu flags=%u sub=%u\n", g_op_index, op->on_worker ? "[T2] " : "",
        g_op_name, op->slot, op->size, op->count, op->align, op->flags, op->sub);
#endif
  switch (op->kind) {
    case OP_MALLOC: do_malloc(op->slot, op->size); break;
    case OP_CALLOC: do_calloc(op->slot, op->count, op->size); break;
    case OP_REALLOC: do_realloc(op->slot, op->size); break;
    case OP_REALLOC_REL: do_realloc_rel(op->slot, op->flags, op->size); break;
#if HAK_FUZZ_CONCURRENT
    /* flags & 3: 0 free here; else hand off to the other stream, which frees (1),
     * reallocs (2; flags & 4: grow, else shrink) or keeps (3) the block */
    case OP_FREE:
      if (op->flags & 3) handoff(op->slot, op->flags & 3, op->flags & 4);
      else free_slot(op->slot);
      break;
    /* flags & 2: hand every block off, for the other stream to free */
    case OP_BURST_FREE:
      if (op->flags & 2) do_burst_handoff(op->slot, op->count, op->stride, op->flags & 1);
      else do_burst_free(op->slot, op->count, op->stride, op->flags & 1);
      break;
#else
    case OP_FREE: free_slot(op->slot); break;
    case OP_BURST_FREE: do_burst_free(op->slot, op->count, op->stride, op->flags & 1); break;
#endif
    case OP_POSIX_MEMALIGN:
    case OP_ALIGNED_ALLOC:
    case OP_MEMALIGN: do_aligned(op->slot, op->kind, op->align, op->size); break;
    case OP_VALLOC: do_valloc(op->slot, op->size, op->flags & 1); break;
    case OP_USABLE: do_usable(op->slot, op->flags & 1); break;
    case OP_CHECK_ALL: check_all(); break;
    case OP_REALLOCARRAY: do_reallocarray(op->slot, op->count, op->size); break;
    case OP_EDGE: do_edge(op->sub, op->slot); break;
    case OP_BURST_ALLOC: do_burst_alloc(op->slot, op->count, op->size, op->flags); break;
    default: break; /* OP_THREAD: handled by the caller */
  }
  if (g_trace) {
    hak_stats_t st;
    hak_stats_read(&st);
    fprintf(stderr, "    -> %zu blocks live (%zu bytes); hakmem: %llu segments, %llu KiB mapped\n", M->nsorted, M->live_bytes,
            (unsigned long long)st.segments_live, (unsigned long long)(st.os_mapped_bytes >> 10));
  }
}

/* ---- The second thread ---------------------------------------------------------------------- */

#if HAK_FUZZ_THREADS
#define BATCH_MAX 64
#define OP_COLLECT OP_KINDS /* not an input's: the end of input has the worker call hak_collect */
enum { WORKER_IDLE, WORKER_POSTED, WORKER_DONE, WORKER_EXIT };
/* Hand-offs: each side first spins briefly for the other before it sleeps on g_cv. A
 * batch takes microseconds; a sleep and wake-up of a thread costs about as much again
 * in the scheduler, twice per batch (the profile of this harness had a fifth of its
 * time in futex calls). On a loaded machine the spin gives up after SPIN_POLLS polls
 * and the threads sleep. The state is stored without the lock, and the lock and
 * broadcast are taken only when a sleeper counted itself in g_sleepers: a broadcast
 * under the lock woke a thread only to block it on the lock again, a second wake-up
 * (a third of the futex time). Both the state and g_sleepers are sequentially
 * consistent, so either the setter sees the sleeper or the sleeper sees the state. */
#define SPIN_POLLS 1024
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static _Atomic int g_worker_state = WORKER_IDLE;
static _Atomic int g_sleepers;
static bool g_worker_alive;
static pthread_t g_worker;
static op_t g_batch[BATCH_MAX];
static size_t g_batch_len, g_batch_first_index;

static int worker_state(void) {
  return atomic_load_explicit(&g_worker_state, memory_order_acquire);
}

static void worker_set_state(int state) {
  atomic_store(&g_worker_state, state);
  if (atomic_load(&g_sleepers) == 0) return;
  /* A sleeper between its count and its wait holds the lock: taking it here means it
   * waits on g_cv by the time of the broadcast. */
  pthread_mutex_lock(&g_mu);
  pthread_mutex_unlock(&g_mu);
  pthread_cond_broadcast(&g_cv);
}

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  atomic_signal_fence(memory_order_seq_cst);
#endif
}

/* Waits until the state is `a` or `b`; returns it. */
static int worker_wait_for(int a, int b) {
  int state = worker_state();
  for (int i = 0; i < SPIN_POLLS && state != a && state != b; i++) {
    cpu_relax();
    state = worker_state();
  }
  if (state == a || state == b) return state;
  pthread_mutex_lock(&g_mu);
  atomic_fetch_add(&g_sleepers, 1);
  while ((state = atomic_load(&g_worker_state)) != a && state != b) pthread_cond_wait(&g_cv, &g_mu);
  atomic_fetch_sub(&g_sleepers, 1);
  pthread_mutex_unlock(&g_mu);
  return state;
}

static void* worker_main(void* arg) {
  (void)arg;
  while (worker_wait_for(WORKER_POSTED, WORKER_EXIT) != WORKER_EXIT) {
    /* The main thread waits while the batch runs: the model is ours alone. */
    for (size_t i = 0; i < g_batch_len; i++) {
      g_op_index = g_batch_first_index + i;
      if (g_batch[i].kind == OP_COLLECT) hak_collect(false);
      else execute(&g_batch[i]);
    }
    worker_set_state(WORKER_DONE);
  }
  return NULL; /* hakmem's thread-exit hook abandons this thread's heap */
}

/* Runs the pending batch on the second thread and waits for it. */
static void worker_flush(void) {
  if (g_batch_len == 0) return;
  if (!g_worker_alive) {
    M->work += WORK_PER_THREAD;
    atomic_store_explicit(&g_worker_state, WORKER_IDLE, memory_order_relaxed);
    if (pthread_create(&g_worker, NULL, worker_main, NULL) != 0) fail("harness: pthread_create failed");
    g_worker_alive = true;
  }
  size_t resume_index = g_op_index;
  worker_set_state(WORKER_POSTED);
  worker_wait_for(WORKER_DONE, WORKER_DONE);
  atomic_store_explicit(&g_worker_state, WORKER_IDLE, memory_order_relaxed);
  g_batch_len = 0;
  g_op_index = resume_index;
}

static void worker_stop(void) {
  worker_flush();
  if (!g_worker_alive) return;
  worker_set_state(WORKER_EXIT);
  pthread_join(g_worker, NULL);
  g_worker_alive = false;
}

/* Blocks main freed onto the second thread's pages wait on the pages' lists until that
 * thread looks: it takes them back now (hak_collect on its own thread). */
static void worker_collect(void) {
  worker_flush();
  if (!g_worker_alive) return;
  g_batch_first_index = g_op_index;
  g_batch[0] = (op_t){.kind = OP_COLLECT, .on_worker = true};
  g_batch_len = 1;
  worker_flush();
}

static void dispatch(const op_t* op) {
  if (op->kind == OP_THREAD) {
    worker_flush();
    TRACE("#%zu thread: end the second thread\n", g_op_index);
    worker_stop();
    return;
  }
  if (op->on_worker) {
    if (g_batch_len == 0) g_batch_first_index = g_op_index;
    g_batch[g_batch_len++] = *op;
    if (g_batch_len == BATCH_MAX) worker_flush();
    return;
  }
  worker_flush();
  execute(op);
}
#elif !HAK_FUZZ_CONCURRENT
static void worker_flush(void) {}

static void worker_collect(void) {}

static void dispatch(const op_t* op) {
  if (op->kind != OP_THREAD) execute(op);
}
#endif

#if HAK_FUZZ_CONCURRENT
/* ---- Concurrent streams -------------------------------------------------------------------- */

static void free_all(void) {
  while (M->nsorted > 0) free_slot(M->sorted[M->nsorted - 1]);
}

/* Runs a stream from where it stands: its operations, then, once it has freed its own
 * blocks, whatever the other stream still sends it until that one is done too. OP_THREAD
 * hands the rest of the stream to a fresh thread and exits: its heap is abandoned while
 * the other stream may be freeing into it. */
static void* stream_main(void* arg) {
  stream_t* s = arg;
  if (s->has_pred) pthread_join(s->pred, NULL);
  s->has_pred = false;
  g_stream = (int)(s - g_streams);
  M = &s->model;
  stream_t* other = other_stream();
  while (s->pos < s->nops && M->work < WORK_LIMIT) {
    drain(INBOX_CAP);
    const op_t* op = &s->ops[s->pos++];
    g_op_index = op->index;
    if (op->kind == OP_THREAD) {
      TRACE("#%zu [S%d] thread: this thread exits, a new one runs the rest of the stream\n", g_op_index, g_stream);
      M->work += WORK_PER_THREAD;
      s->threads++;
      s->pred = pthread_self();
      s->has_pred = true;
      pthread_t next;
      if (pthread_create(&next, NULL, stream_main, s) != 0) fail("harness: pthread_create failed");
      return NULL; /* the stream is the successor's now: touch nothing */
    }
    execute(op);
  }
  g_op_name = "end of stream: free everything, take what the other stream still sends";
  free_all();
  pthread_mutex_lock(&g_cmu);
  s->done = true;
  pthread_cond_broadcast(&g_ccv);
  for (;;) {
    if (atomic_load_explicit(&s->len, memory_order_relaxed) > 0) {
      pthread_mutex_unlock(&g_cmu);
      drain(INBOX_CAP);
      pthread_mutex_lock(&g_cmu);
      continue;
    }
    if (other->done) break; /* it sends nothing more, and the inbox is empty */
    pthread_cond_wait(&g_ccv, &g_cmu);
  }
  pthread_mutex_unlock(&g_cmu);
  free_all(); /* blocks received to keep */
  pthread_mutex_lock(&g_cmu);
  s->finished = true;
  s->last = pthread_self();
  pthread_cond_broadcast(&g_ccv);
  pthread_mutex_unlock(&g_cmu);
  return NULL; /* hakmem's thread-exit hook abandons this thread's heap */
}

/* The input's operations, split by bit 7 of the kind byte into two streams (decoded in
 * order, so the split is deterministic; how they interleave is not), run at once. Every
 * thread is joined before the leak checks. */
static void run_streams(reader_t* r) {
  size_t cap = r->size + 1, n = 0, counts[NSTREAMS] = {0};
  op_t* all = malloc(cap * sizeof(op_t));
  op_t* split = malloc(cap * sizeof(op_t));
  if (all == NULL || split == NULL) fail("harness: out of memory for %zu operations", cap);
  while (r->pos < r->size) {
    decode_op(r, &all[n]);
    all[n].index = n;
    counts[all[n].on_worker ? 1 : 0]++;
    n++;
  }
  size_t at = 0;
  for (int i = 0; i < NSTREAMS; i++) {
    stream_t* s = &g_streams[i];
    s->ops = split + at;
    s->nops = 0;
    for (size_t k = 0; k < n; k++) {
      if ((all[k].on_worker ? 1 : 0) == i) split[at + s->nops++] = all[k];
    }
    at += counts[i];
    s->pos = s->head = 0;
    atomic_store_explicit(&s->len, 0, memory_order_relaxed);
    s->done = s->finished = s->has_pred = false;
    s->sent = s->sent_full = s->received = s->threads = 0;
    if (s->model.nsorted != 0) fail("harness: stream %d starts with %zu blocks live", i, s->model.nsorted);
    s->model.live_bytes = 0;
    /* The streams' first threads start and end in every input whatever it holds: a
     * fixed cost, not the input's work (a successor thread, OP_THREAD, is). */
    s->model.work = 0;
    s->model.touched = 0;
    s->model.next_seed = (uint32_t)i * (PAT_PERIOD / NSTREAMS); /* the streams' patterns differ */
  }
  free(all);
  pthread_t threads[NSTREAMS];
  for (int i = 0; i < NSTREAMS; i++) {
    if (pthread_create(&threads[i], NULL, stream_main, &g_streams[i]) != 0) fail("harness: pthread_create failed");
  }
  pthread_mutex_lock(&g_cmu);
  for (int i = 0; i < NSTREAMS; i++) {
    while (!g_streams[i].finished) pthread_cond_wait(&g_ccv, &g_cmu);
  }
  pthread_mutex_unlock(&g_cmu);
  for (int i = 0; i < NSTREAMS; i++) pthread_join(g_streams[i].last, NULL);
  free(split);
  for (int i = 0; i < NSTREAMS; i++) {
    stream_t* s = &g_streams[i];
    TRACE("stream %d: %zu operations, %zu blocks handed off (%zu more freed at home, inbox full), %zu received, %zu thread exits\n",
          i, s->nops, s->sent, s->sent_full, s->received, s->threads);
  }
  g_op_index = n; /* reports of the end of input */
  if (total_live() != 0) fail("harness: %zu bytes counted live after both streams freed everything", total_live());
}

/* The streams' threads have exited and been joined: their heaps are abandoned, and
 * hak_collect on the main thread takes back what was freed into them. */
static void worker_flush(void) {}

static void worker_collect(void) {}
#endif

/* ---- Entry point ---------------------------------------------------------------------------- */

/* Everything up to RSS, which the checks do not use (hakmem then skips its read of
 * /proc/self/status); the rest stays zero. */
static hak_stats_t read_stats(void) {
  hak_stats_t st = {.size = (uint32_t)offsetof(hak_stats_t, rss_bytes)};
  if (hak_stats_get(&st) != 0) fail("hak_stats_get failed");
  if (st.size != offsetof(hak_stats_t, rss_bytes)) fail("hak_stats_get filled %u bytes of %zu", st.size, offsetof(hak_stats_t, rss_bytes));
  return st;
}

/* mmap calls hakmem made for its own metadata (heap structs, the hardened variant's
 * ownership map), which stay for the life of the process. */
static uint64_t meta_mappings(const hak_stats_t* st) {
  return st->os_by[HAK_STATS_OS_META][HAK_STATS_OS_MMAP].count;
}

#define U(x) ((unsigned long long)(x))

/* Leak checks (see META_MAP_MAX_BYTES): with every block freed and hak_collect done,
 * hakmem must be back exactly where it was before the input. */
static void check_no_leak(const hak_stats_t* before, const hak_stats_t* st, bool idle_chunks_may_change) {
  /* The harness is hakmem's only user (malloc stays the C library's), so nothing may
   * be in use; hak_collect has taken back every block other threads freed. */
  if (st->in_use_blocks != 0 || st->in_use_bytes != 0) {
    fail("leak: hakmem counts %llu blocks (%llu bytes) in use after the input freed every block "
         "(%llu segments live, %llu before the input)",
         U(st->in_use_blocks), U(st->in_use_bytes), U(st->segments_live), U(before->segments_live));
  }
  if (st->segments_live != before->segments_live || st->region_used_bytes != before->region_used_bytes ||
      (st->region_chunks != before->region_chunks && !idle_chunks_may_change) ||
      st->dedicated_count != before->dedicated_count ||
      st->dedicated_bytes != before->dedicated_bytes) {
    fail("leak: with no block live, hakmem holds %llu segments (%llu KiB of region units in %llu chunks, %llu dedicated "
         "whales of %llu KiB); before the input: %llu segments (%llu KiB in %llu chunks, %llu whales of %llu KiB)",
         U(st->segments_live), U(st->region_used_bytes >> 10), U(st->region_chunks), U(st->dedicated_count),
         U(st->dedicated_bytes >> 10), U(before->segments_live), U(before->region_used_bytes >> 10),
         U(before->region_chunks), U(before->dedicated_count), U(before->dedicated_bytes >> 10));
  }
  /* hak_collect empties the caches and purges every free unit. */
  if (st->region_dirty_bytes != 0 || st->region_pending_bytes != 0 || st->cached_bytes != 0 ||
      st->free_dirty_bytes != 0) {
    fail("hak_collect left %llu dirty and %llu pending free bytes in the region, %llu dirty free bytes in segments, "
         "%llu bytes cached",
         U(st->region_dirty_bytes), U(st->region_pending_bytes), U(st->free_dirty_bytes), U(st->cached_bytes));
  }
  /* Mapped bytes: exactly as before, but for metadata hakmem maps once and keeps, and
   * (idle_chunks_may_change) idle chunks kept or unmapped whole: units in use are the
   * same (checked above), so any other chunk that came or went held nothing. */
  uint64_t new_meta = meta_mappings(st) - meta_mappings(before);
  uint64_t slack = new_meta * META_MAP_MAX_BYTES;
  int64_t chunks = (int64_t)st->region_chunks - (int64_t)before->region_chunks;
  int64_t grown = (int64_t)(st->os_mapped_bytes - before->os_mapped_bytes) - chunks * (int64_t)REGION_CHUNK_BYTES;
  if (grown < 0 || (uint64_t)grown > slack) {
    fail("leak: with no block live, hakmem maps %llu KiB, %lld KiB more than before %s (%lld idle region chunks "
         "more; allowed: %llu KiB for %llu new metadata mappings)",
         U(st->os_mapped_bytes >> 10), (long long)(st->os_mapped_bytes - before->os_mapped_bytes) / 1024,
         idle_chunks_may_change ? "the input" : "the last full check", (long long)chunks, U(slack >> 10),
         U(new_meta));
  }
}

/* Stats after the last full check (hak_collect(true)), for the next one. */
static hak_stats_t g_full_before;
static uint64_t g_inputs;
/* Stats at the end of the last input: the next input's starting point. Nothing calls
 * hakmem between two inputs (the engine and the harness's own bookkeeping use the C
 * library's malloc; the second thread waits idle, the streams' threads are joined) and
 * hakmem has no thread of its own, so they are exactly what a fresh read would give,
 * and one read per input is saved (a read walks the region and /proc/self/status). */
static hak_stats_t g_after_last;
static bool g_have_after_last;

static void end_of_input(const hak_stats_t* before) {
  worker_flush();
  g_op_name = "end of input: free everything";
  while (M->nsorted > 0) free_slot(M->sorted[M->nsorted - 1]);
  if (M->live_bytes != 0) fail("harness: %zu live bytes left after freeing everything", M->live_bytes);
  /* Freed memory stays in hakmem's caches and region until the purge delay passes, and
   * blocks freed by another thread wait on their page until its owner looks: hak_collect
   * (on each thread that owns a heap) hands all that back now (and is fuzzed that way),
   * so what stays is a leak. */
  g_op_name = "end of input: hak_collect";
  /* This thread's hardened quarantine (its last frees) and remote cache (blocks of the
   * second thread's pages it freed, kept for its own reuse) hold blocks of the second
   * thread's pages: this thread's hak_collect sends them home before that thread
   * collects; that thread's hak_collect sends this thread's home, which the last one
   * takes in. */
  hak_collect(false);
  worker_collect();
  hak_collect(false);
  hak_stats_t st = read_stats();
  check_no_leak(before, &st, true);
  if (g_inputs++ % FULL_CHECK_EVERY == 0) {
    /* Every idle chunk unmapped: hakmem must be exactly where the last full check left
     * it (a chunk-sized drift would show here, within FULL_CHECK_EVERY inputs). */
    g_op_name = "end of input: hak_collect(true), full check";
    hak_collect(true);
    st = read_stats();
    if (st.region_used_bytes == 0 && st.region_chunks != 0) {
      fail("hak_collect(true) left %llu idle region chunks mapped", U(st.region_chunks));
    }
    if (g_inputs > 1) check_no_leak(&g_full_before, &st, false);
    g_full_before = st;
  }
  g_after_last = st;
  g_have_after_last = true;
}

/* Runs before hakmem's constructor reads its options (constructors with a priority run
 * before those without): keep idle region chunks (see REGION_CHUNK_BYTES), and the
 * target's purge mode, unless the environment says otherwise. */
__attribute__((constructor(101))) static void keep_idle_chunks(void) {
  setenv("HAKMEM_REGION_KEEP", KEEP_CHUNK_OPTION, 0);
#ifdef HAK_FUZZ_MADVISE
  setenv("HAKMEM_MADVISE", HAK_FUZZ_MADVISE, 0); /* the target's purge mode (fuzz/BUILD) */
#endif
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static bool initialised;
  if (!initialised) {
    pattern_init();
    const char* t = getenv("HAK_FUZZ_TRACE");
    g_trace = t != NULL && *t != '\0' && *t != '0';
    initialised = true;
  }
  reader_t r = {data, size, 0};
  hak_stats_t before = g_have_after_last ? g_after_last : read_stats();
  M->next_seed = 0;
  M->work = 0;
  M->touched = 0;
  g_op_index = 0;
#if HAK_FUZZ_CONCURRENT
  run_streams(&r);
#else
  while (r.pos < r.size && M->work < WORK_LIMIT) {
    op_t op;
    decode_op(&r, &op);
    op.index = g_op_index;
    dispatch(&op);
    g_op_index++;
  }
#endif
  end_of_input(&before);
  return 0;
}
