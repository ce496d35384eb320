/* SPDX-License-Identifier: MIT */
// shrink_test.cc - a heap that shrinks gives its memory back at once, not after the
// purge delay, and not only to a later slow path:
//  - pages kept empty for their size class (so one block bouncing between malloc and
//    free does not churn pages) must not be all that holds a segment: a thread that
//    used many classes and freed everything held one segment per class (53 of 85 on
//    the rss benchmark, 250 MiB), and single-block pages (above 128 KiB) are not kept;
//  - the region keeps freed units resident for reuse only up to HAKMEM_REGION_DIRTY
//    (16 MiB, 8 MiB with small limits) or a quarter of the units in use: beyond it the
//    oldest are purged as they go free.
// Each case runs on a fresh thread (a heap of its own) with a purge delay far longer
// than the test: whatever goes back, goes back without waiting for it.
#include <sys/wait.h>

#include <string>
#include <thread>
#include <vector>

#include "hak_test_memory.h"
#include "large_util.h"  // last of the includes: it includes hak_test_names.h

namespace hak_large_test {
namespace {

template <typename F>
void OnFreshThread(F f) {
  std::thread t(f);
  t.join();
}

// Blocks of every pool class from 16 B to `largest` (1 MiB; in hardened level 2 those
// above 128 KiB are big blocks, see kHakPoolSlotMax), written, about `total` bytes in
// all: many segments, each holding pages of many classes.
std::vector<void*> FillEveryClass(size_t total, size_t largest = kMiB) {
  std::vector<void*> blocks;
  size_t bytes = 0;
  for (size_t round = 0; bytes < total; round++) {
    for (size_t size = 16; size <= largest && bytes < total; size += size / 8 + 16) {
      void* p = hak_malloc(size);
      EXPECT_NE(p, nullptr);
      if (p == nullptr) return blocks;
      memset(p, (int)round + 1, size);
      blocks.push_back(p);
      bytes += size;
    }
  }
  return blocks;
}

TEST(Shrink, FreeingEverythingGivesTheSegmentsBackDespiteKeptPages) {
  ASSERT_GE(Stats().purge_delay_ms, 1u);
  OnFreshThread([] {
    uint64_t start = Stats().segments_live;
    // Pool classes only: big blocks go to the BigCache and big segments, not counted here.
    std::vector<void*> blocks = FillEveryClass(64 * kMiB, kHakPoolSlotMax - kHakCanaryRoom);
    uint64_t full = Stats().segments_live;
    ASSERT_GE(full, start + 8) << "the blocks should fill many segments";
    for (void* p : blocks) hak_free(p);
    hak_quarantine_flush();  // (hardened: this thread's last 64 frees wait there)
    uint64_t after = Stats().segments_live;
    // What stays: one kept page per small and medium class used (up to 8 slices each,
    // about 300 slices), in segments given back only while the others would stay at
    // most half full: two or three. Before, 9 (one per class whose last page sat in
    // its own segment); with more data, more. Hardened level 2 frees for real in a
    // random order (the quarantine lets a random one of the last 64 go), so which page
    // of a class empties last, and is kept, is random too, and its segments have one
    // slice less (the guard): four, or five in 4 of 20 runs, measured.
    const uint64_t bound = kHakHardenedLevel >= 2 ? 5 : 3;
    EXPECT_LE(after, start + bound) << full - start << " segments filled, " << after - start
                                << " still held after everything was freed";
  });
}

TEST(Shrink, TheRegionPurgesBeyondItsDirtyBudgetAsUnitsGoFree) {
  hak_stats_t opts = Stats();
  const uint64_t budget = opts.region_dirty_bytes_max;
#if HAK_SMALL_LIMITS
  EXPECT_EQ(budget, 8 * kMiB);
#else
  EXPECT_EQ(budget, 16 * kMiB);
#endif
  OnFreshThread([budget] {
    hak_collect(true);
    hak_stats_t before = Stats();
    std::vector<void*> blocks = FillEveryClass(128 * kMiB);
    for (void* p : blocks) hak_free(p);
    hak_stats_t after = Stats();
    // Units wait for reuse only up to the budget (or a quarter of the units in use:
    // few are, now); the rest were purged right as they went free.
    uint64_t allowed = budget;
    if (after.region_used_bytes / 4 > allowed) allowed = after.region_used_bytes / 4;
    EXPECT_LE(after.region_pending_bytes, allowed + hak_probe_segment_size());
    EXPECT_GE(after.purge_bytes - before.purge_bytes, 64 * kMiB) << "freed units were not purged beyond the budget";
  });
}

// Only units a segment gave back (dense: most of their pages resident) count against
// the budget. Whales evicted from the ring may have touched a few pages of many MiB:
// purging them early costs a call each for little memory, and their next use faults.
// Before, bench/eviction (whales of 2..32 MiB in turn, three bytes touched) made a
// purge call every 6 blocks and ran 30 times slower.
TEST(Shrink, WhalesEvictedToTheRegionDoNotCountAgainstTheBudget) {
  OnFreshThread([] {
    hak_collect(true);
    hak_stats_t before = Stats();
    std::vector<void*> whales;
    for (int i = 0; i < 12; i++) {  // 144 MiB: more than the ring's 64 MiB and the budget
      uint8_t* w = static_cast<uint8_t*>(hak_malloc(12 * kMiB));
      ASSERT_NE(w, nullptr);
      w[0] = w[6 * kMiB] = w[12 * kMiB - 1] = 1;
      whales.push_back(w);
    }
    for (void* w : whales) hak_free(w);
    hak_stats_t after = Stats();
    EXPECT_GT(after.whale.evictions, before.whale.evictions) << "the ring should have evicted some";
    EXPECT_EQ(after.purge_bytes, before.purge_bytes) << "evicted whales were purged before the delay";
  });
}

// The same, seen as RSS: 128 MiB written and freed by a thread leave at most the budget
// and a few segments resident. Only with hakmem as the process's malloc (RSS counts
// everything), so not in the ASan/TSan builds.
TEST(Shrink, RssFallsBackAsTheHeapShrinks) {
#if HAK_TEST_VIA_API
  GTEST_SKIP() << "RSS includes the sanitizer's own heap";
#endif
  OnFreshThread([] {
    hak_collect(true);
    uint64_t base = RssBytes();
    std::vector<void*> blocks = FillEveryClass(128 * kMiB);
    uint64_t full = RssBytes();
    ASSERT_GE(full, base + 100 * kMiB);
    for (void* p : blocks) hak_free(p);
    blocks.clear();
    blocks.shrink_to_fit();
    uint64_t after = RssBytes();
    // Hardened level 2: blocks above 128 KiB are big blocks, and that tier keeps freed
    // memory resident for the purge delay by design (the BigCache, then the big
    // segments' free spans, for any big size to reuse without faults).
    const hak_stats_t s = Stats();
    const uint64_t big_tier = kHakHardenedLevel >= 2 ? s.cached_bytes + s.free_dirty_bytes : 0;
    EXPECT_LE(after, base + s.region_dirty_bytes_max + big_tier + 12 * kMiB)
        << "RSS " << (base >> 20) << " MiB at start, " << (full >> 20) << " MiB full, " << (after >> 20)
        << " MiB after everything was freed";
  });
}

}  // namespace
}  // namespace hak_large_test
