/* SPDX-License-Identifier: MIT */
// hak_test_stats.h - checks on hak_stats_t shared by the test suites.
#ifndef HAKMEM_TESTS_HAK_TEST_STATS_H
#define HAKMEM_TESTS_HAK_TEST_STATS_H

#include <gtest/gtest.h>

#include "hakmem.h"

// Outside the stats variant the per-class and per-path counters are compiled out:
// every one of them must read zero whatever the program did.
inline void ExpectCountersCompiledOut(const hak_stats_t& s) {
  EXPECT_EQ(s.counters_enabled, 0);
  for (int i = 0; i < HAK_STATS_CLASS_COUNT; i++) {
    EXPECT_EQ(s.class_allocs[i], 0u) << "class " << i;
    EXPECT_EQ(s.class_frees[i], 0u) << "class " << i;
  }
  EXPECT_EQ(s.alloc_fast, 0u);
  EXPECT_EQ(s.alloc_slow, 0u);
  EXPECT_EQ(s.alloc_large, 0u);
  EXPECT_EQ(s.free_local, 0u);
  EXPECT_EQ(s.free_remote, 0u);
  EXPECT_EQ(s.free_large, 0u);
  EXPECT_EQ(s.pages_allocated, 0u);
  EXPECT_EQ(s.segments_allocated, 0u);
  EXPECT_EQ(s.threads_started, 0u);
  for (int op = 0; op < HAK_STATS_LATENCY_OPS; op++) {
    EXPECT_EQ(s.latency_samples[op], 0u) << "op " << op;
    EXPECT_EQ(s.latency_ns[op][HAK_STATS_P50], 0u) << "op " << op;
  }
}

// Address space mapped for blocks and their segments: all that hakmem mapped except the
// metadata it keeps for the process (heap structs; in the hardened variant, a leaf of
// the ownership map for each 4 TiB range a block first lands in), which a test that
// frees everything cannot expect back.
inline uint64_t BlockMappedBytes(const hak_stats_t& s) {
  return s.os_mapped_bytes - s.os_meta_mapped_bytes;
}

// Segments in use now (hak_stats_read): what a test that gives memory back compares.
inline uint64_t LiveSegments() {
  hak_stats_t s;
  EXPECT_EQ(hak_stats_read(&s), 0);
  return s.segments_live;
}

#endif
