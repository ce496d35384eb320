/* SPDX-License-Identifier: MIT */
/* os_probe.c - fakes for hakmem's OS layer (hak_os_set_ops) and direct access to
 * hak_os.c, as plain C functions for os_layer_test.cc (hak_internal.h is C11 and cannot
 * be included from C++).
 *
 * Every fake counts its calls. Modes:
 *   COUNTING      map/unmap/advise go to the kernel unchanged
 *   FAIL_MAP      map fails (MAP_FAILED, errno ENOMEM); unmap/advise go to the kernel
 *   IGNORE_HINT   map ignores the address hint, forcing hak_os_map_aligned's over-map
 *                 and trim path
 *   FAIL_UNMAP    unmap fails (ENOMEM, as when vm.max_map_count forbids splitting a
 *                 mapping) and leaves the mapping; map/advise are real
 *   FAIL_UNMAP_EINVAL  the same with EINVAL: hakmem's own view of its mappings is
 *                 wrong (fatal in the hardened variant)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <sys/mman.h>

#include "hakmem/hak_internal.h"

enum {
  HAK_PROBE_COUNTING = 0,
  HAK_PROBE_FAIL_MAP = 1,
  HAK_PROBE_IGNORE_HINT = 2,
  HAK_PROBE_FAIL_UNMAP = 3,
  HAK_PROBE_FAIL_UNMAP_EINVAL = 4
};

static _Atomic int probe_mode;
static _Atomic size_t probe_map_calls, probe_unmap_calls, probe_advise_calls;
static _Atomic size_t probe_map_hinted; /* map calls that carried a non-NULL hint */

static void* probe_map(void* hint, size_t size, int flags) {
  atomic_fetch_add(&probe_map_calls, 1);
  if (hint != NULL && !(flags & HAK_OS_MAP_FIXED)) atomic_fetch_add(&probe_map_hinted, 1);
  int mode = atomic_load(&probe_mode);
  if (mode == HAK_PROBE_FAIL_MAP) {
    errno = ENOMEM;
    return MAP_FAILED;
  }
  if (mode == HAK_PROBE_IGNORE_HINT && !(flags & HAK_OS_MAP_FIXED)) hint = NULL;
  int mflags = MAP_PRIVATE | MAP_ANONYMOUS;
  if (flags & HAK_OS_MAP_NORESERVE) mflags |= MAP_NORESERVE;
  if (flags & HAK_OS_MAP_FIXED) mflags |= MAP_FIXED;
  return mmap(hint, size, PROT_READ | PROT_WRITE, mflags, -1, 0);
}

static int probe_unmap(void* addr, size_t size) {
  atomic_fetch_add(&probe_unmap_calls, 1);
  int mode = atomic_load(&probe_mode);
  if (mode == HAK_PROBE_FAIL_UNMAP || mode == HAK_PROBE_FAIL_UNMAP_EINVAL) {
    errno = mode == HAK_PROBE_FAIL_UNMAP ? ENOMEM : EINVAL;
    return -1;
  }
  return munmap(addr, size);
}

static int probe_advise(void* addr, size_t size, int advice) {
  atomic_fetch_add(&probe_advise_calls, 1);
  return madvise(addr, size, advice);
}

static _Atomic size_t probe_remap_calls;

static void* probe_remap(void* old_addr, size_t old_size, size_t new_size, int flags, void* new_addr) {
  atomic_fetch_add(&probe_remap_calls, 1);
  return mremap(old_addr, old_size, new_size, flags, new_addr);
}

static _Atomic size_t probe_protect_calls;

static int probe_protect(void* addr, size_t size, int prot) {
  atomic_fetch_add(&probe_protect_calls, 1);
  return mprotect(addr, size, prot);
}

static const hak_os_ops_t probe_ops = {
    .map = probe_map, .unmap = probe_unmap, .advise = probe_advise, .remap = probe_remap, .protect = probe_protect};

int hak_probe_mode_counting(void) { return HAK_PROBE_COUNTING; }
int hak_probe_mode_fail_map(void) { return HAK_PROBE_FAIL_MAP; }
int hak_probe_mode_ignore_hint(void) { return HAK_PROBE_IGNORE_HINT; }
int hak_probe_mode_fail_unmap(void) { return HAK_PROBE_FAIL_UNMAP; }
int hak_probe_mode_fail_unmap_einval(void) { return HAK_PROBE_FAIL_UNMAP_EINVAL; }

/* Installs the fake ops in the given mode and zeroes the call counters. */
void hak_probe_os_install(int mode) {
  atomic_store(&probe_mode, mode);
  atomic_store(&probe_map_calls, 0);
  atomic_store(&probe_unmap_calls, 0);
  atomic_store(&probe_advise_calls, 0);
  atomic_store(&probe_map_hinted, 0);
  atomic_store(&probe_remap_calls, 0);
  atomic_store(&probe_protect_calls, 0);
  hak_os_set_ops(&probe_ops);
}

/* Back to the kernel's primitives. */
void hak_probe_os_restore(void) { hak_os_set_ops(NULL); }

size_t hak_probe_os_map_calls(void) { return atomic_load(&probe_map_calls); }
size_t hak_probe_os_unmap_calls(void) { return atomic_load(&probe_unmap_calls); }
size_t hak_probe_os_advise_calls(void) { return atomic_load(&probe_advise_calls); }
size_t hak_probe_os_map_hinted(void) { return atomic_load(&probe_map_hinted); }
size_t hak_probe_os_remap_calls(void) { return atomic_load(&probe_remap_calls); }
size_t hak_probe_os_protect_calls(void) { return atomic_load(&probe_protect_calls); }

/* Direct calls into hak_os.c. */
void* hak_probe_os_map_aligned(size_t size, size_t align, size_t align_offset) {
  return hak_os_map_aligned(size, align, align_offset, HAK_OS_MAP_NORESERVE, HAK_OS_USER_META);
}
void hak_probe_os_unmap(void* addr, size_t size) { hak_os_unmap(addr, size, HAK_OS_USER_META); }
int hak_probe_os_purge(void* addr, size_t size) { return hak_os_purge(addr, size, HAK_OS_USER_PURGE); }
int hak_probe_os_can_back(size_t size) { return hak_os_can_back(size); }

size_t hak_probe_segment_size(void) { return HAK_SEGMENT_SIZE; }
size_t hak_probe_chunk_size(void) { return HAK_CHUNK_SIZE; }
size_t hak_probe_big_max(void) { return HAK_BIG_MAX; }
size_t hak_probe_pool_max(void) { return HAK_POOL_MAX; }
size_t hak_probe_os_page_size(void) { return hak_os_page_size(); }
size_t hak_probe_class_huge(void) { return HAK_CLASS_HUGE; }
size_t hak_probe_class_of(size_t size) { return hak_size_class(size); }

/* A whale (a run of units, or a mapping of its own): its run's bytes, whether it has a
 * mapping of its own. A big block is a page of a pool segment. */
int hak_probe_is_whale(const void* p) { return hak_segment_of(p)->kind == HAK_SEGMENT_HUGE; }
size_t hak_probe_whale_mapping_size(const void* p) { return hak_segment_of(p)->mapping_size; }
int hak_probe_whale_is_dedicated(const void* p) { return hak_segment_of(p)->is_dedicated; }
int hak_probe_is_big(const void* p) {
  hak_segment_t* s = hak_segment_of(p);
  return s->kind == HAK_SEGMENT_POOL && hak_segment_page_of(s, p)->class_index == HAK_CLASS_HUGE;
}
