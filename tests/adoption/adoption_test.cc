/* SPDX-License-Identifier: MIT */
// A thread leaves blocks of many classes behind when it exits; another thread adopts
// the segments; a third thread frees the blocks. The adopter never allocates those
// classes again, so only the delayed-free path can tell it that its adopted pages
// emptied. Before the fix, adopted pages sat in ordinary class queues, their remote
// frees were never collected, and every cycle pinned more segments.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

#include "hak_test_env.h"
#include "hak_test_memory.h"
#include "hak_test_stats.h"
#include "hakmem.h"
#include "hak_test_names.h"  // last: see its rule

namespace {

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

// A worker fills about 10 MiB with small blocks and exits; this thread frees them all
// and allocates nothing. The first free into each abandoned segment adopts it, so the
// frees become local and the segments go back as they empty. Before, they stayed
// abandoned (and resident) until some thread ran out of pages.
TEST(Adoption, FreeingAnExitedThreadsBlocksGivesItsSegmentsBackWithoutAnyMalloc) {
  void* mine = hak_malloc(16);
  ASSERT_NE(mine, nullptr);
  uint64_t start = LiveSegments();
  std::vector<void*> left;
  std::thread worker([&left] {
    size_t total = 0;
    for (size_t i = 0; total < (size_t)10 << 20; i++) {
      size_t size = 16 + (i * 7919) % 4000;
      void* p = hak_malloc(size);
      ASSERT_NE(p, nullptr);
      memset(p, 0x5a, size);
      left.push_back(p);
      total += size;
    }
  });
  worker.join();
  // (It may also have adopted what earlier tests left, so count only that it grew.)
  ASSERT_GT(LiveSegments(), start) << "the worker's blocks should need segments of their own";
  hak_stats_t before;
  ASSERT_EQ(hak_stats_read(&before), 0);
  for (void* p : left) hak_free(p);
  hak_quarantine_flush();  // (hardened: this thread's last 64 frees wait there)
  EXPECT_LE(LiveSegments(), start) << "segments of the exited thread still held after all their blocks were freed";
  // Emptied, they go back to the region as idle for the whole delay: purged at once
  // (before, they waited out the delay too, resident, though nobody allocates there).
  hak_stats_t after;
  ASSERT_EQ(hak_stats_read(&after), 0);
  EXPECT_GE(after.purge_bytes - before.purge_bytes, (uint64_t)4 << 20) << "the exited thread's memory was not purged";
  hak_free(mine);
}

// Several threads free an exited thread's blocks at once, interleaved over the same
// segments, while another thread keeps adopting abandoned segments: every block must
// come back exactly once, whichever path it took (straight into the abandoned segment,
// remote onto the page's list, or to the adopter), and the segments must all go back.
// TSan checks the hand-offs. The direct path takes no lock unless a free empties its
// page; between that free and taking the segment off the list, the segment may be
// adopted, laid out anew and abandoned again, so the emptied page must be checked to
// still head a span: without that check the hardened variant stopped here with a
// double free about 1 run in 30 (the page freed was a stale descriptor inside a live
// span, whose blocks were then handed out twice).
TEST(Adoption, ConcurrentFreesIntoAbandonedSegmentsRaceWithAdopters) {
  void* mine = hak_malloc(16);
  ASSERT_NE(mine, nullptr);
  hak_collect(true);
  const uint64_t start = LiveSegments();
  constexpr int kFreers = 3, kRounds = 12, kBlocks = 12000;
  for (int round = 0; round < kRounds; round++) {
    std::vector<void*> left;
    std::thread worker([&left] {
      for (int i = 0; i < kBlocks; i++) {
        size_t size = 16 + (size_t)(i * 7919) % 3000;
        void* p = hak_malloc(size);
        ASSERT_NE(p, nullptr);
        memset(p, 0x3c, size);
        left.push_back(p);
      }
    });
    worker.join();  // abandons its segments with every block live
    std::atomic<bool> go{false};
    std::atomic<int> done{0};
    std::vector<std::thread> freers;
    for (int f = 0; f < kFreers; f++) {
      // freer f takes every kFreers-th block: all freers work on the same pages
      freers.emplace_back([&, f] {
        if (f == 0) hak_free(hak_malloc(32));  // one freer with a heap of its own
        while (!go.load()) std::this_thread::yield();
        for (size_t i = (size_t)f; i < left.size(); i += kFreers) hak_free(left[i]);
        hak_quarantine_flush();
        done.fetch_add(1);
      });
    }
    std::thread adopter([&] {
      std::vector<void*> mine_now;
      while (done.load() < kFreers) {  // each slow path may adopt an abandoned segment
        for (int i = 0; i < 64; i++) mine_now.push_back(hak_malloc(40 + (size_t)(i % 8) * 500));
        for (void* p : mine_now) hak_free(p);
        mine_now.clear();
        hak_collect(false);
      }
    });
    go.store(true);
    for (auto& t : freers) t.join();
    adopter.join();
  }
  hak_free(mine);
  hak_collect(true);
  EXPECT_LE(LiveSegments(), start) << "segments still held after every block of the exited threads was freed";
  hak_stats_t s;
  ASSERT_EQ(hak_stats_read(&s), 0);
  EXPECT_LT(s.in_use_bytes, (uint64_t)1 << 20) << "blocks of the exited threads still count as in use";
}

// Threads that each leave 4 blocks behind (of 4 classes) and exit: the next thread
// adopts one abandoned segment, allocates from its pages that have room and leaves its
// own blocks there. Before, a new thread adopted every abandoned segment but filled
// only fresh pages, so each thread pinned 4 more slices: about 130 segments for 2,000
// threads, and every exit abandoned all of them again.
TEST(Adoption, ThreadsThatLeaveBlocksBehindShareFewSegments) {
  void* mine = hak_malloc(16);
  ASSERT_NE(mine, nullptr);
  uint64_t start = LiveSegments();
  const size_t threads = hak_test_env::Scaled(2000, 200);
  const size_t wave = 8;
  std::vector<void*> left(threads * 4, nullptr);
  for (size_t first = 0; first < threads; first += wave) {
    std::vector<std::thread> running;
    for (size_t t = first; t < first + wave && t < threads; t++) {
      running.emplace_back([&left, t] {
        for (size_t k = 0; k < 4; k++) {
          void* p = hak_malloc(64 + 100 * k);
          ASSERT_NE(p, nullptr);
          memset(p, (int)t, 64 + 100 * k);
          left[t * 4 + k] = p;
        }
        void* scratch[64];
        for (void*& p : scratch) p = hak_malloc(100);
        for (void* p : scratch) hak_free(p);
      });
    }
    for (std::thread& t : running) t.join();
  }
  // 8,000 blocks of at most 364 B: well under one segment of pages if they are shared;
  // but up to `wave` threads run at once, each may hold a segment of its own and adopt
  // or abandon others meanwhile, so two per running thread. Before: 130 to 250.
  EXPECT_LE(LiveSegments(), start + 2 * wave) << "threads left their blocks on fresh pages instead of adopted ones";
  for (size_t i = 0; i < left.size(); i++) {
    ASSERT_EQ(static_cast<unsigned char*>(left[i])[0], (unsigned char)(i / 4)) << "block " << i;
    hak_free(left[i]);
  }
  hak_quarantine_flush();  // (hardened: this thread's last 64 frees wait there)
  EXPECT_LE(LiveSegments(), start) << "segments still held after every block was freed";
  hak_free(mine);
}

// A worker allocates 8 MiB of small blocks, frees all but one per 64 (so its pages stay
// in use with free room, and many spans go free) and exits: its segments are
// abandoned with idle free spans. Nobody adopts them; once the purge delay has passed,
// the next slow path of any thread purges those spans. Before, they stayed resident
// until adopted. The check is on the memory itself (mincore), not on when the purge
// happened: with a 1 ms delay (the small variant) a slow worker purges spans that came
// due while it was still freeing (seen under TSan), and that is as it should be.
TEST(Adoption, IdleFreeSpansOfAbandonedSegmentsArePurgedAfterTheDelay) {
  hak_collect(true);
  hak_stats_t opts;
  ASSERT_EQ(hak_stats_read(&opts), 0);
  void* mine = hak_malloc(16);
  ASSERT_NE(mine, nullptr);
  std::vector<void*> kept;
  std::vector<uintptr_t> freed;  // addresses only, never dereferenced
  constexpr size_t kBlock = 2048;
  std::thread worker([&kept, &freed] {
    std::vector<void*> all;
    for (size_t total = 0; total < (size_t)8 << 20; total += kBlock) {
      void* p = hak_malloc(kBlock);
      ASSERT_NE(p, nullptr);
      memset(p, 0x6b, kBlock);
      all.push_back(p);
    }
    for (size_t i = 0; i < all.size(); i++) {
      if (i % 64 == 0) {
        kept.push_back(all[i]);
      } else {
        freed.push_back(reinterpret_cast<uintptr_t>(all[i]));
        hak_free(all[i]);
      }
    }
  });
  worker.join();
  // The delay in force when the worker abandoned its segments: purge regret earlier in
  // this process may have stretched it beyond HAKMEM_PURGE_DELAY_MS.
  hak_stats_t joined;
  ASSERT_EQ(hak_stats_read(&joined), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(joined.purge_delay_now_ms + 20));
  hak_free(hak_malloc(300 * 1024));  // a slow path: it ticks the purges that came due
  hak_stats_t after;
  ASSERT_EQ(hak_stats_read(&after), 0);
  EXPECT_GE(after.purge_bytes - opts.purge_bytes, (uint64_t)2 << 20) << "hardly anything was purged";
  // OS pages that only freed blocks touched: half the 8 MiB or so (a kept block pins
  // its page of blocks). At least 2 MiB of them must have left memory.
  const uintptr_t os_page = (uintptr_t)sysconf(_SC_PAGESIZE);
  std::set<uintptr_t> pinned, candidates;
  for (void* p : kept) {
    uintptr_t a = reinterpret_cast<uintptr_t>(p);
    for (uintptr_t q = a & ~(os_page - 1); q < a + kBlock; q += os_page) pinned.insert(q);
  }
  for (uintptr_t a : freed) {
    for (uintptr_t q = a & ~(os_page - 1); q < a + kBlock; q += os_page) {
      if (pinned.count(q) == 0) candidates.insert(q);
    }
  }
  size_t gone = 0;
  for (uintptr_t q : candidates) {
    long resident = ResidentPages(reinterpret_cast<void*>(q), os_page);
    ASSERT_GE(resident, 0) << "mincore failed";
    if (resident == 0) gone += os_page;
  }
  EXPECT_GE(gone, (size_t)2 << 20) << "the abandoned segments' idle free spans were not purged ("
                                   << candidates.size() << " candidate pages)";
  for (void* p : kept) hak_free(p);
  hak_free(mine);
}

}  // namespace
