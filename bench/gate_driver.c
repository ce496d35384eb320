/* SPDX-License-Identifier: MIT */
/* gate_driver - fixed, small runs of the allocator's hot paths for the instruction-count
 * gate (bench/gate.py runs this under valgrind --tool=callgrind).
 *
 * Built twice from this one source: gate_driver_hakmem links hakmem statically (its
 * malloc is hakmem's), gate_driver_glibc does not (for reference). Each scenario first
 * runs a warm-up round (not counted), then the measured round inside a function named
 * gate_measured_<scenario>; callgrind counts only inside it
 * (--toggle-collect=gate_measured_*). Sizes are drawn before the measured round, so the
 * count is the allocator's work plus a few instructions of loop per operation.
 *   gate_driver <scenario> [ops]
 * Scenarios (default ops):
 *   tiny_pairs   malloc/free pairs of 16..1024 B through a ring of 64 live blocks (200000)
 *   tiny_burst   allocate 10000 blocks of 16..256 B, then free them all; ops counts
 *                both calls (200000), so fresh pages, full pages and page frees show
 *   mid_pairs    malloc/free pairs of 4..32 KiB through a ring of 16 (100000)
 *   l25_pairs    malloc/free pairs of 72..900 KiB through a ring of 4: the L2.5 pool
 *                (64 KiB..1 MiB size classes) (50000)
 *   big_pairs    malloc/free of one 2 MiB block: a big block, the BigCache hit (20000)
 *   whale        malloc/free of one 8 MiB block: a whale (above 4032 KiB), the whale
 *                ring hit (20000)
 *   random_replace  a table of 4096 live blocks of 16 B..64 KiB (log-uniform); each
 *                operation frees the block of a random slot and allocates a new one
 *                there: frees scattered over many pages and classes, pages emptying and
 *                filling again (100000)
 *   xfree        a second thread frees what the main thread allocated (1000 blocks of
 *                16..1024 B a round): the remote-free push, and the owner collecting
 *                those frees as it allocates again; ops counts both calls (100000)
 * Prints "GATE scenario=<name> ops=<n> checksum=<c> os_calls=<k>"; os_calls is the
 * number of mmap + munmap + madvise + mremap calls hakmem made in the measured round
 * (from hak_stats_get, which counts them in every variant; -1 in the glibc build).
 * Exits 1 if a block is bad.
 */
#include <math.h>
#include <pthread.h>

#include "bench_util.h"

#ifdef GATE_HAKMEM
#include "hakmem.h"

static int64_t os_calls_now(void) {
  hak_stats_t s;
  hak_stats_read(&s);
  return (int64_t)(s.os_mmap.count + s.os_munmap.count + s.os_madvise.count + s.os_mremap.count +
                   s.os_mprotect.count);
}
#else
static int64_t os_calls_now(void) {
  return 0;
}
#endif

#define NOINLINE __attribute__((noinline, used))

/* Live blocks of the pairs scenarios (powers of two: the slot is i & (ring - 1)). */
#define TINY_RING 64
#define MID_RING 16
#define L25_RING 4
#define PAIRS_WARMUP 10000
#define BURST_BLOCKS 10000

static unsigned char* g_ring[TINY_RING];

static void pairs_loop(const uint32_t* sizes, uint64_t ops, unsigned ring, uint64_t* sum) {
  for (uint64_t i = 0; i < ops; i++) {
    unsigned slot = (unsigned)(i & (ring - 1));
    if (g_ring[slot] != NULL) {
      *sum += g_ring[slot][0];
      free(g_ring[slot]);
    }
    unsigned char* p = malloc(sizes[i]);
    p[0] = (unsigned char)i;
    g_ring[slot] = p;
  }
}

static void ring_clear(unsigned ring) {
  for (unsigned s = 0; s < ring; s++) {
    free(g_ring[s]);
    g_ring[s] = NULL;
  }
}

static void burst_loop(unsigned char** blocks, const uint32_t* sizes, uint64_t n, uint64_t* sum) {
  for (uint64_t i = 0; i < n; i++) {
    blocks[i] = malloc(sizes[i]);
    blocks[i][0] = (unsigned char)i;
  }
  for (uint64_t i = 0; i < n; i++) {
    *sum += blocks[i][0];
    free(blocks[i]);
  }
}

#define BIG_BYTES ((size_t)2 << 20)   /* above the pools (1 MiB), a big block */
#define WHALE_BYTES ((size_t)8 << 20) /* above the big blocks (4032 KiB), a whale */

/* One block of `size` allocated and freed over and over: after the first round every
 * malloc should be a cache hit. The first and last bytes are written, so a block that
 * is not really there faults. */
static void large_loop(size_t size, uint64_t ops, uint64_t* sum) {
  for (uint64_t i = 0; i < ops; i++) {
    unsigned char* p = malloc(size);
    if (p == NULL) BENCH_FAIL("malloc of %zu bytes failed", size);
    p[0] = (unsigned char)i;
    p[size - 1] = (unsigned char)(i >> 8);
    *sum += ((uintptr_t)p & 15) == 0;
    free(p);
  }
}

NOINLINE void gate_measured_tiny_pairs(const uint32_t* sizes, uint64_t ops, uint64_t* sum) {
  pairs_loop(sizes, ops, TINY_RING, sum);
  ring_clear(TINY_RING);
}

NOINLINE void gate_measured_mid_pairs(const uint32_t* sizes, uint64_t ops, uint64_t* sum) {
  pairs_loop(sizes, ops, MID_RING, sum);
  ring_clear(MID_RING);
}

NOINLINE void gate_measured_l25_pairs(const uint32_t* sizes, uint64_t ops, uint64_t* sum) {
  pairs_loop(sizes, ops, L25_RING, sum);
  ring_clear(L25_RING);
}

NOINLINE void gate_measured_tiny_burst(unsigned char** blocks, const uint32_t* sizes, uint64_t n, uint64_t rounds,
                                       uint64_t* sum) {
  for (uint64_t r = 0; r < rounds; r++) burst_loop(blocks, sizes, n, sum);
}

NOINLINE void gate_measured_big_pairs(uint64_t ops, uint64_t* sum) {
  large_loop(BIG_BYTES, ops, sum);
}

NOINLINE void gate_measured_whale(uint64_t ops, uint64_t* sum) {
  large_loop(WHALE_BYTES, ops, sum);
}

/* random_replace: slots[i] is the slot of operation i, sizes[i] its new block's size. */
#define REPLACE_SLOTS 4096

static void replace_loop(unsigned char** table, const uint32_t* slots, const uint32_t* sizes, uint64_t ops,
                         uint64_t* sum) {
  for (uint64_t i = 0; i < ops; i++) {
    unsigned char** b = &table[slots[i]];
    *sum += (*b)[0];
    free(*b);
    *b = malloc(sizes[i]);
    (*b)[0] = (unsigned char)i;
  }
}

NOINLINE void gate_measured_random_replace(unsigned char** table, const uint32_t* slots, const uint32_t* sizes,
                                           uint64_t ops, uint64_t* sum) {
  replace_loop(table, slots, sizes, ops, sum);
}

/* xfree: the main thread allocates a batch, the freer thread frees it, in turns. */
#define XFREE_BATCH 1000

typedef struct xfree_s {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int turn; /* 0: the main thread's, 1: the freer's, 2: the freer stops */
  int measured; /* past the warm-up round */
  unsigned char* blocks[XFREE_BATCH];
  uint64_t sum;
} xfree_t;

static void xfree_alloc_batch(xfree_t* x, const uint32_t* sizes) {
  for (unsigned i = 0; i < XFREE_BATCH; i++) {
    x->blocks[i] = malloc(sizes[i]);
    x->blocks[i][0] = (unsigned char)i;
  }
}

static void xfree_free_batch(xfree_t* x) {
  for (unsigned i = 0; i < XFREE_BATCH; i++) {
    x->sum += x->blocks[i][0];
    free(x->blocks[i]);
  }
}

/* The measured twins: callgrind counts inside these only (the warm-up round calls the
 * plain functions). */
NOINLINE void gate_measured_xfree_alloc(xfree_t* x, const uint32_t* sizes) {
  xfree_alloc_batch(x, sizes);
}

NOINLINE void gate_measured_xfree_free(xfree_t* x) {
  xfree_free_batch(x);
}

static void xfree_wait(xfree_t* x, int turn) {
  while (x->turn != turn && x->turn != 2) pthread_cond_wait(&x->cond, &x->lock);
}

static void xfree_pass(xfree_t* x, int turn) {
  x->turn = turn;
  pthread_cond_broadcast(&x->cond);
}

static void* xfree_freer(void* arg) {
  xfree_t* x = arg;
  pthread_mutex_lock(&x->lock);
  for (;;) {
    xfree_wait(x, 1);
    if (x->turn == 2) break;
    if (x->measured) gate_measured_xfree_free(x);
    else xfree_free_batch(x);
    xfree_pass(x, 0);
  }
  pthread_mutex_unlock(&x->lock);
  return NULL;
}

static uint32_t* draw_sizes(uint64_t n, uint32_t lo, uint32_t hi) {
  uint32_t* s = bench_malloc(n * sizeof(uint32_t));
  bench_rng_t rng = {0x9E3779B97F4A7C15ULL};
  for (uint64_t i = 0; i < n; i++) s[i] = lo + (uint32_t)(bench_rng_next(&rng) % (hi - lo + 1));
  return s;
}

/* What a scenario reports: operations counted, the checksum of the blocks it read,
 * and hakmem's OS calls during the measured round only. */
typedef struct gate_result_s {
  uint64_t ops;
  uint64_t sum;
  int64_t os_calls;
} gate_result_t;

typedef void measured_pairs_fn(const uint32_t* sizes, uint64_t ops, uint64_t* sum);

/* The warm-up runs the first PAIRS_WARMUP pairs, so every size class the measured
 * round uses has had its pages set up once. */
static gate_result_t run_pairs(uint64_t ops, uint32_t lo, uint32_t hi, unsigned ring, measured_pairs_fn* measured) {
  gate_result_t res = {ops, 0, 0};
  uint64_t warm = 0;
  uint32_t* sizes = draw_sizes(ops, lo, hi);
  pairs_loop(sizes, ops < PAIRS_WARMUP ? ops : PAIRS_WARMUP, ring, &warm);
  ring_clear(ring);
  int64_t before = os_calls_now();
  measured(sizes, ops, &res.sum);
  res.os_calls = os_calls_now() - before;
  free(sizes);
  return res;
}

static gate_result_t run_tiny_pairs(uint64_t ops) {
  return run_pairs(ops, 16, 1024, TINY_RING, gate_measured_tiny_pairs);
}

static gate_result_t run_mid_pairs(uint64_t ops) {
  return run_pairs(ops, 4 << 10, 32 << 10, MID_RING, gate_measured_mid_pairs);
}

static gate_result_t run_l25_pairs(uint64_t ops) {
  return run_pairs(ops, 72 << 10, 900 << 10, L25_RING, gate_measured_l25_pairs);
}

/* ops counts both calls, rounded to whole bursts of BURST_BLOCKS. */
static gate_result_t run_tiny_burst(uint64_t ops) {
  uint64_t rounds = ops / (2 * BURST_BLOCKS) > 0 ? ops / (2 * BURST_BLOCKS) : 1;
  gate_result_t res = {rounds * 2 * BURST_BLOCKS, 0, 0};
  uint64_t warm = 0;
  uint32_t* sizes = draw_sizes(BURST_BLOCKS, 16, 256);
  unsigned char** blocks = bench_malloc(BURST_BLOCKS * sizeof(*blocks));
  burst_loop(blocks, sizes, BURST_BLOCKS, &warm);
  int64_t before = os_calls_now();
  gate_measured_tiny_burst(blocks, sizes, BURST_BLOCKS, rounds, &res.sum);
  res.os_calls = os_calls_now() - before;
  free(blocks);
  free(sizes);
  return res;
}

/* The warm-up puts the block in its cache once (and a second time, in case the first
 * free only set the cache up). */
static gate_result_t run_large(uint64_t ops, size_t size, void (*measured)(uint64_t, uint64_t*)) {
  gate_result_t res = {ops, 0, 0};
  uint64_t warm = 0;
  large_loop(size, 2, &warm);
  int64_t before = os_calls_now();
  measured(ops, &res.sum);
  res.os_calls = os_calls_now() - before;
  return res;
}

static gate_result_t run_big_pairs(uint64_t ops) {
  return run_large(ops, BIG_BYTES, gate_measured_big_pairs);
}

static gate_result_t run_whale(uint64_t ops) {
  return run_large(ops, WHALE_BYTES, gate_measured_whale);
}

/* Sizes log-uniform over [lo, hi]: as many small blocks as large ones per doubling. */
static uint32_t* draw_log_sizes(uint64_t n, uint32_t lo, uint32_t hi) {
  uint32_t* s = bench_malloc(n * sizeof(uint32_t));
  bench_rng_t rng = {0xC2B2AE3D27D4EB4FULL};
  double l0 = log2((double)lo), l1 = log2((double)hi);
  for (uint64_t i = 0; i < n; i++) s[i] = (uint32_t)exp2(l0 + (l1 - l0) * bench_unit(&rng));
  return s;
}

/* The warm-up fills the table and runs as many replacements as the measured round,
 * so the classes' pages and the live set have settled before counting. */
static gate_result_t run_random_replace(uint64_t ops) {
  gate_result_t res = {ops, 0, 0};
  uint64_t warm = 0;
  uint32_t* fill = draw_log_sizes(REPLACE_SLOTS, 16, 64 << 10);
  uint32_t* sizes = draw_log_sizes(2 * ops, 16, 64 << 10);
  uint32_t* slots = draw_sizes(2 * ops, 0, REPLACE_SLOTS - 1);
  unsigned char** table = bench_malloc(REPLACE_SLOTS * sizeof(*table));
  for (unsigned i = 0; i < REPLACE_SLOTS; i++) {
    table[i] = malloc(fill[i]);
    table[i][0] = (unsigned char)i;
  }
  replace_loop(table, slots, sizes, ops, &warm);
  int64_t before = os_calls_now();
  gate_measured_random_replace(table, slots + ops, sizes + ops, ops, &res.sum);
  res.os_calls = os_calls_now() - before;
  for (unsigned i = 0; i < REPLACE_SLOTS; i++) free(table[i]);
  free(table);
  free(slots);
  free(sizes);
  free(fill);
  return res;
}

/* ops counts both calls, rounded to whole batches; one round of warm-up. */
static gate_result_t run_xfree(uint64_t ops) {
  uint64_t rounds = ops / (2 * XFREE_BATCH) > 0 ? ops / (2 * XFREE_BATCH) : 1;
  gate_result_t res = {rounds * 2 * XFREE_BATCH, 0, 0};
  static xfree_t x = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
  uint32_t* sizes = draw_sizes(XFREE_BATCH, 16, 1024);
  pthread_t freer;
  if (pthread_create(&freer, NULL, xfree_freer, &x) != 0) BENCH_FAIL("pthread_create failed");
  int64_t before;
  pthread_mutex_lock(&x.lock);
  xfree_alloc_batch(&x, sizes); /* the warm-up round */
  xfree_pass(&x, 1);
  xfree_wait(&x, 0);
  x.measured = 1;
  before = os_calls_now();
  for (uint64_t r = 0; r < rounds; r++) {
    gate_measured_xfree_alloc(&x, sizes);
    xfree_pass(&x, 1);
    xfree_wait(&x, 0);
  }
  res.os_calls = os_calls_now() - before;
  xfree_pass(&x, 2);
  pthread_mutex_unlock(&x.lock);
  pthread_join(freer, NULL);
  res.sum = x.sum;
  free(sizes);
  return res;
}

static const struct {
  const char* name;
  uint64_t default_ops;
  gate_result_t (*run)(uint64_t ops);
} scenarios[] = {
    {"tiny_pairs", 200000, run_tiny_pairs}, {"tiny_burst", 200000, run_tiny_burst},
    {"mid_pairs", 100000, run_mid_pairs},   {"l25_pairs", 50000, run_l25_pairs},
    {"big_pairs", 20000, run_big_pairs},    {"whale", 20000, run_whale},
    {"random_replace", 100000, run_random_replace}, {"xfree", 100000, run_xfree},
};
#define SCENARIO_COUNT (sizeof(scenarios) / sizeof(scenarios[0]))

static void usage(void) {
  fprintf(stderr, "usage: gate_driver <scenario> [ops]; scenarios:");
  for (size_t i = 0; i < SCENARIO_COUNT; i++) fprintf(stderr, " %s", scenarios[i].name);
  fprintf(stderr, "\n");
}

int main(int argc, char** argv) {
  if (argc < 2) {
    usage();
    return 2;
  }
  uint64_t ops = argc > 2 ? strtoull(argv[2], NULL, 10) : 0;
  for (size_t i = 0; i < SCENARIO_COUNT; i++) {
    if (strcmp(argv[1], scenarios[i].name) != 0) continue;
    gate_result_t res = scenarios[i].run(ops != 0 ? ops : scenarios[i].default_ops);
#ifndef GATE_HAKMEM
    res.os_calls = -1; /* glibc's calls are not counted */
#endif
    printf("GATE scenario=%s ops=%llu checksum=%llu os_calls=%lld\n", scenarios[i].name, (unsigned long long)res.ops,
           (unsigned long long)res.sum, (long long)res.os_calls);
    return 0;
  }
  fprintf(stderr, "gate_driver: unknown scenario %s\n", argv[1]);
  usage();
  return 2;
}
