/* hak_internal.h - types shared by hakmem's components, and their internal functions
 * grouped by the file that owns them.
 *
 * Glossary
 *   block    what malloc returns; a slot of a page. A free block's first word links it
 *            into a free list; nothing else is stored in or in front of user data.
 *   page     a run of equal-sized blocks of one size class, owned by one heap. Its
 *            descriptor lives in the segment header, out of line.
 *   segment  4 MiB, 4 MiB-aligned memory from the OS layer: a header (page descriptors)
 *            followed by pages (64 small pages of 64 KiB, or 8 medium ones of 512 KiB).
 *            A "huge" segment holds one large block and may be bigger than 4 MiB.
 *   heap     per-thread state: the current page of each class and the pages it owns.
 *            Only its thread touches it, except for the atomic delayed-free list.
 */
#ifndef HAK_INTERNAL_H
#define HAK_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hak_config.h"
#include "hakmem.h"

typedef struct hak_block_s {
  struct hak_block_s* next;
} hak_block_t;

typedef struct hak_heap_s hak_heap_t;
typedef struct hak_segment_s hak_segment_t;

/* Delayed-free state, kept in the low bits of page->xthread_free. A remote free onto a
 * page the owner is not allocating from (in its full queue, or queued behind the
 * current page after leaving it, or adopted) must wake the owner, so it goes onto the
 * heap's delayed list instead (HAK_DELAYED_USE); otherwise an owner that stopped using
 * a class would never notice its pages emptying. HAK_DELAYED_FREEING marks a remote
 * thread in the middle of that hand-off, during which the owner may not change the
 * state, drop the page or the heap. The owner switches a page to HAK_DELAYED_NONE when
 * it makes it the page it allocates from. Abandoned pages never use the heap
 * (HAK_DELAYED_NEVER). */
typedef enum hak_delayed_e {
  HAK_DELAYED_NONE = 0,
  HAK_DELAYED_USE = 1,
  HAK_DELAYED_FREEING = 2,
  HAK_DELAYED_NEVER = 3,
} hak_delayed_t;

typedef struct hak_page_s {
  /* Fast-path fields first: allocation pops `free`, local free pushes it. */
  hak_block_t* free;             /* blocks ready to hand out (owner only) */
  uint32_t used;                 /* blocks handed out, remote-freed ones included */
  uint32_t block_size;
  uint8_t in_full;               /* in the heap's full queue (owner only) */
  uint8_t class_index;
  uint8_t in_use;                /* assigned to a size class (segment-level) */
  uint8_t page_index;
  uint16_t capacity;             /* blocks carved into the free list so far */
  uint16_t reserved;             /* blocks that fit in the page */
  _Atomic(uintptr_t) xthread_free; /* remote frees | hak_delayed_t in the low 2 bits */
  _Atomic(hak_heap_t*) xheap;    /* owner heap, read by remote frees in HAK_DELAYED_USE */
  uint8_t* start;                /* first block */
  struct hak_page_s* next;       /* in the owner heap's class queue or full queue */
  struct hak_page_s* prev;
} hak_page_t;

typedef enum hak_segment_kind_e {
  HAK_SEGMENT_SMALL = 0,  /* 64 KiB pages, blocks <= HAK_SMALL_PAGE_BLOCK_MAX */
  HAK_SEGMENT_MEDIUM = 1, /* 512 KiB pages, blocks <= HAK_MID_MAX */
  HAK_SEGMENT_HUGE = 2,   /* one block, its own mapping */
  HAK_SEGMENT_KINDS = 2,  /* kinds that hold pages of blocks */
} hak_segment_kind_t;

struct hak_segment_s {
  _Atomic(uintptr_t) thread_id;  /* owning thread; 0 when abandoned and for huge */
  size_t page_shift;             /* page index = (p - segment) >> page_shift */
  uintptr_t cookie;              /* segment address ^ process secret: a validity check */
  hak_segment_kind_t kind;
  size_t mapping_size;           /* bytes mapped from the segment start */
  size_t header_size;            /* bytes of header, rounded up to HAK_OS_PAGE_SIZE */
  hak_heap_t* heap;              /* owner heap (NULL when abandoned) */
  uint64_t free_pages;           /* bitmap of pages not in use */
  uint32_t page_count;
  uint32_t used_pages;
  struct hak_segment_s* next;    /* in the owner heap's segment list, or a global list */
  struct hak_segment_s* prev;
  bool in_free_list;             /* heap list: has free pages (else the full list) */
  bool mapping_is_zero;          /* huge: memory never written since the OS gave it */
  hak_page_t pages[HAK_SEGMENT_PAGES_MAX]; /* huge segments use (and map) only pages[0] */
#if HAK_HARDENED
  /* One bit per block of each page, set while the block is handed out. Last, so that
   * huge segments need not map it. */
  _Atomic(uint64_t) live[HAK_SEGMENT_PAGES_MAX][HAK_SEGMENT_PAGES_MAX];
#endif
};

typedef struct hak_page_queue_s {
  hak_page_t* first; /* the current page: allocations come from here */
  hak_page_t* last;
} hak_page_queue_t;

typedef struct hak_segment_list_s {
  hak_segment_t* first;
} hak_segment_list_t;

#if HAK_STATS
/* Per-thread counters; written only by their thread, read by reports. */
typedef struct hak_heap_stats_s {
  uint64_t class_allocs[HAK_STATS_CLASS_COUNT];
  uint64_t class_frees[HAK_STATS_CLASS_COUNT];
  uint64_t alloc_fast, alloc_slow, alloc_large;
  uint64_t free_local, free_remote, free_delayed, free_large;
  uint64_t pages_allocated, pages_freed;
} hak_heap_stats_t;
#endif

struct hak_heap_s {
  hak_page_t* direct[HAK_TINY_DIRECT_COUNT]; /* (size+15)/16 -> current page, tiny sizes */
  hak_page_t* current[HAK_CLASS_COUNT];      /* first page of each queue, or the empty page */
  uintptr_t thread_id;
  _Atomic(hak_block_t*) thread_delayed_free; /* remote frees onto full pages */
  hak_page_queue_t queues[HAK_CLASS_COUNT];  /* pages with (possibly) free blocks */
  hak_page_queue_t full;                     /* pages with none, woken by delayed frees */
  hak_segment_list_t segments_free[HAK_SEGMENT_KINDS]; /* owned, with free pages */
  hak_segment_list_t segments_full[HAK_SEGMENT_KINDS]; /* owned, every page in use */
  hak_heap_t* next_in_pool;                  /* global list of heaps (live and idle) */
  bool live;
#if HAK_STATS
  hak_heap_stats_t stats;
#endif
};

/* ---- Free blocks ------------------------------------------------------------------
 * Under AddressSanitizer, memory hakmem holds (freed blocks, blocks not yet handed out)
 * is poisoned, so a use after free inside our pools is reported, not hidden. The link
 * word is unpoisoned only for the instant hakmem itself reads or writes it. Without
 * ASan all of this compiles to plain loads and stores. */
#if HAK_ASAN
#include <sanitizer/asan_interface.h>
#define hak_asan_poison(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define hak_asan_unpoison(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define hak_asan_poison(p, n) ((void)(p), (void)(n))
#define hak_asan_unpoison(p, n) ((void)(p), (void)(n))
#endif

HAK_INLINE hak_block_t* hak_block_next(hak_block_t* block) {
  hak_asan_unpoison(block, sizeof(hak_block_t));
  hak_block_t* next = block->next;
  hak_asan_poison(block, sizeof(hak_block_t));
  return next;
}

HAK_INLINE void hak_block_set_next(hak_block_t* block, hak_block_t* next) {
  hak_asan_unpoison(block, sizeof(hak_block_t));
  block->next = next;
  hak_asan_poison(block, sizeof(hak_block_t));
}

/* ---- Small shared helpers ------------------------------------------------ */

HAK_INLINE uintptr_t hak_thread_id(void) {
#if defined(__x86_64__)
  uintptr_t tid;
  __asm__("movq %%fs:0, %0" : "=r"(tid));
  return tid;
#elif defined(__aarch64__)
  uintptr_t tid;
  __asm__ volatile("mrs %0, tpidr_el0" : "=r"(tid));
  return tid;
#else
  static __thread int hak_tid_anchor;
  return (uintptr_t)&hak_tid_anchor;
#endif
}

HAK_INLINE size_t hak_align_up(size_t n, size_t align) {
  return (n + align - 1) & ~(align - 1);
}

HAK_INLINE bool hak_is_power_of_two(size_t n) {
  return n != 0 && (n & (n - 1)) == 0;
}

/* The segment holding p. Subtracting one first maps a block that starts exactly at a
 * segment boundary (huge blocks with alignment >= 4 MiB) to the header before it. */
HAK_INLINE hak_segment_t* hak_segment_of(const void* p) {
  return (hak_segment_t*)(((uintptr_t)p - 1) & ~(uintptr_t)HAK_SEGMENT_MASK);
}

HAK_INLINE hak_page_t* hak_segment_page_of(hak_segment_t* segment, const void* p) {
  size_t index = ((uintptr_t)p - (uintptr_t)segment) >> segment->page_shift;
  return &segment->pages[index];
}

HAK_INLINE hak_block_t* hak_thread_free_ptr(uintptr_t tf) {
  return (hak_block_t*)(tf & ~(uintptr_t)3);
}

HAK_INLINE hak_delayed_t hak_thread_free_state(uintptr_t tf) {
  return (hak_delayed_t)(tf & 3);
}

/* Spin lock for the few global lists (short critical sections, no allocation inside);
 * fork handlers take every one of them. */
typedef struct hak_lock_s {
  atomic_flag flag;
} hak_lock_t;
#define HAK_LOCK_INIT {ATOMIC_FLAG_INIT}
void hak_lock(hak_lock_t* lock);
void hak_unlock(hak_lock_t* lock);

/* ---- hak_os.c: the only file that calls mmap, munmap or madvise ----------- */

/* Injectable primitives: tests swap in fakes; the default calls the kernel. */
typedef struct hak_os_ops_s {
  void* (*map)(void* hint, size_t size);           /* anonymous RW, MAP_FAILED on error */
  int (*unmap)(void* addr, size_t size);
  int (*advise)(void* addr, size_t size, int advice);
} hak_os_ops_t;

void hak_os_set_ops(const hak_os_ops_t* ops);      /* NULL restores the kernel's */
void* hak_os_map_aligned(size_t size, size_t align, size_t align_offset);
void hak_os_unmap(void* addr, size_t size);
void hak_os_purge(void* addr, size_t size);        /* give pages back, keep the mapping */
void hak_os_stats_read(hak_stats_t* out);

/* ---- hak_tiny.c / hak_mid.c: size classes ---------------------------------- */

extern const uint8_t hak_tiny_class_of_direct[HAK_TINY_DIRECT_COUNT];
size_t hak_class_block_size(size_t class_index);

/* Mid classes, HAK_TINY_MAX < size <= HAK_MID_MAX: size lies in (2^b, 2^(b+1)] with
 * b >= 10, split into eight classes of 2^(b-3) bytes each. Inline: it is on the fast
 * path of mid-size malloc. */
HAK_INLINE size_t hak_mid_class_of(size_t size) {
  size_t b = (size_t)(63 - __builtin_clzll((unsigned long long)(size - 1)));
  size_t step = (size - 1 - ((size_t)1 << b)) >> (b - 3); /* 0..7 */
  return 16 + (b - 8) * 8 + step;
}

HAK_INLINE size_t hak_size_class(size_t size) {
  if (size <= HAK_TINY_MAX) return hak_tiny_class_of_direct[(size + 15) >> 4];
  return hak_mid_class_of(size);
}

HAK_INLINE hak_segment_kind_t hak_class_segment_kind(size_t class_index) {
  return hak_class_block_size(class_index) <= HAK_SMALL_PAGE_BLOCK_MAX ? HAK_SEGMENT_SMALL
                                                                        : HAK_SEGMENT_MEDIUM;
}

/* ---- hak_page.c: carving and collecting one page ------------------------- */

extern hak_page_t hak_page_empty;
void hak_page_init(hak_page_t* page, hak_segment_t* segment, hak_heap_t* heap, size_t class_index);
void hak_page_extend(hak_page_t* page);
void hak_page_collect_thread_free(hak_page_t* page);
void hak_page_set_delayed(hak_page_t* page, hak_delayed_t state);
bool hak_page_try_use_delayed(hak_page_t* page);
void hak_page_free_remote(hak_page_t* page, hak_block_t* block);

/* ---- hak_segment.c: segments, page hand-out, abandonment ------------------ */

hak_page_t* hak_segment_page_alloc(hak_heap_t* heap, hak_segment_kind_t kind);
void hak_segment_page_free(hak_heap_t* heap, hak_page_t* page);
void hak_segment_abandon(hak_heap_t* heap, hak_segment_t* segment);
hak_segment_t* hak_segment_abandoned_pop(void);
bool hak_segment_adopt_one(hak_heap_t* heap);
hak_segment_t* hak_segment_huge_alloc(size_t size, size_t align);
void hak_segment_huge_free(hak_segment_t* segment);
bool hak_segment_huge_shrink(hak_segment_t* segment, size_t new_usable);
size_t hak_segment_huge_usable(const hak_segment_t* segment, const void* p);
void hak_segment_fork_lock(void);
void hak_segment_fork_unlock(void);
uint64_t hak_segment_live_count(void);
bool hak_segment_map_contains(const void* p);     /* hardened: is this one of ours? */

/* ---- hak_heap.c: thread heaps and the allocation slow path ---------------- */

extern hak_heap_t hak_heap_empty;
extern __thread hak_heap_t* hak_heap_tls __attribute__((tls_model("initial-exec")));
void* hak_heap_malloc_generic(hak_heap_t* heap, size_t size);
void hak_heap_free_generic(hak_segment_t* segment, hak_page_t* page, hak_block_t* block);
void hak_heap_local_free_slow(hak_page_t* page);
void hak_heap_page_retire(hak_heap_t* heap, hak_page_t* page);
void hak_heap_page_unfull(hak_heap_t* heap, hak_page_t* page);
void hak_heap_page_adopt_full(hak_heap_t* heap, hak_page_t* page);
void hak_heap_page_queue_push(hak_heap_t* heap, hak_page_t* page);
void hak_heap_thread_done(hak_heap_t* heap);
void hak_heap_fork_lock(void);
void hak_heap_fork_unlock(void);
void hak_heap_fork_child(void); /* repairs what threads absent in the child left midway */
typedef void hak_heap_visit_fn(const hak_heap_t* heap, void* arg);
void hak_heap_visit_all(hak_heap_visit_fn* fn, void* arg);

HAK_INLINE hak_heap_t* hak_heap_get(void) {
  return hak_heap_tls;
}

/* ---- hak_large.c: blocks above HAK_MID_MAX and big alignments ------------- */

void* hak_large_alloc(hak_heap_t* heap, size_t size, size_t align);
void hak_large_free(hak_segment_t* segment);

/* ---- hak_init.c: process set-up, fork and thread-exit hooks --------------- */

void hak_process_init(void);
void hak_thread_register(hak_heap_t* heap); /* arrange hak_heap_thread_done at exit */
extern uintptr_t hak_process_secret;

/* ---- hak_stats.c ------------------------------------------------------------ */

#if HAK_STATS
#define hak_stat_inc(heap, field) \
  __atomic_store_n(&(heap)->stats.field, __atomic_load_n(&(heap)->stats.field, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED)
#define hak_stat_class_inc(heap, field, cls) hak_stat_inc(heap, field[cls])
/* For paths that may run on a thread without a heap of its own (the shared empty
 * heap must not be written): count globally then. */
#define hak_stat_inc_any(heap, field)                                    \
  do {                                                                   \
    if ((heap) != &hak_heap_empty) hak_stat_inc(heap, field);            \
    else hak_stats_count_global(offsetof(hak_stats_t, field));           \
  } while (0)
#define hak_stat_global_inc(field) hak_stats_count_global(offsetof(hak_stats_t, field))
#else
#define hak_stat_inc_any(heap, field) ((void)0)
#define hak_stat_global_inc(field) ((void)0)
#define hak_stat_inc(heap, field) ((void)0)
#define hak_stat_class_inc(heap, field, cls) ((void)0)
#endif
void hak_stats_global_add(const hak_heap_t* heap); /* fold an exiting heap's counters */
void hak_stats_count_global(size_t field_offset);  /* counters with no heap at hand */
void hak_stats_atexit(void);

/* ---- hak_hardening.c --------------------------------------------------------- */

typedef enum hak_fault_e {
  HAK_FAULT_DOUBLE_FREE,
  HAK_FAULT_INVALID_FREE,
  HAK_FAULT_INVALID_REALLOC,
  HAK_FAULT_INVALID_USABLE_SIZE,
} hak_fault_t;

HAK_COLD __attribute__((noreturn)) void hak_fault(hak_fault_t fault, const void* p);
#if HAK_HARDENED
void hak_hardening_on_alloc(hak_page_t* page, const void* block);
void hak_hardening_check_owned(const void* p, hak_fault_t fault_if_not);
void hak_hardening_on_free(const void* p);
void hak_hardening_on_segment_release(const hak_segment_t* segment);
#else
#define hak_hardening_on_alloc(page, block) ((void)0)
#define hak_hardening_check_owned(p, fault) ((void)0)
#define hak_hardening_on_free(p) ((void)0)
#define hak_hardening_on_segment_release(segment) ((void)0)
#endif

#endif /* HAK_INTERNAL_H */
