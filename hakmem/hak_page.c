/* SPDX-License-Identifier: MIT */
/* hak_page.c - one page of equal-sized blocks: carving the free list lazily, collecting
 * blocks that other threads freed, and the delayed-free state machine those threads use
 * to wake the owner of a full page. */
#include <sched.h>

#include "hak_internal.h"

/* Target of every unused direct-table slot: no free block, so the fast path falls
 * through to the slow path without a separate "initialised?" test. */
hak_page_t hak_page_empty;

/* Lays a size class over the page's span (slice_index, slice_count and is_zero are
 * already set by the segment). */
void hak_page_init(hak_page_t* page, hak_heap_t* heap, size_t class_index) {
  uint8_t* area = hak_page_area(page);
  size_t area_size = (size_t)page->slice_count << HAK_SLICE_SHIFT;
  page->block_size = (uint32_t)hak_class_block_size(class_index);
  page->class_index = (uint8_t)class_index;
  page->reserved = (uint16_t)(area_size / page->block_size);
  page->capacity = 0;
  page->used = 0;
  page->free = NULL;
  page->in_full = 0;
  page->retire_expire = 0;
  page->retire_credit = 0;
  page->no_retain = 0;
  page->next = page->prev = NULL;
  atomic_store_explicit(&page->xthread_free, HAK_DELAYED_NONE, memory_order_relaxed);
  atomic_store_explicit(&page->xheap, heap, memory_order_relaxed);
  hak_asan_poison(area, area_size); /* nothing handed out yet */
  hak_page_extend(page);
}

/* Carves up to HAK_PAGE_EXTEND_BYTES more blocks (at least HAK_PAGE_EXTEND_MIN_BLOCKS)
 * into the (empty) free list, in address order, so a fresh page touches memory one OS
 * page at a time. Blocks never handed out are still zero if the span was. */
void hak_page_extend(hak_page_t* page) {
  size_t bsize = page->block_size;
  size_t count = HAK_PAGE_EXTEND_BYTES / bsize;
  if (count < HAK_PAGE_EXTEND_MIN_BLOCKS) count = HAK_PAGE_EXTEND_MIN_BLOCKS;
  if (count > (size_t)(page->reserved - page->capacity)) count = page->reserved - page->capacity;
  if (count == 0) return;
  uint8_t* first = hak_page_area(page) + (size_t)page->capacity * bsize;
  hak_hardening_zero_fresh(page, first, count * bsize);
  page->free_is_zero = page->free == NULL && page->is_zero;
#if HAK_HARDEN_INTEGRITY
  page->free = hak_hardening_link_shuffled(first, count, bsize, page->free);
#else
  uint8_t* last = first + (count - 1) * bsize;
  for (uint8_t* b = first; b < last; b += bsize) hak_block_set_next((hak_block_t*)b, (hak_block_t*)(b + bsize));
  hak_block_set_next((hak_block_t*)last, page->free);
  page->free = (hak_block_t*)first;
#endif
  page->capacity = (uint16_t)(page->capacity + count);
}

/* The remote-free hand-off's compare-and-swaps: every one here is weak (may fail
 * spuriously) and retried; the cas_fail test variant makes every Nth fail on purpose. */
#if HAK_TEST_CAS_FAIL_EVERY
static bool hak_page_cas_fails_on_purpose(void) {
  static _Thread_local unsigned attempts;
  return ++attempts % HAK_TEST_CAS_FAIL_EVERY == 0;
}
#else
#define hak_page_cas_fails_on_purpose() false
#endif
#define HAK_PAGE_CAS(obj, expected, desired, success, failure) \
  (!hak_page_cas_fails_on_purpose() &&                       \
   atomic_compare_exchange_weak_explicit(obj, expected, desired, success, failure))

/* Moves blocks freed by other threads onto the owner's free list. */
void hak_page_collect_thread_free(hak_page_t* page) {
  uintptr_t tf = atomic_load_explicit(&page->xthread_free, memory_order_relaxed);
  if (hak_thread_free_ptr(tf) == NULL) return;
  while (!HAK_PAGE_CAS(&page->xthread_free, &tf,
                                                (uintptr_t)hak_thread_free_state(tf),
                                                memory_order_acquire, memory_order_relaxed)) {
  }
  hak_block_t* head = hak_thread_free_ptr(tf);
  hak_block_t* tail = head;
  uint32_t count = 1;
  for (hak_block_t* next = hak_page_block_next(page, tail); next != NULL; next = hak_page_block_next(page, tail)) {
    tail = next;
    count++;
  }
  hak_block_set_next(tail, page->free);
  page->free = head;
  page->free_is_zero = 0;
  page->used -= count;
  hak_stats_used_adjust(page->class_index, count);
}

/* Sets the delayed-free state, waiting out a remote thread that is mid hand-off. */
void hak_page_set_delayed(hak_page_t* page, hak_delayed_t state) {
  uintptr_t tf = atomic_load_explicit(&page->xthread_free, memory_order_relaxed);
  for (;;) {
    if (hak_thread_free_state(tf) == HAK_DELAYED_FREEING) {
      sched_yield();
      tf = atomic_load_explicit(&page->xthread_free, memory_order_relaxed);
      continue;
    }
    uintptr_t desired = (tf & ~(uintptr_t)3) | (uintptr_t)state;
    if (HAK_PAGE_CAS(&page->xthread_free, &tf, desired,
                                              memory_order_acq_rel, memory_order_relaxed)) {
      return;
    }
  }
}

/* Marks a page that has no free block as full: from now on remote frees wake the owner
 * through the heap's delayed list. Fails (returns false) when remote frees are already
 * waiting on the page, which the caller should then collect instead. */
bool hak_page_try_use_delayed(hak_page_t* page) {
  uintptr_t tf = atomic_load_explicit(&page->xthread_free, memory_order_relaxed);
  for (;;) {
    if (hak_thread_free_ptr(tf) != NULL) return false;
    if (hak_thread_free_state(tf) == HAK_DELAYED_FREEING) {
      sched_yield();
      tf = atomic_load_explicit(&page->xthread_free, memory_order_relaxed);
      continue;
    }
    if (HAK_PAGE_CAS(&page->xthread_free, &tf, (uintptr_t)HAK_DELAYED_USE,
                                              memory_order_acq_rel, memory_order_relaxed)) {
      return true;
    }
  }
}

/* A block freed by a thread that does not own its page. */
void hak_page_free_remote(hak_page_t* page, hak_block_t* block) {
  hak_asan_poison(block, page->block_size); /* before publishing: the owner may reuse it */
  uintptr_t tf = atomic_load_explicit(&page->xthread_free, memory_order_relaxed);
  uintptr_t desired;
  /* acq_rel: the block is published (release), and a USE read here orders what follows
   * (the owner heap's delayed list) after the owner set USE (acquire). */
  do {
    if (hak_thread_free_state(tf) == HAK_DELAYED_USE) {
      desired = (tf & ~(uintptr_t)3) | HAK_DELAYED_FREEING;
    } else {
      hak_block_set_next(block, hak_thread_free_ptr(tf));
      desired = (uintptr_t)block | (uintptr_t)hak_thread_free_state(tf);
    }
  } while (!HAK_PAGE_CAS(&page->xthread_free, &tf, desired,
                                                  memory_order_acq_rel, memory_order_relaxed));
  if (hak_thread_free_state(tf) != HAK_DELAYED_USE) return;

  /* The page is full: hand the block to the owner heap so it notices. The owner cannot
   * drop the page or the heap while the state reads FREEING. */
  hak_heap_t* heap = atomic_load_explicit(&page->xheap, memory_order_acquire);
  hak_block_t* head = atomic_load_explicit(&heap->thread_delayed_free, memory_order_relaxed);
  do {
    hak_block_set_next(block, head);
  } while (!HAK_PAGE_CAS(&heap->thread_delayed_free, &head, block,
                                                  memory_order_release, memory_order_relaxed));
  /* Back to USE, not NONE: the page stays off the owner's allocation path until the
   * owner switches it, so later frees of its blocks must wake the owner too. */
  tf = atomic_load_explicit(&page->xthread_free, memory_order_relaxed);
  while (!HAK_PAGE_CAS(&page->xthread_free, &tf,
                                                (tf & ~(uintptr_t)3) | HAK_DELAYED_USE,
                                                memory_order_release, memory_order_relaxed)) {
  }
}
