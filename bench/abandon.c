/* SPDX-License-Identifier: MIT */
/* abandon - memory of a thread that exited without freeing it, freed by another
 * thread; does it go back to the OS, or stay with the dead thread's heap? (issue 8)
 *
 * Each round:
 * 1. a worker thread allocates blocks until --mib MiB are live (90% 16 B..4 KiB, most
 *    of them below 256 B; 10% 4..64 KiB), fills each one completely, and exits
 *    without freeing any of them (also not the array of their addresses);
 *    RSS now is live_rss_kib;
 * 2. the main thread checks and frees every block in random order: cross-thread
 *    frees of an exited thread's memory (then the array); RSS now is freed_rss_kib;
 * 3. the main thread does --pairs malloc/free pairs of 64 B through a ring of 64 live
 *    blocks, writing and checking each: a program that goes on with small work, and
 *    gives the allocator time (and calls) to collect the abandoned memory.
 * rss_kib of the RESULT line is the RSS after the last round (everything freed);
 * live_rss_kib and freed_rss_kib are those of the last round.
 *   --mib M      MiB the worker leaves behind per round (default 10)
 *   --pairs N    64 B pairs after the frees, per round (default 2,000,000)
 *   --rounds R   rounds, each with a new worker thread (default 3)
 *   --seed S
 * ops = allocations (worker blocks + pairs, all rounds; each freed once); the time
 * covers all phases of all rounds, thread creation included.
 * Self-check: every worker block is filled with a byte derived from its tag; its
 * first, middle and last bytes are checked before the main thread frees it; every
 * 64 B block is checked before it is freed.
 */
#include <pthread.h>

#include "bench_util.h"

#define PAIR_SIZE 64
#define PAIR_RING 64

typedef struct block_s {
  unsigned char* p;
  size_t size;
} block_t;

typedef struct worker_s {
  uint64_t target_bytes, seed, round;
  block_t* blocks; /* allocated by the worker, freed by the main thread */
  uint64_t count;
} worker_t;

static size_t abandon_size(bench_rng_t* rng) {
  uint64_t r = bench_rng_next(rng);
  uint64_t pick = r % 100;
  r >>= 8;
  if (pick < 60) return 16 + (size_t)(r % 241);           /* 16..256 B */
  if (pick < 90) return 256 + (size_t)(r % (4096 - 255)); /* 256 B..4 KiB */
  return 4096 + (size_t)(r % ((64u << 10) - 4096 + 1));   /* 4..64 KiB */
}

static unsigned char block_byte(uint64_t tag) { return bench_byte(tag, 0) | 1; }

static void* worker_run(void* arg) {
  worker_t* w = (worker_t*)arg;
  bench_rng_t rng = {w->seed};
  uint64_t cap = 1024, n = 0, bytes = 0;
  block_t* blocks = bench_malloc(cap * sizeof(block_t));
  while (bytes < w->target_bytes) {
    if (n == cap) {
      cap *= 2;
      blocks = bench_realloc(blocks, cap * sizeof(block_t));
    }
    size_t size = abandon_size(&rng);
    unsigned char* p = bench_malloc(size);
    memset(p, block_byte((w->round << 40) | n), size);
    blocks[n].p = p;
    blocks[n].size = size;
    bytes += size;
    n++;
  }
  w->blocks = blocks;
  w->count = n;
  return NULL; /* exits with everything still allocated */
}

int main(int argc, char** argv) {
  uint64_t mib = bench_arg(argc, argv, "--mib", 10);
  uint64_t pairs = bench_arg(argc, argv, "--pairs", 2000000);
  uint64_t rounds = bench_arg(argc, argv, "--rounds", 3);
  uint64_t seed = bench_arg(argc, argv, "--seed", 0xABA4D0EULL) | 1;
  bench_rng_t rng = {seed ^ 0x5DEECE66DULL};
  uint64_t checksum = 0, ops = 0, live_rss = 0, freed_rss = 0, blocks_per_round = 0;
  unsigned char* ring[PAIR_RING] = {0};

  uint64_t t0 = bench_now_ns();
  for (uint64_t round = 0; round < rounds; round++) {
    worker_t w = {mib << 20, seed + round * 0x9E3779B97F4A7C15ULL, round, NULL, 0};
    pthread_t thread;
    BENCH_CHECK(pthread_create(&thread, NULL, worker_run, &w) == 0, "pthread_create failed");
    BENCH_CHECK(pthread_join(thread, NULL) == 0, "pthread_join failed");
    ops += w.count;
    blocks_per_round = w.count;
    live_rss = bench_status_kib("VmRSS");

    uint64_t* order = bench_malloc(w.count * sizeof(uint64_t));
    for (uint64_t i = 0; i < w.count; i++) order[i] = i;
    for (uint64_t i = w.count; i > 1; i--) { /* Fisher-Yates: the order the blocks are freed in */
      uint64_t j = bench_rng_next(&rng) % i;
      uint64_t t = order[i - 1];
      order[i - 1] = order[j];
      order[j] = t;
    }
    for (uint64_t k = 0; k < w.count; k++) {
      uint64_t i = order[k];
      block_t* b = &w.blocks[i];
      unsigned char v = block_byte((round << 40) | i);
      BENCH_CHECK(b->p[0] == v && b->p[b->size / 2] == v && b->p[b->size - 1] == v,
                  "round %llu block %llu (%zu B) corrupted", (unsigned long long)round, (unsigned long long)i,
                  b->size);
      checksum = bench_mix(checksum, b->size ^ (i << 20));
      free(b->p);
    }
    free(order);
    free(w.blocks);
    freed_rss = bench_status_kib("VmRSS");

    for (uint64_t i = 0; i < pairs; i++) {
      unsigned char** slot = &ring[i % PAIR_RING];
      if (*slot != NULL) {
        unsigned char v = (unsigned char)(i - PAIR_RING);
        BENCH_CHECK((*slot)[0] == v && (*slot)[PAIR_SIZE - 1] == (unsigned char)~v, "64 B block corrupted");
        free(*slot);
      }
      unsigned char* p = bench_malloc(PAIR_SIZE);
      memset(p, (unsigned char)i, PAIR_SIZE - 1);
      p[PAIR_SIZE - 1] = (unsigned char)~(unsigned char)i;
      *slot = p;
    }
    ops += pairs;
    for (uint64_t i = pairs > PAIR_RING ? pairs - PAIR_RING : 0; i < pairs; i++) {
      unsigned char** slot = &ring[i % PAIR_RING];
      BENCH_CHECK((*slot)[0] == (unsigned char)i, "64 B block corrupted");
      free(*slot);
      *slot = NULL;
    }
    checksum = bench_mix(checksum, pairs);
  }
  uint64_t ns = bench_now_ns() - t0;
  char extra[160];
  snprintf(extra, sizeof(extra), "live_rss_kib=%llu freed_rss_kib=%llu blocks_per_round=%llu abandoned_kib=%llu",
           (unsigned long long)live_rss, (unsigned long long)freed_rss, (unsigned long long)blocks_per_round,
           (unsigned long long)(mib << 10));
  bench_report_extra("abandon", ops, ns, checksum, extra);
  return 0;
}
