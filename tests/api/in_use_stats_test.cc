/* SPDX-License-Identifier: MIT */
// in_use_stats_test.cc - the stats API's in-use figures (hak_stats_get), found by a
// walk of the segments and whales at each call, in every variant of the hak_*
// libraries: in_use_bytes and in_use_blocks follow the live blocks exactly (their
// usable bytes) in a single thread; freed big blocks and whales kept for reuse are
// cached_bytes, not in use; a whale longer than a chunk is a dedicated mapping; and a
// thread reading the figures while another allocates and frees gets sane snapshots.
#include <pthread.h>
#include <string.h>

#include <atomic>
#include <cstdint>

#include <gtest/gtest.h>

#include "hak_test_env.h"
#include "hakmem.h"

namespace {

constexpr size_t kMiB = (size_t)1 << 20;

void* g_blocks[1 << 14];

hak_stats_t Stats() {
  hak_stats_t s;
  EXPECT_EQ(hak_stats_read(&s), 0);
  return s;
}

TEST(InUseStats, FollowsLiveBlocksAndCaches) {
  hak_collect(true);
  hak_stats_t start = Stats();
  static const size_t kSizes[] = {16, 40, 500, 1500, 9000, 60000, 100000, 700000, 2 * kMiB, 8 * kMiB};
  size_t n = 0, usable = 0, requested = 0;
  for (int round = 0; round < 4; round++) {
    for (size_t size : kSizes) {
      for (int k = 0; k < (size < 64 * 1024 ? 50 : 1); k++) {
        void* p = hak_malloc(size);
        ASSERT_NE(p, nullptr);
        memset(p, 1, size < 4096 ? size : 4096);
        g_blocks[n++] = p;
        requested += size;
        usable += HakTestSlotBytes(hak_usable_size(p));
      }
    }
  }
  hak_stats_t live = Stats();
  EXPECT_GE(live.in_use_bytes - start.in_use_bytes, requested);
  EXPECT_EQ(live.in_use_bytes - start.in_use_bytes, usable) << "a single thread: exact";
  EXPECT_EQ(live.in_use_blocks - start.in_use_blocks, n);
  EXPECT_GE(live.region_used_bytes, live.in_use_bytes - live.dedicated_in_use_bytes);
  EXPECT_GE(live.region_used_max_bytes, live.region_used_bytes);
  EXPECT_EQ(live.dedicated_count, start.dedicated_count);

  // The 2 MiB big blocks go to this thread's BigCache, the 8 MiB whales to the ring:
  // cached, no longer in use.
  size_t freed_big = 0, freed_whales = 0;
  for (size_t i = 0; i < n; i++) {
    size_t u = hak_usable_size(g_blocks[i]);
    if (u < 2 * kMiB) continue;
    (u >= 8 * kMiB ? freed_whales : freed_big) += HakTestSlotBytes(u);
    hak_free(g_blocks[i]);
    g_blocks[i] = nullptr;
  }
  hak_stats_t cached = Stats();
  EXPECT_EQ(live.in_use_bytes - cached.in_use_bytes, freed_big + freed_whales);
  EXPECT_EQ(cached.cached_bytes, cached.bigcache.cached_bytes + cached.whale.cached_bytes);
  EXPECT_GT(cached.bigcache.cached_bytes, 0u);
  EXPECT_GT(cached.whale.cached_bytes, 0u);

  for (size_t i = 0; i < n; i++) hak_free(g_blocks[i]);
  hak_stats_t freed = Stats();
  EXPECT_EQ(freed.in_use_bytes, start.in_use_bytes);
  EXPECT_EQ(freed.in_use_blocks, start.in_use_blocks);
  hak_collect(true);
  hak_stats_t collected = Stats();
  EXPECT_EQ(collected.cached_bytes, 0u) << "hak_collect empties this thread's BigCache and the ring";
  EXPECT_EQ(collected.in_use_bytes, start.in_use_bytes);
  EXPECT_LE(collected.region_used_bytes, live.region_used_bytes);
}

TEST(InUseStats, WhaleOfItsOwnIsADedicatedMapping) {
  hak_collect(true);
  hak_stats_t start = Stats();
  size_t size = 300 * kMiB;  // longer than a chunk (252 MiB of units)
  void* p = hak_malloc(size);
  ASSERT_NE(p, nullptr);
  hak_stats_t s = Stats();
  EXPECT_EQ(s.dedicated_count, start.dedicated_count + 1);
  EXPECT_GE(s.dedicated_bytes - start.dedicated_bytes, size);
  EXPECT_LE(s.dedicated_bytes - start.dedicated_bytes, size + kMiB);
  EXPECT_EQ(s.dedicated_in_use_bytes - start.dedicated_in_use_bytes, HakTestSlotBytes(hak_usable_size(p)));
  EXPECT_EQ(s.in_use_bytes - start.in_use_bytes, HakTestSlotBytes(hak_usable_size(p)));
  EXPECT_EQ(s.region_used_bytes, start.region_used_bytes) << "not region units";
  EXPECT_GE(s.dedicated_max_count, 1u);
  EXPECT_GE(s.dedicated_max_bytes, size);
  // Growing in place (mremap) resizes the mapping the figures count.
  void* q = hak_realloc(p, size + 64 * kMiB);
  ASSERT_NE(q, nullptr);
  s = Stats();
  EXPECT_GE(s.dedicated_bytes - start.dedicated_bytes, size + 64 * kMiB);
  EXPECT_EQ(s.dedicated_in_use_bytes - start.dedicated_in_use_bytes, HakTestSlotBytes(hak_usable_size(q)));
  hak_free(q);
  s = Stats();
  EXPECT_EQ(s.in_use_bytes, start.in_use_bytes) << "freed (perhaps cached in the ring): not in use";
  hak_collect(true);
  s = Stats();
  EXPECT_EQ(s.dedicated_count, start.dedicated_count);
  EXPECT_EQ(s.dedicated_bytes, start.dedicated_bytes);
  EXPECT_GE(s.dedicated_max_bytes, size + 64 * kMiB);
}

std::atomic<bool> g_stop{false};

void* Churn(void*) {
  static const size_t kSizes[] = {32, 300, 3000, 30000, 300000, 3 * kMiB, 6 * kMiB};
  void* held[64] = {};
  for (size_t i = 0; !g_stop.load(std::memory_order_relaxed) || i < 2000; i++) {
    size_t slot = (i * 7) % 64;
    hak_free(held[slot]);
    held[slot] = hak_malloc(kSizes[i % 7]);
    if (held[slot] != nullptr) memset(held[slot], 2, 32);
  }
  for (void* p : held) hak_free(p);
  return nullptr;
}

TEST(InUseStats, ReadWhileAnotherThreadAllocates) {
  hak_stats_t start = Stats();
  g_stop = false;
  pthread_t thread;
  ASSERT_EQ(pthread_create(&thread, nullptr, Churn, nullptr), 0);
  size_t reads = hak_test_env::Scaled(200, 20);
  for (size_t i = 0; i < reads; i++) {
    hak_stats_t s = Stats();
    // A snapshot of pages another thread is changing: bounded by what is mapped.
    EXPECT_LE(s.in_use_bytes, s.region_used_bytes + s.dedicated_bytes);
    EXPECT_LE(s.in_use_bytes - s.dedicated_in_use_bytes, s.region_used_bytes);
  }
  g_stop = true;
  ASSERT_EQ(pthread_join(thread, nullptr), 0);
  hak_stats_t end = Stats();
  // The worker freed everything; blocks it freed into pages it no longer owns after
  // its exit are collected on their way back, so nothing of it is in use.
  EXPECT_LE(end.in_use_bytes, start.in_use_bytes + 64 * 1024);
}

}  // namespace
