/* SPDX-License-Identifier: MIT */
/* bench_util.h - shared helpers of the benchmark workloads: a seeded PRNG, a
 * monotonic clock and the one-line result format the comparison driver parses.
 * Workloads call plain malloc/free so that any allocator can be preloaded. */
#ifndef HAK_BENCH_UTIL_H
#define HAK_BENCH_UTIL_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct bench_rng_s {
  uint64_t state;
} bench_rng_t;

static inline uint64_t bench_rng_next(bench_rng_t* r) {
  /* xorshift64*: fast, fixed sequence for a fixed seed */
  r->state ^= r->state >> 12;
  r->state ^= r->state << 25;
  r->state ^= r->state >> 27;
  return r->state * 0x2545F4914F6CDD1DULL;
}

static inline uint64_t bench_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Reads "--name value" from argv, or returns the default. */
static inline uint64_t bench_arg(int argc, char** argv, const char* name, uint64_t dflt) {
  for (int i = 1; i + 1 < argc; i++) {
    if (strcmp(argv[i], name) == 0) return strtoull(argv[i + 1], NULL, 10);
  }
  return dflt;
}

/* A field of /proc/self/status in KiB (VmHWM: peak RSS of this program image, reset
 * by exec unlike getrusage's ru_maxrss; VmRSS: current), or 0 if unreadable. */
static inline uint64_t bench_status_kib(const char* field) {
  FILE* f = fopen("/proc/self/status", "r");
  if (f == NULL) return 0;
  char line[256];
  uint64_t kib = 0;
  size_t n = strlen(field);
  while (fgets(line, sizeof(line), f) != NULL) {
    if (strncmp(line, field, n) == 0 && line[n] == ':') {
      kib = strtoull(line + n + 1, NULL, 10);
      break;
    }
  }
  fclose(f);
  return kib;
}

/* Resident memory in KiB from /proc/self/statm, read without allocating (so sampling
 * it inside a workload does not disturb the allocator measured). */
static inline uint64_t bench_statm_rss_kib(void) {
  char buf[128];
  int fd = open("/proc/self/statm", O_RDONLY);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  char* end;
  strtoull(buf, &end, 10); /* total program size */
  uint64_t resident = strtoull(end, NULL, 10);
  return resident * (uint64_t)sysconf(_SC_PAGESIZE) / 1024;
}

/* The line the driver parses: operations timed, elapsed ns, a checksum that must match
 * across allocators (the workload's self-check), peak and current RSS. Workloads call
 * it after freeing everything, so rss_kib is the memory not given back to the OS.
 * bench_report_extra appends more " key=value" fields after these (the driver keeps
 * any it finds; the six above stay first and in this order). */
static inline void bench_report_extra(const char* workload, uint64_t ops, uint64_t ns, uint64_t checksum,
                                      const char* extra) {
  printf("RESULT workload=%s ops=%llu ns=%llu checksum=%llu peak_rss_kib=%llu rss_kib=%llu%s%s\n", workload,
         (unsigned long long)ops, (unsigned long long)ns, (unsigned long long)checksum,
         (unsigned long long)bench_status_kib("VmHWM"), (unsigned long long)bench_status_kib("VmRSS"),
         extra != NULL && extra[0] != '\0' ? " " : "", extra != NULL ? extra : "");
  fflush(stdout);
}

static inline void bench_report(const char* workload, uint64_t ops, uint64_t ns, uint64_t checksum) {
  bench_report_extra(workload, ops, ns, checksum, NULL);
}

/* ---- Self-checks ------------------------------------------------------------------ */

/* A failed self-check: wrong contents (an allocator handed out overlapping or
 * corrupted memory), a NULL from malloc, a misaligned block. Prints why and exits 1. */
#define BENCH_FAIL(...)                                      \
  do {                                                       \
    fprintf(stderr, "SELF-CHECK FAILED (%s:%d): ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__);                            \
    fprintf(stderr, "\n");                                   \
    exit(1);                                                 \
  } while (0)

#define BENCH_CHECK(cond, ...)      \
  do {                              \
    if (!(cond)) BENCH_FAIL(__VA_ARGS__); \
  } while (0)

/* Checked malloc/realloc: NULL, or a block not aligned for every object that fits in
 * it (16 bytes; 8 for blocks smaller than 16 B, which mimalloc rightly gives only 8),
 * fails the run. */
static inline int bench_misaligned(const void* p, size_t size) {
  return ((uintptr_t)p & (size >= 16 ? 15 : 7)) != 0;
}

static inline void* bench_malloc(size_t size) {
  void* p = malloc(size);
  if (p == NULL || bench_misaligned(p, size)) BENCH_FAIL("malloc(%zu) returned %p", size, p);
  return p;
}

static inline void* bench_realloc(void* old, size_t size) {
  void* p = realloc(old, size);
  if (p == NULL || bench_misaligned(p, size)) BENCH_FAIL("realloc to %zu B returned %p", size, p);
  return p;
}

/* Order-dependent mix for checksums (splitmix64 finaliser). */
static inline uint64_t bench_mix(uint64_t h, uint64_t v) {
  uint64_t z = h ^ (v + 0x9E3779B97F4A7C15ULL + (h << 6) + (h >> 2));
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/* The byte a workload stores at offset `off` of a block tagged `tag`, so that any
 * later read can be checked without keeping a copy. */
static inline unsigned char bench_byte(uint64_t tag, size_t off) {
  return (unsigned char)((tag * 0x9E3779B1u) ^ (off * 0x85EBCA77u) ^ (off >> 12));
}

/* Writes the tag pattern at the first and last byte and at one byte of every 4 KiB
 * page (as a program using the whole block would touch each page), and checks it. */
static inline void bench_fill_sparse(unsigned char* p, size_t size, uint64_t tag) {
  if (size == 0) return;
  for (size_t off = 0; off < size; off += 4096) p[off] = bench_byte(tag, off);
  p[size - 1] = bench_byte(tag, size - 1);
}

static inline int bench_check_sparse(const unsigned char* p, size_t size, uint64_t tag) {
  if (size == 0) return 1;
  for (size_t off = 0; off < size; off += 4096)
    if (p[off] != bench_byte(tag, off)) return 0;
  return p[size - 1] == bench_byte(tag, size - 1);
}

/* A uniform double in [0, 1). */
static inline double bench_unit(bench_rng_t* r) {
  return (double)(bench_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

#endif
