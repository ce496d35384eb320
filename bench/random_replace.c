/* SPDX-License-Identifier: MIT */
/* random_replace - a large live set whose blocks are replaced at random positions.
 *
 * Each thread owns a table of --slots blocks, filled first (not timed). Then each step
 * picks a random slot, checks and frees its block, and allocates a new one there whose
 * size is log-uniform from 8 B to 64 KiB (as many blocks of 8-16 B as of 32-64 KiB, the
 * mean about 7 KiB), writing it (first and last byte, one byte per 4 KiB page). Unlike
 * tight malloc/free pairs, nearly every free lands in a page other than the one the
 * next allocation comes from, and the live set stays large: what it measures is how
 * an allocator handles scattered frees and reuse across a big heap.
 *   --slots N    live blocks per thread (default 32768: about 230 MiB)
 *   --steps S    replacements per thread (default 2,000,000)
 *   --threads T  threads (default 1), each with its own table; the result is named
 *                random_replace_t<T>
 *   --seed S
 * ops = replacements over all threads (each one free and one malloc).
 */
#include <math.h>
#include <pthread.h>

#include "bench_util.h"

#define RR_MIN_LOG2 3.0  /* 8 B */
#define RR_MAX_LOG2 16.0 /* 64 KiB */

typedef struct rr_slot_s {
  unsigned char* p;
  size_t size;
  uint64_t tag;
} rr_slot_t;

typedef struct rr_worker_s {
  pthread_t thread;
  uint64_t slots, steps, seed;
  uint64_t checksum;
} rr_worker_t;

static size_t rr_size(bench_rng_t* rng) {
  double l = RR_MIN_LOG2 + (RR_MAX_LOG2 - RR_MIN_LOG2) * bench_unit(rng);
  return (size_t)exp2(l);
}

static void rr_fill(rr_slot_t* s, bench_rng_t* rng, uint64_t tag) {
  s->size = rr_size(rng);
  s->tag = tag;
  s->p = bench_malloc(s->size);
  bench_fill_sparse(s->p, s->size, tag);
}

static void rr_drop(rr_slot_t* s, uint64_t* checksum) {
  if (!bench_check_sparse(s->p, s->size, s->tag))
    BENCH_FAIL("block %llu (%zu B) corrupted", (unsigned long long)s->tag, s->size);
  *checksum = bench_mix(*checksum, s->tag ^ s->size);
  free(s->p);
}

static void* rr_run(void* arg) {
  rr_worker_t* w = arg;
  bench_rng_t rng = {w->seed | 1};
  rr_slot_t* table = bench_malloc(w->slots * sizeof(rr_slot_t));
  for (uint64_t i = 0; i < w->slots; i++) rr_fill(&table[i], &rng, i);
  uint64_t checksum = 0;
  for (uint64_t step = 0; step < w->steps; step++) {
    rr_slot_t* s = &table[bench_rng_next(&rng) % w->slots];
    rr_drop(s, &checksum);
    rr_fill(s, &rng, w->slots + step);
  }
  for (uint64_t i = 0; i < w->slots; i++) rr_drop(&table[i], &checksum);
  free(table);
  w->checksum = checksum;
  return NULL;
}

int main(int argc, char** argv) {
  uint64_t slots = bench_arg(argc, argv, "--slots", 32768);
  uint64_t steps = bench_arg(argc, argv, "--steps", 2000000);
  uint64_t nthreads = bench_arg(argc, argv, "--threads", 1);
  uint64_t seed = bench_arg(argc, argv, "--seed", 0x5EED0F11ULL);
  BENCH_CHECK(slots > 0 && nthreads > 0 && nthreads <= 64, "bad --slots or --threads");
  rr_worker_t workers[64];
  /* The fill is part of each thread's run (its own heap fills its own table); the
   * clock covers the whole, fill and drain included, as a program's lifetime would. */
  uint64_t t0 = bench_now_ns();
  for (uint64_t t = 0; t < nthreads; t++) {
    workers[t] = (rr_worker_t){.slots = slots, .steps = steps, .seed = seed + 0x9E3779B97F4A7C15ULL * (t + 1)};
    BENCH_CHECK(pthread_create(&workers[t].thread, NULL, rr_run, &workers[t]) == 0, "pthread_create failed");
  }
  uint64_t checksum = 0;
  for (uint64_t t = 0; t < nthreads; t++) {
    pthread_join(workers[t].thread, NULL);
    checksum = bench_mix(checksum, workers[t].checksum);
  }
  uint64_t ns = bench_now_ns() - t0;
  char name[48];
  snprintf(name, sizeof(name), "random_replace_t%llu", (unsigned long long)nthreads);
  bench_report(name, steps * nthreads, ns, checksum);
  return 0;
}
