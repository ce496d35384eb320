/* SPDX-License-Identifier: MIT */
/* hardened_probe.c - writes a free-list link the way hakmem itself does (encoded with
 * the process secret at hardened level 2), for hardened_test.cc: an attacker who knew
 * the secret could do this, so it shows what the checks behind the encoding still
 * catch (hak_internal.h is C11 and cannot be included from C++). */
#include "hakmem/hak_internal.h"

HAK_EXPORT void hardened_probe_forge_link(void* freed_block, void* next) {
  hak_block_set_next((hak_block_t*)freed_block, (hak_block_t*)next);
}
HAK_EXPORT int hardened_probe_level(void) { return HAK_HARDENED; }
HAK_EXPORT int hardened_probe_is_big(const void* p) { return hak_segment_of(p)->kind == HAK_SEGMENT_BIG; }
