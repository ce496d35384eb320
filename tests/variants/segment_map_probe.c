/* SPDX-License-Identifier: MIT */
/* segment_map_probe.c - plain C entry points into the hardened variant's ownership map
 * (hak_segment.c) for segment_map_test.cc (hak_internal.h is C11 and cannot be included
 * from C++). The map only records addresses: nothing is mapped at the segments a test
 * marks, so any address can be set and queried. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hakmem/hak_internal.h"

HAK_EXPORT void map_probe_set(uintptr_t segment, bool present) {
  hak_segment_map_set((const hak_segment_t*)segment, present);
}
HAK_EXPORT bool map_probe_contains(uintptr_t p) { return hak_segment_map_contains((const void*)p); }
HAK_EXPORT unsigned map_probe_address_bits(void) { return HAK_ADDRESS_BITS; }
HAK_EXPORT size_t map_probe_leaf_bytes(void) { return HAK_SEGMENT_MAP_LEAF_BYTES; }
HAK_EXPORT uintptr_t map_probe_leaf_span(void) { return HAK_SEGMENT_MAP_LEAF_UNITS << HAK_SEGMENT_SHIFT; }
HAK_EXPORT size_t map_probe_segment_size(void) { return HAK_SEGMENT_SIZE; }
HAK_EXPORT bool map_probe_hardened(void) { return HAK_HARDENED; }
