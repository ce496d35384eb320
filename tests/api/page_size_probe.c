/* SPDX-License-Identifier: MIT */
/* page_size_probe.c - pretends a kernel with larger pages (16 KiB, 64 KiB) through
 * hakmem's injectable OS layer, for page_size_test.cc: the OS page size hakmem reads is
 * the pretended one, and the primitives check what such a kernel would: munmap and
 * mremap need page-aligned addresses and lengths, madvise a page-aligned start (and
 * rounds the length up to whole pages, which would purge bytes past the range: counted
 * as a violation too). Violations fail with EINVAL, as the kernel would. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <sys/mman.h>

#include "hakmem/hak_internal.h"

static size_t pretend;
static _Atomic size_t violations, calls;

static int aligned(const void* addr, size_t size) {
  return (uintptr_t)addr % pretend == 0 && size % pretend == 0;
}

static void* pretend_map(void* hint, size_t size, int flags) {
  atomic_fetch_add(&calls, 1);
  if (size % pretend != 0 || (uintptr_t)hint % pretend != 0) {
    atomic_fetch_add(&violations, 1);
    errno = EINVAL;
    return MAP_FAILED;
  }
  int mflags = MAP_PRIVATE | MAP_ANONYMOUS;
  if (flags & HAK_OS_MAP_NORESERVE) mflags |= MAP_NORESERVE;
  if (flags & HAK_OS_MAP_FIXED) mflags |= MAP_FIXED;
  void* p = mmap(hint, size, PROT_READ | PROT_WRITE, mflags, -1, 0);
  /* A real kernel of that page size places mappings on its pages: so must the fake. */
  if (p != MAP_FAILED && (uintptr_t)p % pretend != 0) {
    munmap(p, size);
    size_t over = size + pretend;
    uint8_t* raw = mmap(NULL, over, PROT_READ | PROT_WRITE, mflags & ~MAP_FIXED, -1, 0);
    if (raw == MAP_FAILED) return MAP_FAILED;
    uint8_t* start = (uint8_t*)(((uintptr_t)raw + pretend - 1) & ~(uintptr_t)(pretend - 1));
    if (start > raw) munmap(raw, (size_t)(start - raw));
    if (raw + over > start + size) munmap(start + size, (size_t)(raw + over - (start + size)));
    p = start;
  }
  return p;
}

static int pretend_unmap(void* addr, size_t size) {
  atomic_fetch_add(&calls, 1);
  if (!aligned(addr, size)) {
    atomic_fetch_add(&violations, 1);
    errno = EINVAL;
    return -1;
  }
  return munmap(addr, size);
}

static int pretend_advise(void* addr, size_t size, int advice) {
  atomic_fetch_add(&calls, 1);
  if (!aligned(addr, size)) {
    atomic_fetch_add(&violations, 1);
    errno = EINVAL;
    return -1;
  }
  return madvise(addr, size, advice);
}

static void* pretend_remap(void* old_addr, size_t old_size, size_t new_size, int flags, void* new_addr) {
  atomic_fetch_add(&calls, 1);
  if (!aligned(old_addr, old_size) || new_size % pretend != 0 || (uintptr_t)new_addr % pretend != 0) {
    atomic_fetch_add(&violations, 1);
    errno = EINVAL;
    return MAP_FAILED;
  }
  return mremap(old_addr, old_size, new_size, flags, new_addr);
}

static hak_os_ops_t pretend_ops = {pretend_map, pretend_unmap, pretend_advise, pretend_remap, 0, NULL}; /* NULL: mprotect */

void hak_probe_pretend_page_size(size_t page) {
  pretend = page;
  pretend_ops.page_size = page;
  hak_os_set_ops(&pretend_ops);
}

size_t hak_probe_page_violations(void) { return atomic_load(&violations); }
size_t hak_probe_page_calls(void) { return atomic_load(&calls); }
