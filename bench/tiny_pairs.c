/* SPDX-License-Identifier: MIT */
/* tiny_pairs - malloc/free pairs of 16..1024 B, the tiny pool's hot path.
 *
 * Each thread keeps a ring of live blocks; every step frees the oldest and allocates
 * a new block of a random size, writing its first and last byte, so free lists are
 * exercised as in real programs rather than one block bouncing.
 *   --pairs N     pairs per thread (default 10,000,000)
 *   --threads T   threads, each doing N pairs (default 1)
 *   --ring R      live blocks per thread (default 64)
 *   --min/--max   size range in bytes (default 16..1024)
 */
#include <pthread.h>

#include "bench_util.h"

typedef struct worker_s {
  pthread_t thread;
  uint64_t pairs, ring, min, max, seed;
  uint64_t checksum;
} worker_t;

static void* worker_run(void* arg) {
  worker_t* w = (worker_t*)arg;
  bench_rng_t rng = {w->seed};
  unsigned char** ring = calloc(w->ring, sizeof(*ring));
  uint64_t sum = 0, span = w->max - w->min + 1;
  for (uint64_t i = 0; i < w->pairs; i++) {
    uint64_t slot = i % w->ring;
    if (ring[slot] != NULL) {
      sum += ring[slot][0];
      free(ring[slot]);
    }
    size_t size = (size_t)(w->min + bench_rng_next(&rng) % span);
    unsigned char* p = malloc(size);
    if (p == NULL) abort();
    p[0] = (unsigned char)i;
    p[size - 1] = (unsigned char)size;
    ring[slot] = p;
  }
  for (uint64_t s = 0; s < w->ring; s++) free(ring[s]);
  free(ring);
  w->checksum = sum;
  return NULL;
}

int main(int argc, char** argv) {
  uint64_t threads = bench_arg(argc, argv, "--threads", 1);
  worker_t* workers = calloc(threads, sizeof(*workers));
  for (uint64_t t = 0; t < threads; t++) {
    workers[t].pairs = bench_arg(argc, argv, "--pairs", 10000000);
    workers[t].ring = bench_arg(argc, argv, "--ring", 64);
    workers[t].min = bench_arg(argc, argv, "--min", 16);
    workers[t].max = bench_arg(argc, argv, "--max", 1024);
    workers[t].seed = 0x9E3779B97F4A7C15ULL + t;
  }
  uint64_t t0 = bench_now_ns();
  for (uint64_t t = 0; t < threads; t++) pthread_create(&workers[t].thread, NULL, worker_run, &workers[t]);
  uint64_t checksum = 0;
  for (uint64_t t = 0; t < threads; t++) {
    pthread_join(workers[t].thread, NULL);
    checksum += workers[t].checksum;
  }
  uint64_t ns = bench_now_ns() - t0;
  char name[64];
  snprintf(name, sizeof(name), "tiny_pairs_t%llu", (unsigned long long)threads);
  bench_report(name, workers[0].pairs * threads, ns, checksum);
  free(workers);
  return 0;
}
