/* SPDX-License-Identifier: MIT */
/* hak_large.c - blocks above the pools (> 1 MiB) and blocks aligned beyond them
 * (> 64 KiB), in two tiers:
 *
 *   big     up to 63 slices (4032 KiB): a page of its own in a big segment (shared by
 *           every thread, hak_segment.c), sized to whole slices. Freed by any thread,
 *           it goes to that thread's BigCache (hak_cache.c), and from there back to the
 *           big segments' free spans, where any big size reuses its memory without
 *           page faults. realloc grows it into the next free span or gives its tail
 *           back, in place.
 *   whale   longer: a run of 4 MiB units with a header in its first unit, so free()
 *           finds it by masking like any block. From the whale ring, else the region
 *           (which reuses resident units before clean ones), else, for runs longer than
 *           a chunk, a mapping of its own. Freed, it goes to the whale ring, and from
 *           there to the region, not to munmap. realloc grows it in place into the
 *           free units after it, else moves its pages with mremap (no copy, no faults);
 *           it shrinks in place, giving whole units back. Any thread may free a whale.
 */
#include <errno.h>
#include <string.h>

#include "hak_internal.h"

static _Atomic uint64_t hak_large_grown_in_place, hak_large_moved_by_remap, hak_large_moved_by_copy;

static void hak_large_count(_Atomic uint64_t* counter) {
  atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
}

/* ---- Big blocks ---------------------------------------------------------------------- */

static size_t hak_big_slices(size_t size) {
  return (size + HAK_SLICE_SIZE - 1) >> HAK_SLICE_SHIFT;
}

/* Hands out the page's one block. */
static void* hak_big_hand_out(hak_page_t* page) {
  uint8_t* block = hak_page_area(page);
  page->block_size = (uint32_t)hak_page_bytes_of(page);
  page->class_index = HAK_CLASS_HUGE;
  page->reserved = page->capacity = 1;
  page->used = 1;
  page->free = NULL;
  page->free_is_zero = page->is_zero; /* read by calloc right after */
  page->is_zero = 0;
  hak_asan_unpoison(block, page->block_size);
  hak_hardening_on_alloc(page, block);
  return block;
}

/* The BigCache, else a free span of the big segments; before a new segment, the
 * BigCache's pages go back so that their (resident) memory can serve this size. */
static void* hak_big_alloc(hak_heap_t* heap, size_t size) {
  size_t slices = hak_big_slices(size);
  hak_page_t* page = hak_bigcache_get(heap, slices);
  if (page == NULL) hak_heap_decay(heap); /* on the way to the locked path anyway */
  if (page == NULL) page = hak_segment_big_alloc(slices, false);
  if (page == NULL && hak_bigcache_flush(heap, false)) page = hak_segment_big_alloc(slices, false);
  if (page == NULL) page = hak_segment_big_alloc(slices, true);
  if (page == NULL) return NULL;
  return hak_big_hand_out(page);
}

/* A big block freed (by any thread): to this thread's BigCache, or, on a thread with
 * no heap, straight back to the big segments. */
static void hak_big_free(hak_page_t* page) {
  page->used = 0;
  page->free_is_zero = 0;
  hak_heap_t* heap = hak_heap_get();
  if (heap != &hak_heap_empty) {
    hak_bigcache_put(heap, page);
  } else {
    hak_bigcache_close(page); /* hardened level 2: inaccessible in the free span too */
    hak_segment_big_free(page, hak_purge_now_ms());
  }
}

/* realloc of a big block in place: false when it has to move (to a pool class, to a
 * whale, or no free span after it). */
bool hak_big_resize_in_place(hak_page_t* page, size_t size) {
  size_t usable = page->block_size;
  if (size > HAK_BIG_MAX) return false;
  if (size <= HAK_POOL_MAX && size <= usable / 2) return false;
  size_t slices = hak_big_slices(size);
  if (slices != page->slice_count) {
    if (!hak_segment_big_resize(page, slices)) return false;
    if (slices > hak_big_slices(usable)) hak_large_count(&hak_large_grown_in_place);
  }
  page->block_size = (uint32_t)hak_page_bytes_of(page);
  if (page->block_size > usable) hak_asan_unpoison(hak_page_area(page) + usable, page->block_size - usable);
  return true;
}

/* ---- Whales: where the block sits in its run -------------------------------------------- */

/* Alignments up to a unit are met inside the first unit; larger ones put the block one
 * unit in (the header in the unit before) and align the run's start. */
typedef struct hak_whale_place_s {
  size_t offset;
  size_t run_align, run_align_offset;
} hak_whale_place_t;

static hak_whale_place_t hak_whale_place(size_t align) {
  size_t header = hak_align_up(offsetof(hak_segment_t, pages) + sizeof(hak_page_t), hak_os_page_size());
  if (align <= header) return (hak_whale_place_t){header, HAK_SEGMENT_SIZE, 0};
  if (align < HAK_SEGMENT_SIZE) return (hak_whale_place_t){align, HAK_SEGMENT_SIZE, 0};
  return (hak_whale_place_t){HAK_SEGMENT_SIZE, align, HAK_SEGMENT_SIZE};
}

static size_t hak_whale_units(size_t bytes) {
  return (bytes + HAK_SEGMENT_MASK) >> HAK_SEGMENT_SHIFT;
}

static void hak_whale_init_header(hak_segment_t* segment, size_t mapping_size, bool dedicated, bool is_zero) {
  hak_asan_unpoison(segment, offsetof(hak_segment_t, pages) + sizeof(hak_page_t));
  if (!is_zero) memset(segment, 0, offsetof(hak_segment_t, pages) + sizeof(hak_page_t));
  segment->kind = HAK_SEGMENT_HUGE;
  segment->cookie = (uintptr_t)segment ^ hak_process_secret;
  segment->units = hak_whale_units(mapping_size);
  segment->mapping_size = mapping_size;
  segment->is_dedicated = dedicated;
  segment->is_zero = is_zero;
  for (size_t i = 0; i <= HAK_SEGMENT_SLICES; i++) segment->slice_offset[i] = (uint8_t)i;
  segment->pages[0].in_use = 1;
  segment->pages[0].class_index = HAK_CLASS_HUGE;
  segment->pages[0].block_size = 0; /* see hak_whale_usable */
  atomic_store_explicit(&segment->thread_id, 0, memory_order_relaxed);
}

/* A last unit the block barely enters (a 4 MiB whale needs one page of its second)
 * that a segment left full of resident pages would keep them, unused, for the block's
 * life and its time in the whale ring: purged now, with one call. Whales' own units
 * are not purged so (their tails are mostly untouched; reuse would pay a call each). */
static void hak_whale_trim_tail(hak_segment_t* segment, size_t need, hak_run_state_t* state) {
  size_t last = segment->units - 1;
  size_t end = hak_align_up(need, hak_os_page_size());
  if (last == 0 || end - (last << HAK_SEGMENT_SHIFT) >= HAK_WHALE_TAIL_COLD) return;
  if (((state->dense_units >> last) & 1) == 0) return;
  hak_purge_range_now((uint8_t*)segment + end, (segment->units << HAK_SEGMENT_SHIFT) - end);
  state->is_resident = false;
  if (segment->data_end > end) segment->data_end = end;
}

/* A whale's own mapping, or pages mremap brought into a whale from another mapping
 * (they keep the advice of where they came from): the huge-page advice of whales. */
static void hak_whale_thp_advise(void* addr, size_t size) {
  if (hak_options.thp_mode == HAK_THP_SYSTEM) return;
  hak_os_advise_thp(addr, size, hak_options.thp_mode == HAK_THP_WHALES, HAK_OS_USER_HUGE);
}

#if HAK_TEST_HOOKS
hak_test_hook_fn* _Atomic hak_test_hook_whale_taken;
#endif

/* Region units if the run fits in a chunk, else a mapping of its own (whose commit the
 * kernel checks against its overcommit policy). */
static hak_segment_t* hak_whale_map(size_t need, const hak_whale_place_t* place, hak_run_state_t* state) {
  size_t units = hak_whale_units(need);
  if (units <= HAK_CHUNK_RUN_MAX && place->run_align <= HAK_CHUNK_SIZE) {
    hak_segment_t* segment = hak_region_alloc(units, place->run_align, place->run_align_offset, state);
    if (segment != NULL) {
      HAK_TEST_HOOK(whale_taken, segment);
      hak_region_guard_clear(segment, units); /* guard pages segments left there */
      hak_region_thp_prepare(segment, units, true);
      hak_whale_init_header(segment, units << HAK_SEGMENT_SHIFT, false, state->is_zero);
      segment->data_end = state->resident_units << HAK_SEGMENT_SHIFT;
      hak_whale_trim_tail(segment, need, state);
    }
    return segment;
  }
  size_t mapping_size = hak_align_up(need, hak_os_page_size());
  hak_segment_t* segment =
      hak_os_map_aligned(mapping_size, place->run_align, place->run_align_offset, 0, HAK_OS_USER_HUGE);
  *state = (hak_run_state_t){true, false, 0, 0};
  if (segment != NULL) {
    hak_whale_thp_advise(segment, mapping_size);
    hak_whale_init_header(segment, mapping_size, true, true);
    segment->data_end = 0;
    hak_region_dedicated_link(segment); /* so the usage walk finds it */
  }
  return segment;
}

static void* hak_whale_hand_out(hak_segment_t* segment, size_t offset, size_t size) {
  hak_page_t* page = &segment->pages[0];
  segment->whale_block = (uint8_t*)segment + offset;
  segment->block_bytes = hak_align_up(size == 0 ? 1 : size, hak_os_page_size());
  if (segment->data_end < offset + segment->block_bytes) segment->data_end = offset + segment->block_bytes;
  hak_asan_unpoison(segment->whale_block, segment->block_bytes); /* units may have held pool blocks */
  page->used = 1;
  atomic_store_explicit(&page->xthread_free, HAK_DELAYED_NEVER, memory_order_relaxed);
  hak_segment_map_set(segment, true);
  hak_segment_live_add(1);
  return segment->whale_block;
}

/* A whale of `size` bytes in a run with room for `room` (>= size) bytes; *resident
 * says whether its memory was in use since its last purge (a cached whale always was). */
static void* hak_whale_alloc(size_t size, size_t room, size_t align, bool* resident) {
  hak_whale_place_t place = hak_whale_place(align);
  if (room > PTRDIFF_MAX - place.offset - HAK_SEGMENT_SIZE) return NULL;
  size_t need = place.offset + hak_align_up(room == 0 ? 1 : room, hak_os_page_size());
  hak_segment_t* segment = hak_whale_get(need, place.run_align, place.run_align_offset);
  if (segment != NULL) {
    segment->is_zero = false;
    *resident = true;
  } else {
    hak_run_state_t state;
    hak_purge_tick();
    if (!hak_os_can_back(room) || (segment = hak_whale_map(need, &place, &state)) == NULL) return NULL;
    *resident = state.is_resident;
  }
  return hak_whale_hand_out(segment, place.offset, size);
}

/* ---- Allocation and free ------------------------------------------------------------------ */

void* hak_large_alloc(hak_heap_t* heap, size_t size, size_t align) {
  if (heap == &hak_heap_empty) heap = hak_heap_acquire();
  void* p = NULL;
  if (heap != NULL) {
    bool resident;
    if (size <= HAK_BIG_MAX && align <= HAK_POOL_ALIGN_MAX) p = hak_big_alloc(heap, size);
    else p = hak_whale_alloc(size, size, align, &resident);
  }
  if (p == NULL) {
    errno = ENOMEM;
    return NULL;
  }
  hak_stat_inc(heap, alloc_large);
  hak_stat_inc(heap, class_allocs[HAK_CLASS_HUGE]);
  return p;
}

void hak_whale_release(hak_segment_t* segment, uint64_t idle_since_ms, bool is_protected) {
  hak_segment_map_set(segment, false);
  hak_hardening_on_segment_release(segment);
  if (segment->is_dedicated) {
    hak_region_dedicated_unlink(segment);
    hak_os_unmap(segment, segment->mapping_size, HAK_OS_USER_HUGE);
    return;
  }
  if (hak_large_quarantine_on() && segment->whale_block != NULL) {
    /* Kept inaccessible in the region (a use after free faults there too) until its
     * units are taken again; the header page stays read-write. */
    size_t bytes = hak_whale_span(segment);
    if (!is_protected) {
      hak_os_guard(segment->whale_block, bytes, false, HAK_OS_USER_HUGE,
                   "a freed whale could not be made inaccessible (out of memory)");
    }
    hak_region_note_noaccess(segment->whale_block, bytes);
  }
  hak_region_free(segment, segment->units, idle_since_ms, false);
}

static void hak_whale_free(hak_segment_t* segment) {
  hak_segment_live_add(-1);
  segment->is_zero = false;
  segment->pages[0].used = 0; /* in the ring or the region: not in use (hak_segment_usage) */
  /* Freed: the hardened variant names a second free of it a double free (it already
   * swapped this word in hak_hardening_on_free; realloc's copy path comes here too). */
  atomic_store_explicit(&segment->pages[0].xthread_free, 0, memory_order_relaxed);
  if (!hak_whale_put(segment)) hak_whale_release(segment, hak_purge_now_ms(), false);
  hak_purge_tick();
}

void hak_large_free(hak_segment_t* segment, hak_page_t* page) {
  hak_heap_t* heap = hak_heap_get();
  hak_stat_inc_any(heap, free_large);
  hak_stat_inc_any(heap, class_frees[HAK_CLASS_HUGE]);
  if (segment->kind == HAK_SEGMENT_BIG) hak_big_free(page);
  else hak_whale_free(segment);
}

/* The request rounded to whole pages; the rest of the run is room to grow in place. */
size_t hak_whale_usable(const hak_segment_t* segment, const void* p) {
  (void)p;
  return segment->block_bytes;
}

/* ---- realloc of whales -------------------------------------------------------------------- */

/* Gives back what a smaller block no longer needs: whole units of a region run (no
 * system call), or, for a mapping of its own, the tail once at least half is unused. */
static void hak_whale_shrink(hak_segment_t* segment, size_t need) {
  if (segment->is_dedicated) {
    size_t keep = hak_align_up(need, hak_os_page_size());
    if (keep > segment->mapping_size / 2) return;
    if (!hak_os_shrink(segment, segment->mapping_size, keep, HAK_OS_USER_HUGE)) return;
    hak_region_dedicated_resize(segment, keep);
    segment->units = hak_whale_units(keep);
    if (segment->data_end > keep) segment->data_end = keep;
    return;
  }
  size_t keep = hak_whale_units(need);
  if (keep >= segment->units) return;
  hak_region_free((uint8_t*)segment + (keep << HAK_SEGMENT_SHIFT), segment->units - keep, hak_purge_now_ms(), false);
  segment->units = keep;
  segment->mapping_size = keep << HAK_SEGMENT_SHIFT;
  if (segment->data_end > segment->mapping_size) segment->data_end = segment->mapping_size;
}

static bool hak_whale_grow_in_place(hak_segment_t* segment, size_t need) {
  if (segment->is_dedicated) {
    size_t mapping_size = hak_align_up(need, hak_os_page_size());
    if (!hak_os_grow(segment, segment->mapping_size, mapping_size, HAK_OS_USER_HUGE)) return false;
    hak_region_dedicated_resize(segment, mapping_size);
    segment->units = hak_whale_units(mapping_size);
    return true;
  }
  size_t units = hak_whale_units(need);
  if (units > HAK_CHUNK_RUN_MAX || !hak_region_extend(segment, segment->units, units - segment->units)) return false;
  hak_region_guard_clear((uint8_t*)segment + (segment->units << HAK_SEGMENT_SHIFT), units - segment->units);
  hak_region_thp_prepare((uint8_t*)segment + (segment->units << HAK_SEGMENT_SHIFT), units - segment->units, true);
  segment->units = units;
  segment->mapping_size = units << HAK_SEGMENT_SHIFT;
  return true;
}

/* Moves the pages of the old block into the new one with mremap (instead of copying
 * into memory that would fault page by page); the old run's hole gets fresh pages and
 * the run goes back (not to the ring: it holds nothing). */
static bool hak_whale_remap(hak_segment_t* from, void* p, size_t bytes, void* to) {
  if (!hak_os_move(p, bytes, to, HAK_OS_USER_HUGE)) return false;
  hak_whale_thp_advise(to, bytes);
  hak_segment_live_add(-1);
  hak_segment_map_set(from, false);
  hak_hardening_on_segment_release(from);
  from->pages[0].used = 0;
  if (from->is_dedicated) {
    /* The header's part and the room past the block (a mapping made with room to
     * grow) stay behind: both go. */
    uint8_t* end = (uint8_t*)from + from->mapping_size;
    uint8_t* tail = (uint8_t*)p + bytes;
    hak_region_dedicated_unlink(from);
    hak_os_unmap(from, (size_t)((uint8_t*)p - (uint8_t*)from), HAK_OS_USER_HUGE);
    if (tail < end) hak_os_unmap(tail, (size_t)(end - tail), HAK_OS_USER_HUGE);
  } else {
    hak_region_free_moved(from, from->units, p, bytes, (uint8_t*)from + from->data_end);
  }
  return true;
}

/* A whale that outgrew its run and cannot extend it: a new run, with as much room
 * again (address space only: untouched pages cost no memory), so that repeated growth
 * mostly happens in place. Into resident memory the old block is copied (no faults,
 * and its pages stay for reuse); into cold memory its pages move by mremap. */
static void* hak_whale_move(hak_segment_t* segment, void* p, size_t size) {
  size_t usable = segment->block_bytes;
  size_t roomy = size <= PTRDIFF_MAX / 4 ? size * 2 : size;
  bool resident;
  void* q = hak_whale_alloc(size, roomy, 0, &resident);
  if (q == NULL) q = hak_whale_alloc(size, size, 0, &resident);
  if (q == NULL) {
    errno = ENOMEM;
    return NULL;
  }
  if (!resident && hak_whale_remap(segment, p, usable, q)) {
    hak_large_count(&hak_large_moved_by_remap);
    return q;
  }
  memcpy(q, p, usable);
  hak_whale_free(segment);
  hak_large_count(&hak_large_moved_by_copy);
  return q;
}

void* hak_whale_realloc(hak_segment_t* segment, void* p, size_t size) {
  size_t offset = (size_t)((uint8_t*)p - (uint8_t*)segment);
  size_t usable = segment->block_bytes;
  if (size > PTRDIFF_MAX - offset - HAK_SEGMENT_SIZE) {
    errno = ENOMEM;
    return NULL;
  }
  if (size <= usable) {
    hak_whale_shrink(segment, offset + size);
  } else if (offset + size > segment->mapping_size && !hak_whale_grow_in_place(segment, offset + size)) {
    return hak_whale_move(segment, p, size);
  } else {
    hak_large_count(&hak_large_grown_in_place);
  }
  size_t bytes = hak_align_up(size, hak_os_page_size());
  if (bytes > usable) hak_asan_unpoison((uint8_t*)p + usable, bytes - usable); /* see hak_whale_hand_out */
  segment->block_bytes = bytes;
  if (segment->data_end < offset + bytes) segment->data_end = offset + bytes;
  return p;
}
void hak_large_stats_read(hak_stats_t* out) {
  out->huge_grow_in_place = atomic_load_explicit(&hak_large_grown_in_place, memory_order_relaxed);
  out->huge_moved_by_remap = atomic_load_explicit(&hak_large_moved_by_remap, memory_order_relaxed);
  out->huge_moved_by_copy = atomic_load_explicit(&hak_large_moved_by_copy, memory_order_relaxed);
}
