/* SPDX-License-Identifier: MIT */
// hak_test_memory.h - what the kernel says of this process's memory, read without
// allocating (the tests measure the allocator they run on).
//   RssBytes()            resident bytes (/proc/self/statm), 0 if unreadable
//   ResidentPages(p, n)   resident pages of [p, p + n) (mincore; up to 8 MiB), -1 on error
#ifndef HAKMEM_TESTS_HAK_TEST_MEMORY_H
#define HAKMEM_TESTS_HAK_TEST_MEMORY_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>

inline uint64_t RssBytes() {
  int fd = open("/proc/self/statm", O_RDONLY);
  if (fd < 0) return 0;
  char buf[128];
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  unsigned long size = 0, resident = 0;
  if (sscanf(buf, "%lu %lu", &size, &resident) != 2) return 0;
  return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

inline long ResidentPages(void* p, size_t len) {
  static unsigned char vec[(8 << 20) / 4096];
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  if (len / page > sizeof(vec) || mincore(p, len, vec) != 0) return -1;
  long n = 0;
  for (size_t i = 0; i < len / page; i++) n += vec[i] & 1;
  return n;
}

#endif
