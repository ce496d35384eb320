/* SPDX-License-Identifier: MIT */
/* probe.h - whose malloc does this process use? Asked through the C library's
 * malloc_info(3) only: hakmem's malloc_info ends its document with an element
 * <hakmem variant="..." in_use_blocks="..." .../> that glibc's does not have. No hakmem
 * header or symbol is needed, so any binary can ask, whatever it links. */
#ifndef CONSUMER_PROBE_H
#define CONSUMER_PROBE_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct probe_result {
  char owner[8];     /* "hakmem" or "libc" */
  char variant[32];  /* hakmem's variant ("release", "stats", "hardened"), or "none" */
  /* hakmem only: 1 when 100 strings made by asprintf (malloc called from inside the
   * C library, not from this program) raised hakmem's in_use_blocks by at least 100,
   * and freeing them lowered it again. */
  int libc_mallocs_counted;
} probe_result_t;

/* Fills *out; returns 0, or -1 when malloc_info failed or its output was unreadable. */
int probe_malloc(probe_result_t* out);

#ifdef __cplusplus
}
#endif

#endif /* CONSUMER_PROBE_H */
