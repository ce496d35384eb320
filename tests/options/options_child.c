/* SPDX-License-Identifier: MIT */
/* options_child.c - the program options_test.cc runs with HAKMEM_* variables set. It
 * uses hakmem through hak_* only (malloc stays the C library's), writes nothing to
 * stderr itself - whatever appears there is hakmem's - and prints on stdout, one
 * "name=value" per line:
 *   - every option in force, as hak_stats_get reports it (purge delay, region keep,
 *     cache slots and bytes) or, for the options no stats field shows, as hakmem's
 *     option table holds it (hak_internal.h);
 *   - unless its first argument is "options", what some of them did to a small fixed
 *     workload, so a test sees them act:
 *       bigcache_cached   big blocks cached after freeing 6 of 2 MiB (slots, bytes)
 *       whale_cached      whales cached after freeing 10 of 2 units (slots, bytes)
 *       waste_units       units of a 3-unit whale served from a cached 4-unit run
 *                         (4: taken whole, within HAKMEM_WHALE_WASTE_PCT; 3: split)
 *       lazyfree_kib      LazyFree of /proc/self/smaps_rollup after 32 MiB written,
 *                         freed and purged by hak_collect (MADV_FREE leaves it there)
 *       calloc_zero       1 if calloc of that memory read zero
 * Exit code 0; 2 if an allocation failed. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hakmem/hak_internal.h"

#define MiB ((size_t)1 << 20)

static void* must(void* p) {
  if (p == NULL) exit(2);
  return p;
}

static unsigned long long lazyfree_kib(void) {
  int fd = open("/proc/self/smaps_rollup", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  static char buf[8192];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  const char* at = strstr(buf, "\nLazyFree:");
  unsigned long long kib = 0;
  if (at != NULL && sscanf(at + strlen("\nLazyFree:"), "%llu", &kib) != 1) kib = 0;
  return kib;
}

static void print_options(void) {
  hak_stats_t s;
  if (hak_stats_read(&s) != 0) exit(2);
  printf("purge_delay_ms=%llu\n", (unsigned long long)s.purge_delay_ms);
  printf("region_keep_bytes=%llu\n", (unsigned long long)s.region_keep_bytes);
  printf("region_dirty_bytes=%llu\n", (unsigned long long)s.region_dirty_bytes_max);
  printf("bigcache_slots=%llu\n", (unsigned long long)s.bigcache.slots);
  printf("bigcache_bytes=%llu\n", (unsigned long long)s.bigcache.bytes_limit);
  printf("whale_slots=%llu\n", (unsigned long long)s.whale.slots);
  printf("whale_bytes=%llu\n", (unsigned long long)s.whale.bytes_limit);
  /* No stats field shows these: read them where hakmem keeps them. */
  printf("whale_waste_pct=%zu\n", hak_options.whale_waste_pct);
  printf("madvise=%s\n", hak_options.purge_mode == HAK_PURGE_FREE ? "free" : "dontneed");
  printf("purge_batch_bytes=%zu\n", hak_options.purge_batch_bytes);
  printf("purge_batch_ranges=%zu\n", hak_options.purge_batch_ranges);
  printf("purge_min_bytes=%zu\n", hak_options.purge_min_bytes);
  printf("stats=%d\n", (int)hak_options.stats_report);
  printf("stats_file=%s\n", hak_options.stats_file);
  printf("stats_children=%d\n", hak_options.stats_children ? 1 : 0);
  static const char* const thp[] = {"lean", "whales", "system"};
  printf("thp=%s\n", thp[hak_options.thp_mode]);
}

static void run_workload(void) {
  hak_stats_t s;
  /* The BigCache: 6 big blocks freed. */
  void* big[6];
  for (int i = 0; i < 6; i++) memset(must(big[i] = hak_malloc(2 * MiB)), 1, 4096);
  for (int i = 0; i < 6; i++) hak_free(big[i]);
  hak_stats_read(&s);
  printf("bigcache_cached=%llu\n", (unsigned long long)s.bigcache.cached);
  hak_collect(true);

  /* The whale ring: 10 whales of two units freed. */
  void* whales[10];
  for (int i = 0; i < 10; i++) memset(must(whales[i] = hak_malloc(5 * MiB)), 1, 4096);
  for (int i = 0; i < 10; i++) hak_free(whales[i]);
  hak_stats_read(&s);
  printf("whale_cached=%llu\n", (unsigned long long)s.whale.cached);
  hak_collect(true);

  /* HAKMEM_WHALE_WASTE_PCT: a 3-unit request, a 4-unit run in the ring. */
  void* four = must(hak_malloc(4 * HAK_SEGMENT_SIZE - 2 * hak_os_page_size()));
  hak_free(four);
  void* three = must(hak_malloc(3 * HAK_SEGMENT_SIZE - 2 * hak_os_page_size()));
  printf("waste_units=%zu\n", three == four ? hak_segment_of(three)->units : (size_t)0);
  hak_free(three);
  hak_collect(true);

  /* HAKMEM_MADVISE: 32 MiB written, freed, purged (hak_collect empties the ring). */
  uint8_t* p = must(hak_malloc(32 * MiB));
  memset(p, 0x5a, 32 * MiB);
  hak_free(p);
  hak_collect(false);
  printf("lazyfree_kib=%llu\n", lazyfree_kib());
  uint8_t* z = must(hak_calloc(1, 32 * MiB));
  int zero = 1;
  for (size_t i = 0; i < 32 * MiB; i += 512) zero &= z[i] == 0;
  printf("calloc_zero=%d\n", zero);
  hak_free(z);
  hak_collect(true);
}

int main(int argc, char** argv) {
  print_options();
  if (argc < 2 || strcmp(argv[1], "options") != 0) run_workload();
  return fflush(stdout) == 0 ? 0 : 2;
}
