/* SPDX-License-Identifier: MIT */
// The thread identity of targets without a thread-pointer register (issue 9, item 3),
// forced on x86_64 by the tid_fallback variant (HAK_TID_FALLBACK=1, with counters).
// It was a static thread-local in an inline function: each source file had its own,
// so the id a heap stamped on its segments never matched the one free() compared with,
// every free was remote and pages were never retired. Now it is one variable.
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "hakmem.h"
#include "hak_test_names.h"  // last: see its rule

namespace {

hak_stats_t Stats() {
  hak_stats_t s;
  EXPECT_EQ(hak_stats_read(&s), 0);
  return s;
}

TEST(ThreadIdFallback, AThreadsOwnFreesAreLocalAndItsPagesGoBack) {
  ASSERT_EQ(Stats().counters_enabled, 1) << "the tid_fallback variant counts";
  std::thread([] {
    void* warm = hak_malloc(64);  // this thread's heap first
    hak_stats_t before = Stats();
    std::vector<void*> blocks;
    for (int i = 0; i < 4000; i++) blocks.push_back(hak_malloc(64 + (i % 8) * 100));
    for (void* p : blocks) hak_free(p);
    hak_stats_t after = Stats();
    EXPECT_EQ(after.free_local - before.free_local, 4000u);
    EXPECT_EQ(after.free_remote - before.free_remote, 0u);
    hak_free(warm);
    hak_collect(false);
    hak_stats_t done = Stats();
    EXPECT_GT(done.pages_freed, before.pages_freed) << "emptied pages go back to their segments";
  }).join();
}

TEST(ThreadIdFallback, AnotherThreadsFreesAreRemote) {
  std::vector<void*> blocks;
  std::thread([&] {
    for (int i = 0; i < 1000; i++) blocks.push_back(hak_malloc(200));
  }).join();
  hak_stats_t before = Stats();
  for (void* p : blocks) hak_free(p);
  hak_stats_t after = Stats();
  EXPECT_EQ(after.free_remote - before.free_remote, 1000u);
  EXPECT_EQ(after.free_local - before.free_local, 0u);
}

}  // namespace
