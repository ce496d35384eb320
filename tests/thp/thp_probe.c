/* SPDX-License-Identifier: MIT */
/* thp_probe.c - the kernel setting transparent_hugepage/enabled=always emulated through
 * hakmem's OS layer (hak_os_set_ops), for thp_test.cc, and a record of the huge-page
 * advice hakmem gives.
 *
 * Under `always` every anonymous mapping may get huge pages unless advised otherwise.
 * Where the machine's setting is `madvise`, the injected map does that: each mapping
 * hakmem makes is advised MADV_HUGEPAGE by the fake kernel right after mmap, before
 * hakmem sees it; whatever advice hakmem gives afterwards overrides it, exactly as it
 * overrides the system setting. Every MADV_HUGEPAGE / MADV_NOHUGEPAGE hakmem gives is
 * recorded (address, size, which), then passed to the kernel. Install before hakmem
 * maps anything (the test links the hak_* API only, so nothing allocates through it
 * before the test body runs). */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <sys/mman.h>

#include "hakmem/hak_internal.h"

#define THP_PROBE_RECORDS 4096

typedef struct thp_probe_advice_s {
  uintptr_t addr;
  size_t size;
  int huge; /* 1: MADV_HUGEPAGE, 0: MADV_NOHUGEPAGE */
} thp_probe_advice_t;

static thp_probe_advice_t thp_probe_records[THP_PROBE_RECORDS];
static _Atomic size_t thp_probe_count;

static void* thp_probe_map(void* hint, size_t size, int flags) {
  int mflags = MAP_PRIVATE | MAP_ANONYMOUS;
  if (flags & HAK_OS_MAP_NORESERVE) mflags |= MAP_NORESERVE;
  if (flags & HAK_OS_MAP_FIXED) mflags |= MAP_FIXED;
  void* p = mmap(hint, size, PROT_READ | PROT_WRITE, mflags, -1, 0);
  if (p != MAP_FAILED) madvise(p, size, MADV_HUGEPAGE); /* the emulated system setting */
  return p;
}

static int thp_probe_unmap(void* addr, size_t size) {
  return munmap(addr, size);
}

static int thp_probe_advise(void* addr, size_t size, int advice) {
  if (advice == MADV_HUGEPAGE || advice == MADV_NOHUGEPAGE) {
    size_t i = atomic_fetch_add(&thp_probe_count, 1);
    if (i < THP_PROBE_RECORDS) {
      thp_probe_records[i] = (thp_probe_advice_t){(uintptr_t)addr, size, advice == MADV_HUGEPAGE};
    }
  }
  return madvise(addr, size, advice);
}

static void* thp_probe_remap(void* old_addr, size_t old_size, size_t new_size, int flags, void* new_addr) {
  return mremap(old_addr, old_size, new_size, flags, new_addr);
}

static const hak_os_ops_t thp_probe_ops = {
    .map = thp_probe_map, .unmap = thp_probe_unmap, .advise = thp_probe_advise, .remap = thp_probe_remap};

void thp_probe_emulate_always(void) {
  hak_os_set_ops(&thp_probe_ops);
}

/* Advice calls recorded so far (at most THP_PROBE_RECORDS are kept). */
size_t thp_probe_advice_count(void) {
  return atomic_load(&thp_probe_count);
}

/* Record i: 1 if MADV_HUGEPAGE, 0 if MADV_NOHUGEPAGE, -1 if not kept. */
int thp_probe_advice(size_t i, uintptr_t* addr, size_t* size) {
  if (i >= THP_PROBE_RECORDS || i >= atomic_load(&thp_probe_count)) return -1;
  *addr = thp_probe_records[i].addr;
  *size = thp_probe_records[i].size;
  return thp_probe_records[i].huge;
}

/* HAKMEM_THP as read: 0 lean, 1 whales, 2 system. */
int thp_probe_mode(void) {
  return (int)hak_options.thp_mode;
}

size_t thp_probe_chunk_size(void) {
  return HAK_CHUNK_SIZE;
}

size_t thp_probe_segment_size(void) {
  return HAK_SEGMENT_SIZE;
}

/* One leaf of the hardened variant's ownership map: the unit of its mappings. */
size_t thp_probe_map_leaf_bytes(void) {
  return HAK_SEGMENT_MAP_LEAF_BYTES;
}
