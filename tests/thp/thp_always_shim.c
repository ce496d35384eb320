/* SPDX-License-Identifier: MIT */
/* thp_always_shim.c - LD_PRELOAD stand-in for transparent_hugepage/enabled = always on
 * a machine whose setting is `madvise`: every private anonymous mapping made through
 * mmap() is advised MADV_HUGEPAGE right after the kernel creates it, so it is eligible
 * for huge pages exactly as under `always`. Advice the program gives later (an
 * allocator's own MADV_NOHUGEPAGE) overrides it, as it overrides the system setting.
 * Allocator-neutral: hakmem, mimalloc, jemalloc... all map through libc's mmap. Not
 * covered: mappings glibc makes internally (thread stacks), the same for every
 * allocator. Has no effect where the setting is `never`. */
#define _GNU_SOURCE
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

void* mmap(void* addr, size_t length, int prot, int flags, int fd, off_t offset) {
  long r = syscall(SYS_mmap, addr, length, prot, flags, fd, offset);
  if (r < 0 && r > -4096) return MAP_FAILED; /* syscall() set errno */
  void* p = (void*)r;
  if ((flags & MAP_ANONYMOUS) && (flags & MAP_PRIVATE)) madvise(p, length, MADV_HUGEPAGE);
  return p;
}

void* mmap64(void* addr, size_t length, int prot, int flags, int fd, off_t offset)
    __attribute__((alias("mmap")));
