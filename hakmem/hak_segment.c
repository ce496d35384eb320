/* hak_segment.c - segments: 4 MiB-aligned memory from the OS layer, split into pages that
 * are handed to one heap at a time; huge segments holding a single large block; the list
 * of segments abandoned by exited threads; a small cache of empty segments; and, in the
 * hardened variant, a map of which 4 MiB units are ours. */
#include <string.h>

#include "hak_internal.h"

static hak_lock_t hak_segment_lock = HAK_LOCK_INIT; /* guards the abandoned list and cache */
static hak_segment_t* hak_segment_abandoned;         /* singly linked through ->next */
static _Atomic size_t hak_segment_abandoned_count;
static hak_segment_t* hak_segment_cache[HAK_SEGMENT_CACHE_MAX];
static size_t hak_segment_cache_count;
static _Atomic uint64_t hak_segment_live;

uint64_t hak_segment_live_count(void) {
  return atomic_load_explicit(&hak_segment_live, memory_order_relaxed);
}

void hak_segment_fork_lock(void) {
  hak_lock(&hak_segment_lock);
}

void hak_segment_fork_unlock(void) {
  hak_unlock(&hak_segment_lock);
}

/* ---- Ownership map (hardened) ---------------------------------------------- */
#if HAK_HARDENED
/* One bit per 4 MiB unit of a 47-bit address space: 4 MiB of bitmap, reserved on first
 * use and only touched where segments live. */
#define HAK_SEGMENT_MAP_UNITS (((uintptr_t)1 << 47) >> HAK_SEGMENT_SHIFT)
static _Atomic(uint64_t)* _Atomic hak_segment_map;

static _Atomic(uint64_t)* hak_segment_map_get(void) {
  _Atomic(uint64_t)* map = atomic_load_explicit(&hak_segment_map, memory_order_acquire);
  if (map != NULL) return map;
  _Atomic(uint64_t)* fresh = hak_os_map_aligned(HAK_SEGMENT_MAP_UNITS / 8, HAK_OS_PAGE_SIZE, 0);
  if (fresh == NULL) hak_fault(HAK_FAULT_INVALID_FREE, NULL); /* cannot check: refuse */
  if (!atomic_compare_exchange_strong(&hak_segment_map, &map, fresh)) {
    hak_os_unmap(fresh, HAK_SEGMENT_MAP_UNITS / 8);
    return map;
  }
  return fresh;
}

static void hak_segment_map_set(const hak_segment_t* segment, bool present) {
  uintptr_t unit = (uintptr_t)segment >> HAK_SEGMENT_SHIFT;
  if (unit >= HAK_SEGMENT_MAP_UNITS) return;
  _Atomic(uint64_t)* word = &hak_segment_map_get()[unit / 64];
  uint64_t bit = (uint64_t)1 << (unit % 64);
  if (present) atomic_fetch_or(word, bit);
  else atomic_fetch_and(word, ~bit);
}

bool hak_segment_map_contains(const void* p) {
  uintptr_t unit = (uintptr_t)hak_segment_of(p) >> HAK_SEGMENT_SHIFT;
  if (p == NULL || unit >= HAK_SEGMENT_MAP_UNITS) return false;
  _Atomic(uint64_t)* map = atomic_load_explicit(&hak_segment_map, memory_order_acquire);
  if (map == NULL) return false;
  return (atomic_load_explicit(&map[unit / 64], memory_order_relaxed) >> (unit % 64)) & 1;
}
#else
static void hak_segment_map_set(const hak_segment_t* segment, bool present) {
  (void)segment;
  (void)present;
}

bool hak_segment_map_contains(const void* p) {
  return p != NULL;
}
#endif

/* ---- Segment lifetime --------------------------------------------------------- */

/* Bytes of header a segment of this kind uses: huge segments have one page descriptor
 * and no per-block bitmap. Rounded to OS pages so user data never shares one with it. */
static size_t hak_segment_header_used(hak_segment_kind_t kind) {
  if (kind == HAK_SEGMENT_HUGE) return offsetof(hak_segment_t, pages) + sizeof(hak_page_t);
  return sizeof(hak_segment_t);
}

static void hak_segment_init_header(hak_segment_t* segment, hak_segment_kind_t kind, size_t mapping_size) {
  size_t page_shift = kind == HAK_SEGMENT_SMALL ? HAK_SMALL_PAGE_SHIFT
                      : kind == HAK_SEGMENT_MEDIUM ? HAK_MEDIUM_PAGE_SHIFT
                                                   : HAK_HUGE_PAGE_SHIFT;
  size_t page_count = kind == HAK_SEGMENT_HUGE ? 1 : HAK_SEGMENT_SIZE >> page_shift;
  memset(segment, 0, hak_segment_header_used(kind));
  segment->page_shift = page_shift;
  segment->kind = kind;
  segment->mapping_size = mapping_size;
  segment->header_size = hak_align_up(hak_segment_header_used(kind), HAK_OS_PAGE_SIZE);
  segment->cookie = (uintptr_t)segment ^ hak_process_secret;
  segment->page_count = (uint32_t)page_count;
  segment->free_pages = page_count == 64 ? ~(uint64_t)0 : (((uint64_t)1 << page_count) - 1);
  for (size_t i = 0; i < page_count; i++) segment->pages[i].page_index = (uint8_t)i;
  /* A page wholly inside the header can never hold blocks. */
  for (size_t i = 0; i < page_count && ((i + 1) << page_shift) <= segment->header_size; i++) {
    segment->free_pages &= ~((uint64_t)1 << i);
  }
}

static hak_segment_t* hak_segment_cache_pop(void) {
  hak_segment_t* segment = NULL;
  hak_lock(&hak_segment_lock);
  if (hak_segment_cache_count > 0) segment = hak_segment_cache[--hak_segment_cache_count];
  hak_unlock(&hak_segment_lock);
  return segment;
}

static bool hak_segment_cache_push(hak_segment_t* segment) {
  bool cached = false;
  hak_lock(&hak_segment_lock);
  if (hak_segment_cache_count < HAK_SEGMENT_CACHE_MAX) {
    hak_segment_cache[hak_segment_cache_count++] = segment;
    cached = true;
  }
  hak_unlock(&hak_segment_lock);
  return cached;
}

static hak_segment_t* hak_segment_alloc(hak_heap_t* heap, hak_segment_kind_t kind) {
  hak_segment_t* segment = hak_segment_cache_pop();
  if (segment == NULL) {
    segment = hak_os_map_aligned(HAK_SEGMENT_SIZE, HAK_SEGMENT_SIZE, 0);
    if (segment == NULL) return NULL;
  }
  hak_segment_init_header(segment, kind, HAK_SEGMENT_SIZE);
  segment->heap = heap;
  atomic_store_explicit(&segment->thread_id, heap->thread_id, memory_order_release);
  hak_segment_map_set(segment, true);
  atomic_fetch_add_explicit(&hak_segment_live, 1, memory_order_relaxed);
  return segment;
}

/* An empty segment goes to the cache with its pages given back, or to the OS. */
static void hak_segment_release(hak_segment_t* segment) {
  hak_segment_map_set(segment, false);
  hak_hardening_on_segment_release(segment);
  atomic_fetch_sub_explicit(&hak_segment_live, 1, memory_order_relaxed);
  atomic_store_explicit(&segment->thread_id, 0, memory_order_relaxed);
  size_t header = segment->header_size;
  hak_os_purge((uint8_t*)segment + header, HAK_SEGMENT_SIZE - header);
  if (!hak_segment_cache_push(segment)) hak_os_unmap(segment, HAK_SEGMENT_SIZE);
}

/* ---- A heap's segment lists ----------------------------------------------------- */

static hak_segment_list_t* hak_segment_list_of(hak_heap_t* heap, hak_segment_t* segment) {
  return segment->in_free_list ? &heap->segments_free[segment->kind] : &heap->segments_full[segment->kind];
}

static void hak_segment_list_remove(hak_heap_t* heap, hak_segment_t* segment) {
  hak_segment_list_t* list = hak_segment_list_of(heap, segment);
  if (segment->prev != NULL) segment->prev->next = segment->next;
  else list->first = segment->next;
  if (segment->next != NULL) segment->next->prev = segment->prev;
  segment->next = segment->prev = NULL;
}

static void hak_segment_list_push(hak_heap_t* heap, hak_segment_t* segment, bool has_free_pages) {
  segment->in_free_list = has_free_pages;
  hak_segment_list_t* list = hak_segment_list_of(heap, segment);
  segment->prev = NULL;
  segment->next = list->first;
  if (list->first != NULL) list->first->prev = segment;
  list->first = segment;
}

/* ---- Pages ------------------------------------------------------------------------- */

hak_page_t* hak_segment_page_alloc(hak_heap_t* heap, hak_segment_kind_t kind) {
  hak_segment_t* segment = heap->segments_free[kind].first;
  if (segment == NULL) {
    segment = hak_segment_alloc(heap, kind);
    if (segment == NULL) return NULL;
    hak_segment_list_push(heap, segment, true);
    hak_stat_global_inc(segments_allocated);
  }
  size_t index = (size_t)__builtin_ctzll(segment->free_pages);
  segment->free_pages &= ~((uint64_t)1 << index);
  segment->used_pages++;
  if (segment->free_pages == 0) {
    hak_segment_list_remove(heap, segment);
    hak_segment_list_push(heap, segment, false);
  }
  hak_page_t* page = &segment->pages[index];
  page->in_use = 1;
  hak_stat_inc(heap, pages_allocated);
  return page;
}

void hak_segment_page_free(hak_heap_t* heap, hak_page_t* page) {
  hak_segment_t* segment = hak_segment_of(page);
  /* block_size and start stay: the hardened variant recognises blocks of the page's
   * last layout, so freeing one again is named a double free. */
  page->in_use = 0;
  page->free = NULL;
  page->used = 0;
  page->capacity = page->reserved = 0;
  hak_stat_inc(heap, pages_freed);
  bool was_full = segment->free_pages == 0;
  segment->free_pages |= (uint64_t)1 << page->page_index;
  segment->used_pages--;
  if (segment->used_pages == 0) {
    hak_segment_list_remove(heap, segment);
    hak_stat_global_inc(segments_freed);
    hak_segment_release(segment);
  } else if (was_full) {
    hak_segment_list_remove(heap, segment);
    hak_segment_list_push(heap, segment, true);
  }
}

/* ---- Abandonment and adoption ---------------------------------------------------- */

/* Called by an exiting heap for a segment that still has blocks in use. Its pages are
 * already in HAK_DELAYED_NEVER, so remote frees only touch the pages themselves. */
void hak_segment_abandon(hak_heap_t* heap, hak_segment_t* segment) {
  hak_segment_list_remove(heap, segment);
  segment->heap = NULL;
  atomic_store_explicit(&segment->thread_id, 0, memory_order_release);
  hak_lock(&hak_segment_lock);
  segment->next = hak_segment_abandoned;
  hak_segment_abandoned = segment;
  atomic_fetch_add_explicit(&hak_segment_abandoned_count, 1, memory_order_relaxed);
  hak_unlock(&hak_segment_lock);
  hak_stat_global_inc(segments_abandoned);
}

hak_segment_t* hak_segment_abandoned_pop(void) {
  if (atomic_load_explicit(&hak_segment_abandoned_count, memory_order_relaxed) == 0) return NULL;
  hak_lock(&hak_segment_lock);
  hak_segment_t* segment = hak_segment_abandoned;
  if (segment != NULL) {
    hak_segment_abandoned = segment->next;
    segment->next = NULL;
    atomic_fetch_sub_explicit(&hak_segment_abandoned_count, 1, memory_order_relaxed);
  }
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

/* Takes over one abandoned segment: empty pages are freed; pages with live blocks join
 * the heap's full queue with delayed frees on, so that the frees of their remaining
 * blocks reach the new owner even if it never allocates those classes again (in a
 * class queue they would wait for a scan of their class, which might never come).
 * Returns false when there was no abandoned segment. */
bool hak_segment_adopt_one(hak_heap_t* heap) {
  hak_segment_t* segment = hak_segment_abandoned_pop();
  if (segment == NULL) return false;
  segment->heap = heap;
  atomic_store_explicit(&segment->thread_id, heap->thread_id, memory_order_release);
  hak_segment_list_push(heap, segment, segment->free_pages != 0);
  hak_stat_global_inc(segments_adopted);
  for (size_t i = 0; i < segment->page_count; i++) {
    hak_page_t* page = &segment->pages[i];
    if (!page->in_use) continue;
    atomic_store_explicit(&page->xheap, heap, memory_order_release);
    if (hak_segment_adopt_page_collect(page)) {
      bool releases_segment = segment->used_pages == 1;
      hak_segment_page_free(heap, page);
      if (releases_segment) break; /* the segment is gone */
    } else {
      hak_heap_page_adopt_full(heap, page);
    }
  }
  return true;
}

/* ---- Huge segments: one block each ------------------------------------------------- */

/* Maps a segment for one block of `size` bytes aligned to `align`. The block starts one
 * OS page in (or at `align`), so the header never shares a page with user data. For
 * alignments of 4 MiB and more the header sits 4 MiB before the block, which
 * hak_segment_of() finds by masking (block - 1). */
hak_segment_t* hak_segment_huge_alloc(size_t size, size_t align) {
  size_t header = hak_align_up(hak_segment_header_used(HAK_SEGMENT_HUGE), HAK_OS_PAGE_SIZE);
  size_t offset = align > header ? hak_align_up(header, align) : header;
  size_t map_align = HAK_SEGMENT_SIZE, map_offset = 0;
  if (offset >= HAK_SEGMENT_SIZE) {
    offset = HAK_SEGMENT_SIZE;
    map_align = align;
    map_offset = HAK_SEGMENT_SIZE;
  }
  if (size > PTRDIFF_MAX - offset - HAK_OS_PAGE_SIZE) return NULL;
  size_t mapping_size = hak_align_up(offset + size, HAK_OS_PAGE_SIZE);
  hak_segment_t* segment = hak_os_map_aligned(mapping_size, map_align, map_offset);
  if (segment == NULL) return NULL;
  hak_segment_init_header(segment, HAK_SEGMENT_HUGE, mapping_size);
  segment->mapping_is_zero = true;
  hak_page_t* page = &segment->pages[0];
  page->in_use = 1;
  page->used = 1;
  page->start = (uint8_t*)segment + offset;
  page->class_index = HAK_CLASS_HUGE;
  page->block_size = 0; /* huge: see hak_segment_huge_usable */
  atomic_store_explicit(&page->xthread_free, HAK_DELAYED_NEVER, memory_order_relaxed);
  hak_segment_map_set(segment, true);
  atomic_fetch_add_explicit(&hak_segment_live, 1, memory_order_relaxed);
  return segment;
}

void hak_segment_huge_free(hak_segment_t* segment) {
  hak_segment_map_set(segment, false);
  hak_hardening_on_segment_release(segment);
  atomic_fetch_sub_explicit(&hak_segment_live, 1, memory_order_relaxed);
  hak_os_unmap(segment, segment->mapping_size);
}

size_t hak_segment_huge_usable(const hak_segment_t* segment, const void* p) {
  return segment->mapping_size - (size_t)((const uint8_t*)p - (const uint8_t*)segment);
}

/* Gives back the pages beyond new_usable bytes of the block; the block stays put. */
bool hak_segment_huge_shrink(hak_segment_t* segment, size_t new_usable) {
  uint8_t* block = segment->pages[0].start;
  size_t keep = hak_align_up((size_t)(block - (uint8_t*)segment) + new_usable, HAK_OS_PAGE_SIZE);
  if (keep >= segment->mapping_size) return false;
  hak_os_unmap((uint8_t*)segment + keep, segment->mapping_size - keep);
  segment->mapping_size = keep;
  return true;
}
