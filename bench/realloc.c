/* SPDX-License-Identifier: MIT */
/* realloc - buffers grown by doubling, as a string builder or a vector does.
 *
 * Two buffers grow side by side (so neither simply extends the top of the heap), each
 * from 64 B by doubling with realloc up to --max (64 MiB). After each growth the new
 * half gets one byte per 4 KiB page written (and small buffers are filled), so an
 * allocator that moves the buffer must carry the old contents along; all of it is
 * checked when the buffer reaches full size, and then both are freed.
 *   --rounds N   growth cycles (default 24)
 *   --max B      final size in bytes (default 64 MiB)
 * ops = realloc calls (plus the two initial mallocs per round).
 */
#include "bench_util.h"

#define SMALL_FILL 4096 /* buffers up to this size are filled completely */

static void fill(unsigned char* p, size_t from, size_t to, uint64_t tag) {
  if (to <= SMALL_FILL) {
    for (size_t i = from; i < to; i++) p[i] = bench_byte(tag, i);
    return;
  }
  for (size_t off = from; off < to; off += 4096) p[off] = bench_byte(tag, off);
}

static int check(const unsigned char* p, size_t size, uint64_t tag) {
  for (size_t i = 0; i < SMALL_FILL && i < size; i++)
    if (p[i] != bench_byte(tag, i)) return 0;
  for (size_t off = SMALL_FILL; off < size; off += 4096)
    if (p[off] != bench_byte(tag, off)) return 0;
  return 1;
}

int main(int argc, char** argv) {
  uint64_t rounds = bench_arg(argc, argv, "--rounds", 24);
  size_t max = (size_t)bench_arg(argc, argv, "--max", (uint64_t)64 << 20);
  uint64_t ops = 0, checksum = 0;

  uint64_t t0 = bench_now_ns();
  for (uint64_t r = 0; r < rounds; r++) {
    unsigned char* buf[2];
    size_t size = 64;
    for (int b = 0; b < 2; b++) {
      buf[b] = bench_malloc(size);
      fill(buf[b], 0, size, r * 2 + b);
      ops++;
    }
    while (size < max) {
      size_t grown = size * 2 > max ? max : size * 2;
      for (int b = 0; b < 2; b++) {
        buf[b] = bench_realloc(buf[b], grown);
        fill(buf[b], size, grown, r * 2 + b);
        ops++;
      }
      size = grown;
    }
    for (int b = 0; b < 2; b++) {
      BENCH_CHECK(check(buf[b], size, r * 2 + b), "round %llu buffer %d: contents lost in realloc",
                  (unsigned long long)r, b);
      checksum = bench_mix(checksum, size + buf[b][0]);
      free(buf[b]);
    }
  }
  uint64_t ns = bench_now_ns() - t0;
  bench_report("realloc", ops, ns, checksum);
  return 0;
}
