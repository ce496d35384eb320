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
 * input, and hakmem's segments and mapped bytes must then stay bounded (leak checks,
 * see SEGMENT_GROWTH_LIMIT).
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

#if HAK_FUZZ_THREADS
#include <pthread.h>
#endif

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

/* ---- Limits ------------------------------------------------------------------------- */

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)
#define NSLOTS 4096                        /* live blocks at most */
#define LIVE_CAP (256 * MIB)               /* requests beyond this much live are skipped */
#define MUST_FAIL_SIZE ((size_t)1 << 48)   /* no mapping this big can exist (47-bit VA) */
#define MUST_FAIL_ALIGN ((size_t)1 << 47)  /* no address this aligned is a user address */
#define MAX_TRY_ALIGN ((size_t)1 << 30)    /* larger (valid) alignments are skipped */
/* Work per input is bounded, and so is each execution's time. Units are about a
 * microsecond on this project's machines: one per allocator call, 64 more per block
 * above 64 KiB (an mmap and an munmap of its own), 50 per start of the second thread,
 * one per KiB the harness writes or checks, a realloc may copy or a calloc zeroes
 * (first touches of fresh pages cost about that). */
#define MAX_WORK 5000
#define WORK_PER_MAPPING 64
#define WORK_PER_THREAD 50 /* starting and ending the second thread */
/* Leak checks, after everything is freed at the end of an input:
 *  - per input (deterministic): hakmem's live segments may grow by at most 48. What an
 *    input may legitimately leave behind (the segment cache, pages whose blocks other
 *    threads freed and whose owner has not allocated from them since) is bounded by its
 *    work budget: at most 25 segments over 2000 fuzzed inputs, measured with hakmem's
 *    remote-free collection made eager in a scratch build;
 *  - per process (cumulative): after hak_collect, nothing dirty is left in the region
 *    or the whale ring, and hakmem's mapped bytes stay below 1 GiB. The input that
 *    trips this one is not necessarily the cause; replay the campaign's inputs in order
 *    (or lower the limit) to find it. HAK_FUZZ_MAPPED_LIMIT_MB overrides it, 0 = off. */
#define SEGMENT_GROWTH_LIMIT 48
#define MAPPED_LIMIT_MB 1024
#define FULL_CHECK_LIMIT (8 * KIB)         /* blocks up to this are patterned entirely */
#define EDGE_LEN KIB                       /* bigger ones: head and tail, */
#define STRIPE_LEN 64                      /* and up to STRIPES stripes in between */
#define STRIPES 16
#define ZEROS_LEN (8 * KIB)
#define PAT_PERIOD 4093                    /* prime: the pattern never repeats per page */

/* ---- Reporting ---------------------------------------------------------------------- */

static size_t g_op_index;         /* operation number within the input, for reports */
static const char* g_op_name = "";
static bool g_trace;

__attribute__((noreturn, format(printf, 1, 2))) static void fail(const char* fmt, ...) {
  va_list ap;
  fprintf(stderr, "\nhak_fuzz[%s, hakmem %s]: FAILED at operation #%zu (%s): ", HAK_FUZZ_TARGET,
          hak_variant(), g_op_index, g_op_name);
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

static block_t g_slots[NSLOTS];
static uint16_t g_sorted[NSLOTS]; /* live slots by address */
static size_t g_nsorted;
static size_t g_live_bytes;       /* sum of usable sizes of live blocks */
static uint32_t g_next_seed;
static size_t g_work;             /* see MAX_WORK */
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

static void region_fill(block_t* b, size_t from, size_t to, void* arg) {
  (void)arg;
  g_work += (to - from) / 1024;
  for (size_t off = from; off < to;) {
    size_t phase = (b->seed + off) % PAT_PERIOD;
    size_t n = to - off < PAT_PERIOD ? to - off : PAT_PERIOD;
    memcpy(b->p + off, g_pattern + phase, n);
    off += n;
  }
}

static void report_mismatch(block_t* b, size_t off, uint8_t want, const char* what) {
  unsigned slot = (unsigned)(b - g_slots);
  fail("%s: block of slot %u at %p (request %zu, usable %zu) has byte 0x%02x at offset %zu, want 0x%02x",
       what, slot, (void*)b->p, b->req, b->usable, b->p[off], off, want);
}

static void region_verify(block_t* b, size_t from, size_t to, void* arg) {
  g_work += (to - from) / 1024;
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
  g_work += (to - from) / 1024;
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
  size_t lo = 0, hi = g_nsorted;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if ((uintptr_t)g_slots[g_sorted[mid]].p < a) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

static void live_insert(unsigned slot) {
  block_t* b = &g_slots[slot];
  uintptr_t lo = (uintptr_t)b->p, hi = lo + b->usable;
  size_t i = sorted_lower_bound(lo);
  if (i < g_nsorted) {
    block_t* n = &g_slots[g_sorted[i]];
    if ((uintptr_t)n->p < hi) {
      fail("new block [%p, +%zu) of slot %u overlaps live block [%p, +%zu) of slot %u", (void*)b->p, b->usable, slot,
           (void*)n->p, n->usable, g_sorted[i]);
    }
  }
  if (i > 0) {
    block_t* prev = &g_slots[g_sorted[i - 1]];
    if ((uintptr_t)prev->p + prev->usable > lo) {
      fail("new block [%p, +%zu) of slot %u overlaps live block [%p, +%zu) of slot %u", (void*)b->p, b->usable, slot,
           (void*)prev->p, prev->usable, g_sorted[i - 1]);
    }
  }
  memmove(&g_sorted[i + 1], &g_sorted[i], (g_nsorted - i) * sizeof(g_sorted[0]));
  g_sorted[i] = (uint16_t)slot;
  g_nsorted++;
  g_live_bytes += b->usable;
}

static void live_remove(unsigned slot) {
  block_t* b = &g_slots[slot];
  size_t i = sorted_lower_bound((uintptr_t)b->p);
  if (i >= g_nsorted || g_sorted[i] != slot) fail("harness: slot %u missing from the index", slot);
  memmove(&g_sorted[i], &g_sorted[i + 1], (g_nsorted - i - 1) * sizeof(g_sorted[0]));
  g_nsorted--;
  g_live_bytes -= b->usable;
}

/* ---- Expectations ------------------------------------------------------------------------- */

typedef enum expect_e { EXPECT_OK, EXPECT_FAIL, EXPECT_SKIP } expect_t;

/* For a request of n bytes aligned to `align` (already valid), given `freed` bytes that
 * the call itself gives back first. */
static expect_t expect_for(size_t n, size_t align, size_t freed) {
  if (n >= MUST_FAIL_SIZE || align >= MUST_FAIL_ALIGN) return EXPECT_FAIL;
  if (align > MAX_TRY_ALIGN) return EXPECT_SKIP;
  size_t live = g_live_bytes - freed;
  if (n > LIVE_CAP || live + n + (align > 4096 ? 4096 : 0) > LIVE_CAP) return EXPECT_SKIP;
  return EXPECT_OK;
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
  block_t* b = &g_slots[slot];
  if (usable > 64 * KIB) g_work += WORK_PER_MAPPING;
  b->p = p;
  b->req = req;
  b->usable = usable;
  b->seed = g_next_seed++;
  live_insert(slot);
  if (zeroed) for_each_region(b, req, req, region_verify_zero, NULL);
  block_write(b);
}

static void free_slot(unsigned slot) {
  block_t* b = &g_slots[slot];
  if (b->p == NULL) return;
  block_verify(b, SIZE_MAX, "contents changed before free");
  live_remove(slot);
  g_work++;
  hak_free(b->p);
  b->p = NULL;
}

/* ---- Executing operations ----------------------------------------------------------------- */

static void do_malloc(unsigned slot, size_t n) {
  free_slot(slot);
  expect_t e = expect_for(n, 0, 0);
  if (e == EXPECT_SKIP) return;
  errno = 0;
  g_work++;
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
  g_work += 1 + (overflow ? 0 : total / 1024); /* hakmem zeroes pool blocks */
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
  block_t* b = &g_slots[slot];
  void* old_p = b->p;
  if (old_p != NULL) block_verify(b, SIZE_MAX, "contents changed before realloc");
  bool frees = old_p != NULL && n == 0 && !overflow;
  expect_t e = overflow ? EXPECT_FAIL : frees ? EXPECT_OK : expect_for(n, 0, old_p != NULL ? b->usable : 0);
  if (e == EXPECT_SKIP) return;
  if (frees) live_remove(slot);
  errno = 0;
  g_work++;
  if (old_p != NULL && !overflow) g_work += (n < b->usable ? n : b->usable) / 1024; /* hakmem's copy */
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
  block_t* b = &g_slots[slot];
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
  g_work++;
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
  g_work++;
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
  block_t* b = &g_slots[slot];
  g_work++;
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
  for (size_t i = 0; i < g_nsorted; i++) block_verify(&g_slots[g_sorted[i]], SIZE_MAX, "contents changed");
}

/* Calls whose outcome is fixed whatever the state. */
static void do_edge(unsigned sub, unsigned slot) {
  static const size_t kBadAlign[] = {0, 1, 2, 4, 3, 12, 24, 48, 4096 + 16, SIZE_MAX, (size_t)PTRDIFF_MAX};
  block_t* b = &g_slots[slot];
  g_work++;
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

static void do_burst_alloc(unsigned base, size_t count, size_t n, unsigned flags) {
  for (size_t i = 0; i < count && g_work < MAX_WORK; i++) {
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
    free_slot((unsigned)((base + i) % NSLOTS));
  }
}

static void execute(const op_t* op) {
  g_op_name = kOpNames[op->kind];
  TRACE("#%zu %s%s slot=%u size=%zu count=%zu align=%zu flags=%u sub=%u\n", g_op_index, op->on_worker ? "[T2] " : "",
        g_op_name, op->slot, op->size, op->count, op->align, op->flags, op->sub);
  switch (op->kind) {
    case OP_MALLOC: do_malloc(op->slot, op->size); break;
    case OP_CALLOC: do_calloc(op->slot, op->count, op->size); break;
    case OP_REALLOC: do_realloc(op->slot, op->size); break;
    case OP_REALLOC_REL: do_realloc_rel(op->slot, op->flags, op->size); break;
    case OP_FREE: free_slot(op->slot); break;
    case OP_POSIX_MEMALIGN:
    case OP_ALIGNED_ALLOC:
    case OP_MEMALIGN: do_aligned(op->slot, op->kind, op->align, op->size); break;
    case OP_VALLOC: do_valloc(op->slot, op->size, op->flags & 1); break;
    case OP_USABLE: do_usable(op->slot, op->flags & 1); break;
    case OP_CHECK_ALL: check_all(); break;
    case OP_REALLOCARRAY: do_reallocarray(op->slot, op->count, op->size); break;
    case OP_EDGE: do_edge(op->sub, op->slot); break;
    case OP_BURST_ALLOC: do_burst_alloc(op->slot, op->count, op->size, op->flags); break;
    case OP_BURST_FREE: do_burst_free(op->slot, op->count, op->stride, op->flags & 1); break;
    default: break; /* OP_THREAD: handled by the caller */
  }
  if (g_trace) {
    hak_stats_t st;
    hak_stats_get(&st);
    fprintf(stderr, "    -> %zu blocks live (%zu bytes); hakmem: %llu segments, %llu KiB mapped\n", g_nsorted, g_live_bytes,
            (unsigned long long)st.segments_live, (unsigned long long)(st.os_mapped_bytes >> 10));
  }
}

/* ---- The second thread ---------------------------------------------------------------------- */

#if HAK_FUZZ_THREADS
#define BATCH_MAX 64
enum { WORKER_IDLE, WORKER_POSTED, WORKER_DONE, WORKER_EXIT };
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static int g_worker_state = WORKER_IDLE;
static bool g_worker_alive;
static pthread_t g_worker;
static op_t g_batch[BATCH_MAX];
static size_t g_batch_len, g_batch_first_index;

static void* worker_main(void* arg) {
  (void)arg;
  pthread_mutex_lock(&g_mu);
  for (;;) {
    while (g_worker_state != WORKER_POSTED && g_worker_state != WORKER_EXIT) pthread_cond_wait(&g_cv, &g_mu);
    if (g_worker_state == WORKER_EXIT) break;
    /* The main thread waits while the batch runs: the model is ours alone. */
    for (size_t i = 0; i < g_batch_len; i++) {
      g_op_index = g_batch_first_index + i;
      execute(&g_batch[i]);
    }
    g_worker_state = WORKER_DONE;
    pthread_cond_broadcast(&g_cv);
  }
  pthread_mutex_unlock(&g_mu);
  return NULL; /* hakmem's thread-exit hook abandons this thread's heap */
}

/* Runs the pending batch on the second thread and waits for it. */
static void worker_flush(void) {
  if (g_batch_len == 0) return;
  if (!g_worker_alive) {
    g_work += WORK_PER_THREAD;
    g_worker_state = WORKER_IDLE;
    if (pthread_create(&g_worker, NULL, worker_main, NULL) != 0) fail("harness: pthread_create failed");
    g_worker_alive = true;
  }
  size_t resume_index = g_op_index;
  pthread_mutex_lock(&g_mu);
  g_worker_state = WORKER_POSTED;
  pthread_cond_broadcast(&g_cv);
  while (g_worker_state != WORKER_DONE) pthread_cond_wait(&g_cv, &g_mu);
  g_worker_state = WORKER_IDLE;
  pthread_mutex_unlock(&g_mu);
  g_batch_len = 0;
  g_op_index = resume_index;
}

static void worker_stop(void) {
  worker_flush();
  if (!g_worker_alive) return;
  pthread_mutex_lock(&g_mu);
  g_worker_state = WORKER_EXIT;
  pthread_cond_broadcast(&g_cv);
  pthread_mutex_unlock(&g_mu);
  pthread_join(g_worker, NULL);
  g_worker_alive = false;
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
#else
static void worker_flush(void) {}

static void dispatch(const op_t* op) {
  if (op->kind != OP_THREAD) execute(op);
}
#endif

/* ---- Entry point ---------------------------------------------------------------------------- */

static hak_stats_t read_stats(void) {
  hak_stats_t st;
  if (hak_stats_get(&st) != 0) fail("hak_stats_get failed");
  return st;
}

static void end_of_input(uint64_t segments_at_start) {
  worker_flush();
  g_op_name = "end of input: free everything";
  while (g_nsorted > 0) free_slot(g_sorted[g_nsorted - 1]);
  if (g_live_bytes != 0) fail("harness: %zu live bytes left after freeing everything", g_live_bytes);
  /* Freed memory stays in hakmem's caches and region until the purge delay passes;
   * hak_collect hands it back now (and is fuzzed that way), so what stays is a leak. */
  g_op_name = "end of input: hak_collect";
  hak_collect(false);
  hak_stats_t st = read_stats();
  if (st.region_dirty_bytes != 0 || st.whale.cached != 0) {
    fail("hak_collect left %llu dirty free bytes in the region and %llu whales cached",
         (unsigned long long)st.region_dirty_bytes, (unsigned long long)st.whale.cached);
  }
  if (st.segments_live > segments_at_start + SEGMENT_GROWTH_LIMIT) {
    fail("leak: hakmem holds %llu segments with no block live, %llu more than before this input (limit %zu)",
         (unsigned long long)st.segments_live, (unsigned long long)(st.segments_live - segments_at_start),
         (size_t)SEGMENT_GROWTH_LIMIT);
  }
  static uint64_t limit_mb = MAPPED_LIMIT_MB;
  static bool limit_read;
  if (!limit_read) {
    const char* env = getenv("HAK_FUZZ_MAPPED_LIMIT_MB");
    if (env != NULL && *env != '\0') limit_mb = strtoull(env, NULL, 10);
    limit_read = true;
  }
  if (limit_mb != 0 && st.os_mapped_bytes > (limit_mb << 20)) {
    fail("leak: hakmem keeps %llu MiB mapped (%llu segments) with no block live, over the process limit of %llu MiB; "
         "cumulative over every input this process ran, so not necessarily this input's doing "
         "(HAK_FUZZ_MAPPED_LIMIT_MB changes the limit)",
         (unsigned long long)(st.os_mapped_bytes >> 20), (unsigned long long)st.segments_live,
         (unsigned long long)limit_mb);
  }
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
  uint64_t segments_at_start = read_stats().segments_live;
  g_next_seed = 0;
  g_work = 0;
  g_op_index = 0;
  while (r.pos < r.size && g_work < MAX_WORK) {
    op_t op;
    decode_op(&r, &op);
    dispatch(&op);
    g_op_index++;
  }
  end_of_input(segments_at_start);
  return 0;
}
