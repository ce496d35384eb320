/* SPDX-License-Identifier: MIT */
/* stress - many threads, random sizes, blocks freed by other threads: the pattern of
 * mimalloc's test-stress, written here for hakmem's driver.
 *
 * Each of --iters rounds starts --threads fresh threads (so heaps are set up, abandoned
 * and adopted every round). A thread runs --steps steps over a table of its own of
 * 1024 live blocks: it allocates (sizes mostly 16 B .. 1 KiB, one in ten up to 16 KiB,
 * one in a thousand up to 1 MiB), frees a random block of its table, or passes a new
 * block through a shared array of 1000 transfer slots, freeing whatever it takes out
 * (allocated by another thread, often in an earlier round). Every block carries its
 * size and a tag in its first 16 bytes and a pattern, checked before it is freed.
 * The transfer slots outlive the rounds and are freed at the end.
 *   --threads T  threads per round (default 2); the result is named stress_t<T>
 *   --iters N    rounds (default 10)
 *   --steps N    steps per thread and round (default 200,000)
 * ops = allocations. The checksum mixes the tags of all blocks allocated: each thread's
 * choices depend on its own random sequence only, never on what it receives, so the
 * checksum does not depend on how the threads interleave.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "bench_util.h"

#define TABLE 1024
#define TRANSFERS 1000

typedef struct header_s {
  uint64_t size;
  uint64_t tag;
} header_t;

static _Atomic(header_t*) transfer[TRANSFERS];

typedef struct worker_s {
  pthread_t thread;
  uint64_t seed, steps;
  uint64_t allocs, checksum;
} worker_t;

static size_t random_size(bench_rng_t* r) {
  uint64_t x = bench_rng_next(r);
  uint64_t pick = x % 1000;
  x >>= 10;
  if (pick == 0) return 16 + x % ((size_t)1 << 20);  /* 1 in 1000: up to 1 MiB */
  if (pick < 100) return 16 + x % (16 * 1024);        /* 1 in 10: up to 16 KiB */
  return 16 + (x & 1 ? (x >> 1) % 112 : (x >> 1) % 1008); /* half up to 128 B, half 1 KiB */
}

static header_t* allocate(worker_t* w, bench_rng_t* r) {
  size_t size = random_size(r);
  uint64_t tag = bench_rng_next(r);
  header_t* h = bench_malloc(size);
  h->size = size;
  h->tag = tag;
  bench_fill_sparse((unsigned char*)(h + 1), size - sizeof(header_t), tag);
  w->allocs++;
  w->checksum = bench_mix(w->checksum, tag ^ size);
  return h;
}

static void release(header_t* h) {
  if (h == NULL) return;
  BENCH_CHECK(h->size >= sizeof(header_t) && h->size <= ((size_t)1 << 20) + 16, "block %p has a corrupt size %llu",
              (void*)h, (unsigned long long)h->size);
  BENCH_CHECK(bench_check_sparse((unsigned char*)(h + 1), h->size - sizeof(header_t), h->tag),
              "block %p of %llu B was corrupted", (void*)h, (unsigned long long)h->size);
  free(h);
}

static void* worker_main(void* arg) {
  worker_t* w = arg;
  bench_rng_t r = {w->seed};
  header_t* table[TABLE] = {0};
  for (uint64_t step = 0; step < w->steps; step++) {
    uint64_t x = bench_rng_next(&r);
    size_t i = (size_t)(x >> 32) % TABLE;
    switch (x % 8) {
      case 0: /* free one of ours */
        release(table[i]);
        table[i] = NULL;
        break;
      case 1: /* pass a new block on; free what was waiting there */
        release(atomic_exchange_explicit(&transfer[(x >> 16) % TRANSFERS], allocate(w, &r), memory_order_acq_rel));
        break;
      default: /* replace one of ours */
        release(table[i]);
        table[i] = allocate(w, &r);
        break;
    }
  }
  for (size_t i = 0; i < TABLE; i++) release(table[i]);
  return NULL;
}

int main(int argc, char** argv) {
  uint64_t threads = bench_arg(argc, argv, "--threads", 2);
  uint64_t iters = bench_arg(argc, argv, "--iters", 10);
  uint64_t steps = bench_arg(argc, argv, "--steps", 200000);
  if (threads < 1 || threads > 64) BENCH_FAIL("--threads must be 1 .. 64");
  worker_t* workers = calloc(threads, sizeof(worker_t));
  if (workers == NULL) BENCH_FAIL("out of memory");
  uint64_t start = bench_now_ns();
  for (uint64_t it = 0; it < iters; it++) {
    for (uint64_t t = 0; t < threads; t++) {
      workers[t].seed = bench_mix(it + 1, t + 1) | 1;
      workers[t].steps = steps;
      if (pthread_create(&workers[t].thread, NULL, worker_main, &workers[t]) != 0) BENCH_FAIL("pthread_create");
    }
    for (uint64_t t = 0; t < threads; t++) pthread_join(workers[t].thread, NULL);
  }
  for (size_t i = 0; i < TRANSFERS; i++) release(atomic_exchange(&transfer[i], NULL));
  uint64_t ns = bench_now_ns() - start;
  uint64_t ops = 0, checksum = 0;
  for (uint64_t t = 0; t < threads; t++) {
    ops += workers[t].allocs;
    checksum ^= workers[t].checksum;
  }
  char name[32];
  snprintf(name, sizeof name, "stress_t%llu", (unsigned long long)threads);
  bench_report(name, ops, ns, checksum);
  free(workers);
  return 0;
}
