/* SPDX-License-Identifier: MIT */
/* strbuf.h - a growable string on hakmem's hak_* API. A library of the consumer that
 * calls hakmem explicitly: it depends on @hakmem//hakmem:hakmem_headers only (the
 * declarations), and the binary that links it chooses the implementation
 * (@hakmem//hakmem:hakmem, :hakmem_api, a variant, or cc_binary's malloc attribute). */
#ifndef CONSUMER_STRBUF_H
#define CONSUMER_STRBUF_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct strbuf {
  char* data;  /* NUL-terminated; from hak_malloc/hak_realloc; NULL before the first append */
  size_t len;  /* bytes before the NUL */
  size_t cap;  /* bytes data can hold, the NUL included: hak_usable_size(data) */
} strbuf_t;

/* Appends s; returns 0, or -1 (errno ENOMEM) leaving sb as it was. */
int strbuf_append(strbuf_t* sb, const char* s);
/* Frees the buffer (hak_free) and empties sb. */
void strbuf_release(strbuf_t* sb);

#ifdef __cplusplus
}
#endif

#endif /* CONSUMER_STRBUF_H */
