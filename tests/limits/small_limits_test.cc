/* SPDX-License-Identifier: MIT */
// HAK_SMALL_LIMITS shrinks caches and delays (hak_options.c): no retained empty pages,
// a whale ring of two, a BigCache of one, a purge delay of 1 ms, no idle address space
// kept. Each effect is observable through the stats API, so this test fails in either
// variant if the knob stops doing its job.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstring>
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
  EXPECT_EQ(hak_stats_read(&s), 0);
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

TEST(SmallLimits, WhaleRingHoldsEightOrTwo) {
  OnFreshThread([] {
    hak_collect(true);
    // 5 MiB whales take two units (8 MiB) each: eight fit the release ring's 64 MiB.
    std::vector<void*> whales;
    for (int i = 0; i < 10; i++) {
      whales.push_back(hak_malloc((size_t)5 << 20));
      ASSERT_NE(whales.back(), nullptr);
    }
    for (void* p : whales) hak_free(p);
    hak_stats_t s = Stats();
    // Entries also leave once idle for the purge delay (0 ms with small limits), so the
    // ring may hold fewer than its slots; never more, and every put is accounted for.
#if HAK_SMALL_LIMITS
    EXPECT_EQ(s.whale.slots, 2u);
    EXPECT_GE(s.whale.evictions, 8u);
#else
    EXPECT_EQ(s.whale.slots, 8u);
    EXPECT_GE(s.whale.evictions, 2u);
#endif
    EXPECT_LE(s.whale.cached, s.whale.slots);
    EXPECT_EQ(s.whale.puts, s.whale.evictions + s.whale.cached);
    hak_collect(true);
    EXPECT_EQ(Stats().whale.cached, 0u) << "hak_collect empties the ring";
  });
}

TEST(SmallLimits, BigCacheHoldsFourOrOne) {
  OnFreshThread([] {
    std::vector<void*> big;
    for (int i = 0; i < 6; i++) {
      big.push_back(hak_malloc((size_t)2 << 20));
      ASSERT_NE(big.back(), nullptr);
    }
    hak_stats_t before = Stats();
    for (void* p : big) hak_free(p);
    hak_stats_t after = Stats();
#if HAK_SMALL_LIMITS
    EXPECT_EQ(after.bigcache.cached - before.bigcache.cached, 1u);
#else
    EXPECT_EQ(after.bigcache.cached - before.bigcache.cached, 4u);
#endif
    EXPECT_EQ(after.bigcache.puts - before.bigcache.puts, 6u);
    hak_collect(false);
  });
}

// Release purges freed units 1 s after they go free, small limits after 1 ms, and
// keeps 1 GiB of idle address space against none. A 100 MiB whale is more than either
// whale ring may hold: freeing it hands its units to the region directly, idle from
// then on. Its memory is purged once the delay has passed, on the next slow path; with
// small limits its chunk, idle, is unmapped too (no idle address space is kept).
TEST(SmallLimits, FreedUnitsArePurgedAfterTheDelay) {
  OnFreshThread([] {
    hak_stats_t opts = Stats();
#if HAK_SMALL_LIMITS
    EXPECT_EQ(opts.purge_delay_ms, 1u);
    EXPECT_EQ(opts.region_keep_bytes, 0u);
#else
    EXPECT_EQ(opts.purge_delay_ms, 1000u);
    EXPECT_EQ(opts.region_keep_bytes, (uint64_t)1 << 30);
#endif
    hak_collect(true);
    void* w = hak_malloc((size_t)100 << 20);
    ASSERT_NE(w, nullptr);
    memset(w, 1, (size_t)8 << 20);
    hak_stats_t before = Stats();
    // The delay in force (purge regret earlier in this process may have stretched it).
    const uint64_t delay_ms = before.purge_delay_now_ms;
    auto t0 = std::chrono::steady_clock::now();
    hak_free(w);
    auto elapsed = std::chrono::steady_clock::now() - t0;
    hak_stats_t after = Stats();
    EXPECT_EQ(after.whale.puts, before.whale.puts) << "too big for the ring";
    // Not purged by free() itself, unless free() took longer than the delay (a
    // sanitizer build or a stalled machine).
    if (elapsed < std::chrono::milliseconds(delay_ms)) {
      EXPECT_GE(after.region_pending_bytes, (uint64_t)100 << 20);
      EXPECT_EQ(after.purge_bytes, before.purge_bytes);
    }
    // Once the delay has passed, the next slow path gives it back.
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms + 10));
    hak_free(hak_malloc((size_t)9 << 20));  // a whale: its allocation ticks the purge
    hak_stats_t later = Stats();
    EXPECT_GE(later.purge_bytes - before.purge_bytes, (uint64_t)100 << 20) << "it was not purged";
#if HAK_SMALL_LIMITS
    EXPECT_GT(later.os_by[HAK_STATS_OS_REGION][HAK_STATS_OS_MUNMAP].count,
              before.os_by[HAK_STATS_OS_REGION][HAK_STATS_OS_MUNMAP].count)
        << "its idle chunk was not unmapped";
#else
    EXPECT_EQ(later.os_by[HAK_STATS_OS_REGION][HAK_STATS_OS_MUNMAP].count,
              before.os_by[HAK_STATS_OS_REGION][HAK_STATS_OS_MUNMAP].count)
        << "release keeps 1 GiB of idle address space";
#endif
    hak_collect(true);
    EXPECT_EQ(Stats().region_pending_bytes, 0u);
  });
}

}  // namespace
