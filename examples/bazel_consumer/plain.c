/* SPDX-License-Identifier: MIT */
/* plain.c - a program that knows nothing of hakmem (no hakmem header, no hakmem
 * dependency): it reports whose malloc it got, so the same source shows libc's malloc
 * when built plainly and hakmem's when built with --custom_malloc. Usage:
 *   plain NAME EXPECTED    EXPECTED: "libc", or the hakmem variant ("release", ...)
 * Prints one line; exits 1 when the malloc is not the expected one. */
#include <stdio.h>
#include <string.h>

#include "probe.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s NAME EXPECTED (libc | release | stats | hardened)\n", argv[0]);
    return 2;
  }
  probe_result_t r;
  if (probe_malloc(&r) != 0) {
    fprintf(stderr, "consumer: %s: malloc_info could not be read\n", argv[1]);
    return 1;
  }
  printf("consumer: %s variant=%s malloc=%s\n", argv[1], r.variant, r.owner);
  int ok = strcmp(argv[2], "libc") == 0
               ? strcmp(r.owner, "libc") == 0
               : strcmp(r.owner, "hakmem") == 0 && strcmp(r.variant, argv[2]) == 0 && r.libc_mallocs_counted;
  if (!ok) {
    fprintf(stderr, "consumer: %s: FAILED: expected %s; malloc_info: owner=%s variant=%s, libc's mallocs counted=%d\n",
            argv[1], argv[2], r.owner, r.variant, r.libc_mallocs_counted);
    return 1;
  }
  return 0;
}
