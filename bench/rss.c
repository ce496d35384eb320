/* SPDX-License-Identifier: MIT */
/* rss - how much memory the allocator holds, and how much it gives back.
 *
 * 1. allocates --objs blocks (90% 16..512 B, 9.8% 512 B..16 KiB, 0.2% 64 KiB..1 MiB)
 *    and fills each completely: RSS now is the live set plus the allocator's overhead
 *    (live_rss_kib);
 * 2. frees 15 of every 16 blocks in random order, so the survivors are scattered over
 *    the heap: RSS now shows how well the allocator returns partly used memory
 *    (sparse_rss_kib, with 1/16 of the data still live);
 * 3. frees the rest: RSS after everything is freed is rss_kib of the RESULT line.
 * peak_rss_kib is the peak (normally phase 1).
 *   --objs N     blocks (default 100,000)
 *   --seed S
 * ops = allocations; the time covers all three phases.
 * Self-check: every block is filled with a byte derived from its index and its first
 * and last bytes are checked before it is freed.
 */
#include "bench_util.h"

static size_t rss_size(bench_rng_t* rng) {
  uint64_t r = bench_rng_next(rng);
  uint64_t pick = r % 1000;
  r >>= 10;
  if (pick < 900) return 16 + (size_t)(r % 497);
  if (pick < 998) return 512 + (size_t)(r % (16384 - 512 + 1));
  return ((size_t)64 << 10) + (size_t)(r % ((1u << 20) - (64u << 10) + 1));
}

int main(int argc, char** argv) {
  uint64_t n = bench_arg(argc, argv, "--objs", 100000);
  bench_rng_t rng = {bench_arg(argc, argv, "--seed", 0x0DDBA11ULL) | 1};
  unsigned char** blocks = calloc(n, sizeof(*blocks));
  size_t* sizes = calloc(n, sizeof(*sizes));
  uint64_t* order = calloc(n, sizeof(*order));
  uint64_t checksum = 0, live_bytes = 0;
  for (uint64_t i = 0; i < n; i++) order[i] = i;
  for (uint64_t i = n; i > 1; i--) { /* Fisher-Yates: the order blocks die in */
    uint64_t j = bench_rng_next(&rng) % i;
    uint64_t t = order[i - 1];
    order[i - 1] = order[j];
    order[j] = t;
  }

  uint64_t t0 = bench_now_ns();
  for (uint64_t i = 0; i < n; i++) {
    sizes[i] = rss_size(&rng);
    blocks[i] = bench_malloc(sizes[i]);
    memset(blocks[i], (int)(i * 13 + 7) & 0xFF, sizes[i]);
    live_bytes += sizes[i];
  }
  uint64_t live_rss = bench_status_kib("VmRSS"), sparse_rss = 0;
  for (int pass = 0; pass < 2; pass++) { /* pass 0: 15 of every 16 blocks; pass 1: the rest */
    for (uint64_t k = 0; k < n; k++) {
      uint64_t i = order[k];
      if ((i % 16 == 0) != (pass == 1)) continue;
      unsigned char v = (unsigned char)((i * 13 + 7) & 0xFF);
      BENCH_CHECK(blocks[i][0] == v && blocks[i][sizes[i] - 1] == v, "block %llu (%zu B) corrupted",
                  (unsigned long long)i, sizes[i]);
      checksum = bench_mix(checksum, sizes[i] ^ i);
      free(blocks[i]);
      blocks[i] = NULL;
    }
    if (pass == 0) sparse_rss = bench_status_kib("VmRSS");
  }
  uint64_t ns = bench_now_ns() - t0;
  free(blocks);
  free(sizes);
  free(order);
  char extra[160];
  snprintf(extra, sizeof(extra), "live_rss_kib=%llu sparse_rss_kib=%llu live_bytes_kib=%llu",
           (unsigned long long)live_rss, (unsigned long long)sparse_rss, (unsigned long long)(live_bytes >> 10));
  bench_report_extra("rss", n, ns, checksum, extra);
  return 0;
}
