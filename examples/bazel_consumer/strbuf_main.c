/* SPDX-License-Identifier: MIT */
/* strbuf_main.c - the strbuf library (hak_* API through hakmem_headers) in a binary
 * that picks hakmem's implementation: with @hakmem//hakmem:hakmem beside it malloc is
 * hakmem's too (EXPECT_OWNER "hakmem"); with @hakmem//hakmem:hakmem_api malloc stays
 * the C library's (EXPECT_OWNER "libc"). Exits 1 on any wrong result. */
#include <stdio.h>
#include <string.h>

#include "hakmem.h"
#include "probe.h"
#include "strbuf.h"

#ifndef EXPECT_OWNER
#error "EXPECT_OWNER must be \"hakmem\" or \"libc\""
#endif

int main(int argc, char** argv) {
  const char* name = argc > 1 ? argv[1] : "strbuf";
  strbuf_t sb = {0};
  char piece[16];
  int ok = 1;
  for (int i = 0; i < 1000 && ok; i++) {
    snprintf(piece, sizeof piece, "%d,", i % 10);
    ok = strbuf_append(&sb, piece) == 0;
  }
  /* 1000 pieces "0," .. "9,": 2000 bytes, each digit in its place. */
  ok = ok && sb.len == 2000 && strlen(sb.data) == 2000 && sb.data[2 * 537] == '7' &&
       hak_usable_size(sb.data) == sb.cap && sb.cap > sb.len;
  size_t len = sb.len;
  strbuf_release(&sb);

  probe_result_t r;
  if (probe_malloc(&r) != 0) {
    fprintf(stderr, "consumer: %s: malloc_info could not be read\n", name);
    return 1;
  }
  printf("consumer: %s variant=%s malloc=%s strbuf=%s(%zu bytes)\n", name, hak_variant(), r.owner,
         ok ? "ok" : "WRONG", len);
  if (!ok || strcmp(r.owner, EXPECT_OWNER) != 0 ||
      (strcmp(r.owner, "hakmem") == 0 && !r.libc_mallocs_counted)) {
    fprintf(stderr, "consumer: %s: FAILED: expected malloc=%s and a correct strbuf\n", name, EXPECT_OWNER);
    return 1;
  }
  return 0;
}
