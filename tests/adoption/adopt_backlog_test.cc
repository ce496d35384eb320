/* SPDX-License-Identifier: MIT */
// A heap adopts abandoned segments on its slow path only when it has no free span for
// the page it needs, unless many segments wait on the abandoned list (HAK_ADOPT_BACKLOG):
// then exited threads' memory is taken over before the heap carves its own spans.
// Before, a long-lived thread with room of its own never adopted, and the segments of
// threads that left live blocks behind waited while the footprint grew
// (bench/retain_stress: 141 MiB peak RSS against glibc's 86).
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "hakmem.h"

extern "C" {
size_t hak_probe_abandoned_backlog(void);
size_t hak_probe_adopt_backlog_threshold(void);
}

namespace {

// `count` threads, all alive at once (so none can adopt another's segment), each
// allocate one block and exit: each leaves a segment of its own on the abandoned list,
// pinned by that block. Returns the blocks.
std::vector<void*> AbandonSegments(size_t count) {
  std::vector<void*> left(count, nullptr);
  std::atomic<size_t> allocated{0};
  std::vector<std::thread> threads;
  for (size_t t = 0; t < count; t++) {
    threads.emplace_back([&left, &allocated, count, t] {
      left[t] = hak_malloc(200);
      if (left[t] != nullptr) memset(left[t], 0x5a, 200);
      allocated.fetch_add(1);
      while (allocated.load() < count) std::this_thread::yield();
    });
  }
  for (std::thread& t : threads) t.join();
  return left;
}

void FreeAll(const std::vector<void*>& blocks) {
  for (void* p : blocks) {
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(static_cast<unsigned char*>(p)[0], 0x5a);
    hak_free(p);
  }
}

// A size this thread has not allocated before: its first malloc takes the slow path for
// a fresh page, which the thread's own segment has room for.
constexpr size_t kNewClassSize = 3000;

TEST(AdoptBacklog, AHeapWithRoomAdoptsNothingWhileFewSegmentsWait) {
  void* mine = hak_malloc(16);  // this thread's heap, with free spans in its segment
  ASSERT_NE(mine, nullptr);
  const size_t threshold = hak_probe_adopt_backlog_threshold();
  ASSERT_GE(threshold, 3u);
  std::vector<void*> left = AbandonSegments(threshold - 2);
  const size_t waiting = hak_probe_abandoned_backlog();
  ASSERT_GE(waiting, threshold - 2) << "the threads' segments are not on the abandoned list";
  ASSERT_LT(waiting, threshold) << "premise: fewer segments waiting than the threshold";
  void* p = hak_malloc(kNewClassSize);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(hak_probe_abandoned_backlog(), waiting) << "a heap with room of its own adopted below the threshold";
  hak_free(p);
  FreeAll(left);
  hak_free(mine);
  hak_collect(true);
}

TEST(AdoptBacklog, AHeapWithRoomAdoptsWhenManySegmentsWait) {
  void* mine = hak_malloc(16);
  ASSERT_NE(mine, nullptr);
  const size_t threshold = hak_probe_adopt_backlog_threshold();
  std::vector<void*> left = AbandonSegments(threshold + 4);
  const size_t waiting = hak_probe_abandoned_backlog();
  ASSERT_GE(waiting, threshold) << "premise: at least the threshold's segments waiting";
  void* p = hak_malloc(kNewClassSize + 1000);  // another class this thread never used
  ASSERT_NE(p, nullptr);
  memset(p, 1, kNewClassSize + 1000);
  // Before, this thread carved its own free span and the list stayed as it was.
  EXPECT_LT(hak_probe_abandoned_backlog(), waiting) << "no abandoned segment was adopted";
  hak_free(p);
  FreeAll(left);  // now local frees for the adopted segments, remote for the others
  hak_free(mine);
  hak_collect(true);
}

}  // namespace
