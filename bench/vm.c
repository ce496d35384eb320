/* SPDX-License-Identifier: MIT */
/* vm - one large block allocated, used and freed, over and over.
 *
 * Each iteration allocates a 2 MiB block, writes one byte in every 4 KiB page, reads
 * them back, and frees it. An allocator that hands the block back to the OS each time
 * pays a fresh mapping and 512 page faults per iteration; one that keeps it pays
 * nothing. With --touch 0 the block is never written (only its pointer checked), which
 * isolates the allocator's own cost (system calls included) from the page faults.
 *   --iters N    iterations (default 20000)
 *   --size B     block size in bytes (default 2 MiB)
 *   --touch 0|1  write every page (default 1); names the result vm_touch / vm_notouch
 * ops = iterations (one malloc and one free each).
 */
#include "bench_util.h"

int main(int argc, char** argv) {
  uint64_t iters = bench_arg(argc, argv, "--iters", 20000);
  size_t size = (size_t)bench_arg(argc, argv, "--size", 2u << 20);
  int touch = (int)bench_arg(argc, argv, "--touch", 1);
  uint64_t checksum = 0;

  uint64_t t0 = bench_now_ns();
  for (uint64_t i = 0; i < iters; i++) {
    unsigned char* p = bench_malloc(size);
    if (touch) {
      for (size_t off = 0; off < size; off += 4096) p[off] = (unsigned char)(i + off / 4096);
      for (size_t off = 0; off < size; off += 4096) {
        if (p[off] != (unsigned char)(i + off / 4096)) BENCH_FAIL("iteration %llu: page at offset %zu lost its byte",
                                                                  (unsigned long long)i, off);
        checksum += p[off];
      }
    } else {
      checksum += 1;
    }
    free(p);
  }
  uint64_t ns = bench_now_ns() - t0;
  bench_report(touch ? "vm_touch" : "vm_notouch", iters, ns, checksum);
  return 0;
}
