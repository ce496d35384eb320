/* SPDX-License-Identifier: MIT */
// purge_regret_test.cc - the purge delay stretches when purged memory is taken again
// within it, and shrinks back when no such reuse follows (hak_purge.c, "purge
// regret"). A whale of 50 units (200 MiB) is freed to the region, purged by the delay,
// and a whale as long is allocated right after: its run overlaps the purged one (the
// chunk it emptied is where such a run fits), so that purge bought nothing and the
// delay doubles. Purges hak_collect forces are the caller's choice, not the delay's:
// they never count. The window is the delay itself (200 ms, then 400): a stall that
// long between a purge and the next allocation would hide the regret. A stream of
// regrets faster than the delay stretches it once per delay, to the maximum.
//
// Its own binary, started with HAKMEM_PURGE_DELAY_MS=200 and _MAX_MS=800 (BUILD).
#include <chrono>
#include <thread>

#include "large_util.h"  // last of the includes: it includes hak_test_names.h

namespace hak_large_test {
namespace {

constexpr uint64_t kBaseMs = 200;
constexpr uint64_t kMaxMs = 800;

size_t WhaleBytes() {
  return 50 * hak_probe_segment_size() - 64 * kKiB;  // 50 units with its header
}

bool Overlap(const void* a, const void* b, size_t bytes) {
  return Addr(a) < Addr(b) + bytes && Addr(b) < Addr(a) + bytes;
}

// Allocates a whale as long as `prev` (freed and purged) and checks the premise of
// every step: the new whale went back to prev's purged units.
void ReallocateOverPurged(const void* prev, void** out) {
  *out = hak_malloc(WhaleBytes());
  ASSERT_NE(*out, nullptr);
  ASSERT_TRUE(Overlap(*out, prev, WhaleBytes())) << "premise: the whale went back to its purged units";
}

// Frees a whale too big for the whale ring (it goes to the region at once, idle from
// then on), waits out the delay in force, and ticks the purge with a slow path.
void FreeAndLetTheDelayPurge(void* whale) {
  const uint64_t delay_ms = Stats().purge_delay_now_ms;
  const uint64_t purged = Stats().purge_bytes;
  hak_free(whale);
  std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms + 20));
  hak_free(hak_malloc((size_t)9 << 20));  // a whale: its allocation ticks the purge
  ASSERT_GE(Stats().purge_bytes - purged, (uint64_t)100 << 20) << "the delay did not purge the freed whale";
}

TEST(PurgeRegret, DelayStretchesWhenPurgedMemoryComesBackAndShrinksWhenItDoesNot) {
  hak_collect(true);
  hak_stats_t s0 = Stats();
  ASSERT_EQ(s0.purge_delay_ms, kBaseMs);
  ASSERT_EQ(s0.purge_delay_now_ms, kBaseMs);

  // A forced purge (hak_collect) and reuse: no regret.
  void* w = hak_malloc(WhaleBytes());
  ASSERT_NE(w, nullptr);
  memset(w, 1, (size_t)8 << 20);
  hak_free(w);
  hak_collect(false);
  void* again = nullptr;
  ASSERT_NO_FATAL_FAILURE(ReallocateOverPurged(w, &again));
  hak_stats_t s1 = Stats();
  EXPECT_EQ(s1.purge_regrets, s0.purge_regrets) << "a purge hak_collect forced counted as regret";
  EXPECT_EQ(s1.purge_delay_now_ms, kBaseMs);

  // Purged by the delay and taken again at once: regret, the delay doubles (once).
  memset(again, 2, (size_t)8 << 20);
  FreeAndLetTheDelayPurge(again);
  void* back = nullptr;
  ASSERT_NO_FATAL_FAILURE(ReallocateOverPurged(again, &back));
  hak_stats_t s2 = Stats();
  EXPECT_GT(s2.purge_regrets, s1.purge_regrets) << "purged units taken again within the delay";
  EXPECT_EQ(s2.purge_delay_now_ms, 2 * kBaseMs);

  // Again: the delay doubles to its maximum and stays there.
  memset(back, 3, (size_t)8 << 20);
  FreeAndLetTheDelayPurge(back);
  void* third = hak_malloc(WhaleBytes());
  ASSERT_NE(third, nullptr);
  EXPECT_EQ(Stats().purge_delay_now_ms, kMaxMs);
  memset(third, 4, (size_t)8 << 20);
  FreeAndLetTheDelayPurge(third);
  void* fourth = hak_malloc(WhaleBytes());
  ASSERT_NE(fourth, nullptr);
  EXPECT_EQ(Stats().purge_delay_now_ms, kMaxMs) << "stretched past HAKMEM_PURGE_DELAY_MAX_MS";
  hak_free(fourth);

  // Four delays with no regret halve it, a step per four delays: 800 -> 400 after
  // 3.2 s, 400 -> 200 after 1.6 s more. Time passing only shrinks it further.
  std::this_thread::sleep_for(std::chrono::milliseconds(4 * kMaxMs + 4 * 2 * kBaseMs + 50));
  hak_free(hak_malloc((size_t)9 << 20));  // a slow path: it ticks
  EXPECT_EQ(Stats().purge_delay_now_ms, kBaseMs) << "the delay did not shrink back without regret";
  hak_collect(true);
}

// Regrets arriving faster than the delay (the units of many purged runs coming back
// one after another) stretch it once per delay, all the way to the maximum. A first
// version took "once per delay" from the last regret instead of the last change, so a
// steady stream of regrets stretched the delay once and never again. Regrets 20 ms
// apart for up to 3 s: 200 -> 400 (at most a delay after the last change, which the
// previous test's unstretch made), then 800 one delay later.
TEST(PurgeRegret, AStreamOfRegretsStretchesTheDelayEachDelayUpToTheMaximum) {
  ASSERT_EQ(Stats().purge_delay_now_ms, kBaseMs);
  const auto start = std::chrono::steady_clock::now();
  uint64_t regrets = 0;
  while (Stats().purge_delay_now_ms < kMaxMs && std::chrono::steady_clock::now() - start < std::chrono::seconds(3)) {
    hak_probe_purge_regret_now();
    regrets++;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(Stats().purge_delay_now_ms, kMaxMs) << "after " << regrets << " regrets 20 ms apart";
  EXPECT_GE(Stats().purge_regrets, regrets);
}

}  // namespace
}  // namespace hak_large_test
