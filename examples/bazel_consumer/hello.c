/* SPDX-License-Identifier: MIT */
/* hello.c - a program linked with one of hakmem's malloc-replacing libraries (as a
 * dependency, or through cc_binary's malloc attribute): it checks that malloc is
 * hakmem's and of the variant it was built against (EXPECT_VARIANT), prints one line
 * and exits 1 on any mismatch. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hakmem.h"
#include "probe.h"

#ifndef EXPECT_VARIANT
#error "EXPECT_VARIANT must name the hakmem variant this program links"
#endif

int main(int argc, char** argv) {
  const char* name = argc > 1 ? argv[1] : "hello";
  probe_result_t r;
  if (probe_malloc(&r) != 0) {
    fprintf(stderr, "consumer: %s: malloc_info could not be read\n", name);
    return 1;
  }
  const char* variant = hak_variant();
  /* Only ask hakmem about a malloc pointer when malloc is hakmem's. */
  int usable_agrees = 0;
  if (strcmp(r.owner, "hakmem") == 0) {
    void* p = malloc(100);
    usable_agrees = p != NULL && malloc_usable_size(p) == hak_usable_size(p) && hak_usable_size(p) >= 100;
    free(p);
  }
  printf("consumer: %s variant=%s malloc=%s\n", name, variant, r.owner);
  if (strcmp(variant, EXPECT_VARIANT) != 0 || strcmp(r.owner, "hakmem") != 0 ||
      strcmp(r.variant, variant) != 0 || !r.libc_mallocs_counted || !usable_agrees) {
    fprintf(stderr,
            "consumer: %s: FAILED: expected variant %s and hakmem's malloc; hak_variant()=%s, "
            "malloc_info: owner=%s variant=%s, libc's mallocs counted by hakmem=%d, "
            "malloc_usable_size==hak_usable_size=%d\n",
            name, EXPECT_VARIANT, variant, r.owner, r.variant, r.libc_mallocs_counted, usable_agrees);
    return 1;
  }
  return 0;
}
