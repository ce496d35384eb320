/* SPDX-License-Identifier: MIT */
/* backlog_probe.c - the abandoned list's length and the adoption threshold, as plain C
 * functions for adopt_backlog_test.cc (hak_internal.h cannot be included from C++). */
#include <stddef.h>

#include "hakmem/hak_internal.h"

size_t hak_probe_abandoned_backlog(void) {
  return hak_segment_abandoned_backlog();
}

size_t hak_probe_adopt_backlog_threshold(void) {
  return HAK_ADOPT_BACKLOG;
}
