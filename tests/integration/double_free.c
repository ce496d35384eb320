/* SPDX-License-Identifier: MIT */
/* Frees a block twice; the hardened variant must stop the process at the second free.
 * Usage: double_free SIZE. Prints the block's address (and flushes) first, so the test
 * can check that hakmem's fault message names that address. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char** argv) {
  size_t size = argc > 1 ? (size_t)strtoull(argv[1], NULL, 10) : 32;
  void* volatile p = malloc(size);
  if (p == NULL) return 2;
  printf("block %p\n", p);
  fflush(stdout);
  free(p);
  free(p);
  printf("survived the double free\n");
  return 0;
}
