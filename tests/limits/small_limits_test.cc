// HAK_SMALL_LIMITS shrinks the empty-segment cache (4 -> 1) and stops heaps from
// keeping the last empty page of a class. Both effects are observable through the
// stats API, so this test fails in either variant if the knob stops doing its job.
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "hakmem.h"
#include "hak_test_names.h"  // last: see its rule

#ifndef HAK_SMALL_LIMITS
#define HAK_SMALL_LIMITS 0
#endif

namespace {

hak_stats_t Stats() {
  hak_stats_t s;
  EXPECT_EQ(hak_stats_get(&s), 0);
  return s;
}

// Runs fn on a fresh thread, so it starts with a heap of its own and no pages.
template <typename Fn>
void OnFreshThread(Fn fn) {
  std::thread t(fn);
  t.join();
}

TEST(SmallLimits, LastEmptyPageOfAClassIsKeptOnlyWithoutSmallLimits) {
  OnFreshThread([] {
    uint64_t before = Stats().segments_live;
    void* p = hak_malloc(48);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(Stats().segments_live, before + 1) << "a fresh heap takes one new segment";
    hak_free(p);
    uint64_t after = Stats().segments_live;
#if HAK_SMALL_LIMITS
    EXPECT_EQ(after, before) << "the empty page went back and its segment was released";
#else
    EXPECT_EQ(after, before + 1) << "the heap keeps its only page of the class";
#endif
  });
}

TEST(SmallLimits, EmptySegmentCacheHoldsFourOrOne) {
  OnFreshThread([] {
    // 8 KiB blocks: about 500 per segment, so 2000 blocks span four segments.
    std::vector<void*> blocks;
    for (int i = 0; i < 2000; i++) {
      blocks.push_back(hak_malloc(8192));
      ASSERT_NE(blocks.back(), nullptr);
    }
    uint64_t segments = Stats().segments_live;
    ASSERT_GE(segments, 4u);
    uint64_t munmaps_before = Stats().os_munmap.count;
    for (void* p : blocks) hak_free(p);
    uint64_t munmaps = Stats().os_munmap.count - munmaps_before;
#if HAK_SMALL_LIMITS
    // Four or more segments emptied, one fits the cache: the rest go back to the OS.
    EXPECT_GE(munmaps, 3u);
#else
    // Without small limits the heap keeps the class's last page (one segment stays
    // live) and the cache takes four empty segments before anything is unmapped.
    EXPECT_EQ(munmaps, 0u);
#endif
  });
}

}  // namespace
