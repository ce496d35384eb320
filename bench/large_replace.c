/* SPDX-License-Identifier: MIT */
/* large_replace - a few large buffers of changing sizes, replaced at random.
 *
 * 20 slots, each holding a buffer of 5..25 MiB (uniform). Each step picks a slot at
 * random, checks and frees its buffer, and allocates one of a new random size, which it
 * writes whole (as `new char[n]()` or a read into a fresh buffer would). The sizes
 * differ from one buffer to the next, so a cache keyed by size mostly misses: what
 * counts is whether freed memory is reused, in part, for the next size without page
 * faults, and how much of it is given back to the OS meanwhile (the pattern of a public
 * large-block benchmark).
 *   --iters N   replacements (default 60)
 *   --seed S
 * ops = replacements (one free and one malloc each). Self-check: each buffer's first,
 * middle and last bytes when it is freed, and the whole of one buffer in eight.
 */
#include "bench_util.h"

#define LR_SLOTS 20
#define LR_MIN ((size_t)5 << 20)
#define LR_SPAN ((size_t)20 << 20)

typedef struct lr_buf_s {
  unsigned char* p;
  size_t size;
  unsigned char tag;
} lr_buf_t;

static void lr_check(const lr_buf_t* b, int whole) {
  if (b->p == NULL) return;
  if (whole) {
    for (size_t i = 0; i < b->size; i += 4096) {
      if (b->p[i] != b->tag) BENCH_FAIL("buffer of %zu B lost its byte at %zu", b->size, i);
    }
  }
  if (b->p[0] != b->tag || b->p[b->size / 2] != b->tag || b->p[b->size - 1] != b->tag) {
    BENCH_FAIL("buffer of %zu B lost its contents", b->size);
  }
}

int main(int argc, char** argv) {
  uint64_t iters = bench_arg(argc, argv, "--iters", 60);
  bench_rng_t rng = {bench_arg(argc, argv, "--seed", 0x5EED1A26ULL) | 1};
  lr_buf_t bufs[LR_SLOTS] = {{0}};
  uint64_t checksum = 0;

  uint64_t t0 = bench_now_ns();
  for (uint64_t i = 0; i < iters; i++) {
    lr_buf_t* b = &bufs[bench_rng_next(&rng) % LR_SLOTS];
    lr_check(b, i % 8 == 0);
    free(b->p);
    b->size = LR_MIN + (size_t)(bench_rng_next(&rng) % LR_SPAN);
    b->tag = (unsigned char)(i * 13 + 1);
    b->p = bench_malloc(b->size);
    memset(b->p, b->tag, b->size);
    checksum = bench_mix(checksum, b->size ^ b->tag);
  }
  for (int s = 0; s < LR_SLOTS; s++) {
    lr_check(&bufs[s], 1);
    free(bufs[s].p);
  }
  uint64_t ns = bench_now_ns() - t0;
  bench_report("large_replace", iters, ns, checksum);
  return 0;
}
