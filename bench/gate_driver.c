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
 *   whale        malloc/free of one 4 MiB block, the whale-cache hit once that cache
 *                exists (2000)
 * Prints "GATE scenario=<name> ops=<n> checksum=<c> os_calls=<k>"; os_calls is the
 * number of mmap + munmap + madvise calls hakmem made in the measured round (from
 * hak_stats_get, which counts them in every variant; -1 in the glibc build). Exits 1
 * if a block is bad.
 */
#include "bench_util.h"

#ifdef GATE_HAKMEM
#include "hakmem.h"

static int64_t os_calls_now(void) {
  hak_stats_t s;
  hak_stats_get(&s);
  return (int64_t)(s.os_mmap.count + s.os_munmap.count + s.os_madvise.count);
}
#else
static int64_t os_calls_now(void) {
  return 0;
}
#endif

#define NOINLINE __attribute__((noinline, used))

static unsigned char* g_ring[64];

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

static void whale_loop(uint64_t ops, uint64_t* sum) {
  for (uint64_t i = 0; i < ops; i++) {
    unsigned char* p = malloc((size_t)4 << 20);
    if (p == NULL) BENCH_FAIL("malloc of 4 MiB failed");
    *sum += ((uintptr_t)p & 15) == 0;
    free(p);
  }
}

NOINLINE void gate_measured_tiny_pairs(const uint32_t* sizes, uint64_t ops, uint64_t* sum) {
  pairs_loop(sizes, ops, 64, sum);
  ring_clear(64);
}

NOINLINE void gate_measured_mid_pairs(const uint32_t* sizes, uint64_t ops, uint64_t* sum) {
  pairs_loop(sizes, ops, 16, sum);
  ring_clear(16);
}

NOINLINE void gate_measured_tiny_burst(unsigned char** blocks, const uint32_t* sizes, uint64_t n, uint64_t rounds,
                                       uint64_t* sum) {
  for (uint64_t r = 0; r < rounds; r++) burst_loop(blocks, sizes, n, sum);
}

NOINLINE void gate_measured_whale(uint64_t ops, uint64_t* sum) {
  whale_loop(ops, sum);
}

static uint32_t* draw_sizes(uint64_t n, uint32_t lo, uint32_t hi) {
  uint32_t* s = bench_malloc(n * sizeof(uint32_t));
  bench_rng_t rng = {0x9E3779B97F4A7C15ULL};
  for (uint64_t i = 0; i < n; i++) s[i] = lo + (uint32_t)(bench_rng_next(&rng) % (hi - lo + 1));
  return s;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: gate_driver tiny_pairs|tiny_burst|mid_pairs|whale [ops]\n");
    return 2;
  }
  const char* sc = argv[1];
  uint64_t ops = argc > 2 ? strtoull(argv[2], NULL, 10) : 0;
  uint64_t sum = 0, warm = 0;
  int64_t os_before = 0, os_calls = 0;
  if (strcmp(sc, "tiny_pairs") == 0 || strcmp(sc, "mid_pairs") == 0) {
    int tiny = sc[0] == 't';
    if (ops == 0) ops = tiny ? 200000 : 100000;
    uint32_t* sizes = tiny ? draw_sizes(ops, 16, 1024) : draw_sizes(ops, 4096, 32768);
    pairs_loop(sizes, ops < 10000 ? ops : 10000, tiny ? 64 : 16, &warm); /* warm-up */
    ring_clear(tiny ? 64 : 16);
    os_before = os_calls_now();
    if (tiny) gate_measured_tiny_pairs(sizes, ops, &sum);
    else gate_measured_mid_pairs(sizes, ops, &sum);
    os_calls = os_calls_now() - os_before;
    free(sizes);
  } else if (strcmp(sc, "tiny_burst") == 0) {
    if (ops == 0) ops = 200000;
    uint64_t n = 10000, rounds = ops / (2 * n) > 0 ? ops / (2 * n) : 1;
    ops = rounds * 2 * n;
    uint32_t* sizes = draw_sizes(n, 16, 256);
    unsigned char** blocks = bench_malloc(n * sizeof(*blocks));
    burst_loop(blocks, sizes, n, &warm); /* warm-up */
    os_before = os_calls_now();
    gate_measured_tiny_burst(blocks, sizes, n, rounds, &sum);
    os_calls = os_calls_now() - os_before;
    free(blocks);
    free(sizes);
  } else if (strcmp(sc, "whale") == 0) {
    if (ops == 0) ops = 2000;
    whale_loop(2, &warm); /* warm-up */
    os_before = os_calls_now();
    gate_measured_whale(ops, &sum);
    os_calls = os_calls_now() - os_before;
  } else {
    fprintf(stderr, "gate_driver: unknown scenario %s\n", sc);
    return 2;
  }
#ifndef GATE_HAKMEM
  os_calls = -1;
#endif
  printf("GATE scenario=%s ops=%llu checksum=%llu os_calls=%lld\n", sc, (unsigned long long)ops,
         (unsigned long long)sum, (long long)os_calls);
  return 0;
}
