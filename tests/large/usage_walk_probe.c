/* SPDX-License-Identifier: MIT */
/* usage_walk_probe.c - the whale_taken test hook as a plain C function for
 * usage_walk_test.cc (hak_internal.h cannot be included from C++). */
#include <stdatomic.h>

#include "hakmem/hak_internal.h"

/* Sets (or, with NULL, clears) the hook between a whale's run being taken from the
 * region and its header being written. */
void hak_probe_set_whale_taken_hook(void (*hook)(void*)) {
  atomic_store_explicit(&hak_test_hook_whale_taken, hook, memory_order_release);
}
