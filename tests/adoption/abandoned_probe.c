/* SPDX-License-Identifier: MIT */
/* abandoned_probe.c - the abandoned-free test hook and a segment's fill, as plain C
 * functions for abandoned_free_test.cc (hak_internal.h cannot be included from C++). */
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>

#include "hakmem/hak_internal.h"

/* Sets (or, with NULL, clears) the hook inside a free of a page's last block into an
 * abandoned segment. */
void hak_probe_set_abandoned_free_last_hook(void (*hook)(void*)) {
  atomic_store_explicit(&hak_test_hook_abandoned_free_last, hook, memory_order_release);
}

/* Slices in use of the segment holding `p`; 0 if the segment went back to the region,
 * or its chunk back to the system (then its header is unmapped: mincore says so). */
uint32_t hak_probe_segment_used_slices(const void* p) {
  hak_segment_t* segment = hak_segment_of(p);
  unsigned char resident;
  if (mincore(segment, 1, &resident) != 0) return 0;
  return segment->used_slices;
}

/* Whether the segment holding `p` is on the abandoned list. */
int hak_probe_segment_is_abandoned(const void* p) {
  return __atomic_load_n(&hak_segment_of(p)->is_abandoned, __ATOMIC_RELAXED) != 0;
}

/* Sets (or clears) the hook inside a decay pass of the abandoned list, right after it
 * took a segment off the list. */
void hak_probe_set_abandoned_unlisted_hook(void (*hook)(void*)) {
  atomic_store_explicit(&hak_test_hook_abandoned_unlisted, hook, memory_order_release);
}

const void* hak_probe_segment_of(const void* p) {
  return hak_segment_of(p);
}
