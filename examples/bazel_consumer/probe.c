/* SPDX-License-Identifier: MIT */
/* probe.c - see probe.h. */
#define _GNU_SOURCE
#include "probe.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { kInfoBytes = 1 << 16, kStrings = 100 };

/* malloc_info's document into buf (NUL-terminated); 0 on success. */
static int read_info(char* buf, size_t n) {
  memset(buf, 0, n);
  FILE* f = fmemopen(buf, n - 1, "w");
  if (f == NULL) return -1;
  int rc = malloc_info(0, f);
  if (fclose(f) != 0) return -1;
  return rc;
}

/* The value of attribute name="..." in hakmem's element, or NULL. */
static const char* hakmem_attr(const char* info, const char* name, char* out, size_t n) {
  const char* el = strstr(info, "<hakmem ");
  if (el == NULL) return NULL;
  char key[64];
  snprintf(key, sizeof key, " %s=\"", name);
  const char* v = strstr(el, key);
  if (v == NULL) return NULL;
  v += strlen(key);
  size_t len = strcspn(v, "\"");
  if (len + 1 > n) return NULL;
  memcpy(out, v, len);
  out[len] = '\0';
  return out;
}

static long long in_use_blocks(char* buf) {
  char v[32];
  if (read_info(buf, kInfoBytes) != 0 || hakmem_attr(buf, "in_use_blocks", v, sizeof v) == NULL) return -1;
  return atoll(v);
}

int probe_malloc(probe_result_t* out) {
  static char buf[kInfoBytes];  /* static: the probe's own memory is not on the heap */
  memset(out, 0, sizeof *out);
  if (read_info(buf, sizeof buf) != 0 || strstr(buf, "<malloc version=") == NULL) return -1;
  if (hakmem_attr(buf, "variant", out->variant, sizeof out->variant) == NULL) {
    strcpy(out->owner, "libc");
    strcpy(out->variant, "none");
    return 0;
  }
  strcpy(out->owner, "hakmem");
  long long before = in_use_blocks(buf);
  char* strings[kStrings];
  for (int i = 0; i < kStrings; i++) {
    if (asprintf(&strings[i], "string %d made by the C library", i) < 0) return -1;
  }
  long long during = in_use_blocks(buf);
  for (int i = 0; i < kStrings; i++) free(strings[i]);
  long long after = in_use_blocks(buf);
  out->libc_mallocs_counted =
      before >= 0 && during - before >= kStrings && during - after >= kStrings;
  return 0;
}
