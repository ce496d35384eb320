/* SPDX-License-Identifier: MIT */
/* hak_internal.h - types shared by hakmem's components, and their internal functions
 * grouped by the file that owns them.
 *
 * Glossary
 *   block    what malloc returns; a slot of a page. A free block's first word links it
 *            into a free list; nothing else is stored in or in front of user data.
 *   page     a run of equal-sized blocks of one size class, owned by one heap: a span
 *            of slices of a segment. Its descriptor lives in the segment header.
 *   slice    64 KiB of a segment; pages and free spans are runs of slices.
 *   segment  one 4 MiB unit from the region, 4 MiB-aligned: a header (slice 0: page
 *            descriptors, slice map) followed by 63 slices of pages and free spans. A
 *            "huge" segment is a run of units holding one block larger than the pools.
 *   heap     per-thread state: the current page of each class, the pages it owns, the
 *            free spans of its segments. Only its thread touches it, except for the
 *            atomic delayed-free list.
 *   region   address space reserved in 256 MiB chunks, handed out in 4 MiB units;
 *            freed units stay mapped (the region cache) and are purged in batches.
 */
#ifndef HAK_INTERNAL_H
#define HAK_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

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
  uint8_t in_use;                /* a page of a size class; 0: the head of a free span */
  uint8_t free_is_zero;          /* every block on `free` is untouched zero memory */
  uint16_t capacity;             /* blocks carved into the free list so far */
  uint16_t reserved;             /* blocks that fit in the page */
  _Atomic(uintptr_t) xthread_free; /* remote frees | hak_delayed_t in the low 2 bits */
  _Atomic(hak_heap_t*) xheap;    /* owner heap, read by remote frees in HAK_DELAYED_USE */
  struct hak_page_s* next;       /* in a class queue, the full queue or a span bin */
  struct hak_page_s* prev;
  uint8_t slice_index;           /* first slice of the span */
  uint8_t slice_count;           /* slices in the span */
  uint8_t retire_expire;         /* empty page kept: fresh pages of other classes left */
  uint8_t retire_credit;         /* times it was kept empty and used again: keep it longer */
  uint8_t is_zero;               /* span memory untouched since it came zero from the OS */
  uint8_t no_retain;             /* adopted with live blocks: given back when it empties */
} hak_page_t;

/* 64 bytes: free() indexes the descriptors with a shift. Blocks start at the page's
 * first slice (hak_page_area), so no start pointer is kept. */
_Static_assert(sizeof(hak_page_t) == 64, "hak_page_t must stay 64 bytes");

typedef enum hak_segment_kind_e {
  HAK_SEGMENT_POOL = 0, /* one unit of slices: pages of the tiny, mid and L2.5 pools, one owner heap */
  HAK_SEGMENT_BIG = 1,  /* one unit of slices: big blocks, shared by every thread under a lock */
  HAK_SEGMENT_HUGE = 2, /* a run of units holding one block (a whale) */
  HAK_SEGMENT_ZERO = 3, /* hardened level 2: malloc(0)'s unique pointers, into PROT_NONE slices */
} hak_segment_kind_t;

struct hak_segment_s {
  _Atomic(uintptr_t) thread_id;  /* owning thread; 0 when abandoned and for huge */
  uintptr_t cookie;              /* segment address ^ process secret: a validity check */
  hak_segment_kind_t kind;
  uint32_t used_slices;          /* pool: slices in pages in use (0: the segment is free) */
  uint32_t kept_slices;          /* pool: of those, slices of pages kept empty for their class
                                    (may count a kept page that got blocks again) */
  size_t units;                  /* huge: 4 MiB units of the run (or the mapping) */
  size_t mapping_size;           /* huge: bytes from the segment start to the run's end */
  size_t block_bytes;            /* huge: usable bytes of the block (the request, page-rounded) */
  size_t data_end;               /* huge: bytes from the segment start that may hold data or
                                    resident pages (the block's end, or more: what a larger
                                    block or the run's earlier users left) */
  uint8_t* whale_block;          /* huge: where the block starts (its span: hak_whale_span) */
  hak_heap_t* heap;              /* pool: owner heap (NULL when abandoned, and for other kinds) */
  struct hak_segment_s* next;    /* in the owner heap's list, the abandoned list, a cache */
  struct hak_segment_s* prev;
  uint64_t zero_slices;          /* pool, big: free slices known zero (fresh or purged) */
  uint64_t decay_slices;         /* pool, big: free slices that may be resident, purge pending */
  uint64_t freed_ms[HAK_SEGMENT_SLICES]; /* when each decay slice went free (each purged
                                            slice: when it was purged) */
  uint8_t is_zero;               /* huge: the block's memory is known zero */
  uint8_t is_dedicated;          /* huge: a mapping of its own, not region units */
  uint8_t is_abandoned;          /* pool: on the abandoned list (written under its lock; read
                                    seq_cst by hak_segment_free_abandoned) */
  _Atomic uint8_t direct_busy;   /* pool, abandoned: a non-owner frees into it right now */
  uint8_t listed_idle_slices;    /* pool: its idle free slices when it was listed */
  uint8_t is_guarded;            /* pool, big (hardened level 2): its guard pages are PROT_NONE */
  /* Slice i belongs to the span starting at slice i - slice_offset[i]. Entry 64 serves
   * huge blocks aligned to 4 MiB, which start one unit after their header. */
  uint8_t slice_offset[HAK_SEGMENT_SLICES + 1];
  hak_page_t pages[HAK_SEGMENT_SLICES]; /* the descriptor of a span sits at its first slice */
  /* (after the pages: the fast paths' offsets into the header stay where they were) */
  _Atomic uint64_t noaccess_slices; /* big (hardened level 2, large quarantine): slices of
                                       freed blocks kept PROT_NONE (cached or evicted), until
                                       a block is carved there again */
  uint64_t purged_slices; /* pool, big: free slices purged and not reused since (purge regret) */
#if HAK_HARDEN_FREE_CHECKS
  /* One bit per block of each page, set while the block is handed out. */
  _Atomic(uint64_t) live[HAK_SEGMENT_SLICES][HAK_SEGMENT_SLICES];
#endif
};

typedef struct hak_page_queue_s {
  hak_page_t* first; /* the current page: allocations come from here */
  hak_page_t* last;
} hak_page_queue_t;

/* Segments and their free spans, binned by length: a heap's pool segments (owner
 * only) or the big segments (under their lock). */
typedef struct hak_spans_s {
  hak_page_queue_t bins[HAK_SEGMENT_SLICES];
  uint64_t nonempty;      /* bit n: bins[n] is not empty */
  hak_segment_t* segments;
  uint64_t decay_due_ms;  /* the earliest a free span's purge comes due (UINT64_MAX: none) */
} hak_spans_t;

#if HAK_STATS
/* Per-thread counters; written only by their thread, read by reports. */
typedef struct hak_heap_stats_s {
  uint64_t class_allocs[HAK_STATS_CLASS_COUNT];
  /* Frees of pool blocks but those of the local free fast path, which counts nothing:
   * hak_stats.c works them out from the pages' used counts (hak_stats_local_frees). */
  uint64_t class_frees[HAK_STATS_CLASS_COUNT];
  uint64_t class_used_adjust[HAK_STATS_CLASS_COUNT]; /* see hak_stats_used_adjust */
  /* alloc_fast and free_local are not counted either (hak_stats_derive_paths works
   * them out from the class counts) */
  uint64_t alloc_slow, alloc_large;
  uint64_t free_remote, free_delayed, free_large;
  uint64_t pages_allocated, pages_freed;
  uint64_t alloc_remote_cached, free_remote_cached;
} hak_heap_stats_t;
#endif

/* Empty big pages a heap keeps for reuse (hak_cache.c), oldest first. */
typedef struct hak_bigcache_s {
  size_t count;
  size_t bytes;
  uint64_t hits, misses, puts, evictions;
  hak_page_t* pages[HAK_BIGCACHE_SLOTS_MAX];
  uint64_t put_ms[HAK_BIGCACHE_SLOTS_MAX];
} hak_bigcache_t;

struct hak_heap_s {
  hak_page_t* direct[HAK_TINY_DIRECT_COUNT]; /* (size+15)/16 -> current page, tiny sizes */
  hak_page_t* current[HAK_CLASS_COUNT];      /* first page of each queue, or the empty page */
  uintptr_t thread_id;
  _Atomic(hak_block_t*) thread_delayed_free; /* remote frees onto full pages */
  hak_page_queue_t queues[HAK_CLASS_COUNT];  /* pages with (possibly) free blocks */
  hak_page_queue_t full;                     /* pages with none, woken by delayed frees */
  hak_spans_t spans;                         /* owned pool segments and their free spans */
  uint8_t retired_min, retired_max;          /* classes that may hold a kept empty page */
  uint8_t free_slow_ticks;                   /* local free slow paths, wrapping at 256 */
  uint8_t page_grow[HAK_CLASS_COUNT];        /* medium classes: fresh pages taken, less one
                                                each time the class's queue emptied */
  hak_bigcache_t bigcache;                   /* empty big pages kept for reuse */
  hak_heap_t* next_in_pool;                  /* global list of heaps (live and idle) */
  hak_heap_t* next_idle;                     /* the idle heaps, ready for a new thread */
  bool live;
#if HAK_STATS
  hak_heap_stats_t stats;
#endif
#if HAK_REMOTE_CACHE
  hak_block_t* remote_cache[HAK_CLASS_COUNT];    /* other threads' blocks this one freed */
  uint8_t remote_cache_count[HAK_CLASS_COUNT];
  size_t remote_cache_bytes;                    /* their block sizes (stats: read racily) */
  size_t remote_cache_blocks;
  void* remote_cache_last;                      /* the last block it handed out (calloc) */
  uint32_t remote_cache_skip;                   /* remote frees left to send home at once */
  uint32_t remote_cache_full_frees;             /* remote frees that found it full since a take */
  uint32_t remote_cache_misses;                 /* requests it could not serve since it was flushed */
  uint32_t remote_cache_stamp_ticks;            /* slow paths, for hak_heap_stamp_active */
#endif
#if HAK_HARDEN_QUARANTINE
  uint32_t quarantine_count;                  /* blocks in quarantine[] (stats: read racily) */
  size_t quarantine_bytes;                    /* their block sizes, for the stats */
  void* quarantine[HAK_QUARANTINE_SLOTS];     /* freed small blocks not yet reusable */
#endif
#if HAK_REMOTE_CACHE
  /* Its last malloc slow path (coarse clock), read by any thread that frees into its
   * pages, even while a new thread takes the struct over: last, so that the reset's
   * plain clearing stops short of it. */
  _Atomic uint64_t active_ms;
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

extern uintptr_t hak_process_secret; /* from AT_RANDOM at start (hak_init.c) */

/* Hardened level 2 stores a link XORed with a key that depends on where it is stored
 * and on the process secret: a use after free or an overflow that writes a chosen
 * address into a freed block decodes to garbage, which the decode checks catch
 * (hak_hardening_check_link), instead of steering malloc to that address. NULL is
 * encoded too, so zeros written over a link are caught as well. */
#if HAK_HARDEN_INTEGRITY
HAK_INLINE uintptr_t hak_block_key(const hak_block_t* block) {
  return hak_process_secret ^ ((uintptr_t)block * 0x9E3779B97F4A7C15ull);
}
#else
#define hak_block_key(block) ((void)(block), (uintptr_t)0)
#endif

HAK_INLINE hak_block_t* hak_block_next(hak_block_t* block) {
  hak_asan_unpoison(block, sizeof(hak_block_t));
  hak_block_t* next = (hak_block_t*)((uintptr_t)block->next ^ hak_block_key(block));
  hak_asan_poison(block, sizeof(hak_block_t));
  return next;
}

HAK_INLINE void hak_block_set_next(hak_block_t* block, hak_block_t* next) {
  hak_asan_unpoison(block, sizeof(hak_block_t));
  block->next = (hak_block_t*)((uintptr_t)next ^ hak_block_key(block));
  hak_asan_poison(block, sizeof(hak_block_t));
}

/* Stats variant: the local free fast path counts nothing. Every other change of a pool
 * page's used count that is not an allocation's increment (a free's decrement on a slow
 * path, an allocation from the remote cache, which takes no increment) adds n here,
 * for the calling thread, so that hak_stats.c can work the fast path's frees out. */
#if HAK_STATS
void hak_stats_used_adjust(size_t class_index, uint64_t n);
#else
#define hak_stats_used_adjust(class_index, n) ((void)(class_index), (void)(n))
#endif

/* Puts a freed block back on its page's free list (the caller owns the page: its heap's
 * thread, or whoever holds the abandoned segment); returns whether the page is empty
 * now. The free fast path (hak_alloc.h) spells the same steps out, but the count. */
HAK_INLINE bool hak_page_push_free(hak_page_t* page, hak_block_t* block) {
  hak_asan_poison(block, page->block_size);
  hak_block_set_next(block, page->free);
  page->free = block;
  page->free_is_zero = 0;
  hak_stats_used_adjust(page->class_index, 1);
  return --page->used == 0;
}

/* ---- Small shared helpers ------------------------------------------------ */

/* Owner id of the segments of a thread that vanished in a fork child
 * (hak_heap_fork_child): odd, so no thread pointer equals it. */
#define HAK_THREAD_ID_DEAD ((uintptr_t)1)

/* The thread pointer where one is a register; elsewhere (or with HAK_TID_FALLBACK, for
 * the test of this path) the address of one thread-local byte, the same variable in
 * every translation unit (a static one in this inline function would give each file
 * its own, and every free would look remote). */
#if HAK_TID_FALLBACK
extern __thread uint8_t hak_thread_anchor __attribute__((tls_model("initial-exec")));
#endif

HAK_INLINE uintptr_t hak_thread_id(void) {
#if HAK_TID_FALLBACK
  return (uintptr_t)&hak_thread_anchor;
#elif defined(__x86_64__)
  uintptr_t tid;
  __asm__("movq %%fs:0, %0" : "=r"(tid));
  return tid;
#else
  uintptr_t tid;
  __asm__ volatile("mrs %0, tpidr_el0" : "=r"(tid));
  return tid;
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

/* The descriptor of the page (or free span) holding p: one byte of the slice map and
 * a subtraction, so free() needs no per-segment page size. */
HAK_INLINE hak_page_t* hak_segment_page_of(hak_segment_t* segment, const void* p) {
  size_t slice = ((uintptr_t)p - (uintptr_t)segment) >> HAK_SLICE_SHIFT;
  return &segment->pages[slice - segment->slice_offset[slice]];
}

/* The slice after the span that now covers slice i: for walks that free pages as they
 * go (a freed page merges with its free neighbours, backwards too). */
HAK_INLINE size_t hak_segment_slice_after_span(const hak_segment_t* segment, size_t i) {
  const hak_page_t* span = &segment->pages[i - segment->slice_offset[i]];
  return (size_t)span->slice_index + span->slice_count;
}

HAK_INLINE size_t hak_page_bytes_of(const hak_page_t* page) {
  return (size_t)page->slice_count << HAK_SLICE_SHIFT;
}

/* A whale's block to the end of its mapping: what the large quarantine closes. */
HAK_INLINE size_t hak_whale_span(const hak_segment_t* segment) {
  return (size_t)((const uint8_t*)segment + segment->mapping_size - segment->whale_block);
}

HAK_INLINE uint8_t* hak_page_area(const hak_page_t* page) {
  return (uint8_t*)hak_segment_of(page) + ((size_t)page->slice_index << HAK_SLICE_SHIFT);
}

HAK_INLINE hak_block_t* hak_thread_free_ptr(uintptr_t tf) {
  return (hak_block_t*)(tf & ~(uintptr_t)3);
}

HAK_INLINE hak_delayed_t hak_thread_free_state(uintptr_t tf) {
  return (hak_delayed_t)(tf & 3);
}

/* Lock for the few global lists (short critical sections, no allocation inside);
 * fork handlers take every one of them. A futex lock: a waiter spins briefly, then
 * sleeps in the kernel instead of burning its time slice in sched_yield (a purge holds
 * the region's purge lock across madvise calls). state: 0 free, 1 held, 2 held with
 * sleepers. */
typedef struct hak_lock_s {
  _Atomic uint32_t state;
} hak_lock_t;
#define HAK_LOCK_INIT {0}
#define HAK_LOCK_SPINS 100
void hak_lock(hak_lock_t* lock);
bool hak_trylock(hak_lock_t* lock);
void hak_unlock(hak_lock_t* lock);
void hak_wait_flag_clear(_Atomic uint8_t* flag); /* until another thread clears it */

/* Test hooks (HAK_TEST_HOOKS): HAK_TEST_HOOK(name, arg) calls hak_test_hook_<name>(arg)
 * if a test set it. One per window a test needs to open: */
#if HAK_TEST_HOOKS
typedef void hak_test_hook_fn(void* arg);
/* A free of an abandoned segment's page's last block, with the segment's direct_busy
 * left and its lock not yet taken; arg: the block (hak_segment_free_abandoned). */
extern hak_test_hook_fn* _Atomic hak_test_hook_abandoned_free_last;
/* A whale's run just taken from the region, its header not yet written; arg: the run
 * (hak_whale_map). */
extern hak_test_hook_fn* _Atomic hak_test_hook_whale_taken;
/* A decay pass just took an abandoned segment off the list; arg: the segment
 * (hak_segment_abandoned_decay). */
extern hak_test_hook_fn* _Atomic hak_test_hook_abandoned_unlisted;
#define HAK_TEST_HOOK(name, arg)                                                                  \
  do {                                                                                            \
    hak_test_hook_fn* hook_ = atomic_load_explicit(&hak_test_hook_##name, memory_order_acquire); \
    if (hook_ != NULL) hook_(arg);                                                                \
  } while (0)
#else
#define HAK_TEST_HOOK(name, arg) ((void)0)
#endif

/* Bits start .. start+count-1 of a 64-bit mask (slices of a segment, units of a chunk). */
static inline uint64_t hak_bits_range(size_t start, size_t count) {
  uint64_t ones = count >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << count) - 1);
  return ones << start;
}

/* The latest of times[i] over the set bits i of `bits` (0 if none). */
static inline uint64_t hak_bits_latest(uint64_t bits, const uint64_t* times) {
  uint64_t latest = 0;
  for (; bits != 0; bits &= bits - 1) {
    if (times[__builtin_ctzll(bits)] > latest) latest = times[__builtin_ctzll(bits)];
  }
  return latest;
}

/* The lowest run of set bits of a nonzero mask: sets *start, returns its length. */
static inline size_t hak_bits_first_run(uint64_t mask, size_t* start) {
  *start = (size_t)__builtin_ctzll(mask);
  uint64_t rest = ~(mask >> *start); /* 0 only when every bit from start on is set */
  return rest == 0 ? 64 - *start : (size_t)__builtin_ctzll(rest);
}

/* Decimal digits of v, least significant first (digits[0] is the last one printed);
 * returns how many (at least 1). hakmem's own text output cannot use printf, which may
 * allocate. */
static inline int hak_u64_digits(uint64_t v, char digits[24]) {
  int n = 0;
  do {
    digits[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  return n;
}

/* ---- hak_os.c: the only file that calls mmap, munmap, mremap, madvise or mprotect -- */

void hak_os_wait(_Atomic uint32_t* word, uint32_t value); /* sleeps while *word == value (futex) */
void hak_os_wake_one(_Atomic uint32_t* word);
void hak_os_yield(void); /* sched_yield */

/* Who asked: every OS call is counted and timed per caller (hak_stats_t.os_by). */
typedef enum hak_os_user_e {
  HAK_OS_USER_REGION = HAK_STATS_OS_REGION, /* chunks of the region */
  HAK_OS_USER_PURGE = HAK_STATS_OS_PURGE,   /* the purge batcher */
  HAK_OS_USER_HUGE = HAK_STATS_OS_HUGE,     /* huge blocks: dedicated mappings, mremap */
  HAK_OS_USER_META = HAK_STATS_OS_META,     /* heap structs, the hardened ownership map */
} hak_os_user_t;

#define HAK_OS_MAP_NORESERVE 1 /* no commit charge: address space to be used sparsely */
#define HAK_OS_MAP_FIXED 2     /* replace whatever is mapped at the address */
#define HAK_OS_MAP_NOACCESS 4  /* PROT_NONE: any access faults (hardened malloc(0)) */

/* Injectable primitives: tests swap in fakes; the default calls the kernel. */
typedef struct hak_os_ops_s {
  void* (*map)(void* addr, size_t size, int flags); /* anonymous RW; MAP_FAILED on error */
  int (*unmap)(void* addr, size_t size);
  int (*advise)(void* addr, size_t size, int advice);
  void* (*remap)(void* old_addr, size_t old_size, size_t new_size, int flags, void* new_addr);
  size_t page_size; /* 0: the kernel's (AT_PAGESZ); tests pretend 16 KiB or 64 KiB pages */
  int (*protect)(void* addr, size_t size, int prot); /* NULL: the kernel's mprotect */
} hak_os_ops_t;

void hak_os_set_ops(const hak_os_ops_t* ops);      /* NULL restores the kernel's */
void hak_os_init(void);                            /* page size, randomised hint base */
size_t hak_os_page_size(void);
void* hak_os_map_aligned(size_t size, size_t align, size_t align_offset, int flags, hak_os_user_t user);
bool hak_os_map_fixed(void* addr, size_t size, hak_os_user_t user);
void hak_os_unmap(void* addr, size_t size, hak_os_user_t user);
bool hak_os_purge(void* addr, size_t size, hak_os_user_t user); /* true: reads zero after */
bool hak_os_move(void* old_addr, size_t size, void* new_addr, hak_os_user_t user);
bool hak_os_grow(void* addr, size_t old_size, size_t new_size, hak_os_user_t user);
bool hak_os_shrink(void* addr, size_t old_size, size_t new_size, hak_os_user_t user);
/* Transparent huge pages for [addr, +size): MADV_HUGEPAGE if huge, else MADV_NOHUGEPAGE.
 * Counted as a madvise of `user`; callers say when (HAKMEM_THP), once per mapping or
 * per run whose role changed, never per allocation. */
bool hak_os_advise_thp(void* addr, size_t size, bool huge, hak_os_user_t user);
/* Hardened: makes [addr, +size) inaccessible (PROT_NONE) or read-write again, keeping
 * its pages. False if refused for lack of memory (ENOMEM: the mapping count). */
bool hak_os_protect(void* addr, size_t size, bool accessible, hak_os_user_t user);
void hak_os_guard(void* addr, size_t size, bool accessible, hak_os_user_t user, const char* what);
bool hak_os_can_back(size_t size);                 /* the overcommit policy would allow it */
void hak_os_stats_read(hak_stats_t* out);
uint64_t hak_os_nanos_total(void);                 /* time in OS calls so far, every user and kind */

/* ---- hak_options.c: every HAKMEM_* variable, read once ------------------------------ */

typedef enum hak_purge_mode_e {
  HAK_PURGE_DONTNEED = 0, /* pages read zero afterwards; RSS drops at once */
  HAK_PURGE_FREE = 1,     /* MADV_FREE: the kernel takes pages under pressure only */
} hak_purge_mode_t;

typedef enum hak_thp_mode_e {
  HAK_THP_LEAN = 0,   /* no huge pages in hakmem's memory: MADV_NOHUGEPAGE on its mappings */
  HAK_THP_WHALES = 1, /* lean for segments; whales MADV_HUGEPAGE */
  HAK_THP_SYSTEM = 2, /* no advice: the kernel's setting decides */
} hak_thp_mode_t;

typedef enum hak_stats_mode_e {
  HAK_STATS_OFF = 0,
  HAK_STATS_TEXT = 1, /* the readable report */
  HAK_STATS_JSON = 2, /* one JSON object (hak_stats_print_json) */
} hak_stats_mode_t;

#define HAK_STATS_FILE_MAX 256 /* HAKMEM_STATS_FILE's longest value, with its NUL */

typedef struct hak_options_s {
  size_t bigcache_slots, bigcache_bytes;
  size_t whale_slots, whale_bytes;
  size_t whale_waste_pct;      /* a cached whale serves a request if it wastes at most this */
  size_t purge_delay_ms;       /* the base delay (the adaptive policy may change it) */
  size_t purge_delay_max_ms;   /* how far purge regret may stretch it (hak_purge_delay_ms) */
  hak_purge_mode_t purge_mode;
  size_t purge_batch_bytes, purge_batch_ranges, purge_min_bytes;
  size_t region_keep_bytes;    /* free address space kept mapped before chunks are unmapped */
  size_t region_dirty_bytes;   /* free units waiting out the purge delay, at least (see hak_region.c) */
  size_t remote_cache_bytes;   /* HAKMEM_REMOTE_CACHE: other threads' blocks a thread keeps (hak_heap.c) */
  hak_thp_mode_t thp_mode;     /* HAKMEM_THP */
  hak_stats_mode_t stats_report; /* HAKMEM_STATS: report at exit (stats variant), text or JSON */
  char stats_file[HAK_STATS_FILE_MAX]; /* HAKMEM_STATS_FILE: the report's file ("": stderr) */
  bool stats_children;         /* HAKMEM_STATS_CHILDREN=0: only the process that read the
                                  options first reports, not its forked or exec'd children */
  int stats_pid;               /* the process that read them */
  bool canary_report_only;     /* HAKMEM_CANARY_REPORT=1: hardened canary faults reported, not fatal */
  bool large_quarantine;       /* HAKMEM_LARGE_QUARANTINE: hardened cached large blocks PROT_NONE */
  bool policy;                 /* HAKMEM_POLICY: the adaptive policy (hak_policy.c) turns the knobs above */
  size_t policy_seed;          /* HAKMEM_POLICY_SEED: the learner's exploration order and ties */
  size_t policy_epoch_ms;      /* HAKMEM_POLICY_EPOCH_MS: how long each candidate setting is measured */
  size_t policy_rss_weight;    /* HAKMEM_POLICY_RSS_WEIGHT: score ppm per MiB held resident */
  bool policy_log;             /* HAKMEM_POLICY_LOG: a line per epoch on stderr */
} hak_options_t;

extern hak_options_t hak_options;
/* Hardened level 2's large quarantine (HAKMEM_LARGE_QUARANTINE): freed big blocks and
 * whales are kept PROT_NONE until their memory is handed out again. */
#if HAK_HARDEN_LARGE_QUARANTINE
#define hak_large_quarantine_on() (hak_options.large_quarantine)
#else
#define hak_large_quarantine_on() false
#endif
void hak_options_init(void); /* from hak_process_init, before anything reads them */
void hak_options_stats_scope(void); /* from the constructor: HAKMEM_STATS_CHILDREN=0 */

/* ---- hak_purge.c: batched, deferred madvise ---------------------------------------- */

#define HAK_PURGE_BATCH_MAX 64 /* ranges one flush call holds */

typedef struct hak_purge_range_s {
  uint8_t* addr;
  size_t size;
} hak_purge_range_t;

typedef struct hak_purge_batch_s {
  size_t count;
  hak_purge_range_t ranges[HAK_PURGE_BATCH_MAX];
} hak_purge_batch_t;

uint64_t hak_purge_now_ms(void);                  /* coarse monotonic clock */
bool hak_purge_batch_add(hak_purge_batch_t* batch, void* addr, size_t size); /* false: full */
bool hak_purge_batch_flush(hak_purge_batch_t* batch); /* true: the ranges read zero now */
void hak_purge_range_now(void* addr, size_t size);  /* one range at once, counted as a flush */
void hak_purge_schedule(uint64_t due_ms);         /* something becomes purgeable then */
void hak_purge_tick(void);                        /* slow paths: purge what is due */
/* The delay in force: HAKMEM_PURGE_DELAY_MS (which the adaptive policy may change),
 * stretched by purge regret (hak_purge.c); inline, for the caches' put paths. */
extern _Atomic uint32_t hak_purge_stretch;
size_t hak_purge_delay_at(uint32_t stretch);
static inline size_t hak_purge_delay_base(void) {
  return *(volatile size_t*)&hak_options.purge_delay_ms;
}
static inline size_t hak_purge_delay_ms(void) {
  uint32_t stretch = atomic_load_explicit(&hak_purge_stretch, memory_order_relaxed);
  return hak_likely(stretch == 0) ? hak_purge_delay_base() : hak_purge_delay_at(stretch);
}
void hak_purge_regret(uint64_t purged_ms); /* memory purged then is taken again now */
void hak_purge_stats_read(hak_stats_t* out);

/* ---- hak_policy.c: the adaptive policy (the pure part: hak_policy.h) ---------------- */

#include "hak_policy.h"

extern bool hak_policy_on;          /* HAKMEM_POLICY=1: hak_purge_tick calls hak_policy_tick */
void hak_policy_init(void);         /* from hak_process_init, after the options */
void hak_policy_tick(uint64_t now_ms); /* ends the epoch if it is over (one thread; others skip) */
void hak_policy_read(hak_policy_status_t* out); /* for tests */
void hak_policy_fork_lock(void);   /* before every other global lock: an epoch's end reads the caches */
void hak_policy_fork_unlock(void);

/* ---- hak_region.c: address space in chunks, handed out in 4 MiB units -------------- */

typedef struct hak_run_state_s {
  bool is_zero;     /* every byte reads zero */
  bool is_resident; /* every unit was in use since its last purge: writes fault little */
  uint64_t dense_units; /* bit i: unit i of the run came from a segment, mostly resident */
  size_t resident_units; /* units from the run's start through its last one that may be resident */
} hak_run_state_t;

void* hak_region_alloc(size_t units, size_t align, size_t align_offset, hak_run_state_t* state);
bool hak_region_extend(void* run, size_t units, size_t extra_units); /* claim the next units */
/* Hardened level 2: units of a run about to be freed that hold a freed block made
 * PROT_NONE ([addr, addr+bytes)); they stay so in the region until taken again. */
void hak_region_note_noaccess(const void* addr, size_t bytes);
/* From the SIGSEGV handler (no lock, racy reads): addr lies in a free unit of the
 * region kept PROT_NONE since a freed block left it. */
bool hak_region_fault_is_freed(const void* addr);
/* Before a run taken from the region is used: its units get the THP advice of their
 * role (HAKMEM_THP: huge only for whales in `whales` mode). One madvise over the run
 * when a unit's last advice differs, none when it was already so (the usual reuse). */
void hak_region_thp_prepare(void* run, size_t units, bool whale);
/* Purge due a delay later. dense: the units' pages were mostly written (a segment's),
 * so a whale should not take them as the unit it barely enters. */
void hak_region_free(void* run, size_t units, uint64_t idle_since_ms, bool dense);
/* After mremap moved [hole, hole + hole_size) out of the run; data_end: where what the
 * run may still hold ends. */
void hak_region_free_moved(void* run, size_t units, void* hole, size_t hole_size, void* data_end);
typedef enum hak_region_purge_e {
  HAK_REGION_PURGE_DUE,       /* what is due; unmap idle chunks beyond HAKMEM_REGION_KEEP */
  HAK_REGION_PURGE_ALL,       /* every pending unit too */
  HAK_REGION_PURGE_ALL_UNMAP, /* ... and unmap every idle chunk */
} hak_region_purge_t;
void hak_region_purge(hak_region_purge_t how);
void hak_region_stats_read(hak_stats_t* out);
/* Whales in mappings of their own (runs longer than a chunk) are listed here too, so
 * the usage walk finds them: linked once mapped, unlinked before they are unmapped,
 * resized (mapping_size set) under the same lock. */
void hak_region_dedicated_link(hak_segment_t* segment);
void hak_region_dedicated_unlink(hak_segment_t* segment);
void hak_region_dedicated_resize(hak_segment_t* segment, size_t mapping_size);

/* What is in use now: a walk of every unit in use and every dedicated whale, under the
 * region's lock (hak_region_usage), on demand; nothing is counted on the fast paths. */
typedef struct hak_usage_s {
  uint64_t in_use_bytes;           /* blocks handed out: usable bytes (class sizes, whole slices, page-rounded whales) */
  uint64_t in_use_blocks;
  uint64_t unit_bytes;             /* region units in use (segments, whales, cached whales) */
  uint64_t unit_max_bytes;         /* the most units ever in use at once */
  uint64_t free_dirty_bytes;       /* free slices inside segments that may be resident (purge pending) */
  uint64_t dedicated_count;        /* whales in mappings of their own, in use or cached */
  uint64_t dedicated_bytes;        /* their mapped bytes */
  uint64_t dedicated_in_use_bytes; /* of in_use_bytes, the blocks in them */
  uint64_t dedicated_max_count;    /* peaks of the two */
  uint64_t dedicated_max_bytes;
  uint64_t class_used[HAK_CLASS_COUNT]; /* per pool class: the pages' used counts (stats variant) */
} hak_usage_t;
void hak_region_usage(hak_usage_t* out);
void hak_region_fork_lock(void);
void hak_region_fork_unlock(void);

/* ---- hak_tiny.c / hak_mid.c: size classes ---------------------------------- */

extern const uint8_t hak_tiny_class_of_direct[HAK_TINY_DIRECT_COUNT];
size_t hak_class_block_size(size_t class_index);
size_t hak_class_page_slices(size_t class_index, unsigned grow);

/* Mid and L2.5 classes, HAK_TINY_MAX < size <= HAK_POOL_MAX: size lies in
 * (2^b, 2^(b+1)] with b >= 10, split into eight classes of 2^(b-3) bytes each. Inline:
 * it is on the fast path of mid-size malloc. */
HAK_INLINE size_t hak_mid_class_of(size_t size) {
  size_t b = (size_t)(63 - __builtin_clzll((unsigned long long)(size - 1)));
  size_t step = (size - 1 - ((size_t)1 << b)) >> (b - 3); /* 0..7 */
  return 16 + (b - 8) * 8 + step;
}

HAK_INLINE size_t hak_size_class(size_t size) {
  if (size <= HAK_TINY_MAX) return hak_tiny_class_of_direct[(size + 15) >> 4];
  return hak_mid_class_of(size);
}

/* ---- hak_page.c: carving and collecting one page ------------------------- */

extern hak_page_t hak_page_empty;
void hak_page_init(hak_page_t* page, hak_heap_t* heap, size_t class_index);
void hak_page_extend(hak_page_t* page);
void hak_page_collect_thread_free(hak_page_t* page);
void hak_page_set_delayed(hak_page_t* page, hak_delayed_t state);
bool hak_page_try_use_delayed(hak_page_t* page);
void hak_page_free_remote(hak_page_t* page, hak_block_t* block);

/* ---- hak_segment.c: pool segments, spans, abandonment, the ownership map --------- */

#if HAK_HARDEN_GUARDS
bool hak_segment_is_guard(const hak_segment_t* segment, const void* p); /* a guard page of a pool or big segment */
void hak_segment_guards_open(void* unit); /* a former segment's guards, accessible again */
bool hak_region_guard_claim(void* run, bool* already);
void hak_region_guard_clear(void* run, size_t units);
#else
#define hak_region_guard_clear(run, units) ((void)(run), (void)(units))
#endif
hak_page_t* hak_segment_page_alloc(hak_heap_t* heap, size_t slices);
void hak_segment_page_free(hak_heap_t* heap, hak_page_t* page);
void hak_segment_decay(hak_heap_t* heap, bool all); /* purge the heap's idle free spans */
void hak_segment_big_decay(bool all);
hak_page_t* hak_segment_big_alloc(size_t slices, bool may_grow); /* the big segments, locked */
void hak_segment_big_free(hak_page_t* page, uint64_t idle_since_ms);
bool hak_segment_big_resize(hak_page_t* page, size_t slices); /* grow into the next span, or shrink */
void hak_segment_abandon(hak_heap_t* heap, hak_segment_t* segment);
bool hak_segment_adopt_one(hak_heap_t* heap);
size_t hak_segment_abandoned_backlog(void);
bool hak_segment_free_abandoned(hak_segment_t* segment, hak_page_t* page, hak_block_t* block);
bool hak_segment_has_span(const hak_heap_t* heap, size_t slices);
void hak_segment_abandoned_decay(bool all); /* purge abandoned segments' idle free spans */
/* Adds what the run whose header is at `segment` holds in use to *out. Region lock
 * held: see hak_region_usage. Headers not recognised (a run being set up) count nothing. */
void hak_segment_usage(const hak_segment_t* segment, hak_usage_t* out);
void hak_segment_fork_lock(void);   /* the abandoned list and the big segments */
void hak_segment_fork_unlock(void);
void hak_segment_fork_child(void); /* after hak_segment_fork_unlock, in the child */
void hak_segment_fork_clear_busy(hak_segment_t* list); /* in the child: each segment's direct_busy */
uint64_t hak_segment_live_count(void);
void hak_segment_live_add(int64_t delta);
void hak_segment_map_set(const hak_segment_t* segment, bool present); /* hardened only */
bool hak_segment_map_contains(const void* p);     /* hardened: is this one of ours? */

/* ---- hak_heap.c: thread heaps and the allocation slow path ---------------- */

extern hak_heap_t hak_heap_empty;
/* The thread's state the fast paths read, in one TLS block so that one address load
 * serves both: the heap, and in the stats variant the latency sampling ticks. */
typedef struct hak_tls_s {
  hak_heap_t* heap; /* &hak_heap_empty until the thread's first allocation */
#if HAK_STATS
  uint8_t latency_tick[HAK_STATS_LATENCY_OPS]; /* see hak_latency_due */
#endif
} hak_tls_t;
extern __thread hak_tls_t hak_tls __attribute__((tls_model("initial-exec")));
void* hak_heap_malloc_generic(hak_heap_t* heap, size_t size);
void hak_heap_free_generic(hak_segment_t* segment, hak_page_t* page, hak_block_t* block);
void hak_heap_local_free_slow(hak_page_t* page);
void hak_heap_decay(hak_heap_t* heap); /* idle memory to the OS (slow paths) */
void hak_heap_thread_done(hak_heap_t* heap);
void hak_heap_collect(void); /* the calling thread: delayed frees, kept empty pages */
hak_heap_t* hak_heap_acquire(void); /* the calling thread's heap, made on first use; NULL: OOM */
void hak_heap_page_adopted(hak_heap_t* heap, hak_page_t* page);
void hak_heap_fork_lock(void);
void hak_heap_fork_unlock(void);
void hak_heap_fork_child(void); /* repairs what threads absent in the child left midway */
typedef void hak_heap_visit_fn(const hak_heap_t* heap, void* arg);
void hak_heap_visit_all(hak_heap_visit_fn* fn, void* arg);
/* first(arg), then fn on every live heap (fn may be NULL), all under the pool's lock. */
void hak_heap_visit_all_after(void (*first)(void* arg), hak_heap_visit_fn* fn, void* arg);
size_t hak_heap_pool_count(void); /* heap structs ever made, live or idle (tests) */

HAK_INLINE hak_heap_t* hak_heap_get(void) {
  return hak_tls.heap;
}

/* Whether p, which the calling thread was just handed, came from its remote cache: then
 * it holds what its last user wrote, whatever its page's free_is_zero says. */
#if HAK_REMOTE_CACHE
#define hak_heap_gave_cached_block(p) (hak_heap_get()->remote_cache_last == (p))
#else
#define hak_heap_gave_cached_block(p) ((void)(p), false)
#endif

/* ---- hak_large.c: blocks above the pools, or aligned beyond them ------------------- */

void* hak_large_alloc(hak_heap_t* heap, size_t size, size_t align);
void hak_large_free(hak_segment_t* segment, hak_page_t* page); /* big blocks and whales, any thread */
bool hak_big_resize_in_place(hak_page_t* page, size_t size);
void* hak_whale_realloc(hak_segment_t* segment, void* p, size_t size);
size_t hak_whale_usable(const hak_segment_t* segment, const void* p);
/* To the region or the OS; is_protected: its block is PROT_NONE already (evicted from the
 * whale ring). With the large quarantine on, the block stays (or is made) PROT_NONE in
 * the region until its units are taken again. */
void hak_whale_release(hak_segment_t* segment, uint64_t idle_since_ms, bool is_protected);
void hak_large_stats_read(hak_stats_t* out);

/* ---- hak_cache.c: the BigCache (per heap) and the whale cache (global) -------------- */

hak_page_t* hak_bigcache_get(hak_heap_t* heap, size_t slices);
void hak_bigcache_put(hak_heap_t* heap, hak_page_t* page);
void hak_bigcache_close(hak_page_t* page); /* hardened level 2: a freed big page made PROT_NONE */
bool hak_bigcache_flush(hak_heap_t* heap, bool all); /* !all: not the held newest; false if none went */
void hak_bigcache_trim(hak_heap_t* heap, uint64_t now); /* evicts entries idle for the purge delay */
void hak_bigcache_fold(const hak_heap_t* heap); /* an exiting heap's counters */

hak_segment_t* hak_whale_get(size_t need, size_t align, size_t align_offset); /* need: bytes of the run */
bool hak_whale_put(hak_segment_t* segment);
bool hak_whale_evict_oldest(void); /* to the region; false if the ring is empty */
void hak_whale_trim(bool all);     /* evicts entries older than the purge delay (or all) */
void hak_cache_stats_read(hak_stats_t* out);
void hak_cache_fork_lock(void);
void hak_cache_fork_unlock(void);

/* ---- hak_init.c: process set-up, fork and thread-exit hooks --------------- */

void hak_process_init(void);
void hak_thread_register(hak_heap_t* heap); /* arrange hak_heap_thread_done at exit */

/* ---- hak_stats.c ------------------------------------------------------------ */

#if HAK_STATS
/* Only the owner thread writes its counters; reports read them from any thread. A
 * relaxed load and store is race-free but compiles to load, add, store plus the index
 * arithmetic; on x86-64 one `addq` to memory is as good (an aligned 8-byte access is
 * single-copy atomic, so a reader sees the old or the new count) and half the
 * instructions on the fast paths. The asm is opaque to the sanitizers, which is what we
 * want: it is not a race. */
#if defined(__x86_64__)
#define hak_stat_counter_inc(ptr) __asm__("addq $1, %0" : "+m"(*(ptr)))
#else
#define hak_stat_counter_inc(ptr) \
  __atomic_store_n((ptr), __atomic_load_n((ptr), __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED)
#endif
#define hak_stat_inc(heap, field) hak_stat_counter_inc(&(heap)->stats.field)
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
#define hak_stat_inc_any(heap, field) ((void)(heap))
#define hak_stat_global_inc(field) ((void)0)
#define hak_stat_inc(heap, field) ((void)0)
#define hak_stat_class_inc(heap, field, cls) ((void)0)
#endif
void hak_stats_global_add(const hak_heap_t* heap); /* fold an exiting heap's counters */

/* Sampled latency (stats variant): hak_malloc and hak_free time one call in
 * HAK_STATS_LATENCY_SAMPLE (256) per thread with the cycle counter; a thread-local
 * byte counting down decides, so an untimed call pays one decrement of memory and a
 * branch (a 32-bit tick counting up and masked cost twice the instructions). */
#if HAK_STATS
_Static_assert(HAK_STATS_LATENCY_SAMPLE == 256, "the tick is a byte that wraps");
/* One tick per op: a shared one would time every 256th call of a malloc/free loop,
 * always a malloc. */
static inline bool hak_latency_due(int op) {
  return hak_unlikely(--hak_tls.latency_tick[op] == 0);
}
static inline uint64_t hak_cycles(void) {
#if defined(__x86_64__)
  return __builtin_ia32_rdtsc();
#elif defined(__aarch64__)
  uint64_t v;
  __asm__ __volatile__("mrs %0, cntvct_el0" : "=r"(v));
  return v;
#else
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
#endif
}
void hak_latency_record(int op, uint64_t cycles); /* op: HAK_STATS_LATENCY_MALLOC or _FREE */
void hak_latency_clock_start(void);              /* at process set-up: cycles -> ns */
#endif

/* hakmem's figures on the fields of glibc's struct mallinfo2, for the replacing
 * libraries' mallinfo2, mallinfo, malloc_stats and malloc_info (hak_api.c). glibc's
 * "arena" (its heaps) becomes the region's units in use, its mmapped chunks the whales
 * in mappings of their own. */
typedef struct hak_glibc_info_s {
  uint64_t arena;        /* bytes of region units in use: segments, whales, cached whales */
  uint64_t uordblks;     /* bytes of blocks in use in them (in_use_bytes - dedicated_in_use_bytes) */
  uint64_t fordblks;     /* arena - uordblks: free slices and blocks, cached blocks, headers */
  uint64_t hblks;        /* whales in mappings of their own (in use or cached) */
  uint64_t hblkhd;       /* their mapped bytes */
  uint64_t keepcost;     /* at most what malloc_trim would give back now: free units and free
                            slices that may be resident, cached blocks */
  uint64_t in_use_total; /* uordblks + the blocks in mappings of their own */
  uint64_t arena_max;    /* the most bytes of units in use at once */
  uint64_t hblks_max, hblkhd_max;
  uint64_t address_space; /* reserved chunks + mappings of their own */
} hak_glibc_info_t;
void hak_stats_collect(hak_stats_t* out); /* all of it, whatever the caller's size */
void hak_stats_collect_upto(hak_stats_t* out, size_t want); /* what the first `want` bytes need */
void hak_stats_glibc(const hak_stats_t* stats, hak_glibc_info_t* out); /* stats: from hak_stats_collect */
void hak_stats_print_glibc(int fd); /* malloc_stats' report: glibc's format, no stdio */
void hak_stats_count_global(size_t field_offset);  /* counters with no heap at hand */
void hak_stats_atexit(void);

/* ---- hak_hardening.c --------------------------------------------------------- */

typedef enum hak_fault_e {
  HAK_FAULT_DOUBLE_FREE,
  HAK_FAULT_INVALID_FREE,
  HAK_FAULT_INVALID_REALLOC,
  HAK_FAULT_INVALID_USABLE_SIZE,
  HAK_FAULT_SIZED_DELETE,
  HAK_FAULT_CORRUPT_FREE_LIST,
  HAK_FAULT_WRITE_AFTER_FREE,
  HAK_FAULT_HANDED_OUT_TWICE,
  HAK_FAULT_OVERFLOW,
  HAK_FAULT_USE_AFTER_FREE,
  HAK_FAULT_ZERO_SIZE_ACCESS,
  HAK_FAULT_GUARD_PAGE,
} hak_fault_t;

/* The size class a fault names: a class index, or one of these. */
#define HAK_FAULT_CLASS_UNKNOWN (-1)
#define HAK_FAULT_CLASS_HUGE (-2)

/* "hakmem: fatal: <fault> at address 0x<16 hex> (size class N, <variant>)", then abort. */
HAK_COLD __attribute__((noreturn)) void hak_fault_in_class(hak_fault_t fault, const void* p, int size_class);
#define hak_fault(fault, p) hak_fault_in_class((fault), (p), HAK_FAULT_CLASS_UNKNOWN)
HAK_COLD __attribute__((noreturn)) void hak_fault_message(const char* message); /* no address */
/* Hardened level 2: the small-block quarantine (hak_hardening.c; hak_hardening_on_free
 * fills it). Flush frees every block in it (this thread's heap: hak_collect,
 * hak_quarantine_flush, thread exit). */
#if HAK_HARDEN_QUARANTINE
void hak_hardening_quarantine_flush(hak_heap_t* heap);
#else
#define hak_hardening_quarantine_flush(heap) ((void)(heap))
#endif
/* Hardened level 2 (no sanitizer): names faults in memory hakmem keeps inaccessible. */
void hak_hardening_install_fault_handler(void);
#if HAK_HARDEN_FREE_CHECKS
void hak_hardening_on_alloc(hak_page_t* page, void* block);
void hak_hardening_check_owned(const void* p, hak_fault_t fault_if_not);
void* hak_hardening_on_free(void* p); /* the block to free now (level 2: or NULL) */
void hak_hardening_on_segment_release(const hak_segment_t* segment);
#else
#define hak_hardening_on_alloc(page, block) ((void)0)
#define hak_hardening_check_owned(p, fault) ((void)0)
#define hak_hardening_on_free(p) (p)
#define hak_hardening_on_segment_release(segment) ((void)0)
#endif
#if HAK_HARDEN_INTEGRITY
void hak_hardening_on_handout(const hak_page_t* page, void* block);
void hak_hardening_check_link(const hak_page_t* page, const hak_block_t* block, const hak_block_t* next);
void hak_hardening_check_delayed_link(const hak_block_t* block, const hak_block_t* next);
void hak_hardening_zero_fresh(const hak_page_t* page, void* first, size_t bytes);
void* hak_hardening_canary_set(void* block, size_t size);
void* hak_hardening_zero_alloc(void);
hak_block_t* hak_hardening_link_shuffled(uint8_t* first, size_t count, size_t block_size, hak_block_t* tail);
size_t hak_hardening_requested_size(const void* block);
#else
#define hak_hardening_canary_set(block, size) ((void)(size), (block))
#define hak_hardening_zero_alloc() ((void*)0)
#define hak_hardening_on_handout(page, block) ((void)(page), (void)(block))
#define hak_hardening_check_link(page, block, next) ((void)(page), (void)(block), (void)(next))
#define hak_hardening_check_delayed_link(block, next) ((void)(block), (void)(next))
#define hak_hardening_zero_fresh(page, first, bytes) ((void)(page), (void)(first), (void)(bytes))
#endif

/* The next block of a page's free or remote list, checked (level 2) to be a block of
 * that page carved before. */
HAK_INLINE hak_block_t* hak_page_block_next(const hak_page_t* page, hak_block_t* block) {
  hak_block_t* next = hak_block_next(block);
  hak_hardening_check_link(page, block, next);
  return next;
}

#endif /* HAK_INTERNAL_H */
