/* SPDX-License-Identifier: MIT */
/* realloc_grow - one large block grown in small steps, as a growing file buffer or a
 * vector with a fixed increment does.
 *
 * Each round allocates 1 MiB and grows the block with realloc in 64 KiB steps up to
 * 32 MiB (496 reallocs). After every step the new tail gets one byte written in each
 * of its 4 KiB pages, so an allocator that moves the block must carry every earlier
 * page along, and one that extends it pays the page faults of the tail only. At the
 * end of the round every page is checked, then the block is freed. Growth this fine
 * is cheap only if the allocator grows in place or moves pages without copying them
 * (glibc: mremap); copying the block at each step would move about 8 GiB per round.
 *   --rounds N   rounds (default 2)
 * ops = realloc calls. The RESULT line also has moved=<n>: reallocs that returned a
 * different address (compare.py keeps its median in results.csv and results.json).
 */
#include "bench_util.h"

#define GROW_FROM ((size_t)1 << 20)
#define GROW_TO ((size_t)32 << 20)
#define GROW_STEP ((size_t)64 << 10)
#define PAGE 4096

/* Writes the round's byte into each 4 KiB page of [from, to). */
static void touch_pages(unsigned char* p, size_t from, size_t to, uint64_t round) {
  for (size_t off = from; off < to; off += PAGE) p[off] = bench_byte(round, off);
}

/* Checks every page of the grown block; returns its contribution to the checksum. */
static uint64_t check_pages(const unsigned char* p, size_t size, uint64_t round) {
  uint64_t sum = 0;
  for (size_t off = 0; off < size; off += PAGE) {
    BENCH_CHECK(p[off] == bench_byte(round, off), "round %llu: the page at offset %zu lost its byte in realloc",
                (unsigned long long)round, off);
    sum += p[off];
  }
  return sum;
}

int main(int argc, char** argv) {
  uint64_t rounds = bench_arg(argc, argv, "--rounds", 2);
  uint64_t ops = 0, moved = 0, checksum = 0;

  uint64_t t0 = bench_now_ns();
  for (uint64_t r = 0; r < rounds; r++) {
    unsigned char* block = bench_malloc(GROW_FROM);
    touch_pages(block, 0, GROW_FROM, r);
    for (size_t size = GROW_FROM; size < GROW_TO; size += GROW_STEP) {
      uintptr_t before = (uintptr_t)block; /* the old pointer may not be used once realloc moved it */
      block = bench_realloc(block, size + GROW_STEP);
      moved += (uintptr_t)block != before;
      touch_pages(block, size, size + GROW_STEP, r);
      ops++;
    }
    checksum = bench_mix(checksum, check_pages(block, GROW_TO, r));
    free(block);
  }
  uint64_t ns = bench_now_ns() - t0;

  char extra[64];
  snprintf(extra, sizeof(extra), "moved=%llu", (unsigned long long)moved);
  bench_report_extra("realloc_grow", ops, ns, checksum, extra);
  return 0;
}
