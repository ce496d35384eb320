/* SPDX-License-Identifier: MIT */
/* generations - threads hand their live blocks to the next generation of threads.
 *
 * A server pattern (a request's state outlives the worker that built it): --threads
 * lineages, each with a set of --blocks live blocks of 8-1000 B (uniform). A
 * generation is one thread per lineage, all running at once: each takes its lineage's
 * set from the thread before it (which has exited), replaces --replace random blocks
 * of it (checking and freeing the old block, which another, exited, thread allocated;
 * allocating and writing a new one), hands the set on and exits. So every block is
 * freed by a thread that did not allocate it, most of them long after that thread
 * exited: the memory of exited threads must be reused or returned, or peak RSS grows
 * with the number of generations.
 *   --threads T      lineages, threads per generation (default 2)
 *   --generations G  (default 400)
 *   --blocks B       live blocks per lineage (default 20000: about 10 MiB)
 *   --replace R      replacements per thread (default 20000)
 *   --seed S
 * ops = replacements over all threads. The result is named generations_t<T>; peak
 * RSS is the figure to watch.
 */
#include <pthread.h>

#include "bench_util.h"

typedef struct gen_block_s {
  unsigned char* p;
  uint32_t size;
  uint64_t tag;
} gen_block_t;

typedef struct gen_lineage_s {
  pthread_t thread;
  gen_block_t* set; /* handed from generation to generation */
  uint64_t blocks, replace, next_tag;
  bench_rng_t rng;
  uint64_t checksum;
} gen_lineage_t;

static void gen_new(gen_block_t* b, bench_rng_t* rng, uint64_t tag) {
  b->size = (uint32_t)(8 + bench_rng_next(rng) % 993);
  b->tag = tag;
  b->p = bench_malloc(b->size);
  for (uint32_t off = 0; off < b->size; off += 64) b->p[off] = bench_byte(tag, off);
  b->p[b->size - 1] = bench_byte(tag, b->size - 1);
}

static void gen_drop(gen_block_t* b, uint64_t* checksum) {
  for (uint32_t off = 0; off < b->size; off += 64)
    if (b->p[off] != bench_byte(b->tag, off)) BENCH_FAIL("block %llu corrupted", (unsigned long long)b->tag);
  if (b->p[b->size - 1] != bench_byte(b->tag, b->size - 1))
    BENCH_FAIL("block %llu corrupted at its end", (unsigned long long)b->tag);
  *checksum = bench_mix(*checksum, b->tag ^ b->size);
  free(b->p);
}

static void* gen_run(void* arg) {
  gen_lineage_t* l = arg;
  for (uint64_t i = 0; i < l->replace; i++) {
    gen_block_t* b = &l->set[bench_rng_next(&l->rng) % l->blocks];
    gen_drop(b, &l->checksum);
    gen_new(b, &l->rng, l->next_tag++);
  }
  return NULL;
}

int main(int argc, char** argv) {
  uint64_t nthreads = bench_arg(argc, argv, "--threads", 2);
  uint64_t generations = bench_arg(argc, argv, "--generations", 400);
  uint64_t blocks = bench_arg(argc, argv, "--blocks", 20000);
  uint64_t replace = bench_arg(argc, argv, "--replace", 20000);
  uint64_t seed = bench_arg(argc, argv, "--seed", 0x6E6E5EEDULL);
  BENCH_CHECK(nthreads > 0 && nthreads <= 64 && blocks > 0, "bad --threads or --blocks");
  gen_lineage_t lineages[64];
  uint64_t t0 = bench_now_ns();
  for (uint64_t t = 0; t < nthreads; t++) {
    gen_lineage_t* l = &lineages[t];
    *l = (gen_lineage_t){.blocks = blocks, .replace = replace, .rng = {(seed + 0x9E3779B97F4A7C15ULL * (t + 1)) | 1}};
    l->set = bench_malloc(blocks * sizeof(gen_block_t));
    for (uint64_t i = 0; i < blocks; i++) gen_new(&l->set[i], &l->rng, l->next_tag++);
  }
  for (uint64_t g = 0; g < generations; g++) {
    for (uint64_t t = 0; t < nthreads; t++)
      BENCH_CHECK(pthread_create(&lineages[t].thread, NULL, gen_run, &lineages[t]) == 0, "pthread_create failed");
    for (uint64_t t = 0; t < nthreads; t++) pthread_join(lineages[t].thread, NULL);
  }
  uint64_t checksum = 0;
  for (uint64_t t = 0; t < nthreads; t++) {
    gen_lineage_t* l = &lineages[t];
    for (uint64_t i = 0; i < blocks; i++) gen_drop(&l->set[i], &l->checksum);
    free(l->set);
    checksum = bench_mix(checksum, l->checksum);
  }
  uint64_t ns = bench_now_ns() - t0;
  char name[48];
  snprintf(name, sizeof(name), "generations_t%llu", (unsigned long long)nthreads);
  bench_report(name, replace * nthreads * generations, ns, checksum);
  return 0;
}
