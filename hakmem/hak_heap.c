/* SPDX-License-Identifier: MIT */
/* hak_heap.c - thread-local heaps: the allocation slow path (finding or making a page
 * with free blocks), the local-free slow path (full and empty pages), delayed frees
 * from other threads, and handing a heap's segments back when its thread exits. */
#include <errno.h>
#include <string.h>

#include "hak_internal.h"

/* Every thread starts here: all current pages are the empty page, so the first
 * allocation takes the slow path, which gives the thread a heap of its own. */
hak_heap_t hak_heap_empty = {
    .direct = {[0 ... HAK_TINY_DIRECT_COUNT - 1] = &hak_page_empty},
    .current = {[0 ... HAK_CLASS_COUNT - 1] = &hak_page_empty},
};

__thread hak_tls_t hak_tls __attribute__((tls_model("initial-exec"))) = {.heap = &hak_heap_empty};
#if HAK_TID_FALLBACK
__thread uint8_t hak_thread_anchor __attribute__((tls_model("initial-exec")));
#endif

/* ---- Heap pool: heap structs are never returned to the OS, only reused ---------- */

static hak_lock_t hak_heap_pool_lock = HAK_LOCK_INIT;
static hak_heap_t* hak_heap_pool;      /* every heap ever made, live or idle */
static hak_heap_t* hak_heap_idle;      /* the idle ones: a new thread pops one, O(1) */
static uint8_t* hak_heap_chunk;        /* carving area for new heap structs */
static size_t hak_heap_chunk_left;
#define HAK_HEAP_CHUNK_SIZE ((size_t)64 * 1024)
_Static_assert(sizeof(hak_heap_t) + 64 <= HAK_HEAP_CHUNK_SIZE, "a carving area must hold a heap");

void hak_heap_fork_lock(void) {
  hak_lock(&hak_heap_pool_lock);
}

void hak_heap_fork_unlock(void) {
  hak_unlock(&hak_heap_pool_lock);
}

/* Clears a heap for a new thread, keeping its place in the pool list. */
static void hak_heap_reset(hak_heap_t* heap) {
  hak_heap_t* next = heap->next_in_pool;
#if HAK_REMOTE_CACHE
  memset(heap, 0, offsetof(hak_heap_t, active_ms));
  atomic_store_explicit(&heap->active_ms, 0, memory_order_relaxed);
#else
  memset(heap, 0, sizeof(*heap));
#endif
  heap->next_in_pool = next;
  for (size_t i = 0; i < HAK_TINY_DIRECT_COUNT; i++) heap->direct[i] = &hak_page_empty;
  for (size_t i = 0; i < HAK_CLASS_COUNT; i++) heap->current[i] = &hak_page_empty;
  heap->retired_min = UINT8_MAX;
  heap->spans.decay_due_ms = UINT64_MAX;
}

/* A new heap struct from the carving area (lock held); NULL when it is used up. */
static hak_heap_t* hak_heap_carve(void) {
  size_t size = hak_align_up(sizeof(hak_heap_t), 64);
  if (hak_heap_chunk_left < size) return NULL;
  hak_heap_t* heap = (hak_heap_t*)hak_heap_chunk;
  hak_heap_chunk += size;
  hak_heap_chunk_left -= size;
  heap->next_in_pool = hak_heap_pool;
  hak_heap_pool = heap;
  return heap;
}

/* Takes an idle heap (or carves a new one) and makes it live, reset, in one critical
 * section: resetting it after the unlock would briefly show live == false to another
 * thread looking for an idle heap, and two threads would share it. A new carving area
 * is mapped outside the lock (threads starting meanwhile need not wait on the kernel);
 * if another thread installed one first, ours goes back. */
static hak_heap_t* hak_heap_pool_take(void) {
  void* spare = NULL;
  hak_heap_t* heap;
  for (;;) {
    hak_lock(&hak_heap_pool_lock);
    heap = hak_heap_idle;
    if (heap != NULL) {
      hak_heap_idle = heap->next_idle;
    } else {
      heap = hak_heap_carve();
      if (heap == NULL && spare != NULL) {
        hak_heap_chunk = spare;
        hak_heap_chunk_left = HAK_HEAP_CHUNK_SIZE;
        spare = NULL;
        heap = hak_heap_carve();
      }
    }
    if (heap != NULL) {
      hak_heap_reset(heap);
      heap->live = true;
    }
    hak_unlock(&hak_heap_pool_lock);
    if (heap != NULL) break;
    spare = hak_os_map_aligned(HAK_HEAP_CHUNK_SIZE, HAK_OS_PAGE_SIZE, 0, 0, HAK_OS_USER_META);
    if (spare == NULL) return NULL;
  }
  if (spare != NULL) hak_os_unmap(spare, HAK_HEAP_CHUNK_SIZE, HAK_OS_USER_META);
  return heap;
}

size_t hak_heap_pool_count(void) {
  size_t n = 0;
  hak_lock(&hak_heap_pool_lock);
  for (hak_heap_t* heap = hak_heap_pool; heap != NULL; heap = heap->next_in_pool) n++;
  hak_unlock(&hak_heap_pool_lock);
  return n;
}

void hak_heap_visit_all_after(void (*first)(void* arg), hak_heap_visit_fn* fn, void* arg) {
  hak_lock(&hak_heap_pool_lock);
  if (first != NULL) first(arg);
  for (hak_heap_t* heap = hak_heap_pool; fn != NULL && heap != NULL; heap = heap->next_in_pool) {
    if (heap->live) fn(heap, arg);
  }
  hak_unlock(&hak_heap_pool_lock);
}

void hak_heap_visit_all(hak_heap_visit_fn* fn, void* arg) {
  hak_heap_visit_all_after(NULL, fn, arg);
}

static hak_heap_t* hak_heap_thread_init(void) {
  hak_process_init();
  hak_heap_t* heap = hak_heap_pool_take();
  if (heap == NULL) return NULL;
  heap->thread_id = hak_thread_id();
  hak_tls.heap = heap;
  hak_thread_register(heap);
  hak_stat_global_inc(threads_started);
  return heap;
}

/* ---- Page queues ------------------------------------------------------------------ */

/* Keeps the fast-path tables pointing at the first page of the class's queue. */
static void hak_heap_current_changed(hak_heap_t* heap, size_t cls) {
  hak_page_t* page = heap->queues[cls].first != NULL ? heap->queues[cls].first : &hak_page_empty;
  heap->current[cls] = page;
  if (cls >= HAK_TINY_CLASS_COUNT) return;
  size_t lo = cls == 0 ? 0 : hak_class_block_size(cls - 1) / 16 + 1;
  size_t hi = hak_class_block_size(cls) / 16;
  for (size_t slot = lo; slot <= hi; slot++) heap->direct[slot] = page;
}

static void hak_page_queue_remove(hak_page_queue_t* q, hak_page_t* page) {
  if (page->prev != NULL) page->prev->next = page->next;
  else q->first = page->next;
  if (page->next != NULL) page->next->prev = page->prev;
  else q->last = page->prev;
  page->next = page->prev = NULL;
}

static void hak_page_queue_push_front(hak_page_queue_t* q, hak_page_t* page) {
  page->prev = NULL;
  page->next = q->first;
  if (q->first != NULL) q->first->prev = page;
  else q->last = page;
  q->first = page;
}

static void hak_page_queue_push_back(hak_page_queue_t* q, hak_page_t* page) {
  page->next = NULL;
  page->prev = q->last;
  if (q->last != NULL) q->last->next = page;
  else q->first = page;
  q->last = page;
}

static void hak_heap_queue_remove(hak_heap_t* heap, hak_page_t* page) {
  hak_page_queue_t* q = &heap->queues[page->class_index];
  bool was_first = q->first == page;
  hak_page_queue_remove(q, page);
  if (was_first) hak_heap_current_changed(heap, page->class_index);
}

static void hak_heap_queue_push_front(hak_heap_t* heap, hak_page_t* page) {
  hak_page_queue_push_front(&heap->queues[page->class_index], page);
  hak_heap_current_changed(heap, page->class_index);
}

/* Adds a page behind the current one (used by adoption and by pages leaving full). */
static void hak_heap_page_queue_push(hak_heap_t* heap, hak_page_t* page) {
  hak_page_queue_t* q = &heap->queues[page->class_index];
  bool was_empty = q->first == NULL;
  hak_page_queue_push_back(q, page);
  if (was_empty) hak_heap_current_changed(heap, page->class_index);
}

/* ---- Full pages and empty pages ------------------------------------------------- */

static bool hak_heap_page_to_full(hak_heap_t* heap, hak_page_t* page) {
  if (!hak_page_try_use_delayed(page)) return false; /* remote frees arrived meanwhile */
  hak_heap_queue_remove(heap, page);
  page->in_full = 1;
  hak_page_queue_push_back(&heap->full, page);
  return true;
}

/* A full page that got a block back returns behind the current page of its class. It
 * keeps HAK_DELAYED_USE: until it is the page the heap allocates from, the frees of its
 * other blocks must keep reaching the owner, or an owner that no longer uses this class
 * would never see the page empty (hak_heap_scan_queue switches it off). */
static void hak_heap_page_unfull(hak_heap_t* heap, hak_page_t* page) {
  hak_page_queue_remove(&heap->full, page);
  page->in_full = 0;
  hak_heap_page_queue_push(heap, page);
}

/* An adopted page with live blocks (already in HAK_DELAYED_USE, so the frees of its
 * blocks wake this heap): behind the current page of its class when it has room, so
 * the adopter fills it before taking fresh pages; else in the full queue. */
void hak_heap_page_adopted(hak_heap_t* heap, hak_page_t* page) {
  page->retire_expire = 0; /* its last owner's bookkeeping (kept_slices restarts at 0) */
  if (page->free != NULL || page->capacity < page->reserved) {
    page->in_full = 0; /* it may have been in its last owner's full queue */
    hak_heap_page_queue_push(heap, page);
    return;
  }
  page->in_full = 1;
  hak_page_queue_push_back(&heap->full, page);
}

/* The page is no longer kept empty for its class (used again, or given back). */
static void hak_heap_page_unkeep(hak_page_t* page) {
  if (page->retire_expire == 0) return;
  page->retire_expire = 0;
  hak_segment_of(page)->kept_slices -= page->slice_count;
}

static void hak_heap_page_give_back(hak_heap_t* heap, hak_page_t* page) {
  hak_heap_page_unkeep(page);
  hak_heap_queue_remove(heap, page);
  /* The class's last page with room went: its next fresh page may be smaller. Not all
   * the way back at once: a class used in bursts would take a small page each time. */
  uint8_t* grow = &heap->page_grow[page->class_index];
  if (heap->queues[page->class_index].first == NULL && *grow > 0) (*grow)--;
  /* used == 0 does not mean no remote thread is still on the page: one that handed its
   * block over through the delayed list ends its hand-off with a CAS on the page after
   * the owner may already have collected that block. Wait it out before the page (and
   * perhaps its segment) goes away. */
  hak_page_set_delayed(page, HAK_DELAYED_NONE);
  hak_segment_page_free(heap, page);
}

/* An empty page kept for its class (hak_heap_page_retire), not used since. */
static bool hak_heap_page_is_kept(const hak_page_t* page) {
  return page->used == 0 && page->retire_expire != 0;
}

/* Keeping empty pages is worth it in a heap's one segment (a thread bouncing one block
 * must not take and give back a segment each time); elsewhere, pages kept for their
 * classes must not be all that holds a segment, or a heap that freed everything would
 * keep a segment per class it used. Gives back such pages; returns whether it did.
 * `shrank`: the heap just gave a segment back. */
static bool hak_heap_release_kept_pages_of(hak_heap_t* heap, hak_segment_t* segment, bool shrank) {
  if (segment->kept_slices != segment->used_slices) return false; /* cheap: some page is not kept */
  if (heap->spans.segments == NULL || heap->spans.segments->next == NULL) return false;
  for (size_t i = 1; i < HAK_SEGMENT_DATA_END; i += segment->pages[i].slice_count) {
    const hak_page_t* page = &segment->pages[i];
    if (page->in_use && !hak_heap_page_is_kept(page)) return false;
  }
  /* Only if the heap's other segments could take these pages and stay at most half
   * full: the heap clearly shrank. Else these classes, when used again, would take a
   * new segment, and a few blocks cycling through many classes would take and give
   * back segments all the time. After the heap gave a segment back, one a quarter
   * full at most goes back anyway: a 4 MiB unit held for a few kept pages is the
   * greater waste once the heap is shrinking (while it churns, the rule above holds). */
  if (!shrank || segment->used_slices * 4 > HAK_SEGMENT_DATA_END) {
    size_t others_used = 0, others_capacity = 0;
    for (const hak_segment_t* s = heap->spans.segments; s != NULL; s = s->next) {
      if (s == segment) continue;
      others_used += s->used_slices;
      others_capacity += HAK_SEGMENT_DATA_END - 1;
    }
    if ((others_used + segment->used_slices) * 2 > others_capacity) return false;
  }
  for (size_t i = 1; i < HAK_SEGMENT_DATA_END;) {
    hak_page_t* page = &segment->pages[i];
    if (!page->in_use) {
      i += page->slice_count;
      continue;
    }
    bool last = segment->used_slices == page->slice_count;
    hak_heap_page_give_back(heap, page);
    if (last) break; /* the segment went back to the region */
    i = hak_segment_slice_after_span(segment, i);
  }
  return true;
}

HAK_NOINLINE static void hak_heap_page_release(hak_heap_t* heap, hak_page_t* page) {
  hak_segment_t* segment = hak_segment_of(page);
  bool last = segment->used_slices == page->slice_count;
  hak_heap_page_give_back(heap, page);
  if (!last) {
    hak_heap_release_kept_pages_of(heap, segment, false);
    return;
  }
  /* A segment went back: the heap shrank, so segments left holding only kept pages
   * (when the others were still full) may go back now. */
  for (hak_segment_t *s = heap->spans.segments, *next; s != NULL; s = next) {
    next = s->next;
    if (s->used_slices != 0 && s->kept_slices == s->used_slices) hak_heap_release_kept_pages_of(heap, s, true);
  }
}

/* A page whose last block came back: give it to its segment, unless it is the only
 * page of its class. That one is kept until the heap has taken a few fresh pages for
 * other classes (hak_heap_collect_retired), so alloc/free of one block does not churn
 * pages, yet a class no longer used does not hold its page while the heap grows
 * elsewhere. Not kept: a page of one block (above 128 KiB: taking its span again costs
 * little next to using the block), a page adopted from an exited thread (nothing here
 * used it).
 * Nor are kept pages all that holds a segment (hak_heap_release_kept_pages_of), checked
 * when a page is newly kept: one bouncing between kept and in use is not rechecked. */
static void hak_heap_page_retire(hak_heap_t* heap, hak_page_t* page) {
  if (page->in_full) hak_heap_page_unfull(heap, page);
  hak_page_queue_t* q = &heap->queues[page->class_index];
  if (HAK_RETAIN_EMPTY_PAGE && !page->no_retain && q->first == page && page->next == NULL &&
      page->block_size <= HAK_MEDIUM_BLOCK_MAX) {
    bool newly_kept = page->retire_expire == 0;
    if (newly_kept) hak_segment_of(page)->kept_slices += page->slice_count;
    /* Kept longer each time it proves useful: a class in steady use keeps its page, a
     * class used once (a burst of one size) gives its page back soon. */
    page->retire_expire = (uint8_t)((page->block_size <= HAK_SMALL_PAGE_BLOCK_MAX ? 2 : 1) << page->retire_credit);
    if (page->retire_credit < HAK_RETIRE_CREDIT_MAX) page->retire_credit++;
    if (page->class_index < heap->retired_min) heap->retired_min = page->class_index;
    if (page->class_index > heap->retired_max) heap->retired_max = page->class_index;
    if (newly_kept) hak_heap_release_kept_pages_of(heap, hak_segment_of(page), false);
    return;
  }
  hak_heap_page_release(heap, page);
}

/* Counts down the kept empty pages; releases those whose time ran out (all with
 * force). A kept page that got blocks again simply stops counting. */
static void hak_heap_collect_retired(hak_heap_t* heap, bool force) {
  size_t lo = heap->retired_min, hi = heap->retired_max;
  uint8_t new_lo = UINT8_MAX, new_hi = 0;
  for (size_t cls = lo; cls <= hi && cls < HAK_CLASS_COUNT; cls++) {
    hak_page_t* page = heap->queues[cls].first;
    if (page == NULL || page->retire_expire == 0) continue;
    if (page->used != 0) {
      hak_heap_page_unkeep(page);
    } else if (force || page->retire_expire == 1) {
      hak_heap_page_release(heap, page);
    } else {
      page->retire_expire--;
      if (new_lo == UINT8_MAX) new_lo = (uint8_t)cls;
      new_hi = (uint8_t)cls;
    }
  }
  heap->retired_min = new_lo;
  heap->retired_max = new_hi;
}

/* A local free left the page empty or took it off the full list (page->used already
 * decremented). */
static void hak_heap_page_after_free(hak_heap_t* heap, hak_page_t* page) {
  if (page->used == 0) hak_heap_page_retire(heap, page);
  else if (page->in_full) hak_heap_page_unfull(heap, page);
}

static void hak_heap_free_local(hak_page_t* page, hak_block_t* block) {
  if (hak_page_push_free(page, block) || page->in_full) hak_heap_page_after_free(hak_segment_of(page)->heap, page);
}

static void hak_heap_collect_delayed(hak_heap_t* heap);

/* Local free that found the page full or empty. Every 256th time (the counter wraps)
 * it also takes in the blocks other threads handed over and lets idle memory decay:
 * a thread that only frees, or only allocates from the pages it has, never reaches the
 * malloc slow path that otherwise does both. */
HAK_NOINLINE void hak_heap_local_free_slow(hak_page_t* page) {
  hak_heap_t* heap = hak_segment_of(page)->heap;
  hak_heap_page_after_free(heap, page);
  if (hak_unlikely(++heap->free_slow_ticks == 0)) {
    hak_heap_collect_delayed(heap);
    hak_heap_decay(heap);
  }
}

/* Blocks other threads freed onto full pages of this heap. */
static void hak_heap_collect_delayed(hak_heap_t* heap) {
  if (atomic_load_explicit(&heap->thread_delayed_free, memory_order_relaxed) == NULL) return;
  hak_block_t* block = atomic_exchange_explicit(&heap->thread_delayed_free, NULL, memory_order_acquire);
  while (block != NULL) {
    hak_block_t* next = hak_block_next(block);
    hak_hardening_check_delayed_link(block, next);
    hak_heap_free_local(hak_segment_page_of(hak_segment_of(block), block), block);
    hak_stat_inc(heap, free_delayed);
    block = next;
  }
}

/* Frees a block of a pool page this thread does not own. */
static void hak_heap_free_elsewhere(hak_segment_t* segment, hak_page_t* page, hak_block_t* block) {
  if (atomic_load_explicit(&segment->thread_id, memory_order_acquire) == 0 &&
      hak_segment_free_abandoned(segment, page, block)) {
    return; /* its owner exited: freed into the segment directly */
  }
  hak_page_free_remote(page, block);
}

/* ---- The remote cache -------------------------------------------------------------------
 * A pool block of an idle thread's page that this thread frees stays here, per class,
 * and serves this thread's next allocation of its class on the malloc slow path (when
 * the class's current page has no free block left), instead of going back to its page
 * at once. A thread that replaces blocks an idle thread made (a main thread that set up
 * a server's state and blocked in pthread_join) thus reuses them where they are: sent
 * home, they would wait on pages nobody looks at while this thread carved new pages.
 * The page counts a cached block as used meanwhile, so nothing else needs to know: at
 * most HAK_REMOTE_CACHE_CLASS_MAX blocks per class and HAKMEM_REMOTE_CACHE bytes stay
 * here, and they go home (the remote free they skipped) when the thread exits or calls
 * hak_collect, when the cache goes stale, and when this thread only frees. */
#if HAK_REMOTE_CACHE
static void hak_heap_remote_cache_flush(hak_heap_t* heap);

static void hak_heap_remote_cache_account(hak_heap_t* heap, ptrdiff_t blocks, ptrdiff_t bytes) {
  /* the owner writes; hak_stats_get reads from any thread */
  __atomic_store_n(&heap->remote_cache_blocks, heap->remote_cache_blocks + (size_t)blocks, __ATOMIC_RELAXED);
  __atomic_store_n(&heap->remote_cache_bytes, heap->remote_cache_bytes + (size_t)bytes, __ATOMIC_RELAXED);
}

/* A remote free found the cache full. After HAK_REMOTE_CACHE_BACKOFF of them with no
 * block taken out meanwhile, this thread frees other threads' blocks without allocating
 * their like (a consumer): it sends what it holds home and keeps nothing for as many
 * remote frees again, so such a thread never strands their memory for long. */
static void hak_heap_remote_cache_full(hak_heap_t* heap) {
  if (++heap->remote_cache_full_frees < HAK_REMOTE_CACHE_BACKOFF) return;
  hak_heap_remote_cache_flush(heap);
  heap->remote_cache_skip = HAK_REMOTE_CACHE_BACKOFF;
  heap->remote_cache_full_frees = 0;
}

/* Stamps the heap active (its first slow path, then every 16th: a busy heap takes
 * many, and a clock reading on each would cost more than the check it serves). */
static void hak_heap_stamp_active(hak_heap_t* heap) {
  if ((heap->remote_cache_stamp_ticks++ & 15) == 0) {
    atomic_store_explicit(&heap->active_ms, hak_purge_now_ms(), memory_order_relaxed);
  }
}

/* Whether a page's owner is idle: no malloc slow path for HAK_REMOTE_CACHE_IDLE_MS
 * before this thread's last one (its own clock reading: the free path reads none). A
 * busy owner takes its blocks back soon, and a thread keeping them would scatter its
 * own long-lived data over the segments of threads that come and go. */
static bool hak_heap_owner_idle(const hak_heap_t* heap, hak_page_t* page) {
  const hak_heap_t* owner = atomic_load_explicit(&page->xheap, memory_order_relaxed);
  if (owner == NULL) return false; /* heap structs are never unmapped: reading one is safe */
  uint64_t owner_ms = atomic_load_explicit(&owner->active_ms, memory_order_relaxed);
  return owner_ms + HAK_REMOTE_CACHE_IDLE_MS <= atomic_load_explicit(&heap->active_ms, memory_order_relaxed);
}

/* Whether a remote free may go to the cache: the freeing thread has a heap, and the
 * page's owner is alive and not allocating from it (HAK_DELAYED_USE; not the page it
 * allocates from, HAK_DELAYED_NONE, nor an exited thread's segment, HAK_DELAYED_NEVER,
 * which the free straight into it helps empty). Inline, so that the other remote frees
 * pay two loads and no call. */
HAK_INLINE bool hak_heap_remote_cache_may_take(const hak_heap_t* heap, hak_page_t* page) {
  uintptr_t tf = atomic_load_explicit(&page->xthread_free, memory_order_relaxed);
  return heap != &hak_heap_empty && hak_thread_free_state(tf) == HAK_DELAYED_USE;
}

/* Keeps the block if its page's owner is idle and the cache has room. False: free it
 * as usual. */
static HAK_NOINLINE bool hak_heap_remote_cache_put(hak_heap_t* heap, hak_page_t* page, hak_block_t* block) {
  size_t cls = page->class_index, bytes = page->block_size;
  if (!hak_heap_owner_idle(heap, page)) return false;
  if (heap->remote_cache_skip != 0) {
    heap->remote_cache_skip--;
    return false;
  }
  if (heap->remote_cache_count[cls] >= HAK_REMOTE_CACHE_CLASS_MAX ||
      heap->remote_cache_bytes + bytes > hak_options.remote_cache_bytes) {
    hak_heap_remote_cache_full(heap);
    return false;
  }
  hak_asan_poison(block, bytes);
  hak_block_set_next(block, heap->remote_cache[cls]);
  heap->remote_cache[cls] = block;
  heap->remote_cache_count[cls]++;
  hak_heap_remote_cache_account(heap, 1, (ptrdiff_t)bytes);
  hak_stat_inc(heap, free_remote_cached);
  return true;
}

/* A cached block of class cls, or NULL. After HAK_REMOTE_CACHE_MISSES requests it could
 * not serve, what it holds is sent home: blocks of classes this thread no longer asks
 * for would otherwise pin their pages (and segments of threads that exited meanwhile)
 * for as long as it lives. */
static hak_block_t* hak_heap_remote_cache_take(hak_heap_t* heap, size_t cls) {
  hak_block_t* block = heap->remote_cache[cls];
  if (block == NULL) {
    if (heap->remote_cache_blocks != 0 && ++heap->remote_cache_misses >= HAK_REMOTE_CACHE_MISSES) {
      hak_heap_remote_cache_flush(heap);
    }
    return NULL;
  }
  size_t bytes = hak_class_block_size(cls);
  heap->remote_cache[cls] = hak_block_next(block);
  heap->remote_cache_count[cls]--;
  hak_heap_remote_cache_account(heap, -1, -(ptrdiff_t)bytes);
  hak_asan_unpoison(block, bytes);
  heap->remote_cache_last = block; /* hak_heap_gave_cached_block */
  heap->remote_cache_full_frees = 0;
  hak_stat_inc(heap, alloc_remote_cached);
  return block;
}

/* Sends every cached block home: onto its page, the free it skipped (local now if this
 * thread adopted the page's segment meanwhile). Not through hak_free_checked, as the
 * quarantine's flush does: its remote path would put the block back in the cache. */
static void hak_heap_remote_cache_flush(hak_heap_t* heap) {
  if (heap->remote_cache_blocks == 0) return;
  for (size_t cls = 0; cls < HAK_CLASS_COUNT; cls++) {
    hak_block_t* block = heap->remote_cache[cls];
    heap->remote_cache[cls] = NULL;
    heap->remote_cache_count[cls] = 0;
    while (block != NULL) {
      hak_block_t* next = hak_block_next(block);
      hak_segment_t* segment = hak_segment_of(block);
      hak_page_t* page = hak_segment_page_of(segment, block);
      if (atomic_load_explicit(&segment->thread_id, memory_order_relaxed) == heap->thread_id) {
        hak_heap_free_local(page, block);
      } else {
        hak_heap_free_elsewhere(segment, page, block);
      }
      block = next;
    }
  }
  hak_heap_remote_cache_account(heap, -(ptrdiff_t)heap->remote_cache_blocks, -(ptrdiff_t)heap->remote_cache_bytes);
  heap->remote_cache_misses = 0;
}
#else
#define hak_heap_stamp_active(heap) ((void)(heap))
#define hak_heap_remote_cache_may_take(heap, page) ((void)(heap), (void)(page), false)
#define hak_heap_remote_cache_put(heap, page, block) ((void)(heap), (void)(page), (void)(block), false)
#define hak_heap_remote_cache_take(heap, cls) ((void)(heap), (void)(cls), (hak_block_t*)NULL)
#define hak_heap_remote_cache_flush(heap) ((void)(heap))
#endif

/* ---- Allocation slow path ---------------------------------------------------------- */

/* First page of the class's queue that has (or can carve) a free block; pages found
 * exhausted move to the full queue on the way. */
static hak_page_t* hak_heap_scan_queue(hak_heap_t* heap, size_t cls) {
  hak_page_queue_t* q = &heap->queues[cls];
  for (hak_page_t* page = q->first; page != NULL;) {
    hak_page_t* next = page->next;
    hak_page_collect_thread_free(page);
    if (page->free == NULL && page->capacity < page->reserved) hak_page_extend(page);
    if (page->free == NULL && !hak_heap_page_to_full(heap, page)) hak_page_collect_thread_free(page);
    if (page->free != NULL) {
      if (q->first != page) {
        hak_heap_queue_remove(heap, page);
        hak_heap_queue_push_front(heap, page);
      }
      /* The heap allocates from it now: remote frees can go straight to the page. */
      if (hak_thread_free_state(atomic_load_explicit(&page->xthread_free, memory_order_relaxed)) != HAK_DELAYED_NONE) {
        hak_page_set_delayed(page, HAK_DELAYED_NONE);
      }
      return page;
    }
    page = next;
  }
  return NULL;
}

/* A fresh page comes from free spans. Each one counts down the empty pages kept for
 * other classes: a page kept while the heap keeps needing new memory is likely not
 * needed, and its span is better reused than left while the heap spreads out. */
static hak_page_t* hak_heap_fresh_page(hak_heap_t* heap, size_t cls) {
  if (heap->retired_min != UINT8_MAX) hak_heap_collect_retired(heap, false);
  hak_page_t* page = hak_segment_page_alloc(heap, hak_class_page_slices(cls, heap->page_grow[cls]));
  if (page == NULL) return NULL;
  if (heap->page_grow[cls] < HAK_MEDIUM_PAGE_GROW_MAX) heap->page_grow[cls]++;
  hak_page_init(page, heap, cls);
  hak_heap_queue_push_front(heap, page);
  return page;
}

/* Before a fresh page would need a new segment, memory that exited threads left behind
 * is taken over: a few segments at most, stopping as soon as a free span fits, so a
 * slow path never walks the whole abandoned list (and a thread about to exit does not
 * take everything over only to abandon it again). While HAK_ADOPT_BACKLOG segments or
 * more wait on the list, a heap adopts even with room of its own: their free room and
 * partly used pages serve before its own spans grow the footprint. */
static hak_page_t* hak_heap_find_page(hak_heap_t* heap, size_t cls) {
  for (size_t adopted = 0;; adopted++) {
    hak_page_t* page = hak_heap_scan_queue(heap, cls);
    if (page != NULL) return page;
    if (adopted == HAK_ADOPT_MAX) break;
    if (hak_segment_abandoned_backlog() < HAK_ADOPT_BACKLOG &&
        hak_segment_has_span(heap, hak_class_page_slices(cls, heap->page_grow[cls]))) {
      break;
    }
    if (!hak_segment_adopt_one(heap)) break;
  }
  return hak_heap_fresh_page(heap, cls);
}

/* Memory nobody used for the purge delay goes back to the OS, checked on slow paths
 * (of the pools and of big blocks): the region's free units and the whale ring
 * (global), this heap's BigCache and the free spans of its segments, the big
 * segments' and the abandoned segments' free spans. */
void hak_heap_decay(hak_heap_t* heap) {
  hak_purge_tick();
  if (heap->bigcache.count > 0) hak_bigcache_trim(heap, hak_purge_now_ms());
  hak_segment_decay(heap, false);
  hak_segment_big_decay(false);
  hak_segment_abandoned_decay(false);
}

hak_heap_t* hak_heap_acquire(void) {
  hak_heap_t* heap = hak_heap_get();
  return heap != &hak_heap_empty ? heap : hak_heap_thread_init();
}

HAK_NOINLINE void* hak_heap_malloc_generic(hak_heap_t* heap, size_t size) {
  if (heap == &hak_heap_empty) {
    heap = hak_heap_thread_init();
    if (heap == NULL) {
      errno = ENOMEM;
      return NULL;
    }
  }
  size_t cls = hak_size_class(size);
  hak_block_t* cached = hak_heap_remote_cache_take(heap, cls);
  if (cached != NULL) {
    hak_stat_inc(heap, alloc_slow);
    hak_stat_class_inc(heap, class_allocs, cls);
    hak_stats_used_adjust(cls, 1); /* its page counted it used all along */
    return cached;
  }
  hak_heap_stamp_active(heap);
  hak_heap_collect_delayed(heap);
  hak_heap_decay(heap);
  hak_page_t* page = hak_heap_find_page(heap, cls);
  if (page == NULL) {
    errno = ENOMEM;
    return NULL;
  }
  hak_block_t* block = page->free;
  hak_hardening_on_alloc(page, block);
  page->free = hak_page_block_next(page, block);
  page->used++;
  hak_asan_unpoison(block, page->block_size);
  hak_hardening_on_handout(page, block);
  hak_stat_inc(heap, alloc_slow);
  hak_stat_class_inc(heap, class_allocs, cls);
  return block;
}

/* Blocks other threads freed onto pages the heap is not allocating from wait on the
 * pages' lists until the heap next looks at them; hak_collect takes them now, so what
 * was freed counts as free (and emptied pages go back). A page retired here is the only
 * one of its class or goes back: the walk's next page is never taken away. */
static void hak_heap_collect_remote(hak_heap_t* heap) {
  for (size_t cls = 0; cls < HAK_CLASS_COUNT; cls++) {
    for (hak_page_t *page = heap->queues[cls].first, *next; page != NULL; page = next) {
      next = page->next;
      hak_page_collect_thread_free(page);
      if (page->used == 0 && page->retire_expire == 0) hak_heap_page_retire(heap, page);
    }
  }
}

void hak_heap_collect(void) {
  hak_heap_t* heap = hak_heap_get();
  if (heap == &hak_heap_empty) return;
  hak_hardening_quarantine_flush(heap);
  hak_heap_remote_cache_flush(heap);
  hak_heap_collect_delayed(heap);
  hak_heap_collect_remote(heap);
  if (heap->retired_min != UINT8_MAX) hak_heap_collect_retired(heap, true);
  hak_bigcache_flush(heap, true);
  hak_segment_decay(heap, true);
}

/* ---- Free slow path ------------------------------------------------------------------- */

HAK_NOINLINE void hak_heap_free_generic(hak_segment_t* segment, hak_page_t* page, hak_block_t* block) {
  if (segment->kind != HAK_SEGMENT_POOL) { /* a big block or a whale: any thread frees it */
    hak_large_free(segment, page);
    return;
  }
  hak_heap_t* heap = hak_heap_get();
  hak_stat_inc_any(heap, class_frees[page->class_index]);
  hak_stat_inc_any(heap, free_remote);
  if (hak_heap_remote_cache_may_take(heap, page) && hak_heap_remote_cache_put(heap, page, block)) return;
  hak_heap_free_elsewhere(segment, page, block);
}

/* ---- Thread exit ------------------------------------------------------------------------ */

typedef void hak_page_fn(hak_heap_t* heap, hak_page_t* page);

static void hak_heap_for_each_page(hak_heap_t* heap, hak_page_fn* fn) {
  for (size_t cls = 0; cls < HAK_CLASS_COUNT; cls++) {
    for (hak_page_t* page = heap->queues[cls].first; page != NULL;) {
      hak_page_t* next = page->next;
      fn(heap, page);
      page = next;
    }
  }
  for (hak_page_t* page = heap->full.first; page != NULL;) {
    hak_page_t* next = page->next;
    fn(heap, page);
    page = next;
  }
}

static void hak_heap_page_never_delayed(hak_heap_t* heap, hak_page_t* page) {
  (void)heap;
  hak_page_set_delayed(page, HAK_DELAYED_NEVER);
}

static void hak_heap_page_release_if_empty(hak_heap_t* heap, hak_page_t* page) {
  hak_page_collect_thread_free(page);
  if (page->used == 0) hak_segment_page_free(heap, page);
}

/* A remote thread that was between HAK_DELAYED_FREEING and its reset when fork() hit
 * does not exist in the child: the state would never clear and the owner would wait on
 * it forever. The page is in the full queue (FREEING only follows USE), so it goes back
 * to USE; the block that thread was handing over is lost in the child. */
static void hak_heap_page_fork_repair(hak_heap_t* heap, hak_page_t* page) {
  (void)heap;
  uintptr_t tf = atomic_load_explicit(&page->xthread_free, memory_order_relaxed);
  if (hak_thread_free_state(tf) != HAK_DELAYED_FREEING) return;
  atomic_store_explicit(&page->xthread_free, (tf & ~(uintptr_t)3) | HAK_DELAYED_USE, memory_order_relaxed);
}

/* A heap of a thread that does not exist in a fork child: its segments get an owner
 * id no thread has, so every free into them takes the remote path (onto the pages'
 * atomic lists, never collected there: the memory stays with the dead heap in the
 * child). Without this, a new thread of the child, whose thread pointer glibc may
 * give from the vanished thread's cached stack, would take the local path into a
 * heap nobody owns, which may have been mid-update at the fork. Its pages switch to
 * HAK_DELAYED_NEVER (also those a vanished thread left in FREEING), so remote frees
 * never touch the heap itself. Nothing else of the heap is touched: the segment list
 * (whose pushes and removals leave it walkable at every step) and the segments' span
 * descriptors are read; it is neither live nor idle, so never reused. */
static void hak_heap_mark_dead(hak_heap_t* heap) {
  for (hak_segment_t* s = heap->spans.segments; s != NULL; s = s->next) {
    atomic_store_explicit(&s->thread_id, HAK_THREAD_ID_DEAD, memory_order_relaxed);
    for (size_t i = 1; i < HAK_SEGMENT_DATA_END; i = hak_segment_slice_after_span(s, i)) {
      hak_page_t* page = &s->pages[i];
      if (!page->in_use) continue;
      uintptr_t tf = atomic_load_explicit(&page->xthread_free, memory_order_relaxed);
      atomic_store_explicit(&page->xthread_free, (tf & ~(uintptr_t)3) | HAK_DELAYED_NEVER, memory_order_relaxed);
    }
  }
  heap->thread_id = HAK_THREAD_ID_DEAD;
#if HAK_STATS
  hak_stats_global_add(heap); /* its counts stay in the child's totals */
#endif
  heap->live = false;
}

void hak_heap_fork_child(void) {
  hak_heap_t* heap = hak_heap_get();
  for (hak_heap_t* h = hak_heap_pool; h != NULL; h = h->next_in_pool) {
    if (!h->live) continue;
    hak_segment_fork_clear_busy(h->spans.segments); /* see there */
    if (h != heap) hak_heap_mark_dead(h);
  }
  if (heap != &hak_heap_empty) hak_heap_for_each_page(heap, hak_heap_page_fork_repair);
}

/* Called once per exiting thread: frees what is empty and abandons the rest, so that
 * other threads adopt it. No remote thread may use the heap afterwards. */
void hak_heap_thread_done(hak_heap_t* heap) {
  if (heap == NULL || heap == &hak_heap_empty) return;
  hak_hardening_quarantine_flush(heap);
  hak_heap_remote_cache_flush(heap);
  hak_tls.heap = &hak_heap_empty;
  hak_heap_collect_delayed(heap);
  hak_bigcache_flush(heap, true);
  hak_bigcache_fold(heap);
  hak_heap_for_each_page(heap, hak_heap_page_never_delayed);
  /* Blocks that reached the delayed list before the switch: free without requeueing. */
  hak_block_t* block = atomic_exchange_explicit(&heap->thread_delayed_free, NULL, memory_order_acquire);
  while (block != NULL) {
    hak_block_t* next = hak_block_next(block);
    hak_hardening_check_delayed_link(block, next);
    hak_page_push_free(hak_segment_page_of(hak_segment_of(block), block), block);
    block = next;
  }
  hak_heap_for_each_page(heap, hak_heap_page_release_if_empty);
  /* What is due goes now; the rest decays on the abandoned list (or in an adopter's
   * heap), for a new thread is likely to adopt these segments at once: purging all of
   * it here made every short-lived thread fault its successor's pages in again. */
  hak_segment_decay(heap, false);
  while (heap->spans.segments != NULL) hak_segment_abandon(heap, heap->spans.segments);
  hak_purge_tick();
#if HAK_STATS
  hak_stats_count_global(offsetof(hak_stats_t, threads_ended));
#endif
  hak_lock(&hak_heap_pool_lock);
#if HAK_STATS
  /* With leaving the live set, under the lock hak_stats_get reads under: counted once. */
  hak_stats_global_add(heap);
#endif
  heap->live = false;
  heap->next_idle = hak_heap_idle;
  hak_heap_idle = heap;
  hak_unlock(&hak_heap_pool_lock);
}
