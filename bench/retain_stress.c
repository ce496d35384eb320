/* SPDX-License-Identifier: MIT */
/* retain_stress - threads keep part of what they allocate across rounds, and the kept
 * blocks are freed rounds later by other threads.
 *
 * Each of --rounds rounds starts --threads fresh threads. A thread allocates --allocs
 * blocks (sizes log-uniform 16 B .. 4 KiB, one in a hundred up to 64 KiB), each
 * written at its ends and every 256 bytes. A block is kept with probability
 * --keep-pct % (into the thread's bucket for this round), otherwise it lives briefly
 * (a ring of 64 in flight, freed oldest first). Before exiting, the thread frees the
 * bucket that another thread filled --retain-rounds rounds earlier. So the live set
 * holds --retain-rounds rounds of kept blocks; every kept block is freed by a thread
 * other than the one that allocated it, which has long exited, and heaps are set up
 * and abandoned every round. The buckets left at the end are freed by the main thread.
 *   --threads T        threads per round (default 2); result name retain_stress_t<T>
 *   --rounds R         (default 60)
 *   --allocs N         per thread and round (default 100000)
 *   --keep-pct P       (default 20)
 *   --retain-rounds K  rounds a kept block lives (default 4)
 *   --seed S
 * ops = allocations. Checksum: the tags and sizes of every block freed, summed per
 * round and thread so the interleaving does not change it.
 */
#include <math.h>
#include <pthread.h>

#include "bench_util.h"

#define RS_RING 64
#define RS_MAX_THREADS 64

typedef struct rs_bucket_s {
  unsigned char** blocks; /* each starts with its size and tag */
  uint64_t count;
} rs_bucket_t;

typedef struct rs_job_s {
  pthread_t thread;
  uint64_t allocs, keep_pct, seed;
  rs_bucket_t* fill; /* this round's bucket */
  rs_bucket_t* drain; /* another thread's bucket of K rounds ago, or NULL */
  uint64_t checksum;
} rs_job_t;

typedef struct rs_header_s {
  uint64_t size, tag;
} rs_header_t;

static size_t rs_size(bench_rng_t* rng) {
  double hi = bench_rng_next(rng) % 100 == 0 ? 16.0 : 12.0;
  return (size_t)exp2(4.0 + (hi - 4.0) * bench_unit(rng));
}

static unsigned char* rs_new(bench_rng_t* rng, uint64_t tag) {
  size_t size = rs_size(rng);
  unsigned char* p = bench_malloc(size);
  rs_header_t h = {size, tag};
  memcpy(p, &h, sizeof(h));
  for (size_t off = sizeof(h); off < size; off += 256) p[off] = bench_byte(tag, off);
  p[size - 1] = bench_byte(tag, size - 1);
  return p;
}

static void rs_free(unsigned char* p, uint64_t* checksum) {
  rs_header_t h;
  memcpy(&h, p, sizeof(h));
  BENCH_CHECK(h.size >= 16 && h.size <= 65536, "block %p has a broken header", (void*)p);
  for (size_t off = sizeof(h); off < h.size; off += 256)
    if (p[off] != bench_byte(h.tag, off)) BENCH_FAIL("block %llu corrupted", (unsigned long long)h.tag);
  if (p[h.size - 1] != bench_byte(h.tag, h.size - 1)) BENCH_FAIL("block %llu corrupted at its end", (unsigned long long)h.tag);
  *checksum += bench_mix(h.tag, h.size); /* a sum: the order of frees does not matter */
  free(p);
}

static void rs_drain(rs_bucket_t* b, uint64_t* checksum) {
  for (uint64_t i = 0; i < b->count; i++) rs_free(b->blocks[i], checksum);
  free(b->blocks);
  b->blocks = NULL;
  b->count = 0;
}

static void* rs_run(void* arg) {
  rs_job_t* j = arg;
  bench_rng_t rng = {j->seed | 1};
  unsigned char* ring[RS_RING] = {0};
  uint64_t checksum = 0;
  j->fill->blocks = bench_malloc(j->allocs * sizeof(unsigned char*));
  j->fill->count = 0;
  for (uint64_t i = 0; i < j->allocs; i++) {
    unsigned char* p = rs_new(&rng, j->seed ^ i);
    if (bench_rng_next(&rng) % 100 < j->keep_pct) {
      j->fill->blocks[j->fill->count++] = p;
      continue;
    }
    unsigned char** slot = &ring[i % RS_RING];
    if (*slot != NULL) rs_free(*slot, &checksum);
    *slot = p;
  }
  for (int i = 0; i < RS_RING; i++)
    if (ring[i] != NULL) rs_free(ring[i], &checksum);
  if (j->drain != NULL) rs_drain(j->drain, &checksum);
  j->checksum = checksum;
  return NULL;
}

int main(int argc, char** argv) {
  uint64_t nthreads = bench_arg(argc, argv, "--threads", 2);
  uint64_t rounds = bench_arg(argc, argv, "--rounds", 60);
  uint64_t allocs = bench_arg(argc, argv, "--allocs", 100000);
  uint64_t keep_pct = bench_arg(argc, argv, "--keep-pct", 20);
  uint64_t retain = bench_arg(argc, argv, "--retain-rounds", 4);
  uint64_t seed = bench_arg(argc, argv, "--seed", 0x2E7A1A5EULL);
  BENCH_CHECK(nthreads > 0 && nthreads <= RS_MAX_THREADS && retain > 0 && keep_pct <= 100, "bad arguments");
  /* buckets[r % (K+1)][t]: filled in round r, drained in round r + K by thread t+1. */
  rs_bucket_t* buckets = calloc((retain + 1) * nthreads, sizeof(rs_bucket_t));
  rs_job_t jobs[RS_MAX_THREADS];
  uint64_t checksum = 0;
  uint64_t t0 = bench_now_ns();
  for (uint64_t r = 0; r < rounds; r++) {
    for (uint64_t t = 0; t < nthreads; t++) {
      rs_bucket_t* old = r >= retain ? &buckets[((r - retain) % (retain + 1)) * nthreads + (t + 1) % nthreads] : NULL;
      jobs[t] = (rs_job_t){.allocs = allocs, .keep_pct = keep_pct,
                           .seed = seed + 0x9E3779B97F4A7C15ULL * (r * nthreads + t + 1),
                           .fill = &buckets[(r % (retain + 1)) * nthreads + t], .drain = old};
      BENCH_CHECK(pthread_create(&jobs[t].thread, NULL, rs_run, &jobs[t]) == 0, "pthread_create failed");
    }
    for (uint64_t t = 0; t < nthreads; t++) {
      pthread_join(jobs[t].thread, NULL);
      checksum += jobs[t].checksum;
    }
  }
  for (uint64_t i = 0; i < (retain + 1) * nthreads; i++)
    if (buckets[i].blocks != NULL) rs_drain(&buckets[i], &checksum);
  uint64_t ns = bench_now_ns() - t0;
  free(buckets);
  char name[48];
  snprintf(name, sizeof(name), "retain_stress_t%llu", (unsigned long long)nthreads);
  bench_report(name, allocs * nthreads * rounds, ns, checksum);
  return 0;
}
