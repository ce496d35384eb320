/* SPDX-License-Identifier: MIT */
/* hak_os.c - the OS layer: every mmap, munmap, mremap, madvise and mprotect of hakmem
 * goes through here, where it is counted and timed per caller. The primitives are
 * injectable (hak_os_set_ops) so tests can fake failures or observe calls without the
 * kernel. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

#include "hak_internal.h"

typedef struct hak_os_counter_s {
  _Atomic uint64_t count, failures, nanos;
} hak_os_counter_t;

static hak_os_counter_t hak_os_calls[HAK_STATS_OS_USERS][HAK_STATS_OS_KINDS];
static _Atomic uint64_t hak_os_mapped_bytes;
static size_t hak_os_kernel_page = HAK_OS_PAGE_SIZE; /* AT_PAGESZ, read at init */

/* ---- Sleeping locks: the futex behind hak_lock (not counted: not memory calls) ---- */

void hak_os_wait(_Atomic uint32_t* word, uint32_t value) {
  int saved_errno = errno;
  syscall(SYS_futex, (uint32_t*)word, FUTEX_WAIT_PRIVATE, value, NULL, NULL, 0);
  errno = saved_errno;
}

void hak_os_wake_one(_Atomic uint32_t* word) {
  int saved_errno = errno;
  syscall(SYS_futex, (uint32_t*)word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
  errno = saved_errno;
}

void hak_os_yield(void) {
  int saved_errno = errno;
  sched_yield();
  errno = saved_errno;
}

/* ---- The kernel's primitives ----------------------------------------------------- */

static void* hak_os_kernel_map(void* addr, size_t size, int flags) {
  int mflags = MAP_PRIVATE | MAP_ANONYMOUS;
  if (flags & HAK_OS_MAP_NORESERVE) mflags |= MAP_NORESERVE;
  if (flags & HAK_OS_MAP_FIXED) mflags |= MAP_FIXED;
  return mmap(addr, size, (flags & HAK_OS_MAP_NOACCESS) ? PROT_NONE : PROT_READ | PROT_WRITE, mflags, -1, 0);
}

static int hak_os_kernel_unmap(void* addr, size_t size) {
  return munmap(addr, size);
}

static int hak_os_kernel_advise(void* addr, size_t size, int advice) {
  return madvise(addr, size, advice);
}

static void* hak_os_kernel_remap(void* old_addr, size_t old_size, size_t new_size, int flags, void* new_addr) {
  return mremap(old_addr, old_size, new_size, flags, new_addr);
}

static int hak_os_kernel_protect(void* addr, size_t size, int prot) {
  return mprotect(addr, size, prot);
}

static const hak_os_ops_t hak_os_kernel_ops = {.map = hak_os_kernel_map,
                                               .unmap = hak_os_kernel_unmap,
                                               .advise = hak_os_kernel_advise,
                                               .remap = hak_os_kernel_remap,
                                               .protect = hak_os_kernel_protect};
static const hak_os_ops_t* _Atomic hak_os_ops = &hak_os_kernel_ops;

void hak_os_set_ops(const hak_os_ops_t* ops) {
  atomic_store(&hak_os_ops, ops != NULL ? ops : &hak_os_kernel_ops);
}

static const hak_os_ops_t* hak_os_current(void) {
  return atomic_load_explicit(&hak_os_ops, memory_order_relaxed);
}

/* ---- Counting ---------------------------------------------------------------------- */

static uint64_t hak_os_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void hak_os_count(hak_os_user_t user, int kind, uint64_t start_ns, bool failed) {
  hak_os_counter_t* c = &hak_os_calls[user][kind];
  atomic_fetch_add_explicit(&c->count, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&c->nanos, hak_os_now_ns() - start_ns, memory_order_relaxed);
  if (failed) atomic_fetch_add_explicit(&c->failures, 1, memory_order_relaxed);
}

static _Atomic uint64_t hak_os_meta_mapped_bytes; /* of which HAK_OS_USER_META's */

static void hak_os_mapped_add(size_t size) {
  atomic_fetch_add_explicit(&hak_os_mapped_bytes, size, memory_order_relaxed);
}

static void hak_os_mapped_sub(size_t size) {
  atomic_fetch_sub_explicit(&hak_os_mapped_bytes, size, memory_order_relaxed);
}

/* ---- Set-up: page size and the randomised placement of chunks --------------------- */

/* Large aligned mappings are first tried at hinted addresses in a window of their own:
 * an aligned hint usually yields an aligned mapping in one call. The window's start is
 * random per process (address-space layout randomisation for the heap). Not under
 * TSan, whose application memory lies in fixed ranges. */
#if HAK_TSAN || !defined(__x86_64__)
#define HAK_OS_HINTS 0
#else
#define HAK_OS_HINTS 1
#endif
#define HAK_OS_HINT_BASE ((uintptr_t)32 << 40)  /* 32 TiB: above ASan's shadow */
#define HAK_OS_HINT_SPREAD ((uintptr_t)16 << 40) /* random start within 16 TiB */
#define HAK_OS_HINT_END ((uintptr_t)96 << 40)

static _Atomic uintptr_t hak_os_hint_start = HAK_OS_HINT_BASE;
static _Atomic uintptr_t hak_os_hint_next = HAK_OS_HINT_BASE;

void hak_os_init(void) {
  unsigned long page = getauxval(AT_PAGESZ);
  if (page >= HAK_OS_PAGE_SIZE && hak_is_power_of_two(page) && page <= HAK_SLICE_SIZE) hak_os_kernel_page = page;
  uintptr_t offset = (hak_process_secret >> 7) % (HAK_OS_HINT_SPREAD >> HAK_CHUNK_SHIFT);
  uintptr_t start = HAK_OS_HINT_BASE + (offset << HAK_CHUNK_SHIFT);
  atomic_store_explicit(&hak_os_hint_start, start, memory_order_relaxed);
  atomic_store_explicit(&hak_os_hint_next, start, memory_order_relaxed);
}

/* The page every purge, trim and mapping size is rounded to: the kernel's, or what
 * injected ops pretend (a 16 KiB or 64 KiB page kernel, for tests). */
size_t hak_os_page_size(void) {
  size_t pretend = hak_os_current()->page_size;
  return pretend != 0 ? pretend : hak_os_kernel_page;
}

/* The next hint: a bump pointer through the window, wrapping to its start once (space
 * freed by unmapped chunks is found again that way). */
static void* hak_os_hint(size_t size, size_t align, size_t align_offset) {
  if (!HAK_OS_HINTS || align_offset != 0 || align < HAK_SEGMENT_SIZE || align > HAK_CHUNK_SIZE) return NULL;
  size_t span = hak_align_up(size, HAK_CHUNK_SIZE);
  uintptr_t hint = atomic_fetch_add_explicit(&hak_os_hint_next, span, memory_order_relaxed);
  if (hint + span > HAK_OS_HINT_END) {
    uintptr_t start = atomic_load_explicit(&hak_os_hint_start, memory_order_relaxed);
    atomic_store_explicit(&hak_os_hint_next, start + span, memory_order_relaxed);
    hint = start;
  }
  return (void*)hint;
}

/* Address space given back inside the window is the next place to try: reusing it
 * keeps the process's page tables (and a sanitizer's shadow) from spreading. */
static void hak_os_hint_released(void* addr) {
  uintptr_t a = (uintptr_t)addr;
  if (!HAK_OS_HINTS || a < HAK_OS_HINT_BASE || a >= HAK_OS_HINT_END || (a & (HAK_CHUNK_SIZE - 1)) != 0) return;
  uintptr_t cur = atomic_load_explicit(&hak_os_hint_next, memory_order_relaxed);
  while (a < cur && !atomic_compare_exchange_weak_explicit(&hak_os_hint_next, &cur, a, memory_order_relaxed,
                                                          memory_order_relaxed)) {
  }
}

/* After a hint missed, continue right behind where the kernel put the mapping. */
static void hak_os_hint_follow(void* p, size_t size) {
  uintptr_t next = hak_align_up((uintptr_t)p + size, HAK_CHUNK_SIZE);
  if (next >= HAK_OS_HINT_BASE && next < HAK_OS_HINT_END) {
    atomic_store_explicit(&hak_os_hint_next, next, memory_order_relaxed);
  }
}

/* Hardened level 2: a failed mmap, munmap or purge for any reason but a lack of memory
 * (ENOMEM: the machine's limits, which hakmem handles) means the address space is not
 * what hakmem believes it is, so it stops. */
#if HAK_HARDEN_INTEGRITY
static void hak_os_check(bool failed, const char* call) {
  if (!failed || errno == ENOMEM) return;
  char message[96];
  const char* prefix = "the OS refused ";
  size_t n = 0;
  for (const char* s = prefix; *s != '\0' && n < 60; s++) message[n++] = *s;
  for (const char* s = call; *s != '\0' && n < 80; s++) message[n++] = *s;
  const char* middle = ", errno ";
  for (const char* s = middle; *s != '\0' && n < 88; s++) message[n++] = *s;
  int e = errno;
  char digits[8];
  int d = 0;
  do {
    digits[d++] = (char)('0' + e % 10);
    e /= 10;
  } while (e > 0 && d < 7);
  while (d > 0 && n < sizeof(message) - 1) message[n++] = digits[--d];
  message[n] = '\0';
  hak_fault_message(message);
}
#else
#define hak_os_check(failed, call) ((void)(failed), (void)(call))
#endif

/* ---- Mapping -------------------------------------------------------------------------- */

static void* hak_os_map(void* addr, size_t size, int flags, hak_os_user_t user) {
  uint64_t t0 = hak_os_now_ns();
  void* p = hak_os_current()->map(addr, size, flags);
  hak_os_count(user, HAK_STATS_OS_MMAP, t0, p == MAP_FAILED);
  hak_os_check(p == MAP_FAILED, "mmap");
  if (p == MAP_FAILED) return NULL;
  hak_os_mapped_add(size);
  if (user == HAK_OS_USER_META) atomic_fetch_add_explicit(&hak_os_meta_mapped_bytes, size, memory_order_relaxed);
  return p;
}

void hak_os_unmap(void* addr, size_t size, hak_os_user_t user) {
  if (addr == NULL || size == 0) return;
  hak_asan_unpoison(addr, size); /* whoever maps this range next must not inherit poison */
  int saved_errno = errno;
  uint64_t t0 = hak_os_now_ns();
  int rc = hak_os_current()->unmap(addr, size);
  hak_os_count(user, HAK_STATS_OS_MUNMAP, t0, rc != 0);
  hak_os_check(rc != 0, "munmap");
  if (rc == 0) {
    hak_os_mapped_sub(size);
    if (user == HAK_OS_USER_META) atomic_fetch_sub_explicit(&hak_os_meta_mapped_bytes, size, memory_order_relaxed);
    hak_os_hint_released(addr);
  } else {
    /* Refused (ENOMEM: splitting the mapping would pass vm.max_map_count): the address
     * space stays mapped, and counted so, but its memory goes back to the OS. */
    t0 = hak_os_now_ns();
    rc = hak_os_current()->advise(addr, size, MADV_DONTNEED);
    hak_os_count(user, HAK_STATS_OS_MADVISE, t0, rc != 0);
  }
  errno = saved_errno;
}

static bool hak_os_is_aligned_at(void* p, size_t align, size_t align_offset) {
  return (((uintptr_t)p + align_offset) & (align - 1)) == 0;
}

/* Maps `size` bytes at an address p with (p + align_offset) a multiple of `align`. */
void* hak_os_map_aligned(size_t size, size_t align, size_t align_offset, int flags, hak_os_user_t user) {
  int saved_errno = errno;
  size_t page = hak_os_page_size();
  size = hak_align_up(size, page);
  if (align < page) align = page;
  void* hint = hak_os_hint(size, align, align_offset);
  if (hint != NULL) {
    void* p = hak_os_map(hint, size, flags, user);
    if (p != NULL && hak_os_is_aligned_at(p, align, align_offset)) {
      errno = saved_errno;
      return p;
    }
    if (p != NULL) hak_os_hint_follow(p, size);
    hak_os_unmap(p, size, user);
  }
  /* Every mapping is page-aligned: no over-map, no trim (one call, not two). */
  if (align == page && (align_offset & (page - 1)) == 0) {
    void* p = hak_os_map(NULL, size, flags, user);
    errno = saved_errno;
    return p;
  }
  /* Over-map by the alignment, then trim both ends. */
  if (size + align < size) {
    errno = saved_errno;
    return NULL;
  }
  uint8_t* raw = hak_os_map(NULL, size + align, flags, user);
  if (raw == NULL) {
    errno = saved_errno;
    return NULL;
  }
  uintptr_t start = hak_align_up((uintptr_t)raw + align_offset, align) - align_offset;
  if (start < (uintptr_t)raw) start += align;
  size_t head = start - (uintptr_t)raw;
  size_t tail = align - head;
  hak_os_unmap(raw, head, user);
  hak_os_unmap((uint8_t*)start + size, tail, user);
  if (hint != NULL) hak_os_hint_follow((void*)start, size);
  errno = saved_errno;
  return (void*)start;
}

/* Reserves [addr, addr+size) again after mremap moved its pages away: fresh zero pages
 * in place of the hole, so the chunk stays one piece of address space. */
bool hak_os_map_fixed(void* addr, size_t size, hak_os_user_t user) {
  int saved_errno = errno;
  void* p = hak_os_map(addr, size, HAK_OS_MAP_NORESERVE | HAK_OS_MAP_FIXED, user);
  errno = saved_errno;
  return p == addr;
}

/* ---- Purge, huge-page advice and remap ---------------------------------------------------------------- */

bool hak_os_purge(void* addr, size_t size, hak_os_user_t user) {
  if (size == 0) return true;
  int saved_errno = errno;
  bool dontneed = hak_options.purge_mode == HAK_PURGE_DONTNEED;
  uint64_t t0 = hak_os_now_ns();
  int rc = hak_os_current()->advise(addr, size, dontneed ? MADV_DONTNEED : MADV_FREE);
  hak_os_count(user, HAK_STATS_OS_MADVISE, t0, rc != 0);
  if (rc != 0 && !dontneed) { /* MADV_FREE unsupported (old kernel): fall back */
    t0 = hak_os_now_ns();
    rc = hak_os_current()->advise(addr, size, MADV_DONTNEED);
    hak_os_count(user, HAK_STATS_OS_MADVISE, t0, rc != 0);
    dontneed = true;
  }
  if (dontneed) hak_os_check(rc != 0, "madvise(MADV_DONTNEED)");
  errno = saved_errno;
  return rc == 0 && dontneed;
}

bool hak_os_advise_thp(void* addr, size_t size, bool huge, hak_os_user_t user) {
  if (size == 0) return true;
  int saved_errno = errno;
  uint64_t t0 = hak_os_now_ns();
  int rc = hak_os_current()->advise(addr, size, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
  hak_os_count(user, HAK_STATS_OS_MADVISE, t0, rc != 0);
  errno = saved_errno;
  return rc == 0; /* fails (EINVAL) on kernels built without THP: nothing to avoid then */
}

static void* hak_os_remap(void* old_addr, size_t old_size, size_t new_size, int flags, void* new_addr,
                          hak_os_user_t user) {
  int saved_errno = errno;
  uint64_t t0 = hak_os_now_ns();
  void* p = hak_os_current()->remap(old_addr, old_size, new_size, flags, new_addr);
  hak_os_count(user, HAK_STATS_OS_MREMAP, t0, p == MAP_FAILED);
  errno = saved_errno;
  return p == MAP_FAILED ? NULL : p;
}

/* Moves the pages of [old_addr, +size) to new_addr (replacing what was mapped there),
 * without copying; old_addr is left unmapped. */
bool hak_os_move(void* old_addr, size_t size, void* new_addr, hak_os_user_t user) {
  void* p = hak_os_remap(old_addr, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, new_addr, user);
  if (p == NULL) return false;
  hak_os_mapped_sub(size); /* the hole at old_addr; new_addr was mapped already */
  return true;
}

/* Grows a mapping where it is, if the address space after it is free. */
bool hak_os_grow(void* addr, size_t old_size, size_t new_size, hak_os_user_t user) {
  if (hak_os_remap(addr, old_size, new_size, 0, NULL, user) == NULL) return false;
  hak_os_mapped_add(new_size - old_size);
  return true;
}

bool hak_os_shrink(void* addr, size_t old_size, size_t new_size, hak_os_user_t user) {
  if (hak_os_remap(addr, old_size, new_size, 0, NULL, user) == NULL) return false;
  hak_os_mapped_sub(old_size - new_size);
  return true;
}

/* ---- Can the machine back this? ------------------------------------------------------ */

/* Region chunks are reserved without commit charge, so the kernel's overcommit check
 * never sees a single request. Under the default heuristic policy (mode 0) the kernel
 * refuses one mapping larger than RAM + swap; hakmem does the same. Mode 1 (always)
 * allows anything; mode 2 (strict) is checked by the kernel on the dedicated mapping. */
static int hak_os_overcommit_mode(void) {
  int fd = open("/proc/sys/vm/overcommit_memory", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char c = '0';
  ssize_t n = read(fd, &c, 1);
  close(fd);
  return n == 1 && c >= '0' && c <= '2' ? c - '0' : 0;
}

bool hak_os_can_back(size_t size) {
  static _Atomic uint64_t limit; /* 0: not read yet; UINT64_MAX: no limit */
  uint64_t l = atomic_load_explicit(&limit, memory_order_relaxed);
  if (l == 0) {
    int saved_errno = errno;
    struct sysinfo si;
    l = UINT64_MAX;
    if (hak_os_overcommit_mode() == 0 && sysinfo(&si) == 0) {
      l = ((uint64_t)si.totalram + (uint64_t)si.totalswap) * (uint64_t)si.mem_unit;
    }
    atomic_store_explicit(&limit, l, memory_order_relaxed);
    errno = saved_errno;
  }
  return (uint64_t)size <= l;
}

bool hak_os_protect(void* addr, size_t size, bool accessible, hak_os_user_t user) {
  if (size == 0) return true;
  int saved_errno = errno;
  const hak_os_ops_t* ops = hak_os_current();
  int (*protect)(void*, size_t, int) = ops->protect != NULL ? ops->protect : hak_os_kernel_protect;
  uint64_t t0 = hak_os_now_ns();
  int rc = protect(addr, size, accessible ? PROT_READ | PROT_WRITE : PROT_NONE);
  hak_os_count(user, HAK_STATS_OS_MPROTECT, t0, rc != 0);
  hak_os_check(rc != 0, "mprotect");
  errno = saved_errno;
  return rc == 0;
}

/* Makes memory hakmem keeps inaccessible (hardened quarantine, guard pages) or
 * accessible again. A refused protection (ENOMEM: the mapping count) leaves it
 * accessible, only unguarded; a refused restore maps fresh pages over it (what it held
 * is garbage or nothing), else hakmem cannot use that memory and stops, naming `what`. */
void hak_os_guard(void* addr, size_t size, bool accessible, hak_os_user_t user, const char* what) {
  if (hak_os_protect(addr, size, accessible, user) || !accessible) return;
  if (!hak_os_map_fixed(addr, size, user)) hak_fault_message(what);
}

/* ---- Stats ------------------------------------------------------------------------------ */

static void hak_os_counter_add(const hak_os_counter_t* c, hak_os_call_stats_t* out) {
  out->count += atomic_load_explicit(&c->count, memory_order_relaxed);
  out->failures += atomic_load_explicit(&c->failures, memory_order_relaxed);
  out->nanos += atomic_load_explicit(&c->nanos, memory_order_relaxed);
}

/* The adaptive policy's measure of what OS calls cost (hak_policy.c): relaxed loads,
 * no lock. */
uint64_t hak_os_nanos_total(void) {
  uint64_t total = 0;
  for (int u = 0; u < HAK_STATS_OS_USERS; u++) {
    for (int k = 0; k < HAK_STATS_OS_KINDS; k++) {
      total += atomic_load_explicit(&hak_os_calls[u][k].nanos, memory_order_relaxed);
    }
  }
  return total;
}

void hak_os_stats_read(hak_stats_t* out) {
  hak_os_call_stats_t* totals[HAK_STATS_OS_KINDS] = {&out->os_mmap, &out->os_munmap, &out->os_madvise,
                                                     &out->os_mremap, &out->os_mprotect};
  for (int k = 0; k < HAK_STATS_OS_KINDS; k++) *totals[k] = (hak_os_call_stats_t){0, 0, 0};
  for (int u = 0; u < HAK_STATS_OS_USERS; u++) {
    for (int k = 0; k < HAK_STATS_OS_KINDS; k++) {
      out->os_by[u][k] = (hak_os_call_stats_t){0, 0, 0};
      hak_os_counter_add(&hak_os_calls[u][k], &out->os_by[u][k]);
      hak_os_counter_add(&hak_os_calls[u][k], totals[k]);
    }
  }
  out->os_mapped_bytes = atomic_load_explicit(&hak_os_mapped_bytes, memory_order_relaxed);
  out->os_meta_mapped_bytes = atomic_load_explicit(&hak_os_meta_mapped_bytes, memory_order_relaxed);
}
