/* hak_hardening.c - misuse detection of the hardened variant, and the fault report
 * every variant uses. A fault stops the process with a message naming the fault and
 * the address; the message is written with write(2), never stdio or malloc.
 *
 * Hardened free checks, in order: the pointer lies in a segment of ours (ownership
 * map), the segment's cookie is intact, the pointer is the start of a block of a page
 * in use, and the block's live bit is set (clearing it atomically, so two racing frees
 * of one block cannot both pass). */
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "hak_internal.h"

static const char* hak_fault_name(hak_fault_t fault) {
  switch (fault) {
    case HAK_FAULT_DOUBLE_FREE: return "double free";
    case HAK_FAULT_INVALID_FREE: return "free of a pointer hakmem does not own";
    case HAK_FAULT_INVALID_REALLOC: return "realloc of a pointer hakmem does not own or already freed";
    case HAK_FAULT_INVALID_USABLE_SIZE: return "malloc_usable_size of a pointer hakmem does not own";
    case HAK_FAULT_SIZED_DELETE: return "sized or aligned delete with a size or alignment the block does not have";
  }
  return "unknown fault";
}

static void hak_fault_write(const char* s) {
  size_t n = 0;
  while (s[n] != '\0') n++;
  while (n > 0) {
    ssize_t w = write(2, s, n);
    if (w <= 0) return;
    s += w;
    n -= (size_t)w;
  }
}

void hak_fault(hak_fault_t fault, const void* p) {
  char hex[2 + 16 + 1];
  uintptr_t v = (uintptr_t)p;
  hex[0] = '0';
  hex[1] = 'x';
  for (int i = 0; i < 16; i++) hex[2 + i] = "0123456789abcdef"[(v >> (60 - 4 * i)) & 0xf];
  hex[18] = '\0';
  hak_fault_write("hakmem: fatal: ");
  hak_fault_write(hak_fault_name(fault));
  hak_fault_write(" at address ");
  hak_fault_write(hex);
  hak_fault_write(" (" HAK_VARIANT_NAME " variant)\n");
  abort();
}

void hak_fault_message(const char* message) {
  hak_fault_write("hakmem: fatal: ");
  hak_fault_write(message);
  hak_fault_write(" (" HAK_VARIANT_NAME " variant)\n");
  abort();
}

#if HAK_HARDENED

/* A segment given back (an empty pool segment to the region, a huge block to the
 * region or the OS when it leaves the caches) no longer answers for its blocks. Remembering the last
 * released segments lets the second free of a block in one be named a double free. */
#define HAK_RELEASED_RING 64
static _Atomic(uintptr_t) hak_released_segments[HAK_RELEASED_RING];
static _Atomic size_t hak_released_next;

void hak_hardening_on_segment_release(const hak_segment_t* segment) {
  size_t i = atomic_fetch_add_explicit(&hak_released_next, 1, memory_order_relaxed);
  atomic_store_explicit(&hak_released_segments[i % HAK_RELEASED_RING], (uintptr_t)segment, memory_order_relaxed);
}

static bool hak_hardening_recently_released(const void* p) {
  uintptr_t segment = (uintptr_t)hak_segment_of(p);
  for (size_t i = 0; i < HAK_RELEASED_RING; i++) {
    if (atomic_load_explicit(&hak_released_segments[i], memory_order_relaxed) == segment) return true;
  }
  return false;
}

#define HAK_NOT_A_BLOCK (-1)
#define HAK_BLOCK_OF_RELEASED_PAGE (-2)

/* Whether p starts a block of a page that went back to its segment (all its blocks
 * were freed: p was freed before). Its slices now belong to a free span, perhaps merged
 * with others; the descriptor at the page's first slice still holds its last layout,
 * so look back for the nearest such head whose blocks p could start. */
static bool hak_hardening_was_block(hak_segment_t* segment, const void* p) {
  size_t slice = (size_t)((const uint8_t*)p - (const uint8_t*)segment) >> HAK_SLICE_SHIFT;
  size_t head = slice - segment->slice_offset[slice];
  for (size_t i = slice + 1; i-- > head;) {
    const hak_page_t* old = &segment->pages[i];
    if (old->slice_index != i || old->block_size == 0) continue;
    size_t in_page = (size_t)((const uint8_t*)p - hak_page_area(old));
    return in_page < ((size_t)old->slice_count << HAK_SLICE_SHIFT) && in_page % old->block_size == 0;
  }
  return false;
}

/* Index of the block p starts; HAK_NOT_A_BLOCK when p is no block start at all, and
 * HAK_BLOCK_OF_RELEASED_PAGE when p starts a block of a page that went back to its
 * segment. Division is fine here: this is the hardened variant. */
static long hak_hardening_block_index(hak_segment_t* segment, const void* p) {
  size_t offset = (size_t)((const uint8_t*)p - (const uint8_t*)segment);
  if (offset < HAK_SLICE_SIZE) return HAK_NOT_A_BLOCK; /* the header slice */
  hak_page_t* page = hak_segment_page_of(segment, p);
  if (!page->in_use) return hak_hardening_was_block(segment, p) ? HAK_BLOCK_OF_RELEASED_PAGE : HAK_NOT_A_BLOCK;
  if (page->block_size == 0) return HAK_NOT_A_BLOCK;
  size_t in_page = (size_t)((const uint8_t*)p - hak_page_area(page));
  if (in_page % page->block_size != 0) return HAK_NOT_A_BLOCK;
  size_t index = in_page / page->block_size;
  return index < page->reserved ? (long)index : HAK_NOT_A_BLOCK;
}

/* The fault for a pointer that is not live: a double free if it was ours once. */
static hak_fault_t hak_hardening_not_live_fault(hak_fault_t fault_if_not, bool was_ours) {
  if (fault_if_not == HAK_FAULT_INVALID_FREE && was_ours) return HAK_FAULT_DOUBLE_FREE;
  return fault_if_not;
}

static _Atomic(uint64_t)* hak_hardening_live_word(hak_segment_t* segment, const hak_page_t* page, size_t index) {
  return &segment->live[page->slice_index][index / 64];
}

void hak_hardening_on_alloc(hak_page_t* page, const void* block) {
  hak_segment_t* segment = hak_segment_of(block);
  size_t index = (size_t)((const uint8_t*)block - hak_page_area(page)) / page->block_size;
  atomic_fetch_or_explicit(hak_hardening_live_word(segment, page, index), (uint64_t)1 << (index % 64),
                           memory_order_relaxed);
}

/* Faults unless p is a block hakmem handed out and has not taken back. */
void hak_hardening_check_owned(const void* p, hak_fault_t fault_if_not) {
  hak_segment_t* segment = hak_segment_of(p);
  if (!hak_segment_map_contains(p) || segment->cookie != ((uintptr_t)segment ^ hak_process_secret)) {
    hak_fault(hak_hardening_not_live_fault(fault_if_not, hak_hardening_recently_released(p)), p);
  }
  if (segment->kind == HAK_SEGMENT_HUGE) {
    if (p != segment->whale_block) hak_fault(fault_if_not, p);
    return;
  }
  long index = hak_hardening_block_index(segment, p);
  if (index == HAK_NOT_A_BLOCK) hak_fault(fault_if_not, p);
  if (index == HAK_BLOCK_OF_RELEASED_PAGE) hak_fault(hak_hardening_not_live_fault(fault_if_not, true), p);
  hak_page_t* page = hak_segment_page_of(segment, p);
  uint64_t bits = atomic_load_explicit(hak_hardening_live_word(segment, page, (size_t)index), memory_order_relaxed);
  if (((bits >> (index % 64)) & 1) == 0) hak_fault(hak_hardening_not_live_fault(fault_if_not, true), p);
}

/* Validates a free and marks the block free; the check-and-clear is one atomic step. */
void hak_hardening_on_free(const void* p) {
  hak_hardening_check_owned(p, HAK_FAULT_INVALID_FREE);
  hak_segment_t* segment = hak_segment_of(p);
  if (segment->kind == HAK_SEGMENT_HUGE) {
    /* A huge page's thread-free word reads HAK_DELAYED_NEVER while the block is live;
     * swapping it out makes a racing second free of the same block lose. */
    uintptr_t was = atomic_exchange(&segment->pages[0].xthread_free, 0);
    if (was != HAK_DELAYED_NEVER) hak_fault(HAK_FAULT_DOUBLE_FREE, p);
    return;
  }
  hak_page_t* page = hak_segment_page_of(segment, p);
  size_t index = (size_t)hak_hardening_block_index(segment, p);
  uint64_t bit = (uint64_t)1 << (index % 64);
  uint64_t old = atomic_fetch_and_explicit(hak_hardening_live_word(segment, page, index), ~bit, memory_order_relaxed);
  if ((old & bit) == 0) hak_fault(HAK_FAULT_DOUBLE_FREE, p);
}

#endif /* HAK_HARDENED */
