/* SPDX-License-Identifier: MIT */
/* size_class_probe.c - plain C entry points into hakmem's size-class internals for
 * size_class_test.cc (hak_internal.h is C11 and cannot be included from C++). */
#include <stddef.h>
#include <stdint.h>

#include "hakmem/hak_internal.h"

size_t hak_probe_class_of(size_t size) { return hak_size_class(size); }
size_t hak_probe_mid_class_of(size_t size) { return hak_mid_class_of(size); }
size_t hak_probe_block_size(size_t class_index) { return hak_class_block_size(class_index); }
size_t hak_probe_tiny_direct(size_t slot) { return hak_tiny_class_of_direct[slot]; }
size_t hak_probe_class_page_slices(size_t class_index, unsigned grow) {
  return hak_class_page_slices(class_index, grow);
}
unsigned hak_probe_page_grow_max(void) { return HAK_MEDIUM_PAGE_GROW_MAX; }

size_t hak_probe_class_count(void) { return HAK_CLASS_COUNT; }
size_t hak_probe_tiny_class_count(void) { return HAK_TINY_CLASS_COUNT; }
size_t hak_probe_tiny_direct_count(void) { return HAK_TINY_DIRECT_COUNT; }
size_t hak_probe_tiny_max(void) { return HAK_TINY_MAX; }
size_t hak_probe_mid_max(void) { return HAK_MID_MAX; }
size_t hak_probe_pool_max(void) { return HAK_POOL_MAX; }
size_t hak_probe_slice_size(void) { return HAK_SLICE_SIZE; }

/* The page a live block sits in, as the allocator sees it: its block size and class. */
size_t hak_probe_page_block_size(const void* p) {
  hak_segment_t* segment = hak_segment_of(p);
  return hak_segment_page_of(segment, p)->block_size;
}
size_t hak_probe_page_class(const void* p) {
  hak_segment_t* segment = hak_segment_of(p);
  return hak_segment_page_of(segment, p)->class_index;
}
int hak_probe_segment_kind_of(const void* p) { return (int)hak_segment_of(p)->kind; }
int hak_probe_kind_pool(void) { return (int)HAK_SEGMENT_POOL; }
/* Slices spanned by the page a live block sits in, and whether the block starts it. */
size_t hak_probe_page_slices(const void* p) {
  return hak_segment_page_of(hak_segment_of(p), p)->slice_count;
}
size_t hak_probe_page_reserved(const void* p) {
  return hak_segment_page_of(hak_segment_of(p), p)->reserved;
}
/* Bytes the hardened level 2 adds to a pool request for its canary (0 otherwise). */
size_t hak_probe_canary_room(void) {
  return HAK_CANARY_ROOM;
}
