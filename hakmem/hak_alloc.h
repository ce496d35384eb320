/* SPDX-License-Identifier: MIT */
/* hak_alloc.h - the allocation and free fast paths, readable in one place, plus the
 * rest of the malloc API built on them. Included by hak_api.c, whose hak_* functions
 * (and, in the replacing libraries, malloc and friends as their aliases) thus have the
 * fast path inlined.
 *
 * malloc of a tiny size: one TLS load, one table load, pop the page's free list
 * (about a dozen instructions, no lock, no atomic, no branch on stats or checks in the
 * release variant). free: mask the pointer to its segment, compare the owner with this
 * thread, push onto the page's free list. Everything else is a noinline slow path. */
#ifndef HAK_ALLOC_H
#define HAK_ALLOC_H

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "hak_internal.h"

HAK_INLINE void* hak_page_pop(hak_heap_t* heap, hak_page_t* page, size_t size) {
  hak_block_t* block = page->free;
  if (hak_unlikely(block == NULL)) return hak_heap_malloc_generic(heap, size);
  hak_hardening_on_alloc(page, block);
  page->free = hak_page_block_next(page, block);
  page->used++;
  hak_asan_unpoison(block, page->block_size);
  hak_hardening_on_handout(page, block);
  hak_stat_class_inc(heap, class_allocs, page->class_index); /* (alloc_fast is derived) */
  return block;
}

/* A block of the pools, size <= HAK_POOL_MAX. */
HAK_INLINE void* hak_pool_malloc(hak_heap_t* heap, size_t size) {
  if (hak_likely(size <= HAK_TINY_MAX)) return hak_page_pop(heap, heap->direct[(size + 15) >> 4], size);
  return hak_page_pop(heap, heap->current[hak_mid_class_of(size)], size);
}

/* The largest slot the pools serve. Hardened level 2 with its large quarantine serves
 * blocks above the medium pages (a page of their own otherwise, which goes straight back
 * to its segment when freed) as big blocks, so that a freed one waits PROT_NONE in the
 * BigCache like any larger block. */
#define hak_pool_slot_max() (hak_large_quarantine_on() ? HAK_MEDIUM_BLOCK_MAX : HAK_POOL_MAX)

HAK_INLINE void* hak_malloc_inline(size_t size) {
  if (HAK_HARDEN_INTEGRITY && hak_unlikely(size == 0)) {
    void* p = hak_hardening_zero_alloc(); /* faults when read or written */
    if (p != NULL) return p;
  }
  hak_heap_t* heap = hak_heap_get();
  /* hardened level 2: room for the canary (HAK_CANARY_ROOM is 0 otherwise) */
  if (hak_likely(size <= hak_pool_slot_max() - HAK_CANARY_ROOM)) {
    return hak_hardening_canary_set(hak_pool_malloc(heap, size + HAK_CANARY_ROOM), size);
  }
  if (hak_unlikely(size > PTRDIFF_MAX)) {
    errno = ENOMEM;
    return NULL;
  }
  return hak_hardening_canary_set(hak_large_alloc(heap, size + HAK_CANARY_ROOM, 0), size);
}

/* Frees a block whose checks are done (or that leaves the hardened quarantine). */
HAK_INLINE void hak_free_checked(void* p) {
  hak_segment_t* segment = hak_segment_of(p);
  hak_page_t* page = hak_segment_page_of(segment, p);
  hak_block_t* block = (hak_block_t*)p;
  if (hak_likely(atomic_load_explicit(&segment->thread_id, memory_order_relaxed) == hak_thread_id())) {
    hak_asan_poison(block, page->block_size);
    hak_block_set_next(block, page->free);
    page->free = block;
    page->free_is_zero = 0;
    /* stats: counts nothing (hak_stats_local_frees works these frees out) */
    if (hak_unlikely(--page->used == 0 || page->in_full)) hak_heap_local_free_slow(page);
    return;
  }
  hak_heap_free_generic(segment, page, block);
}

HAK_INLINE void hak_free_inline(void* p) {
  if (hak_unlikely(p == NULL)) return;
  /* hardened: checks; level 2 may keep p (malloc(0)'s, the quarantine) and give back
   * a block freed earlier */
  p = hak_hardening_on_free(p);
  if (p == NULL) return;
  hak_free_checked(p);
}

/* Usable bytes of a live block: the whole slot of a page, or a whale's page-rounded
 * request; hardened level 2: the bytes requested (the canary follows). */
HAK_INLINE size_t hak_usable_size_inline(const void* p) {
  if (p == NULL) return 0;
  hak_hardening_check_owned(p, HAK_FAULT_INVALID_USABLE_SIZE);
  hak_segment_t* segment = hak_segment_of(p);
  if (HAK_HARDEN_INTEGRITY && segment->kind == HAK_SEGMENT_ZERO) return 0;
#if HAK_HARDEN_CANARY
  return hak_hardening_requested_size(p);
#else
  if (segment->kind == HAK_SEGMENT_HUGE) return hak_whale_usable(segment, p);
  return hak_segment_page_of(segment, p)->block_size;
#endif
}

HAK_INLINE void* hak_calloc_inline(size_t count, size_t size) {
  size_t total;
  if (hak_unlikely(__builtin_mul_overflow(count, size, &total))) {
    errno = ENOMEM;
    return NULL;
  }
  void* p = hak_malloc_inline(total);
  if (hak_unlikely(p == NULL)) return NULL;
  if (HAK_HARDEN_INTEGRITY && total == 0) return p; /* nothing to clear (maybe no access at all) */
  /* Zero provenance: memory fresh from the OS (or purged with DONTNEED) and never
   * handed out reads zero already; writing it would only fault its pages in. */
  hak_segment_t* segment = hak_segment_of(p);
  if (segment->kind == HAK_SEGMENT_HUGE) {
    if (segment->is_zero) return p;
  } else if (hak_segment_page_of(segment, p)->free_is_zero && !hak_heap_gave_cached_block(p)) {
    /* the free-list link is all a fresh block holds; level 2 cleared it already, and
     * its canary may start inside the link word of a block under 8 bytes (a block from
     * the remote cache holds what its last user wrote: its page's flag speaks only for
     * the page's own free list) */
    if (!HAK_HARDEN_INTEGRITY) ((hak_block_t*)p)->next = NULL;
    return p;
  }
  memset(p, 0, total);
  return p;
}

/* Aligned allocation without interior pointers: for alignments up to a slice (64 KiB),
 * pick the smallest class whose block size is a multiple of the alignment (every page
 * starts on a slice boundary, so all its blocks are then aligned); otherwise a huge
 * block is placed at the alignment. free() therefore always gets a block start. */
HAK_INLINE void* hak_malloc_aligned_inline(size_t align, size_t size) {
  if (align <= HAK_ALIGNMENT) return hak_malloc_inline(size);
  if (hak_unlikely(size > PTRDIFF_MAX || align > PTRDIFF_MAX / 2)) {
    errno = ENOMEM;
    return NULL;
  }
  if (align <= HAK_POOL_ALIGN_MAX && size <= hak_pool_slot_max() - align - HAK_CANARY_ROOM) {
    size_t cls = hak_size_class(hak_align_up(size + HAK_CANARY_ROOM == 0 ? 1 : size + HAK_CANARY_ROOM, align));
    while (hak_class_block_size(cls) % align != 0) cls++;
    return hak_hardening_canary_set(hak_pool_malloc(hak_heap_get(), hak_class_block_size(cls)), size);
  }
  return hak_hardening_canary_set(hak_large_alloc(hak_heap_get(), size + HAK_CANARY_ROOM, align), size);
}

HAK_INLINE int hak_posix_memalign_inline(void** out, size_t align, size_t size) {
  if (align % sizeof(void*) != 0 || !hak_is_power_of_two(align)) return EINVAL;
  int saved_errno = errno;
  void* p = hak_malloc_aligned_inline(align, size);
  errno = saved_errno;
  if (p == NULL) return ENOMEM;
  *out = p;
  return 0;
}

/* glibc 2.38 and later: the alignment must be a power of two, else EINVAL. */
HAK_INLINE void* hak_aligned_alloc_inline(size_t align, size_t size) {
  if (!hak_is_power_of_two(align)) {
    errno = EINVAL;
    return NULL;
  }
  return hak_malloc_aligned_inline(align, size);
}

/* glibc: memalign rounds an alignment that is not a power of two up to one, and
 * rejects only alignments above SIZE_MAX / 2 + 1 (EINVAL); those it can round up but
 * not serve fail with ENOMEM. */
HAK_INLINE void* hak_memalign_inline(size_t align, size_t size) {
  if (align > SIZE_MAX / 2 + 1) {
    errno = EINVAL;
    return NULL;
  }
  if (!hak_is_power_of_two(align)) {
    size_t pow2 = HAK_ALIGNMENT;
    while (pow2 < align) pow2 <<= 1;
    align = pow2;
  }
  return hak_malloc_aligned_inline(align, size);
}

HAK_INLINE void* hak_valloc_inline(size_t size) {
  return hak_malloc_aligned_inline(hak_os_page_size(), size);
}

/* pvalloc rounds the size up to whole pages (a zero size to one page). */
HAK_INLINE void* hak_pvalloc_inline(size_t size) {
  size_t page = hak_os_page_size();
  if (size > PTRDIFF_MAX) {
    errno = ENOMEM;
    return NULL;
  }
  return hak_malloc_aligned_inline(page, hak_align_up(size == 0 ? 1 : size, page));
}

/* glibc semantics: realloc(NULL, n) is malloc(n); realloc(p, 0) frees p and returns
 * NULL; on failure p is untouched. Pool blocks stay in place while the new size fits
 * and is more than half; big blocks and whales grow and shrink in place or (whales)
 * move by mremap (hak_large.c), unless they shrink into a pool class. */
HAK_INLINE void* hak_realloc_inline(void* p, size_t size) {
  if (p == NULL) return hak_malloc_inline(size);
  if (size == 0) {
    hak_free_inline(p);
    return NULL;
  }
  hak_hardening_check_owned(p, HAK_FAULT_INVALID_REALLOC);
  if (hak_unlikely(size > PTRDIFF_MAX)) { /* before any size + HAK_CANARY_ROOM can wrap */
    errno = ENOMEM;
    return NULL;
  }
  hak_segment_t* segment = hak_segment_of(p);
  size_t usable = hak_usable_size_inline(p);
  if (HAK_HARDEN_INTEGRITY && segment->kind == HAK_SEGMENT_ZERO) {
    void* q = hak_malloc_inline(size); /* nothing to copy */
    if (q != NULL) hak_free_inline(p);
    return q;
  }
  if (segment->kind == HAK_SEGMENT_HUGE) {
    if (size > HAK_POOL_MAX || size > usable / 2) {
      return hak_hardening_canary_set(hak_whale_realloc(segment, p, size + HAK_CANARY_ROOM), size);
    }
  } else if (segment->kind == HAK_SEGMENT_BIG) {
    if (hak_big_resize_in_place(hak_segment_page_of(segment, p), size + HAK_CANARY_ROOM)) {
      return hak_hardening_canary_set(p, size);
    }
  } else {
    size_t room = hak_segment_page_of(segment, p)->block_size - HAK_CANARY_ROOM;
    if (size <= room && (size > room / 2 || room <= 32)) return hak_hardening_canary_set(p, size);
  }
  void* q = hak_malloc_inline(size);
  if (q == NULL) return NULL;
  memcpy(q, p, usable < size ? usable : size);
  hak_free_inline(p);
  return q;
}

HAK_INLINE void* hak_reallocarray_inline(void* p, size_t count, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(count, size, &total)) {
    errno = ENOMEM;
    return NULL;
  }
  return hak_realloc_inline(p, total);
}

#endif /* HAK_ALLOC_H */
