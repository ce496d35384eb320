/* hak_os.c - the OS layer: every mmap, munmap and madvise of hakmem goes through here,
 * where it is counted and timed. The primitives are injectable (hak_os_set_ops) so tests
 * can fake failures or observe calls without touching the kernel. */
#include <errno.h>
#include <sys/mman.h>
#include <time.h>

#include "hak_internal.h"

typedef struct hak_os_counter_s {
  _Atomic uint64_t count, failures, nanos;
} hak_os_counter_t;

static hak_os_counter_t hak_os_mmap_calls, hak_os_munmap_calls, hak_os_madvise_calls;
static _Atomic uint64_t hak_os_mapped_bytes;

static void* hak_os_kernel_map(void* hint, size_t size) {
  return mmap(hint, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
}

static int hak_os_kernel_unmap(void* addr, size_t size) {
  return munmap(addr, size);
}

static int hak_os_kernel_advise(void* addr, size_t size, int advice) {
  return madvise(addr, size, advice);
}

static const hak_os_ops_t hak_os_kernel_ops = {
    .map = hak_os_kernel_map, .unmap = hak_os_kernel_unmap, .advise = hak_os_kernel_advise};
static const hak_os_ops_t* _Atomic hak_os_ops = &hak_os_kernel_ops;

void hak_os_set_ops(const hak_os_ops_t* ops) {
  atomic_store(&hak_os_ops, ops != NULL ? ops : &hak_os_kernel_ops);
}

static uint64_t hak_os_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void hak_os_count(hak_os_counter_t* c, uint64_t start_ns, bool failed) {
  atomic_fetch_add_explicit(&c->count, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&c->nanos, hak_os_now_ns() - start_ns, memory_order_relaxed);
  if (failed) atomic_fetch_add_explicit(&c->failures, 1, memory_order_relaxed);
}

static void* hak_os_map(void* hint, size_t size) {
  uint64_t t0 = hak_os_now_ns();
  void* p = atomic_load_explicit(&hak_os_ops, memory_order_relaxed)->map(hint, size);
  hak_os_count(&hak_os_mmap_calls, t0, p == MAP_FAILED);
  if (p == MAP_FAILED) return NULL;
  atomic_fetch_add_explicit(&hak_os_mapped_bytes, size, memory_order_relaxed);
  return p;
}

void hak_os_unmap(void* addr, size_t size) {
  if (addr == NULL || size == 0) return;
  hak_asan_unpoison(addr, size); /* whoever maps this range next must not inherit poison */
  int saved_errno = errno;
  uint64_t t0 = hak_os_now_ns();
  int rc = atomic_load_explicit(&hak_os_ops, memory_order_relaxed)->unmap(addr, size);
  hak_os_count(&hak_os_munmap_calls, t0, rc != 0);
  if (rc == 0) atomic_fetch_sub_explicit(&hak_os_mapped_bytes, size, memory_order_relaxed);
  errno = saved_errno;
}

void hak_os_purge(void* addr, size_t size) {
  if (size == 0) return;
  int saved_errno = errno;
  uint64_t t0 = hak_os_now_ns();
  int rc = atomic_load_explicit(&hak_os_ops, memory_order_relaxed)->advise(addr, size, MADV_DONTNEED);
  hak_os_count(&hak_os_madvise_calls, t0, rc != 0);
  errno = saved_errno;
}

/* Mappings are first tried at hinted addresses in a region of their own: an aligned hint
 * usually yields an aligned mapping in one call. Not under TSan, whose application
 * memory lies in fixed ranges. */
#if HAK_TSAN || !defined(__x86_64__)
#define HAK_OS_HINTS 0
#else
#define HAK_OS_HINTS 1
#endif
#define HAK_OS_HINT_BASE ((uintptr_t)32 << 40) /* 32 TiB, above ASan's shadow */
#define HAK_OS_HINT_END ((uintptr_t)96 << 40)

static _Atomic uintptr_t hak_os_hint_next = HAK_OS_HINT_BASE;

static void* hak_os_hint(size_t size, size_t align, size_t align_offset) {
  if (!HAK_OS_HINTS || align_offset != 0 || align > HAK_SEGMENT_SIZE) return NULL;
  size_t span = hak_align_up(size, HAK_SEGMENT_SIZE);
  uintptr_t hint = atomic_fetch_add_explicit(&hak_os_hint_next, span, memory_order_relaxed);
  if (hint + span > HAK_OS_HINT_END) return NULL;
  return (void*)hint;
}

static bool hak_os_is_aligned_at(void* p, size_t align, size_t align_offset) {
  return (((uintptr_t)p + align_offset) & (align - 1)) == 0;
}

/* Maps `size` bytes at an address p with (p + align_offset) a multiple of `align`. */
void* hak_os_map_aligned(size_t size, size_t align, size_t align_offset) {
  int saved_errno = errno;
  size = hak_align_up(size, HAK_OS_PAGE_SIZE);
  void* hint = hak_os_hint(size, align, align_offset);
  if (hint != NULL) {
    void* p = hak_os_map(hint, size);
    if (p != NULL && hak_os_is_aligned_at(p, align, align_offset)) return p;
    hak_os_unmap(p, size);
  }
  /* Over-map by the alignment, then trim both ends. */
  if (size + align < size) return NULL;
  uint8_t* raw = hak_os_map(NULL, size + align);
  if (raw == NULL) {
    errno = saved_errno;
    return NULL;
  }
  uintptr_t start = hak_align_up((uintptr_t)raw + align_offset, align) - align_offset;
  if (start < (uintptr_t)raw) start += align;
  size_t head = start - (uintptr_t)raw;
  size_t tail = align - head;
  hak_os_unmap(raw, head);
  hak_os_unmap((uint8_t*)start + size, tail);
  errno = saved_errno;
  return (void*)start;
}

static void hak_os_counter_read(hak_os_counter_t* c, hak_os_call_stats_t* out) {
  out->count = atomic_load_explicit(&c->count, memory_order_relaxed);
  out->failures = atomic_load_explicit(&c->failures, memory_order_relaxed);
  out->nanos = atomic_load_explicit(&c->nanos, memory_order_relaxed);
}

void hak_os_stats_read(hak_stats_t* out) {
  hak_os_counter_read(&hak_os_mmap_calls, &out->os_mmap);
  hak_os_counter_read(&hak_os_munmap_calls, &out->os_munmap);
  hak_os_counter_read(&hak_os_madvise_calls, &out->os_madvise);
  out->os_mapped_bytes = atomic_load_explicit(&hak_os_mapped_bytes, memory_order_relaxed);
}
