/* SPDX-License-Identifier: MIT */
/* stats_workload - allocates through every tier (tiny, mid, L2.5, big, whale), twice
 * over for the caches, so that the stats variant's report at exit has classes, paths,
 * latency samples, cache hits and OS calls to chart. argv[1]: rounds (default 1). */
#include <stdlib.h>
#include <string.h>

int main(int argc, char** argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 1;
  static const size_t sizes[] = {16, 48, 200, 1000, 6000, 40000, 200000, 1500000, 6u << 20};
  enum { N = sizeof(sizes) / sizeof(sizes[0]) };
  for (int r = 0; r < rounds; r++) {
    for (int pass = 0; pass < 2; pass++) { /* the second pass hits the caches */
      for (size_t i = 0; i < N; i++) {
        int count = sizes[i] <= 1000 ? 2000 : 1;
        void* blocks[2000];
        for (int k = 0; k < count; k++) {
          blocks[k] = malloc(sizes[i]);
          if (blocks[k] == NULL) return 1;
          memset(blocks[k], 1, sizes[i] < 64 ? sizes[i] : 64);
        }
        for (int k = 0; k < count; k++) free(blocks[k]);
      }
    }
  }
  return 0;
}
