/* hak_large.c - blocks above the mid pools (> 64 KiB) and allocations whose alignment
 * the pools cannot serve: each gets a huge segment, its own mapping, given back to the
 * OS when freed. Later tiers (L2.5 pool, large-block and whale caches) sit in front of
 * this; it stays the path of last resort. Any thread may free a huge block directly. */
#include <errno.h>

#include "hak_internal.h"

void* hak_large_alloc(hak_heap_t* heap, size_t size, size_t align) {
  if (heap == &hak_heap_empty) hak_process_init(); /* the cookie needs the secret */
  hak_segment_t* segment = hak_segment_huge_alloc(size, align);
  if (segment == NULL) {
    errno = ENOMEM;
    return NULL;
  }
  hak_stat_inc_any(heap, alloc_large);
  hak_stat_inc_any(heap, class_allocs[HAK_CLASS_HUGE]);
  (void)heap;
  return segment->pages[0].start;
}

void hak_large_free(hak_segment_t* segment) {
  hak_heap_t* heap = hak_heap_get();
  hak_stat_inc_any(heap, free_large);
  hak_stat_inc_any(heap, class_frees[HAK_CLASS_HUGE]);
  (void)heap;
  hak_segment_huge_free(segment);
}
