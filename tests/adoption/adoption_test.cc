// A thread leaves blocks of many classes behind when it exits; another thread adopts
// the segments; a third thread frees the blocks. The adopter never allocates those
// classes again, so only the delayed-free path can tell it that its adopted pages
// emptied. Before the fix, adopted pages sat in ordinary class queues, their remote
// frees were never collected, and every cycle pinned more segments.
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "hakmem.h"
#include "hak_test_names.h"  // last: see its rule

namespace {

uint64_t LiveSegments() {
  hak_stats_t s;
  EXPECT_EQ(hak_stats_get(&s), 0);
  return s.segments_live;
}

// One block in the middle of each mid class from 9 KiB to 64 KiB, several per class
// so that some pages keep live blocks after the first remote free.
std::vector<void*> AllocateMidBlocks(int per_class) {
  std::vector<void*> blocks;
  for (size_t size = 9 * 1024; size <= 64 * 1024; size += 2 * 1024) {
    for (int i = 0; i < per_class; i++) {
      void* p = hak_malloc(size);
      EXPECT_NE(p, nullptr);
      static_cast<char*>(p)[0] = 1;
      blocks.push_back(p);
    }
  }
  return blocks;
}

TEST(Adoption, SegmentsOfExitedThreadsComeBackWhenAnotherThreadFreesTheirBlocks) {
  void* mine = hak_malloc(16);  // the adopter has a heap of its own from the start
  ASSERT_NE(mine, nullptr);
  uint64_t start = LiveSegments();
  uint64_t peak = 0;
  for (int cycle = 0; cycle < 150; cycle++) {
    std::vector<void*> left;
    std::thread owner([&left] { left = AllocateMidBlocks(3); });
    owner.join();  // its segments are abandoned with the blocks still live
    // The adopter: filling more than one page of a class runs the slow path, which
    // adopts what exited threads left before it asks for a fresh page.
    std::vector<void*> burst;
    for (int i = 0; i < 30; i++) {
      burst.push_back(hak_malloc(24 * 1024));
      ASSERT_NE(burst.back(), nullptr);
    }
    for (void* p : burst) hak_free(p);
    std::thread freer([&left] {
      for (void* p : left) hak_free(p);
    });
    freer.join();
    uint64_t live = LiveSegments();
    if (live > peak) peak = live;
  }
  hak_free(mine);
  // Each cycle needs about 4 segments; an adopter that collects what it adopted keeps
  // the total near that, a leak grows it by a few segments per cycle (450+ here).
  EXPECT_LE(peak, start + 24) << "segments pinned by adopted pages that were never collected";
}

}  // namespace
