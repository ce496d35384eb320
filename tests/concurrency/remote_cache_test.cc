/* SPDX-License-Identifier: MIT */
// The remote cache (hak_heap.c): a thread keeps pool blocks of other threads' pages that
// it frees, when their owner is idle and not allocating from those pages, and serves its
// own next allocations of their class from them. Here an owner thread fills pages of 64-byte
// blocks and waits, idle (a main thread blocked in pthread_join), while another thread
// frees and allocates; what a test checks that depends on the cache holds in the
// release and stats variants, and the opposite in the hardened one, which has none.
#include <stdint.h>
#include <string.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "conc_util.h"

namespace {

constexpr bool kHasRemoteCache = kHakHardenedLevel == 0;
constexpr size_t kSize = 64;

hak_stats_t Stats() {
  hak_stats_t s;
  EXPECT_EQ(hak_stats_read(&s), 0);
  return s;
}

// On the test's main thread, with no other thread left: blocks the threads freed onto
// its pages (std::thread's state) taken in first, so that in-use counts are exact. The
// first call also runs two threads at once, as the tests do, so that what the C library
// keeps for them (a cached thread stack holds its TLS vector, a block) is there before
// a test's first count.
hak_stats_t ExactStats() {
  static bool warm = [] {
    std::thread a([] { free(malloc(kSize)); });
    std::thread b([] { free(malloc(kSize)); });
    a.join();
    b.join();
    return true;
  }();
  (void)warm;
  hak_collect(false);
  return Stats();
}

// A thread that allocates `count` blocks of kSize (each filled with `fill`), then waits
// idle until Finish(), when it frees those the test did not take over and calls
// hak_collect: that takes in the blocks other threads sent home meanwhile.
class IdleOwner {
 public:
  IdleOwner(size_t count, unsigned char fill) {
    thread_ = std::thread([this, count, fill] {
      for (size_t i = 0; i < count; i++) {
        void* p = malloc(kSize);
        if (p != nullptr) memset(p, fill, kSize);
        blocks_.push_back(p);
      }
      std::unique_lock<std::mutex> lock(mu_);
      ready_ = true;
      cv_.notify_all();
      cv_.wait(lock, [this] { return finish_; });
      for (size_t i = taken_; i < blocks_.size(); i++) free(blocks_[i]);
      hak_collect(false);
    });
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return ready_; });
  }

  // Blocks [0, n) become the caller's to free (the owner frees the rest).
  std::vector<void*> Take(size_t n) {
    taken_ = n;
    return std::vector<void*>(blocks_.begin(), blocks_.begin() + n);
  }

  void Finish() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      finish_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool ready_ = false, finish_ = false;
  size_t taken_ = 0;
  std::vector<void*> blocks_;
};

// Runs fn on a new thread that has allocated once already (a thread with no heap yet
// frees as before: nothing to cache into), and joins it. Its first allocation comes
// 40 ms after the owner's last: an owner counts as idle once it has gone 10 ms without
// a malloc slow path before the freeing thread's last one (on a coarse clock).
void OnThreadWithHeap(const std::function<void()>& fn) {
  std::this_thread::sleep_for(std::chrono::milliseconds(40));
  std::thread t([&] {
    free(malloc(3000));
    fn();
  });
  t.join();
}

// The owner's first pages are full (it went on to others) and it is idle, so it is not
// allocating from them: a block of theirs that another thread frees stays with that
// thread, whose next allocations of the class take it (LIFO) before any page of its own.
TEST(RemoteCache, BlocksFreedFromAnIdleThreadsPagesServeTheFreeingThread) {
  const hak_stats_t before = ExactStats();
  constexpr size_t kFreed = 16;
  size_t reused = 0;
  uint64_t cached_bytes = 0;
  hak_stats_t pre{}, mid{};
  {
  IdleOwner owner(4096, 0x5A);
  std::vector<void*> mine = owner.Take(kFreed);
  OnThreadWithHeap([&] {
    std::set<void*> freed(mine.begin(), mine.end());
    pre = Stats();
    for (void* p : mine) free(p);
    mid = Stats();
    cached_bytes = mid.remote_cached_bytes;
    std::vector<void*> again;
    again.reserve(mine.size());  // not a block of kSize: its growth would take one
    for (size_t i = 0; i < mine.size(); i++) again.push_back(malloc(kSize));
    for (void* p : again) reused += freed.count(p);
    for (void* p : again) free(p);  // theirs again: cached again, home at this thread's exit
  });
  owner.Finish();
  }
  if (kHasRemoteCache) {
    EXPECT_EQ(reused, kFreed);
    EXPECT_EQ(cached_bytes, kFreed * kSize);
    EXPECT_EQ(mid.in_use_blocks, pre.in_use_blocks - kFreed) << "cached blocks are not in use";
  } else {
    EXPECT_EQ(reused, 0u) << "the hardened variant reuses no block in free order";
    EXPECT_EQ(cached_bytes, 0u);
  }
  const hak_stats_t after = ExactStats();
  EXPECT_EQ(after.remote_cached_bytes, 0u) << "a thread's exit sends its cached blocks home";
  EXPECT_EQ(after.in_use_blocks, before.in_use_blocks) << "and the owner's hak_collect takes them in";
  if (after.counters_enabled) {
    EXPECT_EQ(after.free_remote_cached - before.free_remote_cached, kHasRemoteCache ? 2 * kFreed : 0);
    EXPECT_EQ(after.alloc_remote_cached - before.alloc_remote_cached, kHasRemoteCache ? kFreed : 0);
  }
}

// A cached block holds what its last user wrote, though its page (fresh, never freed
// into by its owner) says its free blocks are zero: calloc must clear it.
TEST(RemoteCache, CallocOfACachedBlockIsZero) {
  IdleOwner owner(2048, 0xAB);
  std::vector<void*> mine = owner.Take(32);
  size_t nonzero = 0;
  OnThreadWithHeap([&] {
    for (void* p : mine) free(p);
    std::vector<void*> again;
    again.reserve(mine.size());
    for (size_t i = 0; i < mine.size(); i++) {
      unsigned char* p = static_cast<unsigned char*>(calloc(1, kSize));
      ASSERT_NE(p, nullptr);
      for (size_t b = 0; b < kSize; b++) nonzero += p[b] != 0;
      again.push_back(p);
    }
    for (void* p : again) free(p);
  });
  owner.Finish();
  EXPECT_EQ(nonzero, 0u);
}

// hak_collect on the freeing thread sends its cached blocks home at once.
TEST(RemoteCache, HakCollectSendsCachedBlocksHome) {
  const hak_stats_t before = ExactStats();
  constexpr size_t kFreed = 20;
  uint64_t cached = 0, after_collect = 1;
  {
  IdleOwner owner(2048, 0x11);
  std::vector<void*> mine = owner.Take(kFreed);
  OnThreadWithHeap([&] {
    for (void* p : mine) free(p);
    cached = Stats().remote_cached_bytes;
    hak_collect(false);
    after_collect = Stats().remote_cached_bytes;
  });
  owner.Finish();
  }
  EXPECT_EQ(cached, kHasRemoteCache ? kFreed * kSize : 0);
  EXPECT_EQ(after_collect, 0u);
  EXPECT_EQ(ExactStats().in_use_blocks, before.in_use_blocks);
}

// At most 32 blocks of a class are kept; a thread that frees other threads' blocks
// without allocating their like sends them home after 4096 more remote frees found the
// cache full, and keeps none for as many again.
TEST(RemoteCache, IsBoundedAndAConsumerSendsItsBlocksHome) {
  if (!kHasRemoteCache) GTEST_SKIP() << "no remote cache in the hardened variant";
  const hak_stats_t before = ExactStats();
  constexpr size_t kPerClass = 32, kBackoff = 4096;
  uint64_t full = 0, just_before = 0, flushed = 1, skipping = 1;
  {
  IdleOwner owner(8192, 0x22);
  std::vector<void*> mine = owner.Take(kPerClass + kBackoff + 100);
  OnThreadWithHeap([&] {
    size_t i = 0;
    for (; i < kPerClass + 100; i++) free(mine[i]);
    full = Stats().remote_cached_bytes;
    for (; i < kPerClass + kBackoff - 1; i++) free(mine[i]);
    just_before = Stats().remote_cached_bytes;
    free(mine[i++]);
    flushed = Stats().remote_cached_bytes;
    for (; i < mine.size(); i++) free(mine[i]);
    skipping = Stats().remote_cached_bytes;
  });
  owner.Finish();
  }
  EXPECT_EQ(full, kPerClass * kSize);
  EXPECT_EQ(just_before, kPerClass * kSize);
  EXPECT_EQ(flushed, 0u);
  EXPECT_EQ(skipping, 0u);
  EXPECT_EQ(ExactStats().in_use_blocks, before.in_use_blocks);
}

}  // namespace
