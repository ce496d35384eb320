/* SPDX-License-Identifier: MIT */
/* mixed - sizes from 8 B to 4 MiB and lifetimes, both power-law distributed.
 *
 * Sizes: P(size > s) = sqrt(8 / s), capped at 4 MiB: the median request is 32 B,
 * about 9% are above 1 KiB, 1% above 64 KiB and 0.3% above 1 MiB. Lifetimes, counted
 * in allocations: P(lifetime > l) = 1 / sqrt(l), capped at --window: most blocks die
 * almost at once, a few live for most of the run (about 2 * sqrt(window) blocks are
 * alive at any time). Every block gets its first and last byte and one byte per 4 KiB
 * page written, and checked when it is freed.
 *   --allocs N   allocations (default 1,500,000)
 *   --window W   longest lifetime (default 262144)
 *   --seed S
 * ops = allocations (each freed once).
 */
#include "bench_util.h"

#define MIXED_MAX_SIZE ((size_t)4 << 20)

typedef struct rec_s {
  unsigned char* p;
  size_t size;
  uint64_t tag;
  uint32_t next; /* next record dying in the same tick, or UINT32_MAX */
} rec_t;

int main(int argc, char** argv) {
  uint64_t allocs = bench_arg(argc, argv, "--allocs", 1500000);
  uint64_t window = bench_arg(argc, argv, "--window", 262144);
  bench_rng_t rng = {bench_arg(argc, argv, "--seed", 0xABCDEF12ULL) | 1};
  /* at most `window` blocks are alive: each lives fewer than `window` ticks */
  rec_t* recs = calloc(window, sizeof(rec_t));
  uint32_t* wheel = malloc(window * sizeof(uint32_t)); /* head record per tick mod window */
  uint32_t free_head = 0;
  for (uint64_t i = 0; i < window; i++) {
    wheel[i] = UINT32_MAX;
    recs[i].next = i + 1 < window ? (uint32_t)(i + 1) : UINT32_MAX;
  }
  uint64_t checksum = 0, freed = 0, live = 0, peak_live = 0;
  uint64_t live_bytes = 0, peak_live_bytes = 0; /* requested bytes: RSS can be judged against it */

  uint64_t t0 = bench_now_ns();
  for (uint64_t t = 0; t < allocs + window; t++) {
    uint32_t* bucket = &wheel[t % window];
    while (*bucket != UINT32_MAX) { /* free what dies now */
      uint32_t ri = *bucket;
      rec_t* r = &recs[ri];
      if (!bench_check_sparse(r->p, r->size, r->tag))
        BENCH_FAIL("block %llu (%zu B) corrupted", (unsigned long long)r->tag, r->size);
      checksum = bench_mix(checksum, r->tag ^ r->size);
      free(r->p);
      freed++;
      live--;
      live_bytes -= r->size;
      *bucket = r->next;
      r->next = free_head;
      free_head = ri;
    }
    if (t >= allocs) continue; /* draining */
    double u = 1.0 - bench_unit(&rng); /* (0, 1] */
    double s = 8.0 / (u * u);
    size_t size = s >= (double)MIXED_MAX_SIZE ? MIXED_MAX_SIZE : (size_t)s;
    double v = 1.0 - bench_unit(&rng);
    double l = 1.0 / (v * v);
    uint64_t life = l >= (double)(window - 1) ? window - 1 : (uint64_t)l;
    uint32_t ri = free_head;
    BENCH_CHECK(ri != UINT32_MAX, "record pool exhausted");
    rec_t* r = &recs[ri];
    free_head = r->next;
    r->size = size;
    r->tag = t;
    r->p = bench_malloc(size);
    bench_fill_sparse(r->p, size, t);
    uint32_t* dest = &wheel[(t + life) % window];
    r->next = *dest;
    *dest = ri;
    if (++live > peak_live) peak_live = live;
    live_bytes += size;
    if (live_bytes > peak_live_bytes) peak_live_bytes = live_bytes;
  }
  uint64_t ns = bench_now_ns() - t0;
  BENCH_CHECK(freed == allocs && live == 0, "freed %llu of %llu blocks", (unsigned long long)freed,
              (unsigned long long)allocs);
  free(recs);
  free(wheel);
  char extra[96];
  snprintf(extra, sizeof(extra), "peak_live_blocks=%llu peak_live_kib=%llu", (unsigned long long)peak_live,
           (unsigned long long)(peak_live_bytes >> 10));
  bench_report_extra("mixed", allocs, ns, checksum, extra);
  return 0;
}
