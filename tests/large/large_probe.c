/* SPDX-License-Identifier: MIT */
/* large_probe.c - hakmem's geometry and the kind of a block, as plain C functions for
 * the large-block tests (hak_internal.h is C11 and cannot be included from C++). */
#include <stddef.h>
#include <stdint.h>

#include "hakmem/hak_internal.h"

size_t hak_probe_chunk_size(void) { return HAK_CHUNK_SIZE; }
size_t hak_probe_segment_size(void) { return HAK_SEGMENT_SIZE; }
size_t hak_probe_pool_max(void) { return HAK_POOL_MAX; }
size_t hak_probe_big_max(void) { return HAK_BIG_MAX; }
size_t hak_probe_os_page_size(void) { return hak_os_page_size(); }

/* A whale: a run of units (or a mapping of its own) holding one block. */
int hak_probe_is_whale(const void* p) { return hak_segment_of(p)->kind == HAK_SEGMENT_HUGE; }

/* A big block: a page of its own in a big segment. */
int hak_probe_is_big(const void* p) { return hak_segment_of(p)->kind == HAK_SEGMENT_BIG; }

int hak_probe_whale_is_dedicated(const void* p) { return hak_segment_of(p)->is_dedicated; }

/* 4 MiB units of the whale's run (its room to grow in place). */
size_t hak_probe_whale_units(const void* p) { return hak_segment_of(p)->units; }

/* Reports one purge regret: memory purged just now taken again (hak_purge.c). */
void hak_probe_purge_regret_now(void) { hak_purge_regret(hak_purge_now_ms()); }
