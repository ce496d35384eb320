/* SPDX-License-Identifier: MIT */
/* hak_segment.c - segments: one 4 MiB unit from the region, slice 0 its header, slices
 * 1..63 split into pages (spans of slices) and free spans, binned by length; taking a
 * page splits the smallest span that fits, freeing one merges it with free neighbours,
 * so memory one size gave back is reused by any other without page faults. A segment
 * whose slices are all free goes back to the region.
 *   pool segments  belong to one heap (pages of the tiny, mid and L2.5 pools); only its
 *                  thread touches their spans, so no lock. Abandoned when the thread
 *                  exits with blocks still live, adopted by another thread.
 *   big segments   hold big blocks (above the pools, up to 63 slices) and belong to
 *                  nobody: any thread takes and frees their spans under one lock, so a
 *                  big block freed by another thread is never pinned by an idle owner.
 * Also here, in the hardened variant, the ownership map. */
#include <string.h>

#include "hak_internal.h"

static hak_lock_t hak_segment_lock = HAK_LOCK_INIT; /* guards the abandoned list */
static hak_lock_t hak_big_lock = HAK_LOCK_INIT;     /* guards the big segments' spans */
static hak_spans_t hak_big_spans = {.decay_due_ms = UINT64_MAX};
/* Abandoned segments, doubly linked through ->next/->prev: pushed at the head, adopted
 * from the tail (the oldest first, so every one gets refilled, not only the newest). */
static hak_segment_t* hak_segment_abandoned;
static hak_segment_t* hak_segment_abandoned_tail;
static _Atomic size_t hak_segment_abandoned_idle_slices; /* free slices on the list not yet purged */
static _Atomic size_t hak_segment_abandoned_count;
static _Atomic uint64_t hak_segment_abandoned_due_ms = UINT64_MAX; /* first free slice of theirs to purge */
static _Atomic int64_t hak_segment_live;

uint64_t hak_segment_live_count(void) {
  return (uint64_t)atomic_load_explicit(&hak_segment_live, memory_order_relaxed);
}

void hak_segment_live_add(int64_t delta) {
  atomic_fetch_add_explicit(&hak_segment_live, delta, memory_order_relaxed);
}

void hak_segment_fork_lock(void) {
  hak_lock(&hak_segment_lock);
  hak_lock(&hak_big_lock);
}

void hak_segment_fork_unlock(void) {
  hak_unlock(&hak_big_lock);
  hak_unlock(&hak_segment_lock);
}

/* In a child of fork: a thread that was freeing into an abandoned segment is gone; its
 * flag would keep every adopter of that segment waiting forever. (The page it worked on
 * may have lost the block: a leak in the child, never a block handed out twice.) So is
 * a thread that took the flag of a segment and then found it no longer abandoned (it
 * clears the flag at once): that segment is in a heap's list, and would stall its
 * adopter once abandoned again. The child has no other thread: every flag clears. */
void hak_segment_fork_clear_busy(hak_segment_t* list) {
  for (hak_segment_t* s = list; s != NULL; s = s->next) {
    atomic_store_explicit(&s->direct_busy, 0, memory_order_relaxed);
  }
}

void hak_segment_fork_child(void) {
  hak_segment_fork_clear_busy(hak_segment_abandoned);
}

/* ---- Ownership map (hardened) ---------------------------------------------- */
#if HAK_HARDEN_FREE_CHECKS
/* One bit per 4 MiB unit of a 57-bit address space (hak_config.h), in two levels: a
 * fixed array of leaf pointers, and leaves of 2^20 bits (4 TiB of address space each),
 * mapped without commit charge when a segment first lands in their range, installed by
 * CAS and never unmapped; only the words where segments live are touched. A lookup is
 * two loads and never faults: an address beyond the map, or in a range that never held
 * a segment, is simply not ours. */
static _Atomic(uint64_t)* _Atomic hak_segment_map[HAK_SEGMENT_MAP_LEAVES];

static _Atomic(uint64_t)* hak_segment_map_leaf(size_t index) {
  _Atomic(uint64_t)* leaf = atomic_load_explicit(&hak_segment_map[index], memory_order_acquire);
  if (leaf != NULL) return leaf;
  _Atomic(uint64_t)* fresh = hak_os_map_aligned(HAK_SEGMENT_MAP_LEAF_BYTES, HAK_OS_PAGE_SIZE, 0,
                                                HAK_OS_MAP_NORESERVE, HAK_OS_USER_META);
  if (fresh == NULL) hak_fault(HAK_FAULT_INVALID_FREE, NULL); /* cannot check: refuse */
  /* touched a few bytes apart: a huge page would make each touch 2 MiB */
  if (hak_options.thp_mode != HAK_THP_SYSTEM) {
    hak_os_advise_thp(fresh, HAK_SEGMENT_MAP_LEAF_BYTES, false, HAK_OS_USER_META);
  }
  if (!atomic_compare_exchange_strong_explicit(&hak_segment_map[index], &leaf, fresh, memory_order_acq_rel,
                                               memory_order_acquire)) {
    hak_os_unmap(fresh, HAK_SEGMENT_MAP_LEAF_BYTES, HAK_OS_USER_META); /* another thread's won */
    return leaf;
  }
  return fresh;
}

void hak_segment_map_set(const hak_segment_t* segment, bool present) {
  uintptr_t unit = (uintptr_t)segment >> HAK_SEGMENT_SHIFT;
  if (unit >= HAK_SEGMENT_MAP_UNITS) return; /* never: no kernel maps there */
  size_t index = unit >> HAK_SEGMENT_MAP_LEAF_SHIFT;
  size_t bit_index = unit & (HAK_SEGMENT_MAP_LEAF_UNITS - 1);
  _Atomic(uint64_t)* leaf;
  if (present) {
    leaf = hak_segment_map_leaf(index);
  } else {
    leaf = atomic_load_explicit(&hak_segment_map[index], memory_order_acquire);
    if (leaf == NULL) return; /* never set */
  }
  _Atomic(uint64_t)* word = &leaf[bit_index / 64];
  uint64_t bit = (uint64_t)1 << (bit_index % 64);
  if (present) atomic_fetch_or(word, bit);
  else atomic_fetch_and(word, ~bit);
}

bool hak_segment_map_contains(const void* p) {
  uintptr_t unit = (uintptr_t)hak_segment_of(p) >> HAK_SEGMENT_SHIFT;
  if (p == NULL || unit >= HAK_SEGMENT_MAP_UNITS) return false;
  _Atomic(uint64_t)* leaf =
      atomic_load_explicit(&hak_segment_map[unit >> HAK_SEGMENT_MAP_LEAF_SHIFT], memory_order_acquire);
  if (leaf == NULL) return false;
  size_t bit_index = unit & (HAK_SEGMENT_MAP_LEAF_UNITS - 1);
  return (atomic_load_explicit(&leaf[bit_index / 64], memory_order_relaxed) >> (bit_index % 64)) & 1;
}
#else
void hak_segment_map_set(const hak_segment_t* segment, bool present) {
  (void)segment;
  (void)present;
}

bool hak_segment_map_contains(const void* p) {
  return p != NULL;
}
#endif

/* ---- Free spans: bins by length ------------------------------------------------- */

static void hak_span_set_offsets(hak_segment_t* segment, size_t start, size_t count) {
  for (size_t i = 0; i < count; i++) segment->slice_offset[start + i] = (uint8_t)i;
}

static void hak_span_bin_push(hak_spans_t* spans, hak_page_t* span) {
  hak_page_queue_t* q = &spans->bins[span->slice_count];
  span->prev = NULL;
  span->next = q->first;
  if (q->first != NULL) q->first->prev = span;
  else q->last = span;
  q->first = span;
  spans->nonempty |= (uint64_t)1 << span->slice_count;
}

static void hak_span_bin_remove(hak_spans_t* spans, hak_page_t* span) {
  hak_page_queue_t* q = &spans->bins[span->slice_count];
  if (span->prev != NULL) span->prev->next = span->next;
  else q->first = span->next;
  if (span->next != NULL) span->next->prev = span->prev;
  else q->last = span->prev;
  span->next = span->prev = NULL;
  if (q->first == NULL) spans->nonempty &= ~((uint64_t)1 << span->slice_count);
}

/* Makes [start, start+count) one free span with its free neighbours, in the bins. Its
 * slices may hold resident pages since idle_since_ms: they decay (hak_spans_decay). */
static void hak_span_free(hak_spans_t* spans, hak_segment_t* segment, size_t start, size_t count,
                          uint64_t idle_since_ms) {
  uint64_t freed = hak_bits_range(start, count) & ~segment->zero_slices;
  segment->decay_slices |= freed;
  for (uint64_t f = freed; f != 0; f &= f - 1) segment->freed_ms[__builtin_ctzll(f)] = idle_since_ms;
  if (freed != 0) {
    uint64_t due = idle_since_ms + hak_purge_delay_ms();
    if (due < spans->decay_due_ms) __atomic_store_n(&spans->decay_due_ms, due, __ATOMIC_RELAXED);
  }
  size_t end = start + count;
  if (end < HAK_SEGMENT_DATA_END && !segment->pages[end].in_use) {
    hak_page_t* next = &segment->pages[end];
    hak_span_bin_remove(spans, next);
    end += next->slice_count;
  }
  if (start > 1) {
    hak_page_t* prev = &segment->pages[start - 1 - segment->slice_offset[start - 1]];
    if (!prev->in_use) {
      hak_span_bin_remove(spans, prev);
      start = prev->slice_index;
    }
  }
  hak_page_t* span = &segment->pages[start];
  span->in_use = 0;
  span->slice_index = (uint8_t)start;
  span->slice_count = (uint8_t)(end - start);
  hak_span_set_offsets(segment, start, end - start);
  hak_span_bin_push(spans, span);
}

/* Hardened level 2: slices of a freed big block kept PROT_NONE (in a BigCache, or
 * evicted into a free span) become accessible as a block is carved there again, one
 * call per run of them. */
#if HAK_HARDEN_LARGE_QUARANTINE
static void hak_span_open(hak_segment_t* segment, uint64_t bits) {
  uint64_t closed = atomic_load_explicit(&segment->noaccess_slices, memory_order_relaxed) & bits;
  if (closed == 0) return;
  atomic_fetch_and_explicit(&segment->noaccess_slices, ~closed, memory_order_relaxed);
  while (closed != 0) {
    size_t start, count = hak_bits_first_run(closed, &start);
    hak_os_guard((uint8_t*)segment + (start << HAK_SLICE_SHIFT), count << HAK_SLICE_SHIFT, true, HAK_OS_USER_HUGE,
                 "a freed big block's slices could not be opened again (out of memory)");
    closed &= ~hak_bits_range(start, count);
  }
}
#else
#define hak_span_open(segment, bits) ((void)(segment), (void)(bits))
#endif

/* Slices purged and carved again: purge regret if the newest purge among them was less
 * than a delay ago. */
static void hak_span_note_reuse(hak_segment_t* segment, uint64_t bits) {
  uint64_t regret = segment->purged_slices & bits;
  if (regret == 0) return;
  segment->purged_slices &= ~bits;
  hak_purge_regret(hak_bits_latest(regret, segment->freed_ms));
}

/* Marks slices handed out again: their pending purge is cancelled, they are no longer
 * known zero. Returns whether all of them were. */
static bool hak_span_reuse(hak_segment_t* segment, uint64_t bits) {
  hak_span_note_reuse(segment, bits);
  bool was_zero = (segment->zero_slices & bits) == bits;
  segment->zero_slices &= ~bits;
  segment->decay_slices &= ~bits;
  hak_span_open(segment, bits);
  return was_zero;
}

/* Cuts [start, start+count) of a free span out as a free span of its own, in the bins. */
static void hak_span_split_off(hak_spans_t* spans, hak_segment_t* segment, size_t start, size_t count) {
  hak_page_t* rest = &segment->pages[start];
  rest->in_use = 0;
  rest->slice_index = (uint8_t)start;
  rest->slice_count = (uint8_t)count;
  hak_span_set_offsets(segment, start, count);
  hak_span_bin_push(spans, rest);
}

/* The smallest free span of at least `count` slices, split to size; NULL if none. */
static hak_page_t* hak_span_take(hak_spans_t* spans, size_t count) {
  uint64_t candidates = spans->nonempty & (~(uint64_t)0 << count);
  if (candidates == 0) return NULL;
  hak_page_t* span = spans->bins[__builtin_ctzll(candidates)].first;
  hak_span_bin_remove(spans, span);
  hak_segment_t* segment = hak_segment_of(span);
  size_t start = span->slice_index, have = span->slice_count;
  if (have > count) hak_span_split_off(spans, segment, start + count, have - count);
  span->in_use = 1;
  span->slice_count = (uint8_t)count;
  hak_span_set_offsets(segment, start, count);
  span->is_zero = hak_span_reuse(segment, hak_bits_range(start, count));
  segment->used_slices += (uint32_t)count;
  return span;
}

/* Grows a page into the free span right after it. */
static bool hak_span_grow(hak_spans_t* spans, hak_page_t* page, size_t slices) {
  hak_segment_t* segment = hak_segment_of(page);
  size_t end = (size_t)page->slice_index + page->slice_count, extra = slices - page->slice_count;
  if (end >= HAK_SEGMENT_DATA_END) return false;
  hak_page_t* next = &segment->pages[end];
  if (next->in_use || next->slice_count < extra) return false;
  hak_span_bin_remove(spans, next);
  if (next->slice_count > extra) hak_span_split_off(spans, segment, end + extra, next->slice_count - extra);
  page->slice_count = (uint8_t)slices;
  hak_span_set_offsets(segment, page->slice_index, slices);
  hak_span_reuse(segment, hak_bits_range(end, extra));
  segment->used_slices += (uint32_t)extra;
  return true;
}

/* ---- Decay: free spans idle for the purge delay are purged ------------------------- */

/* Purges the due slices of one segment (consecutive ones in one call); they read zero
 * afterwards (DONTNEED), which calloc then knows. Runs shorter than
 * HAKMEM_PURGE_MIN_BYTES are not worth a call: they stay resident. The caller owns the
 * spans, so no slice is handed out meanwhile. timed: the delay purged them (not a forced
 * pass or a budget), so reusing them soon is purge regret. */
static void hak_segment_purge_slices(hak_segment_t* segment, uint64_t due, bool timed) {
  hak_purge_batch_t batch;
  batch.count = 0;
  uint64_t purged = 0;
  for (uint64_t d = due; d != 0;) {
    size_t start, len = hak_bits_first_run(d, &start);
    d &= ~hak_bits_range(start, len);
    if ((len << HAK_SLICE_SHIFT) < hak_options.purge_min_bytes) continue;
    hak_purge_batch_add(&batch, (uint8_t*)segment + (start << HAK_SLICE_SHIFT), len << HAK_SLICE_SHIFT);
    purged |= hak_bits_range(start, len);
  }
  bool zeroed = hak_purge_batch_flush(&batch);
  segment->decay_slices &= ~due;
  if (zeroed) segment->zero_slices |= purged;
  if (!timed) return;
  uint64_t now = hak_purge_now_ms();
  for (uint64_t p = purged; p != 0; p &= p - 1) segment->freed_ms[__builtin_ctzll(p)] = now;
  segment->purged_slices |= purged;
}

/* Purges the segment's free slices idle for the purge delay (every one with `all`);
 * lowers *next to when the first of the others comes due. */
static void hak_segment_decay_slices(hak_segment_t* segment, bool all, uint64_t now, uint64_t delay, uint64_t* next) {
  uint64_t due = 0;
  for (uint64_t p = segment->decay_slices; p != 0; p &= p - 1) {
    size_t i = (size_t)__builtin_ctzll(p);
    if (all || segment->freed_ms[i] + delay <= now) due |= (uint64_t)1 << i;
    else if (segment->freed_ms[i] + delay < *next) *next = segment->freed_ms[i] + delay;
  }
  if (due != 0) hak_segment_purge_slices(segment, due, !all); /* `all`: forced, no regret */
}

/* Purges the free slices of `spans` idle for the purge delay (every one with `all`). */
static void hak_spans_decay(hak_spans_t* spans, bool all) {
  if (!all && __atomic_load_n(&spans->decay_due_ms, __ATOMIC_RELAXED) == UINT64_MAX) return;
  uint64_t now = hak_purge_now_ms(), delay = hak_purge_delay_ms(), next = UINT64_MAX;
  if (!all && now < spans->decay_due_ms) return;
  for (hak_segment_t* segment = spans->segments; segment != NULL; segment = segment->next) {
    hak_segment_decay_slices(segment, all, now, delay, &next);
  }
  __atomic_store_n(&spans->decay_due_ms, next, __ATOMIC_RELAXED);
}

/* ---- Segment lifetime --------------------------------------------------------- */

static void hak_segment_list_push(hak_spans_t* spans, hak_segment_t* segment) {
  segment->prev = NULL;
  segment->next = spans->segments;
  if (spans->segments != NULL) spans->segments->prev = segment;
  spans->segments = segment;
}

static void hak_segment_list_remove(hak_spans_t* spans, hak_segment_t* segment) {
  if (segment->prev != NULL) segment->prev->next = segment->next;
  else spans->segments = segment->next;
  if (segment->next != NULL) segment->next->prev = segment->prev;
  segment->next = segment->prev = NULL;
}

/* ---- Guard pages (hardened level 2) ---------------------------------------------------- */

#if HAK_HARDEN_GUARDS
/* Offset of the header slice's last OS page if the header leaves it free, else 0
 * (with 64 KiB pages the header fills its slice). */
static size_t hak_segment_front_guard(void) {
  size_t page = hak_os_page_size();
  return sizeof(hak_segment_t) + page <= HAK_SLICE_SIZE ? HAK_SLICE_SIZE - page : 0;
}

/* Makes a segment's guards inaccessible (a fresh segment) or accessible again (a whale
 * takes the unit); hak_os_guard says what a refusal does. */
static void hak_segment_guards_set(uint8_t* base, bool accessible) {
  static const char what[] = "a guard page could not be made accessible again (out of memory)";
  size_t front = hak_segment_front_guard();
  if (front != 0) hak_os_guard(base + front, HAK_SLICE_SIZE - front, accessible, HAK_OS_USER_REGION, what);
  hak_os_guard(base + ((size_t)HAK_SEGMENT_DATA_END << HAK_SLICE_SHIFT),
               (size_t)HAK_SEGMENT_GUARD_SLICES << HAK_SLICE_SHIFT, accessible, HAK_OS_USER_REGION, what);
}

void hak_segment_guards_open(void* unit) {
  hak_segment_guards_set((uint8_t*)unit, true);
}

bool hak_segment_is_guard(const hak_segment_t* segment, const void* p) {
  if (!segment->is_guarded) return false;
  size_t offset = (size_t)((const uint8_t*)p - (const uint8_t*)segment);
  size_t front = hak_segment_front_guard();
  if (offset >= ((size_t)HAK_SEGMENT_DATA_END << HAK_SLICE_SHIFT) && offset < HAK_SEGMENT_SIZE) return true;
  return front != 0 && offset >= front && offset < HAK_SLICE_SIZE;
}

/* The guard slice is a page in use of no class, never a span: spans end before it. The
 * guards stay PROT_NONE when the segment goes back to the region, which remembers it,
 * so a segment taking the unit again makes no call; a whale taking it opens them
 * (hak_region_guard_clear). */
static void hak_segment_guard_init(hak_segment_t* segment) {
  hak_page_t* guard = &segment->pages[HAK_SEGMENT_DATA_END];
  guard->in_use = 1;
  guard->slice_index = HAK_SEGMENT_DATA_END;
  guard->slice_count = HAK_SEGMENT_GUARD_SLICES;
  guard->block_size = 0;
  bool already;
  if (!hak_region_guard_claim(segment, &already)) return; /* HAK_GUARDED_SEGMENTS_MAX */
  if (!already) hak_segment_guards_set((uint8_t*)segment, false);
  segment->is_guarded = 1;
}
#else
#define hak_segment_guard_init(segment) ((void)(segment))
#endif

/* A fresh segment from the region: the header in slice 0, one free span of the rest
 * (hardened level 2: but the guard slice). Pool segments belong to `heap` (its thread
 * frees into them directly); big ones to nobody (thread id 0: every free takes the
 * locked path). */
static hak_segment_t* hak_segment_alloc(hak_spans_t* spans, hak_segment_kind_t kind, hak_heap_t* heap) {
  hak_run_state_t state;
  hak_segment_t* segment = hak_region_alloc(1, HAK_SEGMENT_SIZE, 0, &state);
  if (segment == NULL) return NULL;
  hak_region_thp_prepare(segment, 1, false); /* a huge page would inflate a sparse segment */
  hak_asan_unpoison(segment, sizeof(*segment));
  if (!state.is_zero) memset(segment, 0, sizeof(*segment));
  segment->kind = kind;
  segment->cookie = (uintptr_t)segment ^ hak_process_secret;
  segment->heap = heap;
  segment->used_slices = 0;
  segment->zero_slices = state.is_zero ? ~(uint64_t)1 : 0;
  segment->decay_slices = 0; /* the region purges what it hands out before use, if due */
  segment->pages[0].in_use = 1; /* the header: never part of a span */
  segment->pages[0].slice_count = 1;
  hak_segment_guard_init(segment);
  hak_span_split_off(spans, segment, 1, HAK_SEGMENT_DATA_END - 1);
  hak_segment_list_push(spans, segment);
  atomic_store_explicit(&segment->thread_id, heap != NULL ? heap->thread_id : 0, memory_order_release);
  hak_segment_map_set(segment, true);
  hak_segment_live_add(1);
  hak_stat_global_inc(segments_allocated);
  return segment;
}

/* Every slice is free again: the segment goes back to the region (kept mapped; its
 * pages are purged once the purge delay passes unless it is reused first). */
static void hak_segment_release(hak_spans_t* spans, hak_segment_t* segment, uint64_t idle_since_ms) {
  hak_span_bin_remove(spans, &segment->pages[1]);
  hak_segment_list_remove(spans, segment);
  hak_segment_map_set(segment, false);
  hak_hardening_on_segment_release(segment);
  hak_segment_live_add(-1);
  hak_stat_global_inc(segments_freed);
  atomic_store_explicit(&segment->thread_id, 0, memory_order_relaxed);
  /* dense unless decay purged most of it while it was in use */
  bool dense = __builtin_popcountll(segment->zero_slices) < (int)HAK_SEGMENT_SLICES / 2;
  /* slices of freed blocks kept PROT_NONE: the region opens the unit when it is taken */
  if (atomic_load_explicit(&segment->noaccess_slices, memory_order_relaxed) != 0) {
    atomic_store_explicit(&segment->noaccess_slices, 0, memory_order_relaxed);
    hak_region_note_noaccess(segment, HAK_SEGMENT_SIZE);
  }
  hak_region_free(segment, 1, idle_since_ms, dense);
}

static hak_page_t* hak_segment_span_alloc(hak_spans_t* spans, hak_segment_kind_t kind, hak_heap_t* heap,
                                          size_t slices) {
  hak_page_t* page = hak_span_take(spans, slices);
  if (page == NULL && hak_segment_alloc(spans, kind, heap) != NULL) page = hak_span_take(spans, slices);
  return page;
}

/* Frees a page's span; returns whether its segment went back to the region. */
static bool hak_segment_span_free(hak_spans_t* spans, hak_page_t* page, uint64_t idle_since_ms) {
  hak_segment_t* segment = hak_segment_of(page);
  /* block_size and start stay: the hardened variant recognises blocks of the page's
   * last layout, so freeing one again is named a double free. */
  page->free = NULL;
  page->used = 0;
  page->capacity = page->reserved = 0;
  segment->used_slices -= page->slice_count;
  hak_span_free(spans, segment, page->slice_index, page->slice_count, idle_since_ms);
  if (segment->used_slices != 0) return false;
  hak_segment_release(spans, segment, idle_since_ms);
  return true;
}

/* ---- Pool pages: the owner heap's, no lock --------------------------------------- */

hak_page_t* hak_segment_page_alloc(hak_heap_t* heap, size_t slices) {
  hak_page_t* page = hak_segment_span_alloc(&heap->spans, HAK_SEGMENT_POOL, heap, slices);
  if (page != NULL) hak_stat_inc(heap, pages_allocated);
  return page;
}

void hak_segment_page_free(hak_heap_t* heap, hak_page_t* page) {
  hak_stat_inc(heap, pages_freed);
  if (hak_segment_span_free(&heap->spans, page, hak_purge_now_ms())) hak_purge_tick();
}

void hak_segment_decay(hak_heap_t* heap, bool all) {
  hak_spans_decay(&heap->spans, all);
}

/* ---- Big pages: shared by every thread, under one lock ---------------------------------- */

/* A span of the big segments; with may_grow false, only from free spans there are
 * (NULL if none fits), so a caller holding cached big pages can give them back first. */
hak_page_t* hak_segment_big_alloc(size_t slices, bool may_grow) {
  hak_lock(&hak_big_lock);
  hak_page_t* page = may_grow ? hak_segment_span_alloc(&hak_big_spans, HAK_SEGMENT_BIG, NULL, slices)
                              : hak_span_take(&hak_big_spans, slices);
  hak_unlock(&hak_big_lock);
  return page;
}

void hak_segment_big_free(hak_page_t* page, uint64_t idle_since_ms) {
  hak_lock(&hak_big_lock);
  bool released = hak_segment_span_free(&hak_big_spans, page, idle_since_ms);
  hak_unlock(&hak_big_lock);
  if (released) hak_purge_tick();
}

/* The big segments' idle free spans, purged under their lock (every one with `all`). */
void hak_segment_big_decay(bool all) {
  if (!all && __atomic_load_n(&hak_big_spans.decay_due_ms, __ATOMIC_RELAXED) > hak_purge_now_ms()) return;
  hak_lock(&hak_big_lock);
  hak_spans_decay(&hak_big_spans, all);
  hak_unlock(&hak_big_lock);
}

/* Grows a big page into the free span after it, or gives its tail back. */
bool hak_segment_big_resize(hak_page_t* page, size_t slices) {
  hak_segment_t* segment = hak_segment_of(page);
  bool ok = true;
  hak_lock(&hak_big_lock);
  if (slices > page->slice_count) {
    ok = hak_span_grow(&hak_big_spans, page, slices);
  } else if (slices < page->slice_count) {
    size_t cut = (size_t)page->slice_index + slices, extra = page->slice_count - slices;
    page->slice_count = (uint8_t)slices;
    segment->used_slices -= (uint32_t)extra;
    hak_span_free(&hak_big_spans, segment, cut, extra, hak_purge_now_ms());
  }
  hak_unlock(&hak_big_lock);
  return ok;
}

/* ---- Abandonment and adoption ---------------------------------------------------- */

static void hak_segment_abandoned_schedule(uint64_t due_ms) {
  uint64_t cur = atomic_load_explicit(&hak_segment_abandoned_due_ms, memory_order_relaxed);
  while (due_ms < cur && !atomic_compare_exchange_weak_explicit(&hak_segment_abandoned_due_ms, &cur, due_ms,
                                                                memory_order_relaxed, memory_order_relaxed)) {
  }
}

static void hak_segment_abandoned_push(hak_segment_t* segment) {
  hak_lock(&hak_segment_lock);
  segment->prev = NULL;
  segment->next = hak_segment_abandoned;
  if (segment->next != NULL) segment->next->prev = segment;
  else hak_segment_abandoned_tail = segment;
  hak_segment_abandoned = segment;
  __atomic_store_n(&segment->is_abandoned, 1, __ATOMIC_SEQ_CST);
  segment->listed_idle_slices = (uint8_t)__builtin_popcountll(segment->decay_slices);
  atomic_fetch_add_explicit(&hak_segment_abandoned_idle_slices, segment->listed_idle_slices, memory_order_relaxed);
  atomic_fetch_add_explicit(&hak_segment_abandoned_count, 1, memory_order_relaxed);
  hak_unlock(&hak_segment_lock);
}

/* Called by an exiting heap for a segment that still has blocks in use. Its pages are
 * already in HAK_DELAYED_NEVER, so remote frees only touch the pages themselves; its
 * free spans leave the heap's bins (the adopter puts them in its own). The abandoned
 * list is doubly linked so that a free into one of its segments can take that segment
 * out in O(1) (hak_segment_free_abandoned). */
void hak_segment_abandon(hak_heap_t* heap, hak_segment_t* segment) {
  for (size_t i = 1; i < HAK_SEGMENT_DATA_END; i += segment->pages[i].slice_count) {
    if (!segment->pages[i].in_use) hak_span_bin_remove(&heap->spans, &segment->pages[i]);
  }
  hak_segment_list_remove(&heap->spans, segment);
  segment->heap = NULL;
  atomic_store_explicit(&segment->thread_id, 0, memory_order_release);
  /* Its idle free spans wait on the list for an adopter (new threads adopt before they
   * take new segments), up to twice HAKMEM_REGION_DIRTY for all abandoned segments
   * together (a racy read: a bound, not an exact budget); beyond, they are purged now.
   * Measured on bench/thread_churn (2,000 threads, 8 alive): purging all of it at
   * exit cost 8,800 madvise calls and a third of the run; a 16 MiB budget 3,700 calls
   * (41 MiB peak RSS, 1.6x glibc's time); 32 MiB about 1.1x glibc's time, 51 MiB. */
  size_t idle = (size_t)__builtin_popcountll(segment->decay_slices);
  size_t listed = atomic_load_explicit(&hak_segment_abandoned_idle_slices, memory_order_relaxed);
  bool over = ((listed + idle) << HAK_SLICE_SHIFT) > 2 * hak_options.region_dirty_bytes;
  uint64_t next = UINT64_MAX; /* when what stays comes due (the exiting heap purged what was) */
  hak_segment_decay_slices(segment, over, hak_purge_now_ms(), hak_purge_delay_ms(), &next);
  hak_segment_abandoned_push(segment);
  if (next != UINT64_MAX) hak_segment_abandoned_schedule(next);
  hak_stat_global_inc(segments_abandoned);
}

/* Lock held. Whoever unlinks a segment owns it alone: a thread freeing into it without
 * the lock (hak_segment_free_abandoned) either sees it unlisted and keeps off, or is
 * already at work on it and is waited for here (a few stores: it never takes the lock
 * while it works). The seq_cst store and load pair with that thread's exchange and load. */
static void hak_segment_abandoned_unlink(hak_segment_t* segment) {
  if (segment->prev != NULL) segment->prev->next = segment->next;
  else hak_segment_abandoned = segment->next;
  if (segment->next != NULL) segment->next->prev = segment->prev;
  else hak_segment_abandoned_tail = segment->prev;
  segment->next = segment->prev = NULL;
  __atomic_store_n(&segment->is_abandoned, 0, __ATOMIC_SEQ_CST);
  hak_wait_flag_clear(&segment->direct_busy);
  atomic_fetch_sub_explicit(&hak_segment_abandoned_idle_slices, segment->listed_idle_slices, memory_order_relaxed);
  atomic_fetch_sub_explicit(&hak_segment_abandoned_count, 1, memory_order_relaxed);
}

/* Frees an emptied page of an abandoned segment (off the list, so nobody else touches
 * its spans). Its free spans are in no heap's bins: merging goes through a scratch set
 * of bins, and the adopter re-bins every free span. Returns whether the segment
 * emptied and went back to the region. */
static bool hak_segment_abandoned_page_free(hak_page_t* page, uint64_t idle_since_ms) {
  hak_spans_t scratch = {.nonempty = 0, .segments = NULL, .decay_due_ms = UINT64_MAX};
  return hak_segment_span_free(&scratch, page, idle_since_ms);
}

/* hak_collect's pass (`all`) over an abandoned segment taken off the list: blocks
 * other threads freed onto its pages (those that raced with the owner's exit and so
 * missed the direct path) come back, emptied pages go back to the segment. Returns
 * whether the segment emptied and went back to the region. */
static bool hak_segment_abandoned_collect(hak_segment_t* segment) {
  for (size_t i = 1; i < HAK_SEGMENT_DATA_END;) {
    hak_page_t* page = &segment->pages[i];
    if (page->in_use) {
      hak_page_collect_thread_free(page);
      if (page->used == 0 && hak_segment_abandoned_page_free(page, hak_purge_now_ms())) return true;
    }
    i = hak_segment_slice_after_span(segment, i);
  }
  return false;
}

/* Free slices of abandoned segments decay like any others, though no owner's slow
 * path looks at them: one pass over the list when the first comes due (checked on
 * slow paths, like every purge). The pass also collects each segment's remote frees:
 * a free that found the segment unlisted or busy went onto its page's list, and when
 * it was the page's last block nothing else would collect it (no adopter may come);
 * such a free schedules a pass (hak_segment_free_abandoned). The pass takes one segment off the list at a time,
 * the oldest, and puts it back at the head: adopters and freers find every other one
 * listed meanwhile (a pass that took the list whole left new threads nothing to adopt
 * while it purged, so they took fresh segments; with a short purge delay on a slow
 * machine the list was off most of the time). A segment off the list is unlisted, so
 * a concurrent free into it frees remotely. */
void hak_segment_abandoned_decay(bool all) {
  uint64_t due = atomic_load_explicit(&hak_segment_abandoned_due_ms, memory_order_relaxed);
  if (!all && due == UINT64_MAX) return;
  uint64_t now = hak_purge_now_ms(), delay = hak_purge_delay_ms(), next = UINT64_MAX;
  if (!all && now < due) return;
  if (!atomic_compare_exchange_strong_explicit(&hak_segment_abandoned_due_ms, &due, UINT64_MAX,
                                               memory_order_relaxed, memory_order_relaxed)) {
    return; /* another thread does this pass */
  }
  /* As many as are listed now: a full turn of the list, which keeps its order. */
  size_t count = atomic_load_explicit(&hak_segment_abandoned_count, memory_order_relaxed);
  for (size_t i = 0; i < count; i++) {
    hak_lock(&hak_segment_lock);
    hak_segment_t* segment = hak_segment_abandoned_tail;
    if (segment != NULL) hak_segment_abandoned_unlink(segment);
    hak_unlock(&hak_segment_lock);
    if (segment == NULL) break;
    HAK_TEST_HOOK(abandoned_unlisted, segment);
    if (hak_segment_abandoned_collect(segment)) continue;
    hak_segment_decay_slices(segment, all, now, delay, &next);
    hak_segment_abandoned_push(segment);
  }
  if (next != UINT64_MAX) hak_segment_abandoned_schedule(next);
}

static hak_segment_t* hak_segment_abandoned_pop(void) {
  if (atomic_load_explicit(&hak_segment_abandoned_count, memory_order_relaxed) == 0) return NULL;
  hak_lock(&hak_segment_lock);
  hak_segment_t* segment = hak_segment_abandoned_tail;
  if (segment != NULL) hak_segment_abandoned_unlink(segment);
  hak_unlock(&hak_segment_lock);
  return segment;
}


/* Collects an abandoned page's remote frees and, unless that emptied it (returns true),
 * switches it to HAK_DELAYED_USE in the same step, so no remote free can slip between. */
static bool hak_segment_adopt_page_collect(hak_page_t* page) {
  for (;;) {
    hak_page_collect_thread_free(page);
    if (page->used == 0) return true;
    if (hak_page_try_use_delayed(page)) return false;
  }
}

/* Takes over an abandoned segment (already off the list): its free spans join the
 * heap's bins, empty pages are freed, pages with live blocks join the heap's queues
 * (hak_heap_page_adopted) with delayed frees on, so that the frees of their remaining
 * blocks reach the new owner even if it never allocates those classes again. Such
 * pages are not kept when they empty (no_retain): their maker did not come back. */
static void hak_segment_adopt(hak_heap_t* heap, hak_segment_t* segment) {
  segment->heap = heap;
  segment->kept_slices = 0; /* no page is kept for this heap's classes yet */
  hak_segment_list_push(&heap->spans, segment);
  atomic_store_explicit(&segment->thread_id, heap->thread_id, memory_order_release);
  hak_stat_global_inc(segments_adopted);
  if (segment->decay_slices != 0) heap->spans.decay_due_ms = 0; /* look at them on the next slow path */
  for (size_t i = 1; i < HAK_SEGMENT_DATA_END; i += segment->pages[i].slice_count) {
    if (!segment->pages[i].in_use) hak_span_bin_push(&heap->spans, &segment->pages[i]);
  }
  for (size_t i = 1; i < HAK_SEGMENT_DATA_END;) {
    hak_page_t* page = &segment->pages[i];
    if (!page->in_use) {
      i += page->slice_count;
      continue;
    }
    atomic_store_explicit(&page->xheap, heap, memory_order_release);
    if (!hak_segment_adopt_page_collect(page)) {
      page->no_retain = 1;
      hak_heap_page_adopted(heap, page);
      i += page->slice_count;
      continue;
    }
    bool releases_segment = segment->used_slices == page->slice_count;
    hak_segment_page_free(heap, page);
    if (releases_segment) break; /* the segment went back to the region */
    i = hak_segment_slice_after_span(segment, i);
  }
}

/* Segments on the abandoned list now (a racy count: a hint for adopters). */
size_t hak_segment_abandoned_backlog(void) {
  return atomic_load_explicit(&hak_segment_abandoned_count, memory_order_relaxed);
}

/* Adopts the segment abandoned longest ago; false when there is none. */
bool hak_segment_adopt_one(hak_heap_t* heap) {
  hak_segment_t* segment = hak_segment_abandoned_pop();
  if (segment == NULL) return false;
  hak_segment_adopt(heap, segment);
  return true;
}


#if HAK_TEST_HOOKS
hak_test_hook_fn* _Atomic hak_test_hook_abandoned_free_last;
hak_test_hook_fn* _Atomic hak_test_hook_abandoned_unlisted;
#endif

/* `block` is the last in use of its page: freeing it empties the page, which goes back
 * to the segment, and a segment that empties to the region. That needs the segment off
 * the list (its spans change), so the lock is taken first and the block freed after:
 * until then the block keeps its page, and the page the segment, in use, so nobody
 * (an adopter, a decay pass) can hand the segment back to the region while this looks
 * at it. Before, the block went back first and the lock came after; in between an
 * adopter could empty the segment and another thread take its unit, as a new segment
 * or the inside of a whale, whose bytes this then read as the segment's list flag.
 * False if the segment is off the list (adopted, or in a decay pass): the caller frees
 * remotely. */
static bool hak_segment_abandoned_free_last(hak_segment_t* segment, hak_page_t* page, hak_block_t* block) {
  hak_lock(&hak_segment_lock);
  bool listed = __atomic_load_n(&segment->is_abandoned, __ATOMIC_RELAXED) != 0;
  if (listed) hak_segment_abandoned_unlink(segment);
  hak_unlock(&hak_segment_lock);
  if (!listed) return false;
  uint64_t now = hak_purge_now_ms(), delay = hak_purge_delay_ms();
  /* Off the list the segment is ours alone; meanwhile it may have been adopted, filled
   * and abandoned again, so the page may hold blocks of others now. */
  hak_page_collect_thread_free(page);
  if (hak_page_push_free(page, block)) {
    /* A segment this empties is memory of an exited thread that nobody allocates
     * from: it goes back to the region as idle for the whole delay, purged on the tick. */
    bool emptied = segment->used_slices == page->slice_count;
    uint64_t idle_since = emptied && now > delay ? now - delay : now;
    if (hak_segment_abandoned_page_free(page, idle_since)) {
      hak_purge_tick();
      return true;
    }
  }
  hak_segment_abandoned_schedule(now + delay);
  hak_segment_abandoned_push(segment);
  return true;
}

/* A free into an abandoned segment by a thread that does not own it. Rather than wait
 * for an adopter, the block goes back to its page at once (with the page's other remote
 * frees), a page that empties goes back to the segment and a segment that empties to
 * the region. Ownership does not change: a thread that only frees (a consumer, a
 * main thread joining workers) must not end up owning memory it never allocates from.
 *
 * The common case (the page keeps blocks in use) takes no lock: the segment's
 * direct_busy flag keeps other freers off its pages, and a thread that unlinks the
 * segment (an adopter, a decay pass) waits for it (hak_segment_abandoned_unlink). Taking
 * the global lock twice per block, as this did before, made a thread freeing its
 * predecessor's blocks (bench/generations) spend a third of its time on that lock. The
 * page's last block needs the segment alone (hak_segment_abandoned_free_last). False
 * if the segment is not listed or another freer is at work on it: the caller frees
 * remotely then (onto the page's list, collected by the next direct free into that page,
 * the adopter or a decay pass). */
static bool hak_segment_free_abandoned_direct(hak_segment_t* segment, hak_page_t* page, hak_block_t* block) {
  if (__atomic_load_n(&segment->is_abandoned, __ATOMIC_RELAXED) == 0) return false;
  if (atomic_exchange_explicit(&segment->direct_busy, 1, memory_order_seq_cst) != 0) return false;
  if (__atomic_load_n(&segment->is_abandoned, __ATOMIC_SEQ_CST) == 0) {
    atomic_store_explicit(&segment->direct_busy, 0, memory_order_release);
    return false;
  }
  hak_page_collect_thread_free(page);
  bool last = page->used == 1;
  if (!last) hak_page_push_free(page, block);
  atomic_store_explicit(&segment->direct_busy, 0, memory_order_release);
  if (!last) return true;
  HAK_TEST_HOOK(abandoned_free_last, block);
  return hak_segment_abandoned_free_last(segment, page, block);
}

bool hak_segment_free_abandoned(hak_segment_t* segment, hak_page_t* page, hak_block_t* block) {
  if (hak_segment_free_abandoned_direct(segment, page, block)) return true;
  /* The caller frees remotely, onto the page's list: if that was the page's last block,
   * only an adopter or a decay pass collects it (the pass does: see
   * hak_segment_abandoned_decay), so one is scheduled. */
  hak_segment_abandoned_schedule(hak_purge_now_ms() + hak_purge_delay_ms());
  return false;
}

/* Does the heap have a free span of at least `slices`? (No need to adopt for a page.) */
bool hak_segment_has_span(const hak_heap_t* heap, size_t slices) {
  return (heap->spans.nonempty & (~(uint64_t)0 << slices)) != 0;
}

/* ---- Usage walk --------------------------------------------------------------------- */

/* Reads a field of another thread's metadata once (READ_ONCE): a volatile load, not a
 * relaxed atomic, so that TSan, which instruments atomics even in HAK_NO_SANITIZE
 * functions, leaves these racy reads alone. */
#define hak_snap(field) (*(const volatile __typeof__(field)*)&(field))

/* What one run in use holds (hak_region_usage visits their heads under the region
 * lock, which keeps every unit mapped). The header and page descriptors read here
 * belong to their owners (a heap, the big segments' lock, whoever frees a whale), who
 * write them without that lock: this is a racy snapshot by design, each field read once
 * and not instrumented by the sanitizers (HAK_NO_SANITIZE). A figure may be off by what
 * changes during the walk, and a pool page counts blocks other threads freed until its
 * owner collects them; the walk itself stays in bounds whatever it reads: spans are
 * clamped to the segment, a page's bytes to its span, and a header without its cookie
 * (a run being set up) counts nothing. A block in the BigCache (its page's `used` is 0)
 * or the whale ring (the whale's page too) is free, not in use. */
HAK_NO_SANITIZE void hak_segment_usage(const hak_segment_t* segment, hak_usage_t* out) {
  if (hak_snap(segment->cookie) != ((uintptr_t)segment ^ hak_process_secret)) return;
  hak_segment_kind_t kind = hak_snap(segment->kind);
  if (kind == HAK_SEGMENT_HUGE) {
    if (hak_snap(segment->pages[0].used) != 0) {
      out->in_use_bytes += hak_snap(segment->block_bytes);
      out->in_use_blocks++;
    }
    return;
  }
  if (kind != HAK_SEGMENT_POOL && kind != HAK_SEGMENT_BIG) return;
  out->free_dirty_bytes += (uint64_t)__builtin_popcountll(hak_snap(segment->decay_slices)) << HAK_SLICE_SHIFT;
  for (size_t i = 1; i < HAK_SEGMENT_DATA_END;) {
    const hak_page_t* page = &segment->pages[i];
    size_t count = hak_snap(page->slice_count);
    if (count == 0 || count > HAK_SEGMENT_DATA_END - i) count = 1;
    if (hak_snap(page->in_use)) {
      uint64_t used = hak_snap(page->used);
      uint64_t bytes = used * hak_snap(page->block_size), cap = (uint64_t)count << HAK_SLICE_SHIFT;
      out->in_use_bytes += bytes < cap ? bytes : cap;
      out->in_use_blocks += used;
#if HAK_STATS
      size_t cls = hak_snap(page->class_index);
      if (kind == HAK_SEGMENT_POOL && cls < HAK_CLASS_COUNT) out->class_used[cls] += used;
#endif
    }
    i += count;
  }
}
