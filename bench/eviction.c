/* SPDX-License-Identifier: MIT */
/* eviction / multisize - many distinct sizes in turn, so caches keyed by size miss.
 *
 * --mode eviction: cycles through 12 distinct large sizes (2, 3, 4, 5, 6, 8, 10, 12,
 *   16, 20, 24, 32 MiB), allocating one block, writing its first, middle and last byte,
 *   checking them and freeing it. A cache of 8 large blocks sees 12 sizes round robin,
 *   so a per-size LRU cache must evict on every request; a cache that can split or
 *   reuse bigger blocks still hits.
 *   --iters N    blocks (default 12000)
 * --mode multisize: every size class in turn: the 80 classes from 16 B to 64 KiB
 *   (16 B apart to 256 B, then 8 per doubling) and 8 per doubling above, up to 1 MiB.
 *   For each size a batch of blocks (64, or fewer so a batch stays under 2 MiB) is
 *   allocated, written at both ends, checked and freed, then the next size.
 *   --rounds N   passes over all sizes (default 200)
 * ops = allocations (each freed once).
 */
#include "bench_util.h"

static const size_t kEvictionMiB[12] = {2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32};

static uint64_t run_eviction(uint64_t iters, uint64_t* checksum) {
  for (uint64_t i = 0; i < iters; i++) {
    size_t size = kEvictionMiB[i % 12] << 20;
    unsigned char* p = bench_malloc(size);
    unsigned char v = (unsigned char)(i * 7 + 1);
    p[0] = v;
    p[size / 2] = (unsigned char)(v + 1);
    p[size - 1] = (unsigned char)(v + 2);
    BENCH_CHECK(p[0] == v && p[size / 2] == (unsigned char)(v + 1) && p[size - 1] == (unsigned char)(v + 2),
                "block %llu of %zu B lost its bytes", (unsigned long long)i, size);
    *checksum = bench_mix(*checksum, size + p[size - 1]);
    free(p);
  }
  return iters;
}

/* Request sizes: hakmem's class boundaries up to 64 KiB, then 8 per doubling to 1 MiB. */
static size_t multisize_sizes(size_t* out) {
  size_t n = 0;
  for (size_t s = 16; s <= 256; s += 16) out[n++] = s;
  for (size_t base = 256; base < ((size_t)1 << 20); base *= 2)
    for (size_t k = 1; k <= 8; k++) out[n++] = base + k * (base / 8);
  return n;
}

static uint64_t run_multisize(uint64_t rounds, uint64_t* checksum) {
  size_t sizes[160];
  size_t nsizes = multisize_sizes(sizes);
  unsigned char* batch[64];
  uint64_t ops = 0;
  for (uint64_t r = 0; r < rounds; r++) {
    for (size_t c = 0; c < nsizes; c++) {
      size_t size = sizes[c];
      size_t n = ((size_t)2 << 20) / size;
      if (n > 64) n = 64;
      if (n == 0) n = 1;
      for (size_t i = 0; i < n; i++) {
        batch[i] = bench_malloc(size);
        batch[i][0] = (unsigned char)(r + i);
        batch[i][size - 1] = (unsigned char)(c + i);
      }
      for (size_t i = 0; i < n; i++) {
        BENCH_CHECK(batch[i][0] == (unsigned char)(r + i) && batch[i][size - 1] == (unsigned char)(c + i),
                    "size %zu block %zu overwritten", size, i);
        *checksum = bench_mix(*checksum, size ^ i);
        free(batch[i]);
      }
      ops += n;
    }
  }
  return ops;
}

int main(int argc, char** argv) {
  const char* mode = "eviction";
  for (int i = 1; i + 1 < argc; i++)
    if (strcmp(argv[i], "--mode") == 0) mode = argv[i + 1];
  uint64_t checksum = 0, ops;
  uint64_t t0 = bench_now_ns();
  if (strcmp(mode, "eviction") == 0) {
    ops = run_eviction(bench_arg(argc, argv, "--iters", 12000), &checksum);
  } else if (strcmp(mode, "multisize") == 0) {
    ops = run_multisize(bench_arg(argc, argv, "--rounds", 200), &checksum);
  } else {
    fprintf(stderr, "eviction: unknown --mode %s (eviction or multisize)\n", mode);
    return 2;
  }
  uint64_t ns = bench_now_ns() - t0;
  bench_report(mode, ops, ns, checksum);
  return 0;
}
