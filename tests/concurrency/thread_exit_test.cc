/* SPDX-License-Identifier: MIT */
// Thread exit: a dying thread's heap frees its empty pages and abandons the segments
// still in use; other threads free the blocks left behind (remote frees onto abandoned
// pages) and adopt those segments from their allocation slow path. Heap structs go back
// to a pool for the next thread. These tests check that memory of exited threads is
// reused (mapped bytes stay bounded over hundreds of thread lifetimes), that threads
// which freed everything leave nothing behind, that heap structs are reused, and that
// threads starting at the same moment never share a heap.
#include <gtest/gtest.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "conc_util.h"
#include "hakmem.h"
#include "hak_test_names.h"  // last: see its rule

extern "C" {
const void* conc_probe_current_heap(void);
size_t conc_probe_live_heaps(void);
}

namespace hak_test {
namespace {

void RunPthread(void* (*fn)(void*), void* arg) {
  pthread_t t;
  ASSERT_EQ(pthread_create(&t, nullptr, fn, arg), 0);
  ASSERT_EQ(pthread_join(t, nullptr), 0);
}

// ---- Blocks outliving their thread --------------------------------------------------

struct Orphans {
  int round;
  int thread;
  std::vector<Block> kept;  // blocks the thread left alive when it exited
  uint64_t bad = 0;         // allocation failures and pattern errors inside the thread
};

void* AllocateKeepHalfAndExit(void* arg) {
  Orphans* o = static_cast<Orphans*>(arg);
  Rng rng(o->round * 131 + o->thread);
  std::vector<Block> mine;
  mine.reserve(1500);
  for (int i = 0; i < 1500; i++) {
    Block b = NewBlock(RandomSize(rng, 512), ((uint64_t)o->round << 32) | ((uint64_t)o->thread << 24) | i);
    if (b.p == nullptr) {
      o->bad++;
      continue;
    }
    mine.push_back(b);
  }
  for (const Block& b : mine) {
    if (CheckPattern(b) != SIZE_MAX) o->bad++;
    if (rng.Below(2) == 0) free(b.p);
    else o->kept.push_back(b);
  }
  return nullptr;
}

// 200 rounds: two threads allocate, keep half their blocks alive and exit; the blocks
// are then verified and freed - one round later, half by the main thread and half by a
// long-lived "reaper" thread that also keeps allocating - while the next round's
// threads adopt the abandoned segments.
TEST(ThreadExit, BlocksOfExitedThreadsAreFreedElsewhereAndMemoryIsReused) {
  constexpr int kRounds = 200;
  constexpr int kThreadsPerRound = 2;
  constexpr int kWarmupRounds = 20;
  const hak_stats_t before = Stats();

  std::mutex mu;
  std::condition_variable cv;
  std::vector<Block> reaper_inbox;
  bool stop = false;
  std::atomic<uint64_t> reaper_bad{0}, reaper_freed{0};
  std::thread reaper([&] {
    Rng rng(5);
    std::vector<Block> own;
    uint64_t serial = 0;
    for (;;) {
      std::vector<Block> batch;
      {
        std::unique_lock<std::mutex> lk(mu);
        cv.wait(lk, [&] { return stop || !reaper_inbox.empty(); });
        if (reaper_inbox.empty() && stop) break;
        batch.swap(reaper_inbox);
      }
      for (const Block& b : batch) {
        if (CheckPattern(b) != SIZE_MAX) reaper_bad++;
        free(b.p);
        reaper_freed++;
      }
      // Keep allocating: this thread's slow path adopts abandoned segments too.
      for (int i = 0; i < 300; i++) {
        Block b = NewBlock(RandomSize(rng, 0), 0xAB00000000ull + serial++);
        if (b.p == nullptr) {
          reaper_bad++;
          continue;
        }
        own.push_back(b);
      }
      while (own.size() > 600) {
        size_t k = rng.Below(own.size());
        if (CheckPattern(own[k]) != SIZE_MAX) reaper_bad++;
        free(own[k].p);
        own[k] = own.back();
        own.pop_back();
      }
    }
    for (const Block& b : own) {
      if (CheckPattern(b) != SIZE_MAX) reaper_bad++;
      free(b.p);
    }
  });

  std::vector<Block> pending;  // previous round's orphans, freed after the next round
  uint64_t bad = 0, orphans_total = 0, main_freed = 0;
  uint64_t mapped_at_warmup = 0, peak = 0, early_peak = 0, late_peak = 0;
  Rng rng(99);
  for (int r = 0; r < kRounds; r++) {
    std::vector<Orphans> orphans(kThreadsPerRound);
    std::vector<pthread_t> threads(kThreadsPerRound);
    for (int t = 0; t < kThreadsPerRound; t++) {
      orphans[t].round = r;
      orphans[t].thread = t;
      ASSERT_EQ(pthread_create(&threads[t], nullptr, AllocateKeepHalfAndExit, &orphans[t]), 0);
    }
    // While the new threads run (and adopt), free the previous round's orphans.
    std::vector<Block> to_reaper;
    for (const Block& b : pending) {
      if (rng.Below(2) == 0) {
        to_reaper.push_back(b);
        continue;
      }
      if (CheckPattern(b) != SIZE_MAX) bad++;
      free(b.p);
      main_freed++;
    }
    pending.clear();
    {
      std::lock_guard<std::mutex> lk(mu);
      for (const Block& b : to_reaper) reaper_inbox.push_back(b);
    }
    cv.notify_one();
    for (int t = 0; t < kThreadsPerRound; t++) {
      ASSERT_EQ(pthread_join(threads[t], nullptr), 0);
      bad += orphans[t].bad;
      orphans_total += orphans[t].kept.size();
      for (const Block& b : orphans[t].kept) pending.push_back(b);
    }
    // The main thread keeps allocating as well.
    std::vector<void*> tmp;
    for (int i = 0; i < 200; i++) tmp.push_back(malloc(RandomSize(rng, 0)));
    for (void* p : tmp) {
      if (p == nullptr) bad++;
      free(p);
    }
    uint64_t mapped = UsedBytes();
    if (r == kWarmupRounds) mapped_at_warmup = mapped;
    if (r > kWarmupRounds) peak = std::max(peak, mapped);
    if (r >= kWarmupRounds && r < kWarmupRounds + 60) early_peak = std::max(early_peak, mapped);
    if (r >= kRounds - 60) late_peak = std::max(late_peak, mapped);
  }
  for (const Block& b : pending) {
    if (CheckPattern(b) != SIZE_MAX) bad++;
    free(b.p);
    main_freed++;
  }
  {
    std::lock_guard<std::mutex> lk(mu);
    stop = true;
  }
  cv.notify_one();
  reaper.join();
  const hak_stats_t after = Stats();

  EXPECT_EQ(bad, 0u);
  EXPECT_EQ(reaper_bad.load(), 0u);
  EXPECT_EQ(main_freed + reaper_freed.load(), orphans_total);
  EXPECT_GT(reaper_freed.load(), 0u);
  // Bound. Heaps holding segments at any time: main, the reaper, this round's two
  // threads, and the previous rounds' threads whose segments are abandoned or adopted
  // but still pinned by orphans not yet freed (orphans live for up to two rounds). With
  // sizes in every class a heap spans one small and three medium segments (one page
  // per class: 56 x 64 KiB + 24 x 512 KiB = 16 MiB); say eight such heaps, doubled for
  // pages pinned by scattered live blocks: 256 MiB, plus the segment cache (16 MiB),
  // live data (a few MiB) and slack: 384 MiB. In practice 100-230 MiB, fluctuating with
  // the rounds. Without reuse each round would leave ~2 x 16 MiB behind: > 5 GiB over
  // the 180 measured rounds.
  EXPECT_GT(mapped_at_warmup, 0u);
  EXPECT_LT(peak, before.region_used_bytes + 384 * MiB)
      << "in use before " << before.region_used_bytes / KiB << " KiB, peak after warm-up " << peak / KiB << " KiB";
  // And no trend: the last 60 rounds peak no higher than the first 60 after warm-up,
  // give or take the fluctuation of the heaps in flight (6 x 16 MiB).
  EXPECT_LT(late_peak, early_peak + 96 * MiB)
      << "peak of rounds " << kWarmupRounds << ".." << kWarmupRounds + 59 << ": " << early_peak / KiB
      << " KiB; of the last 60 rounds: " << late_peak / KiB << " KiB";
  printf("orphans: in use before %llu KiB, at warm-up %llu KiB, peak %llu KiB, end %llu KiB\n",
         (unsigned long long)(before.region_used_bytes / KiB), (unsigned long long)(mapped_at_warmup / KiB),
         (unsigned long long)(peak / KiB), (unsigned long long)(after.region_used_bytes / KiB));
#if HAK_STATS
  EXPECT_GT(after.segments_abandoned - before.segments_abandoned, 0u);
  EXPECT_GT(after.segments_adopted - before.segments_adopted, 0u);
  EXPECT_GE(after.threads_started - before.threads_started, (uint64_t)kRounds * kThreadsPerRound);
  EXPECT_GE(after.threads_ended - before.threads_ended, (uint64_t)kRounds * kThreadsPerRound);
  printf("abandoned %llu adopted %llu\n",
         (unsigned long long)(after.segments_abandoned - before.segments_abandoned),
         (unsigned long long)(after.segments_adopted - before.segments_adopted));
#endif
}

// ---- Threads that free everything ------------------------------------------------------

void* AllocateAndFreeEverything(void* arg) {
  uint64_t* bad = static_cast<uint64_t*>(arg);
  Rng rng((uintptr_t)arg);
  std::vector<Block> mine;
  mine.reserve(2000);
  for (int i = 0; i < 2000; i++) {
    Block b = NewBlock(RandomSize(rng, 128), i);
    if (b.p == nullptr) {
      (*bad)++;
      continue;
    }
    mine.push_back(b);
    if (rng.Below(3) == 0) {  // free some in a different order than allocated
      size_t k = rng.Below(mine.size());
      if (CheckPattern(mine[k]) != SIZE_MAX) (*bad)++;
      free(mine[k].p);
      mine[k] = mine.back();
      mine.pop_back();
    }
  }
  for (const Block& b : mine) {
    if (CheckPattern(b) != SIZE_MAX) (*bad)++;
    free(b.p);
  }
  return nullptr;
}

TEST(ThreadExit, ThreadsThatFreedEverythingLeaveNothingBehind) {
  constexpr int kRounds = 50;
  constexpr int kThreads = 4;
  // One round first, so that the main thread's own structures (pthread bookkeeping)
  // are in place before the baseline.
  uint64_t warm_bad = 0;
  RunPthread(AllocateAndFreeEverything, &warm_bad);
  hak_collect(false);
  const hak_stats_t before = Stats();
  std::vector<uint64_t> bad(kThreads, 0);
  for (int r = 0; r < kRounds; r++) {
    std::vector<pthread_t> threads(kThreads);
    for (int t = 0; t < kThreads; t++) ASSERT_EQ(pthread_create(&threads[t], nullptr, AllocateAndFreeEverything, &bad[t]), 0);
    for (int t = 0; t < kThreads; t++) ASSERT_EQ(pthread_join(threads[t], nullptr), 0);
  }
  hak_collect(false);  // the whale ring may hold the threads' freed whales
  const hak_stats_t after = Stats();
  EXPECT_EQ(warm_bad, 0u);
  for (int t = 0; t < kThreads; t++) EXPECT_EQ(bad[t], 0u) << "thread " << t;
  // Every exited thread returned all its pages, so no segment of theirs is live; only
  // the main thread may have grown by one segment for its thread bookkeeping.
  EXPECT_LE(after.segments_live, before.segments_live + 1)
      << "before " << before.segments_live << " after " << after.segments_live;
  // Released segments go back to the region: no more units in use than before (plus
  // the main thread's one segment).
  EXPECT_LE(after.region_used_bytes, before.region_used_bytes + 4 * MiB)
      << "before " << before.region_used_bytes / KiB << " KiB, after " << after.region_used_bytes / KiB << " KiB";
#if HAK_STATS
  // Nothing was left in use at exit, so nothing was abandoned.
  EXPECT_EQ(after.segments_abandoned, before.segments_abandoned);
  EXPECT_GE(after.threads_ended - before.threads_ended, (uint64_t)kRounds * kThreads);
#endif
}

// ---- Heap reuse ------------------------------------------------------------------------

struct FewMallocs {
  const void* heap = nullptr;
  uint64_t bad = 0;
};

void* DoFewMallocs(void* arg) {
  FewMallocs* f = static_cast<FewMallocs*>(arg);
  static const size_t kSizes[] = {16, 100, 1000, 5000, 40000, 100000};
  void* blocks[6];
  for (int i = 0; i < 6; i++) {
    blocks[i] = malloc(kSizes[i]);
    if (blocks[i] == nullptr) f->bad++;
    else memset(blocks[i], i + 1, kSizes[i]);
  }
  f->heap = conc_probe_current_heap();
  for (int i = 0; i < 6; i++) {
    const unsigned char* p = (const unsigned char*)blocks[i];
    if (p != nullptr && (p[0] != i + 1 || p[kSizes[i] - 1] != i + 1)) f->bad++;
    free(blocks[i]);
  }
  return nullptr;
}

TEST(ThreadExit, TwoThousandShortLivedThreadsReuseHeaps) {
  constexpr int kThreads = 2000;
  FewMallocs warm;
  RunPthread(DoFewMallocs, &warm);
  const size_t live_before = conc_probe_live_heaps();
  const uint64_t mapped_before = UsedBytes();
  const uint64_t mapped_os_before = Stats().os_mapped_bytes;
  std::set<const void*> heaps;
  uint64_t bad = warm.bad;
  for (int i = 0; i < kThreads; i++) {
    FewMallocs f;
    RunPthread(DoFewMallocs, &f);
    bad += f.bad;
    EXPECT_NE(f.heap, nullptr);
    heaps.insert(f.heap);
    // The heap was handed back before pthread_join returned.
    if (i % 100 == 0) {
      EXPECT_EQ(conc_probe_live_heaps(), live_before) << "after thread " << i;
    }
  }
  EXPECT_EQ(bad, 0u);
  // One thread at a time: each one gets the heap the previous one gave back.
  EXPECT_LE(heaps.size(), 2u);
  EXPECT_EQ(conc_probe_live_heaps(), live_before);
  // 2000 heap structs of ~3-4 KiB would need ~8 MiB of fresh heap chunks; with reuse
  // nothing new is mapped (heap chunks are mapped directly) and no units stay in use.
  EXPECT_LT(UsedBytes(), mapped_before + 16 * MiB);
  EXPECT_LT(Stats().os_mapped_bytes, mapped_os_before + 1 * MiB);
}

// Threads started together hit the heap pool at the same moment: each must get a heap
// of its own (two threads on one heap corrupt it: nothing in a heap is locked).
struct StartTogether {
  std::atomic<int>* arrived;
  std::atomic<int>* go;
  std::atomic<int>* checked;
  int round;
  const void* heap = nullptr;
  void* block = nullptr;
};

void* FirstMallocTogether(void* arg) {
  StartTogether* s = static_cast<StartTogether*>(arg);
  s->arrived->fetch_add(1);
  for (int spins = 0; s->go->load(std::memory_order_acquire) != s->round; spins++) {
    if (spins % 4096 == 4095) sched_yield();  // 2 cores: let the main thread run
  }
  s->block = malloc(64);  // this thread's first allocation: takes a heap from the pool
  if (s->block != nullptr) memset(s->block, 0x5A, 64);
  s->heap = conc_probe_current_heap();
  s->arrived->fetch_add(1);
  // Stay alive until the main thread compared the heaps.
  while (s->checked->load(std::memory_order_acquire) != s->round) sched_yield();
  free(s->block);
  return nullptr;
}

// Returns the first round in which two live threads shared a heap, or -1.
int RunStartTogetherRounds(int rounds, int threads_per_round) {
  std::atomic<int> go{-1}, checked{-1};
  for (int r = 0; r < rounds; r++) {
    std::atomic<int> arrived{0};
    std::vector<StartTogether> st(threads_per_round);
    std::vector<pthread_t> threads(threads_per_round);
    for (int t = 0; t < threads_per_round; t++) {
      st[t].arrived = &arrived;
      st[t].go = &go;
      st[t].checked = &checked;
      st[t].round = r;
      if (pthread_create(&threads[t], nullptr, FirstMallocTogether, &st[t]) != 0) return -2;
    }
    while (arrived.load() < threads_per_round) sched_yield();
    go.store(r, std::memory_order_release);
    while (arrived.load() < 2 * threads_per_round) sched_yield();
    std::set<const void*> heaps;
    bool bad = false;
    for (int t = 0; t < threads_per_round; t++) {
      if (st[t].block == nullptr || st[t].heap == nullptr) bad = true;
      heaps.insert(st[t].heap);
    }
    if (heaps.size() != (size_t)threads_per_round) bad = true;
    checked.store(r, std::memory_order_release);
    for (int t = 0; t < threads_per_round; t++) pthread_join(threads[t], nullptr);
    if (bad) return r;
  }
  return -1;
}

TEST(ThreadExit, ThreadsStartingTogetherGetDistinctHeaps) {
  // In a child process: should two threads ever share a heap, the allocator's state is
  // corrupt from then on and must not poison the tests that follow.
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Fewer rounds under ASan/TSan (kScale): at their speed 2000 rounds come close to
    // the 60 s deadline below. (TSan would also report two threads sharing a heap as
    // a data race at once.)
    int shared = RunStartTogetherRounds((int)hak_test_env::Scaled(2000), 6);
    if (shared >= 0) {
      fprintf(stderr, "two live threads got the same heap in round %d\n", shared);
      _exit(1);
    }
    _exit(shared == -1 ? 0 : 2);
  }
  int code = WaitChild(pid, 60.0);
  EXPECT_EQ(code, 0) << DescribeChild(code)
                     << " (exit code 1: two threads that started together shared one heap; see stderr)";
}

// ---- Allocation after the heap was torn down ---------------------------------------------

// A pthread key created after hakmem's runs its destructor after hakmem tore the
// thread's heap down. That destructor frees blocks of the dead heap (now in abandoned
// segments) and allocates again, which gives the thread a new heap; glibc then runs
// hakmem's destructor again, so that heap must be torn down too.
pthread_key_t g_late_key;
std::atomic<uint64_t> g_late_bad{0};
std::atomic<uint64_t> g_late_heap_in_destructor{0};
std::mutex g_late_mu;
std::vector<Block> g_late_survivors;

void LateKeyDestructor(void* value) {
  std::vector<Block>* blocks = static_cast<std::vector<Block>*>(value);
  for (const Block& b : *blocks) {
    if (CheckPattern(b) != SIZE_MAX) g_late_bad++;
    free(b.p);
  }
  delete blocks;
  Block b = NewBlock(3000, 0x1A7E);
  if (b.p == nullptr) {
    g_late_bad++;
    return;
  }
  if (conc_probe_current_heap() != nullptr) g_late_heap_in_destructor++;
  void* scratch = malloc(200);
  free(scratch);
  std::lock_guard<std::mutex> lk(g_late_mu);
  g_late_survivors.push_back(b);
}

void* UseLateKey(void*) {
  auto* blocks = new std::vector<Block>();
  Rng rng(pthread_self());
  for (int i = 0; i < 200; i++) {
    Block b = NewBlock(RandomSize(rng, 64), i);
    if (b.p == nullptr) g_late_bad++;
    else blocks->push_back(b);
  }
  pthread_setspecific(g_late_key, blocks);
  return nullptr;
}

TEST(ThreadExit, AllocationInALaterKeyDestructorIsCleanedUp) {
  FewMallocs warm;
  RunPthread(DoFewMallocs, &warm);  // make sure hakmem's key exists before ours
  ASSERT_EQ(pthread_key_create(&g_late_key, LateKeyDestructor), 0);
  const size_t live_before = conc_probe_live_heaps();
  constexpr int kThreads = 100;
  for (int i = 0; i < kThreads; i++) RunPthread(UseLateKey, nullptr);
  EXPECT_EQ(g_late_bad.load(), 0u);
  EXPECT_EQ(g_late_heap_in_destructor.load(), (uint64_t)kThreads);
  // Every heap made inside the destructor was torn down by glibc's next round.
  EXPECT_EQ(conc_probe_live_heaps(), live_before);
  std::lock_guard<std::mutex> lk(g_late_mu);
  EXPECT_EQ(g_late_survivors.size(), (size_t)kThreads);
  for (const Block& b : g_late_survivors) {
    EXPECT_EQ(CheckPattern(b), SIZE_MAX);
    free(b.p);
  }
  g_late_survivors.clear();
  pthread_key_delete(g_late_key);
}

}  // namespace
}  // namespace hak_test
