/* SPDX-License-Identifier: MIT */
// large_util.h - helpers of the large-block tests: the stats snapshot, the number of
// mappings the kernel sees (/proc/self/maps lines), the machine's RAM + swap and
// overcommit policy, byte patterns, and the probe of hakmem's internals (large_probe.c).
//
// Nothing here allocates: the tests run with hakmem as the process's malloc and count
// mappings and OS calls around their own allocations.
//
// Include this header after every system header of the test .cc; it includes
// hak_test_names.h itself, last (see that header's rule).
#ifndef HAK_TESTS_LARGE_LARGE_UTIL_H
#define HAK_TESTS_LARGE_LARGE_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hak_test_env.h"
#include "hakmem.h"
#include "hak_test_names.h"  // last: see its rule

extern "C" {
// large_probe.c: hakmem's geometry and what kind of block a pointer is.
size_t hak_probe_chunk_size(void);
size_t hak_probe_segment_size(void);
size_t hak_probe_pool_max(void);
size_t hak_probe_big_max(void);
size_t hak_probe_os_page_size(void);
int hak_probe_is_whale(const void* p);
int hak_probe_is_big(const void* p);
int hak_probe_whale_is_dedicated(const void* p);
size_t hak_probe_whale_units(const void* p);
// Reports a purge regret now, for memory purged now (hak_purge_regret).
void hak_probe_purge_regret_now(void);
}

namespace hak_large_test {

constexpr size_t kKiB = (size_t)1 << 10;
constexpr size_t kMiB = (size_t)1 << 20;
constexpr size_t kGiB = (size_t)1 << 30;
constexpr size_t kTiB = (size_t)1 << 40;

inline hak_stats_t Stats() {
  hak_stats_t s;
  EXPECT_EQ(hak_stats_read(&s), 0);
  return s;
}

// System calls hakmem made, all kinds and users together.
inline uint64_t OsCalls(const hak_stats_t& s) {
  return s.os_mmap.count + s.os_munmap.count + s.os_madvise.count + s.os_mremap.count + s.os_mprotect.count;
}

// Lines of /proc/self/maps: the mappings (VMAs) of this process. Read with a static
// buffer: no allocation, so counting does not change the count.
inline size_t VmaCount() {
  int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  static char buf[1 << 16];
  size_t lines = 0;
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) {
    for (ssize_t i = 0; i < n; i++) lines += buf[i] == '\n';
  }
  close(fd);
  return lines;
}

// A value of /proc/meminfo in bytes (its lines read "Name:   123 kB"); 0 if absent.
inline uint64_t MeminfoBytes(const char* name) {
  int fd = open("/proc/meminfo", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  static char buf[1 << 14];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  size_t len = strlen(name);
  for (const char* line = buf; line != nullptr && *line != '\0';) {
    unsigned long long kb;
    if (strncmp(line, name, len) == 0 && line[len] == ':' && sscanf(line + len + 1, "%llu", &kb) == 1) {
      return (uint64_t)kb * 1024;
    }
    line = strchr(line, '\n');
    if (line != nullptr) line++;
  }
  return 0;
}

// /proc/sys/vm/overcommit_memory: 0 heuristic (the default), 1 always, 2 strict; -1 if
// unreadable.
inline int OvercommitMode() {
  int fd = open("/proc/sys/vm/overcommit_memory", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char c = 0;
  ssize_t n = read(fd, &c, 1);
  close(fd);
  return n == 1 && c >= '0' && c <= '2' ? c - '0' : -1;
}

// A byte pattern that differs between neighbouring offsets and between seeds, periodic
// with a prime period: no shift by whole pages (a page moved to the wrong place) maps it
// onto itself within 256 MiB. The period lets fills and checks run as memcpy and memcmp,
// which the sanitizers check per range instead of per byte.
constexpr size_t kPatternPeriod = 65521;

inline uint8_t PatternByte(size_t i, unsigned seed) {
  size_t j = i % kPatternPeriod;
  return static_cast<uint8_t>((j * 131u + (j >> 8) * 7u + seed * 29u + 1u) & 0xff);
}

// Two periods of the pattern of `seed`, so that any window of one period is contiguous.
inline const uint8_t* PatternPeriods(unsigned seed) {
  static uint8_t buf[2 * kPatternPeriod];
  static unsigned cached = ~0u;
  if (cached != seed) {
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = PatternByte(i, seed);
    cached = seed;
  }
  return buf;
}

inline void FillPattern(void* p, size_t from, size_t to, unsigned seed) {
  const uint8_t* ref = PatternPeriods(seed);
  uint8_t* b = static_cast<uint8_t*>(p);
  for (size_t i = from; i < to;) {
    size_t n = to - i < kPatternPeriod ? to - i : kPatternPeriod;
    memcpy(b + i, ref + i % kPatternPeriod, n);
    i += n;
  }
}

// Index of the first byte of [from, to) that differs from the pattern, or `to`.
inline size_t FirstPatternMismatch(const void* p, size_t from, size_t to, unsigned seed) {
  const uint8_t* ref = PatternPeriods(seed);
  const uint8_t* b = static_cast<const uint8_t*>(p);
  for (size_t i = from; i < to;) {
    size_t n = to - i < kPatternPeriod ? to - i : kPatternPeriod;
    const uint8_t* r = ref + i % kPatternPeriod;
    if (memcmp(b + i, r, n) != 0) {
      for (size_t k = 0; k < n; k++) {
        if (b[i + k] != r[k]) return i + k;
      }
    }
    i += n;
  }
  return to;
}

// Index of the first non-zero byte of p[0, n), or n (memcmp against zeros, chunk by chunk).
inline size_t FirstNonZero(const void* p, size_t n) {
  static const uint8_t zeros[1 << 16] = {};
  const uint8_t* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i < n;) {
    size_t len = n - i < sizeof zeros ? n - i : sizeof zeros;
    if (memcmp(b + i, zeros, len) != 0) {
      for (size_t k = 0; k < len; k++) {
        if (b[i + k] != 0) return i + k;
      }
    }
    i += len;
  }
  return n;
}

inline uintptr_t Addr(const void* p) { return reinterpret_cast<uintptr_t>(p); }

}  // namespace hak_large_test

#endif  // HAK_TESTS_LARGE_LARGE_UTIL_H
