/* SPDX-License-Identifier: MIT */
/* heap_probe.c - plain C entry points into hakmem's heap internals for the concurrency
 * tests (hak_internal.h is C11 and cannot be included from C++). */
#include <stddef.h>
#include <stdint.h>

#include "hakmem/hak_internal.h"

/* The calling thread's heap, or NULL while it has none (before its first allocation
 * and after its heap was torn down at exit). */
HAK_EXPORT const void* conc_probe_current_heap(void) {
  hak_heap_t* heap = hak_heap_get();
  return heap == &hak_heap_empty ? NULL : heap;
}

static void conc_probe_count(const hak_heap_t* heap, void* arg) {
  (void)heap;
  (*(size_t*)arg)++;
}

/* Heaps currently marked live in the global pool. */
HAK_EXPORT size_t conc_probe_live_heaps(void) {
  size_t n = 0;
  hak_heap_visit_all(conc_probe_count, &n);
  return n;
}

/* Heap structs made so far, live or idle: exited threads' heaps are reused, so this
 * stays near the most threads ever alive at once. */
HAK_EXPORT size_t conc_probe_heaps_made(void) {
  return hak_heap_pool_count();
}

/* Sets the direct_busy flag of the segment holding `block`, as a thread freeing into
 * that segment (hak_segment_free_abandoned_direct) holds it for a few stores. */
HAK_EXPORT void conc_probe_set_direct_busy(const void* block, int busy) {
  hak_segment_t* segment = hak_segment_of(block);
  atomic_store_explicit(&segment->direct_busy, (uint8_t)(busy != 0), memory_order_seq_cst);
}
