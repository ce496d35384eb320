/* SPDX-License-Identifier: MIT */
/* strbuf.c - see strbuf.h. */
#include "strbuf.h"

#include <string.h>

#include "hakmem.h"

int strbuf_append(strbuf_t* sb, const char* s) {
  size_t n = strlen(s);
  if (sb->len + n + 1 > sb->cap) {
    size_t want = sb->cap ? sb->cap * 2 : 16;
    while (want < sb->len + n + 1) want *= 2;
    char* p = hak_realloc(sb->data, want);
    if (p == NULL) return -1;
    sb->data = p;
    /* hakmem rounds up to its size class: use what the block really holds. */
    sb->cap = hak_usable_size(p);
  }
  memcpy(sb->data + sb->len, s, n + 1);
  sb->len += n;
  return 0;
}

void strbuf_release(strbuf_t* sb) {
  hak_free(sb->data);
  sb->data = NULL;
  sb->len = sb->cap = 0;
}
