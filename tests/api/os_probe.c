/* os_probe.c - fakes for hakmem's OS layer (hak_os_set_ops) and direct access to
 * hak_os.c, as plain C functions for os_layer_test.cc (hak_internal.h is C11 and cannot
 * be included from C++).
 *
 * Every fake counts its calls. Modes:
 *   COUNTING      map/unmap/advise go to the kernel unchanged
 *   FAIL_MAP      map fails (MAP_FAILED, errno ENOMEM); unmap/advise go to the kernel
 *   IGNORE_HINT   map ignores the address hint, forcing hak_os_map_aligned's over-map
 *                 and trim path
 *   FAIL_UNMAP    unmap fails (EINVAL) and leaves the mapping; map/advise are real
 */
#include <errno.h>
#include <stdatomic.h>
#include <sys/mman.h>

#include "hakmem/hak_internal.h"

enum { HAK_PROBE_COUNTING = 0, HAK_PROBE_FAIL_MAP = 1, HAK_PROBE_IGNORE_HINT = 2, HAK_PROBE_FAIL_UNMAP = 3 };

static _Atomic int probe_mode;
static _Atomic size_t probe_map_calls, probe_unmap_calls, probe_advise_calls;
static _Atomic size_t probe_map_hinted; /* map calls that carried a non-NULL hint */

static void* probe_map(void* hint, size_t size) {
  atomic_fetch_add(&probe_map_calls, 1);
  if (hint != NULL) atomic_fetch_add(&probe_map_hinted, 1);
  int mode = atomic_load(&probe_mode);
  if (mode == HAK_PROBE_FAIL_MAP) {
    errno = ENOMEM;
    return MAP_FAILED;
  }
  if (mode == HAK_PROBE_IGNORE_HINT) hint = NULL;
  return mmap(hint, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
}

static int probe_unmap(void* addr, size_t size) {
  atomic_fetch_add(&probe_unmap_calls, 1);
  if (atomic_load(&probe_mode) == HAK_PROBE_FAIL_UNMAP) {
    errno = EINVAL;
    return -1;
  }
  return munmap(addr, size);
}

static int probe_advise(void* addr, size_t size, int advice) {
  atomic_fetch_add(&probe_advise_calls, 1);
  return madvise(addr, size, advice);
}

static const hak_os_ops_t probe_ops = {.map = probe_map, .unmap = probe_unmap, .advise = probe_advise};

int hak_probe_mode_counting(void) { return HAK_PROBE_COUNTING; }
int hak_probe_mode_fail_map(void) { return HAK_PROBE_FAIL_MAP; }
int hak_probe_mode_ignore_hint(void) { return HAK_PROBE_IGNORE_HINT; }
int hak_probe_mode_fail_unmap(void) { return HAK_PROBE_FAIL_UNMAP; }

/* Installs the fake ops in the given mode and zeroes the call counters. */
void hak_probe_os_install(int mode) {
  atomic_store(&probe_mode, mode);
  atomic_store(&probe_map_calls, 0);
  atomic_store(&probe_unmap_calls, 0);
  atomic_store(&probe_advise_calls, 0);
  atomic_store(&probe_map_hinted, 0);
  hak_os_set_ops(&probe_ops);
}

/* Back to the kernel's primitives. */
void hak_probe_os_restore(void) { hak_os_set_ops(NULL); }

size_t hak_probe_os_map_calls(void) { return atomic_load(&probe_map_calls); }
size_t hak_probe_os_unmap_calls(void) { return atomic_load(&probe_unmap_calls); }
size_t hak_probe_os_advise_calls(void) { return atomic_load(&probe_advise_calls); }
size_t hak_probe_os_map_hinted(void) { return atomic_load(&probe_map_hinted); }

/* Direct calls into hak_os.c. */
void* hak_probe_os_map_aligned(size_t size, size_t align, size_t align_offset) {
  return hak_os_map_aligned(size, align, align_offset);
}
void hak_probe_os_unmap(void* addr, size_t size) { hak_os_unmap(addr, size); }
void hak_probe_os_purge(void* addr, size_t size) { hak_os_purge(addr, size); }

size_t hak_probe_segment_size(void) { return HAK_SEGMENT_SIZE; }
size_t hak_probe_segment_cache_max(void) { return HAK_SEGMENT_CACHE_MAX; }
size_t hak_probe_os_page_size(void) { return HAK_OS_PAGE_SIZE; }
size_t hak_probe_class_huge(void) { return HAK_CLASS_HUGE; }
size_t hak_probe_class_of(size_t size) { return hak_size_class(size); }

/* The huge segment of a block > 64 KiB: its mapping size and block offset. */
size_t hak_probe_huge_mapping_size(const void* p) { return hak_segment_of(p)->mapping_size; }
int hak_probe_is_huge(const void* p) { return hak_segment_of(p)->kind == HAK_SEGMENT_HUGE; }
