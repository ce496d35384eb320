/* SPDX-License-Identifier: MIT */
// malloc_trim_test.cc - malloc_trim is hakmem's in the replacing libraries: after
// 100 MiB of blocks of every tier are freed, malloc_trim(0) gives the memory back at
// once (RSS within 2 MiB of the start, without waiting for the purge delay) and says
// so (1); with nothing left to give back it returns 0. glibc's malloc_trim, which the
// name reached before, holds nothing of hakmem's and released nothing.
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>

#include <gtest/gtest.h>

#include "hak_test_env.h"
#include "hak_test_memory.h"
#include "hakmem.h"
#include "hak_test_names.h"  // last: see its rule

namespace {

constexpr size_t kMiB = (size_t)1 << 20;

void* g_blocks[1 << 16];  // static: the bookkeeping must not allocate

TEST(MallocTrim, GivesBackWhatWasFreedAtOnce) {
#ifdef HAK_TEST_VIA_API
  GTEST_SKIP() << "malloc_trim is the C library's in this build (the sanitizer owns malloc)";
#else
  static const size_t kSizes[] = {48, 700, 5000, 40000, 200000, 900 * 1024, 3 * kMiB, 9 * kMiB};
  memset(g_blocks, 0, sizeof g_blocks);
  malloc_trim(0);
  uint64_t start = RssBytes();
  size_t n = 0, bytes = 0;
  for (size_t i = 0; bytes < 100 * kMiB && n < sizeof g_blocks / sizeof g_blocks[0]; i++) {
    size_t size = kSizes[i % 8];
    char* p = static_cast<char*>(malloc(size));
    ASSERT_NE(p, nullptr);
    memset(p, 0x5a, size);
    g_blocks[n++] = p;
    bytes += size;
  }
  uint64_t peak = RssBytes();
  for (size_t i = 0; i < n; i++) free(g_blocks[i]);
  EXPECT_GE(peak, start + 80 * kMiB) << "the blocks were not resident: the case was not exercised";
  EXPECT_EQ(malloc_trim(0), 1) << "memory went back, malloc_trim must say so";
  uint64_t end = RssBytes();
  EXPECT_LE(end, start + 2 * kMiB) << "RSS " << start / kMiB << " MiB at the start, " << peak / kMiB
                                   << " at the peak, " << end / kMiB << " after malloc_trim(0)";
  EXPECT_EQ(malloc_trim(0), 0) << "nothing was left to give back";
#endif
}

}  // namespace
