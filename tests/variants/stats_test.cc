/* SPDX-License-Identifier: MIT */
// The stats variant's counters: per-class allocs and frees, the allocation and free
// paths (fast/slow/large, local/remote/delayed/large), thread counts, and the report,
// printed on demand and at exit with HAKMEM_STATS=1.
#include <gtest/gtest.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "hakmem.h"
#include "variant_util.h"
#include "hak_test_names.h"  // last: see its rule

namespace hak_variant_test {
namespace {

// The report's line of one class starts with its index and block size like this.
std::string ClassLine(int cls, unsigned size) {
  char buf[64];
  if (size == 0) snprintf(buf, sizeof buf, "%7d    > 1MiB", cls);
  else snprintf(buf, sizeof buf, "%7d%9u", cls, size);
  return buf;
}

hak_stats_t Stats() {
  hak_stats_t s;
  EXPECT_EQ(hak_stats_read(&s), 0);
  return s;
}

// The class serving `size`: the smallest class whose block size fits it (class_size
// is increasing); the last class for > 1 MiB.
int ClassOf(size_t size) {
  hak_stats_t s = Stats();
  for (int i = 0; i < HAK_STATS_CLASS_COUNT - 1; i++) {
    if (s.class_size[i] >= size) return i;
  }
  return HAK_STATS_CLASS_COUNT - 1;
}

TEST(Stats, CountersAreEnabled) {
  hak_stats_t s = Stats();
  EXPECT_EQ(s.counters_enabled, 1);
  EXPECT_STREQ(hak_variant(), "stats");
}

// Every HAK_STATS_LATENCY_SAMPLE-th malloc and free of a thread is timed: N of each
// add N / sample samples to each op (this thread alone allocates here), and the
// percentiles come out ordered.
TEST(Stats, LatencyIsSampledForMallocAndFree) {
  constexpr int kRounds = 40;
  hak_stats_t before = Stats();
  std::vector<void*> blocks(HAK_STATS_LATENCY_SAMPLE);
  for (int r = 0; r < kRounds; r++) {
    for (void*& p : blocks) p = hak_malloc(64);
    for (void* p : blocks) hak_free(p);
  }
  hak_stats_t after = Stats();
  for (int op = 0; op < HAK_STATS_LATENCY_OPS; op++) {
    SCOPED_TRACE(op == HAK_STATS_LATENCY_MALLOC ? "malloc" : "free");
    EXPECT_GE(after.latency_samples[op] - before.latency_samples[op], (uint64_t)kRounds);
    const uint64_t* ns = after.latency_ns[op];
    EXPECT_GT(ns[HAK_STATS_P50], 0u);
    EXPECT_LE(ns[HAK_STATS_P50], ns[HAK_STATS_P95]);
    EXPECT_LE(ns[HAK_STATS_P95], ns[HAK_STATS_P99]);
    EXPECT_LE(ns[HAK_STATS_P99], ns[HAK_STATS_P999]);
  }
}

// N mallocs then N frees of one size, with nothing else allocating in between: the
// class's counters move by exactly N.
TEST(Stats, ClassCountersCountEachMallocAndFree) {
  constexpr int kN = 1000;
  std::vector<void*> blocks;
  blocks.reserve(kN);  // no allocation inside the measured region
  for (size_t size : {1u, 16u, 100u, 1024u, 1025u, 5000u, 8192u, 20000u, 65536u}) {
    const int cls = ClassOf(size);
    const hak_stats_t before = Stats();
    for (int i = 0; i < kN; i++) blocks.push_back(malloc(size));
    const hak_stats_t mid = Stats();
    for (void* p : blocks) free(p);
    const hak_stats_t after = Stats();
    for (void* p : blocks) ASSERT_NE(p, nullptr);
    blocks.clear();
    EXPECT_EQ(mid.class_allocs[cls] - before.class_allocs[cls], (uint64_t)kN) << "size " << size;
    EXPECT_EQ(after.class_frees[cls] - mid.class_frees[cls], (uint64_t)kN) << "size " << size;
    EXPECT_EQ(after.class_allocs[cls], mid.class_allocs[cls]) << "size " << size;
    // Every one of them took the fast or the slow path, and was a local free.
    EXPECT_EQ((mid.alloc_fast + mid.alloc_slow) - (before.alloc_fast + before.alloc_slow), (uint64_t)kN)
        << "size " << size;
    // 1000 blocks of 64 KiB need 125 fresh 512 KiB pages: each one is a slow path.
    if (size == 65536) {
      EXPECT_GE(mid.alloc_slow - before.alloc_slow, (uint64_t)kN / 8) << "size " << size;
    }
    EXPECT_EQ(after.free_local - mid.free_local, (uint64_t)kN) << "size " << size;
    EXPECT_EQ(after.free_remote, mid.free_remote) << "size " << size;
    EXPECT_EQ(after.alloc_large, before.alloc_large) << "size " << size;
  }
}

// Across many pages, pages given back (hak_collect) and pages used again, every malloc
// and free is counted exactly once.
TEST(Stats, ClassCountsStayExactAcrossPagesGivenBackAndUsedAgain) {
  constexpr size_t kSize = 1400;  // a class nothing else here allocates
  constexpr int kN = 9485;  // over about 200 pages of 46 blocks
  const int cls = ClassOf(kSize);
  std::vector<void*> blocks;
  blocks.reserve(kN);
  for (int round = 0; round < 3; round++) {
    SCOPED_TRACE(round);
    const hak_stats_t before = Stats();
    for (int i = 0; i < kN; i++) blocks.push_back(malloc(kSize));
    const hak_stats_t mid = Stats();
    // free in an order unlike the allocation's, so pages empty at different times
    for (size_t i = 0; i < blocks.size(); i += 2) free(blocks[i]);
    for (size_t i = 1; i < blocks.size(); i += 2) free(blocks[i]);
    for (void* p : blocks) ASSERT_NE(p, nullptr);
    blocks.clear();
    hak_collect(false);  // empty pages go back to their segments
    const hak_stats_t after = Stats();
    EXPECT_EQ(mid.class_allocs[cls] - before.class_allocs[cls], (uint64_t)kN);
    EXPECT_EQ(after.class_allocs[cls], mid.class_allocs[cls]);
    EXPECT_EQ(after.class_frees[cls] - mid.class_frees[cls], (uint64_t)kN);
    EXPECT_EQ(after.class_allocs[cls], after.class_frees[cls]) << "everything of the class was freed";
  }
}

// A thread allocates and exits without freeing (its counters folded into the totals,
// its pages abandoned); another thread frees the blocks (remote frees into abandoned
// segments, counted on their slow path).
TEST(Stats, ClassCountsOfAnExitedThreadsBlocksFreedElsewhere) {
  constexpr size_t kSize = 1800;  // a class nothing else here allocates
  constexpr int kN = 1357;
  const int cls = ClassOf(kSize);
  std::vector<void*> blocks(kN);
  const hak_stats_t before = Stats();
  std::thread([&] {
    for (auto& b : blocks) b = malloc(kSize);
  }).join();
  const hak_stats_t mid = Stats();
  for (void* p : blocks) free(p);
  hak_collect(false);
  const hak_stats_t after = Stats();
  EXPECT_EQ(mid.class_allocs[cls] - before.class_allocs[cls], (uint64_t)kN);
  EXPECT_EQ(mid.class_frees[cls], before.class_frees[cls]);
  EXPECT_EQ(after.class_allocs[cls], mid.class_allocs[cls]);
  EXPECT_EQ(after.class_frees[cls] - mid.class_frees[cls], (uint64_t)kN);
}

// Blocks above the pools (1 MiB): big blocks (to the freeing thread's BigCache) and
// whales (to the whale ring) count in the last pseudo-class, alloc_large, free_large.
TEST(Stats, LargeBlocksCountInTheirOwnClassAndPath) {
  constexpr int kN = 50;
  const int huge = HAK_STATS_CLASS_COUNT - 1;
  EXPECT_EQ(ClassOf(1 << 20), huge - 1) << "1 MiB is the last pool class";
  std::vector<void*> blocks;
  blocks.reserve(2 * kN);
  const hak_stats_t before = Stats();
  for (int i = 0; i < kN; i++) blocks.push_back(malloc((1 << 20) + 1 + (size_t)i * 50000));  // big
  for (int i = 0; i < kN; i++) blocks.push_back(malloc((5 << 20) + (size_t)i * 100000));     // whales
  for (void* p : blocks) free(p);
  const hak_stats_t after = Stats();
  for (void* p : blocks) ASSERT_NE(p, nullptr);
  EXPECT_EQ(after.alloc_large - before.alloc_large, (uint64_t)2 * kN);
  EXPECT_EQ(after.free_large - before.free_large, (uint64_t)2 * kN);
  EXPECT_EQ(after.class_allocs[huge] - before.class_allocs[huge], (uint64_t)2 * kN);
  EXPECT_EQ(after.class_frees[huge] - before.class_frees[huge], (uint64_t)2 * kN);
  EXPECT_EQ(after.alloc_fast, before.alloc_fast);
  EXPECT_EQ(after.free_local, before.free_local);
  EXPECT_EQ(after.whale.puts - before.whale.puts, (uint64_t)kN);
  EXPECT_EQ(after.bigcache.puts - before.bigcache.puts, (uint64_t)kN) << "every freed big block goes to the BigCache";
}

// A block freed by a thread that does not own it counts as a remote free, whether the
// freeing thread has a heap of its own (counted there, folded in when it exits) or not
// (counted globally).
struct RemoteFreeArgs {
  std::vector<void*>* blocks;
  bool allocate_first;
};

void* FreeOnAnotherThread(void* arg) {
  RemoteFreeArgs* a = static_cast<RemoteFreeArgs*>(arg);
  if (a->allocate_first) free(malloc(24));  // gives this thread a heap
  for (void* p : *a->blocks) free(p);
  return nullptr;
}

void ExpectRemoteFreesCounted(bool allocate_first) {
  constexpr int kN = 500;
  const int cls = ClassOf(64);
  std::vector<void*> blocks;
  for (int i = 0; i < kN; i++) {
    void* p = malloc(64);
    ASSERT_NE(p, nullptr);
    blocks.push_back(p);
  }
  const hak_stats_t before = Stats();
  RemoteFreeArgs args{&blocks, allocate_first};
  pthread_t t;
  ASSERT_EQ(pthread_create(&t, nullptr, FreeOnAnotherThread, &args), 0);
  ASSERT_EQ(pthread_join(t, nullptr), 0);
  const hak_stats_t after = Stats();
  EXPECT_GE(after.free_remote - before.free_remote, (uint64_t)kN);
  EXPECT_GE(after.class_frees[cls] - before.class_frees[cls], (uint64_t)kN);
  // The owner collects them: allocate the class again until they come back.
  std::vector<void*> again;
  for (int i = 0; i < kN; i++) again.push_back(malloc(64));
  for (void* p : again) free(p);
}

TEST(Stats, FreeRemoteCountsCrossThreadFreesFromAThreadWithAHeap) {
  ExpectRemoteFreesCounted(true);
}

TEST(Stats, FreeRemoteCountsCrossThreadFreesFromAThreadWithoutAHeap) {
  ExpectRemoteFreesCounted(false);
}

// Pages that filled up sit in the owner's full queue; the first remote free onto each
// goes through the owner's delayed list, which the owner drains on its slow path.
TEST(Stats, DelayedFreesWakeFullPages) {
  constexpr int kN = 64;  // 8 KiB blocks, 8 per 64 KiB page: 8 pages, 7 of them full
  std::vector<void*> blocks;
  for (int i = 0; i < kN; i++) {
    void* p = malloc(8192);
    ASSERT_NE(p, nullptr);
    blocks.push_back(p);
  }
  const hak_stats_t before = Stats();
  RemoteFreeArgs args{&blocks, false};
  pthread_t t;
  ASSERT_EQ(pthread_create(&t, nullptr, FreeOnAnotherThread, &args), 0);
  ASSERT_EQ(pthread_join(t, nullptr), 0);
  std::vector<void*> again;
  for (int i = 0; i < kN; i++) again.push_back(malloc(8192));
  const hak_stats_t after = Stats();
  for (void* p : again) free(p);
  EXPECT_GE(after.free_remote - before.free_remote, (uint64_t)kN);
  EXPECT_GE(after.free_delayed - before.free_delayed, 1u);
  EXPECT_LE(after.free_delayed - before.free_delayed, (uint64_t)kN);
}

// Every free counts once in its class whichever path it takes. The local fast path
// counts nothing (hak_stats.c works its frees out from the pages' used counts); the
// others count themselves, and a remote free collected later must not count again.
// Each case uses a class nothing else here allocates.
struct ClassDelta {
  uint64_t allocs, frees;
};

ClassDelta DeltaOf(const hak_stats_t& before, size_t size) {
  const int cls = ClassOf(size);
  const hak_stats_t now = Stats();
  return {now.class_allocs[cls] - before.class_allocs[cls], now.class_frees[cls] - before.class_frees[cls]};
}

std::vector<void*> AllocateN(size_t size, int n) {
  std::vector<void*> blocks;
  for (int i = 0; i < n; i++) {
    void* p = malloc(size);
    EXPECT_NE(p, nullptr);
    memset(p, 0x5a, size);
    blocks.push_back(p);
  }
  return blocks;
}

// The owner frees its blocks again after the remote frees were collected: those count
// on the fast path, the collected ones must not count a second time.
void ExpectFreesExactAfterRemoteFrees(size_t size, int n, bool freer_allocates_first) {
  const hak_stats_t before = Stats();
  std::vector<void*> blocks = AllocateN(size, n);
  RemoteFreeArgs args{&blocks, freer_allocates_first};
  pthread_t t;
  ASSERT_EQ(pthread_create(&t, nullptr, FreeOnAnotherThread, &args), 0);
  ASSERT_EQ(pthread_join(t, nullptr), 0);
  ClassDelta d = DeltaOf(before, size);
  EXPECT_EQ(d.allocs, (uint64_t)n);
  EXPECT_EQ(d.frees, (uint64_t)n) << "remote frees, not yet collected";
  std::vector<void*> again = AllocateN(size, n);  // the slow path collects them
  hak_collect(false);
  d = DeltaOf(before, size);
  EXPECT_EQ(d.allocs, (uint64_t)2 * n);
  EXPECT_EQ(d.frees, (uint64_t)n) << "collected: counted once";
  for (void* p : again) free(p);
  d = DeltaOf(before, size);
  EXPECT_EQ(d.allocs, (uint64_t)2 * n);
  EXPECT_EQ(d.frees, (uint64_t)2 * n);
}

TEST(Stats, ClassFreesAreExactOnTheLocalFastPath) {
  constexpr size_t kSize = 3400;
  const hak_stats_t before = Stats();
  for (int round = 0; round < 3; round++) {
    std::vector<void*> blocks = AllocateN(kSize, 700);
    ClassDelta d = DeltaOf(before, kSize);
    EXPECT_EQ(d.allocs - d.frees, 700u) << "live blocks are not frees";
    for (void* p : blocks) free(p);
  }
  ClassDelta d = DeltaOf(before, kSize);
  EXPECT_EQ(d.allocs, 2100u);
  EXPECT_EQ(d.frees, 2100u);
}

TEST(Stats, ClassFreesAreExactAfterRemoteFreesFromAThreadWithAHeap) {
  ExpectFreesExactAfterRemoteFrees(4200, 600, true);
}

TEST(Stats, ClassFreesAreExactAfterRemoteFreesFromAThreadWithoutAHeap) {
  ExpectFreesExactAfterRemoteFrees(5200, 600, false);
}

TEST(Stats, ClassFreesAreExactAfterDelayedFreesOntoFullPages) {
  ExpectFreesExactAfterRemoteFrees(10000, 60, false);  // six blocks a page: most of them full
}

TEST(Stats, ClassFreesAreExactForBlocksOfAnExitedThread) {
  constexpr size_t kSize = 7000;
  constexpr int kN = 400;
  const hak_stats_t before = Stats();
  std::vector<void*> blocks;
  std::thread([&] { blocks = AllocateN(kSize, kN); }).join();
  for (size_t i = 0; i < blocks.size(); i += 2) free(blocks[i]);  // into its abandoned segment
  ClassDelta d = DeltaOf(before, kSize);
  EXPECT_EQ(d.allocs, (uint64_t)kN);
  EXPECT_EQ(d.frees, (uint64_t)kN / 2);
  for (size_t i = 1; i < blocks.size(); i += 2) free(blocks[i]);
  hak_collect(false);
  d = DeltaOf(before, kSize);
  EXPECT_EQ(d.allocs, (uint64_t)kN);
  EXPECT_EQ(d.frees, (uint64_t)kN);
}

// Snapshots taken while two threads allocate, free their own blocks and each other's
// never show a class with more frees than allocations, and once they are done (and
// have collected) every allocation has its free.
TEST(Stats, SnapshotsNeverShowMoreFreesThanAllocations) {
  constexpr size_t kSize = 6000;
  constexpr int kRounds = 300, kBatch = 32;
  const int cls = ClassOf(kSize);
  const hak_stats_t before = Stats();
  std::atomic<bool> done{false};
  std::atomic<void*> box[2][kBatch] = {};  // box[t]: blocks thread t offers the other
  uint64_t snapshots = 0, more_frees = 0;
  std::thread poller([&] {
    while (!done.load()) {
      hak_stats_t s = Stats();
      if (s.class_frees[cls] - before.class_frees[cls] > s.class_allocs[cls] - before.class_allocs[cls]) more_frees++;
      snapshots++;
    }
  });
  auto worker = [&](int self) {
    for (int r = 0; r < kRounds; r++) {
      void* mine[kBatch];
      for (auto& p : mine) p = malloc(kSize);
      for (int i = 0; i < kBatch; i++) {
        if (i % 2 == 0) {
          free(mine[i]);
          continue;
        }
        void* theirs = box[1 - self][i].exchange(nullptr);
        if (theirs != nullptr) free(theirs);  // a remote free
        void* untaken = box[self][i].exchange(mine[i]);
        if (untaken != nullptr) free(untaken);
      }
    }
    hak_collect(false);
  };
  std::thread a(worker, 0), b(worker, 1);
  a.join();
  b.join();
  for (auto& row : box) {
    for (auto& p : row) free(p.exchange(nullptr));
  }
  done.store(true);
  poller.join();
  hak_collect(false);
  EXPECT_EQ(more_frees, 0u) << "of " << snapshots << " snapshots";
  const hak_stats_t after = Stats();
  EXPECT_EQ(after.class_allocs[cls] - before.class_allocs[cls], (uint64_t)2 * kRounds * kBatch);
  EXPECT_EQ(after.class_frees[cls] - before.class_frees[cls], after.class_allocs[cls] - before.class_allocs[cls]);
}

TEST(Stats, ThreadsAreCounted) {
  constexpr int kThreads = 20;
  const hak_stats_t before = Stats();
  for (int i = 0; i < kThreads; i++) {
    std::thread t([] { free(malloc(100)); });
    t.join();
  }
  const hak_stats_t after = Stats();
  EXPECT_GE(after.threads_started - before.threads_started, (uint64_t)kThreads);
  EXPECT_GE(after.threads_ended - before.threads_ended, (uint64_t)kThreads);
  EXPECT_EQ(after.threads_started - after.threads_ended, before.threads_started - before.threads_ended);
}

// A snapshot taken while threads exit counts each of them once: an exiting thread folds
// its counters into the totals and leaves the set of live heaps in one step, as seen
// by hak_stats_get (which read both before at different times and could count a
// thread twice, then once again: the counter went back down).
TEST(Stats, SnapshotsWhileThreadsExitCountEachThreadOnce) {
  constexpr size_t kSize = 2800;  // a class nothing else here allocates
  constexpr int kPerThread = 40, kWaves = 150, kThreadsPerWave = 4;
  const int cls = ClassOf(kSize);
  std::atomic<int> started{0};
  std::atomic<bool> done{false};
  uint64_t snapshots = 0, went_down = 0, over = 0;
  const uint64_t base = Stats().class_allocs[cls];
  std::thread poller([&] {
    uint64_t last = base;
    while (!done.load()) {
      hak_stats_t s;
      hak_stats_read(&s);
      const uint64_t now = s.class_allocs[cls];
      // read after the snapshot: every thread counted in it had started
      const uint64_t most = base + (uint64_t)started.load() * kPerThread;
      if (now < last) went_down++;
      if (now > most) over++;
      last = now;
      snapshots++;
    }
  });
  for (int w = 0; w < kWaves; w++) {
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreadsPerWave; t++) {
      started.fetch_add(1);
      threads.emplace_back([] {
        void* blocks[kPerThread];
        for (auto& b : blocks) b = malloc(kSize);
        for (auto& b : blocks) free(b);
      });
    }
    for (auto& t : threads) t.join();
  }
  done.store(true);
  poller.join();
  EXPECT_EQ(went_down, 0u) << "of " << snapshots << " snapshots";
  EXPECT_EQ(over, 0u) << "of " << snapshots << " snapshots";
  EXPECT_EQ(Stats().class_allocs[cls], base + (uint64_t)kWaves * kThreadsPerWave * kPerThread);
  EXPECT_GT(snapshots, 0u);
}

TEST(Stats, PagesAndSegmentsAreCounted) {
  // 40 MiB of 4 KiB blocks: more than the free pages of the small segments the heap
  // may already own (each page an earlier test left in use - e.g. the last page of a
  // class, kept - can pin a segment with 63 free pages), so new segments are taken.
  // (8 MiB was enough only while gtest's own allocations, through the override, kept
  // those segments full; in the ASan/TSan builds they do not reach hakmem.)
  constexpr unsigned kN = 10000;
  const hak_stats_t before = Stats();
  std::vector<void*> blocks;
  blocks.reserve(kN);
  for (unsigned i = 0; i < kN; i++) blocks.push_back(malloc(4096));
  for (void* p : blocks) free(p);
  const hak_stats_t after = Stats();
  EXPECT_GE(after.pages_allocated - before.pages_allocated, kN / 16);
  EXPECT_GE(after.pages_freed - before.pages_freed, kN / 16 - 1);
  EXPECT_GE(after.segments_allocated - before.segments_allocated, 1u);
}

std::string PrintToPipe() {
  int fds[2];
  if (pipe(fds) != 0) return "";
  hak_stats_print(fds[1]);
  close(fds[1]);
  std::string out = ReadAll(fds[0]);
  close(fds[0]);
  return out;
}

TEST(Stats, PrintShowsPathsAndTheClassesUsed) {
  std::vector<void*> blocks;
  for (int i = 0; i < 10; i++) blocks.push_back(malloc(3000));  // class of 3072 B
  blocks.push_back(malloc(2 << 20));
  std::string report = PrintToPipe();
  for (void* p : blocks) free(p);
  EXPECT_EQ(report.rfind("hakmem stats report (variant stats, pid " + std::to_string(getpid()) + ")", 0), 0u)
      << report;
  for (std::string s : {"OS calls:", "Paths:", "alloc fast", "free remote", "segments adopted",
                         "threads started", "Size classes"}) {
    EXPECT_NE(report.find(s), std::string::npos) << "missing \"" << s << "\" in\n" << report;
  }
  EXPECT_NE(report.find("\n" + ClassLine(ClassOf(3000), 3072)), std::string::npos) << report;
  EXPECT_NE(report.find("\n" + ClassLine(HAK_STATS_CLASS_COUNT - 1, 0)), std::string::npos) << report;
}

// ---- Report at exit ----------------------------------------------------------------

// fork + exit(): the child runs the process's exit path (in a process started with
// HAKMEM_STATS=1: options are read once, at start).
TEST(StatsExitReport, DISABLED_ForkAndExitWithTheReport) {
  ChildResult r = RunChild([] {
    std::vector<void*> blocks;
    for (int i = 0; i < 100; i++) blocks.push_back(malloc(40));
    blocks.push_back(malloc(3000000));
    for (void* p : blocks) free(p);
    char pid[32];
    snprintf(pid, sizeof pid, "child pid %d\n", (int)getpid());
    if (write(2, pid, strlen(pid)) < 0) _exit(4);
    exit(0);
  });
  ASSERT_TRUE(r.exited && r.code == 0) << Describe(r);
  size_t at = r.err.find("hakmem stats report (variant stats, pid ");
  ASSERT_NE(at, std::string::npos) << r.err;
  // The report names the child, comes after the child's last line, and is complete.
  int child_pid = 0;
  ASSERT_EQ(sscanf(r.err.c_str(), "child pid %d", &child_pid), 1) << r.err;
  EXPECT_NE(r.err.find("pid " + std::to_string(child_pid) + ")"), std::string::npos) << r.err;
  EXPECT_GT(at, 0u);
  EXPECT_NE(r.err.find("Size classes", at), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("\n" + ClassLine(HAK_STATS_CLASS_COUNT - 1, 0), at), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("\n" + ClassLine(ClassOf(40), 48), at), std::string::npos) << r.err;
  fprintf(stderr, "fork-and-exit helper checked\n");
}

TEST(StatsExitReport, ForkedChildPrintsTheReportToStderrAtExit) {
  ChildResult r = RunSelfWithEnv("StatsExitReport.DISABLED_ForkAndExitWithTheReport", {"HAKMEM_STATS=1"});
  EXPECT_TRUE(r.exited && r.code == 0) << Describe(r);
  EXPECT_NE(r.err.find("fork-and-exit helper checked"), std::string::npos) << r.err;
}

// fork + exec of this very test binary: a whole fresh process, from start-up to exit,
// with HAKMEM_STATS=1. The helper mode runs from a static initializer, before gtest.
int RunExitReportHelperIfAsked() {
  const char* mode = getenv("HAK_TEST_EXIT_REPORT_HELPER");
  if (mode == nullptr || strcmp(mode, "1") != 0) return 0;
  std::vector<void*> blocks;
  for (int i = 0; i < 1000; i++) blocks.push_back(malloc(200));
  for (void* p : blocks) free(p);
  std::thread t([] { free(malloc(5000)); });
  t.join();
  exit(0);
}
const int g_exit_report_helper = RunExitReportHelperIfAsked();

TEST(StatsExitReport, FreshProcessPrintsTheReportAtExit) {
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  ASSERT_GT(n, 0);
  self[n] = '\0';
  ChildResult r = RunChild([&self] {
    char* argv[] = {self, nullptr};
    char* envp[] = {(char*)"HAKMEM_STATS=1", (char*)"HAK_TEST_EXIT_REPORT_HELPER=1", nullptr};
    execve(self, argv, envp);
    _exit(5);
  });
  ASSERT_TRUE(r.exited && r.code == 0) << Describe(r);
  EXPECT_EQ(r.err.rfind("hakmem stats report (variant stats, pid ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("Size classes"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("\n" + ClassLine(ClassOf(200), 208)), std::string::npos) << r.err;
  // The helper thread's 5000-byte block: counted although that thread had exited.
  EXPECT_NE(r.err.find("\n" + ClassLine(ClassOf(5000), 5120)), std::string::npos) << r.err;
  // Without HAKMEM_STATS=1 the same process prints nothing.
  ChildResult quiet = RunChild([&self] {
    char* argv[] = {self, nullptr};
    char* envp[] = {(char*)"HAK_TEST_EXIT_REPORT_HELPER=1", nullptr};
    execve(self, argv, envp);
    _exit(5);
  });
  ASSERT_TRUE(quiet.exited && quiet.code == 0) << Describe(quiet);
  EXPECT_EQ(quiet.err, "");
}

}  // namespace
}  // namespace hak_variant_test
