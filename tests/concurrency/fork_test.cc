/* SPDX-License-Identifier: MIT */
// fork(): hakmem's pthread_atfork handlers hold its global locks across fork, and the
// forking thread's heap keeps working in the child. Other threads' heaps are frozen in
// the child, mid-update or not; their blocks can still be freed there (remote path).
//
// Children never use gtest: they report through their exit code (0 = fine, other
// values name the failed step), and always leave with _exit. The parent waits with a
// generous deadline so that a child stuck in hakmem shows up as a failure, not as a
// test-runner timeout. Under TSan, children do not start threads (see
// RunOnNewChildThread).
#include <gtest/gtest.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "conc_util.h"
#include "hakmem.h"
#include "hak_test_names.h"  // last: see its rule

extern "C" void conc_probe_set_direct_busy(const void* block, int busy);

namespace hak_test {
namespace {

bool AllIntact(const std::vector<Block>& blocks) {
  for (const Block& b : blocks) {
    if (CheckPattern(b) != SIZE_MAX) return false;
  }
  return true;
}

// Mallocs and frees `n` blocks of every pool, keeping up to 256 alive; false on a NULL
// or a corrupted pattern.
bool Churn(uint64_t seed, int n) {
  Rng rng(seed);
  std::vector<Block> live;
  for (int i = 0; i < n; i++) {
    Block b = NewBlock(RandomSize(rng, 128), seed ^ i);
    if (b.p == nullptr) return false;
    live.push_back(b);
    if (live.size() > 256) {
      size_t k = rng.Below(live.size());
      if (CheckPattern(live[k]) != SIZE_MAX) return false;
      free(live[k].p);
      live[k] = live.back();
      live.pop_back();
    }
  }
  bool ok = AllIntact(live);
  for (const Block& b : live) free(b.p);
  return ok;
}

struct ChildThreadArgs {
  std::vector<Block>* parent_blocks;  // blocks of the child's main thread to free here
  bool ok = false;
};

void* ChildThreadMain(void* arg) {
  ChildThreadArgs* a = static_cast<ChildThreadArgs*>(arg);
  bool ok = AllIntact(*a->parent_blocks);
  for (const Block& b : *a->parent_blocks) free(b.p);  // remote frees onto the main heap
  ok = Churn(4242, 20000) && ok;
  a->ok = ok;
  return nullptr;
}

// Runs ChildThreadMain on a new thread of a forked child and waits for it. Returns 0,
// 1 when the thread could not be started, 2 when it could not be joined.
//
// ThreadSanitizer cannot start threads in the child of a multithreaded fork (it dies:
// "starting new threads after multi-threaded fork is not supported"). Under TSan the
// child runs the thread's share of the work on its own thread instead: its frees of
// the main thread's blocks are then local, not remote. Everything else - forking while
// other threads allocate and free, the child's use of every pre-fork block and of the
// allocator - is still checked under TSan.
int RunOnNewChildThread(ChildThreadArgs* args) {
#if HAK_TEST_TSAN
  ChildThreadMain(args);
  return 0;
#else
  pthread_t t;
  if (pthread_create(&t, nullptr, ChildThreadMain, args) != 0) return 1;
  if (pthread_join(t, nullptr) != 0) return 2;
  return 0;
#endif
}

// Everything a child does after fork(); returns its exit code.
int ChildWork(const std::vector<Block>& from_main, const std::vector<Block>& from_worker) {
  // 1. Blocks allocated before the fork are intact in the child's copy.
  if (!AllIntact(from_main)) return 10;
  if (!AllIntact(from_worker)) return 11;
  // 2. Free them: the main thread's locally, the (absent) worker's remotely.
  for (const Block& b : from_main) free(b.p);
  for (const Block& b : from_worker) free(b.p);
  // 3. The forking thread's heap keeps working, for every size.
  if (!Churn(777, 20000)) return 12;
  // 4. A new thread in the child gets a heap and frees blocks of the main thread.
  std::vector<Block> for_thread;
  Rng rng(31);
  for (int i = 0; i < 300; i++) {
    Block b = NewBlock(RandomSize(rng, 64), 0xC0000 + i);
    if (b.p == nullptr) return 13;
    for_thread.push_back(b);
  }
  ChildThreadArgs args;
  args.parent_blocks = &for_thread;
  if (int e = RunOnNewChildThread(&args)) return 13 + e;  // 14: create, 15: join
  if (!args.ok) return 16;
  // 5. And the main thread carries on after that thread exited.
  if (!Churn(888, 5000)) return 17;
  hak_stats_t s;
  if (hak_stats_read(&s) != 0 || s.os_mapped_bytes == 0) return 18;
  return 0;
}

// Worker threads of a busy parent: allocate, free, and swap blocks with each other
// through lock-free slots (so frees are cross-thread) until told to stop.
//
// A fork must not catch a worker inside the C library's or the sanitizer's runtime:
// only hakmem's state is under test. ASan (clang 14) takes no lock around fork, so a
// child forked while a thread was still starting (ASan registers it under a lock) or
// refilling a cache of ASan's allocator could hang in its own pthread_create or
// std::vector. So the test forks only once every worker runs its loop (Running()), and
// the loop's own bookkeeping never allocates (`mine` is reserved).
class BusyWorkers {
 public:
  explicit BusyWorkers(int n) : slots_(1024) {
    for (auto& s : slots_) s.store(nullptr);
    for (int t = 0; t < n; t++) threads_.emplace_back([this, t] { Run(t); });
  }
  ~BusyWorkers() { Stop(); }

  void Stop() {
    stop_.store(true);
    for (auto& t : threads_) t.join();
    threads_.clear();
    for (auto& s : slots_) free(s.exchange(nullptr));
  }
  uint64_t Errors() const { return errors_.load(); }
  uint64_t Iterations() const { return iterations_.load(); }
  int Running() const { return running_.load(); }

  // Blocks allocated by worker 0 and handed over, kept alive across the forks.
  std::vector<Block> TakeWorkerBlocks() {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return handed_over_; });
    return std::move(worker_blocks_);
  }

 private:
  void Run(int t) {
    Rng rng(900 + t);
    if (t == 0) {
      std::vector<Block> blocks;
      for (int i = 0; i < 300; i++) {
        Block b = NewBlock(RandomSize(rng, 64), 0xF0000 + i);
        if (b.p == nullptr) errors_++;
        else blocks.push_back(b);
      }
      std::lock_guard<std::mutex> lk(mu_);
      worker_blocks_ = std::move(blocks);
      handed_over_ = true;
      cv_.notify_all();
    }
    std::vector<void*> mine;
    mine.reserve(kMine + 1);
    running_.fetch_add(1);
    while (!stop_.load(std::memory_order_relaxed)) {
      size_t size = RandomSize(rng, 256);
      unsigned char* p = (unsigned char*)malloc(size);
      if (p == nullptr) {
        errors_++;
        continue;
      }
      p[0] = p[size - 1] = 0x77;
      // Put it in a random slot; free whatever was there (another thread's block).
      void* old = slots_[rng.Below(slots_.size())].exchange(p);
      if (old != nullptr) {
        if (((unsigned char*)old)[0] != 0x77) errors_++;
        free(old);
      }
      mine.push_back(malloc(1 + rng.Below(2000)));
      if (mine.size() > kMine) {
        size_t k = rng.Below(mine.size());
        free(mine[k]);
        mine[k] = mine.back();
        mine.pop_back();
      }
      iterations_.fetch_add(1, std::memory_order_relaxed);
    }
    for (void* q : mine) free(q);
  }

  static constexpr size_t kMine = 64;
  std::vector<std::atomic<void*>> slots_;
  std::vector<std::thread> threads_;
  std::atomic<int> running_{0};
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> errors_{0}, iterations_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool handed_over_ = false;
  std::vector<Block> worker_blocks_;
};

TEST(Fork, ChildOfBusyMultithreadedParentAllocatesFreesAndSpawnsThreads) {
  constexpr int kForks = 12;
  constexpr int kWorkers = 3;
  BusyWorkers workers(kWorkers);
  std::vector<Block> from_worker = workers.TakeWorkerBlocks();
  while (workers.Running() < kWorkers) sched_yield();
  std::vector<Block> from_main;
  Rng rng(3);
  for (int i = 0; i < 300; i++) {
    Block b = NewBlock(RandomSize(rng, 64), 0xA0000 + i);
    ASSERT_NE(b.p, nullptr);
    from_main.push_back(b);
  }
  for (int f = 0; f < kForks; f++) {
    // Let the workers get well into their loops between forks.
    uint64_t it = workers.Iterations();
    while (workers.Iterations() < it + 1000) sched_yield();
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) _exit(ChildWork(from_main, from_worker));
    int code = WaitChild(pid, 20.0);
    ASSERT_EQ(code, 0) << "fork " << f << ": " << DescribeChild(code);
  }
  workers.Stop();
  EXPECT_EQ(workers.Errors(), 0u);
  // The parent's copies were never touched by the children.
  EXPECT_TRUE(AllIntact(from_main));
  EXPECT_TRUE(AllIntact(from_worker));
  for (const Block& b : from_main) free(b.p);
  for (const Block& b : from_worker) free(b.p);
}

// Another thread holds blocks across the fork; afterwards the child frees its copies
// (remote frees onto the absent thread's pages) while in the parent that thread and
// the main thread both carry on with theirs.
TEST(Fork, ForkWhileAnotherThreadHoldsBlocksThenBothContinue) {
  std::mutex mu;
  std::condition_variable cv;
  int phase = 0;  // 1: holder published its blocks; 2: fork done, holder may continue
  std::vector<Block> held;
  bool holder_ok = false;
  std::thread holder([&] {
    Rng rng(17);
    std::vector<Block> mine;
    for (int i = 0; i < 1000; i++) {
      Block b = NewBlock(RandomSize(rng, 64), 0xB0000 + i);
      if (b.p != nullptr) mine.push_back(b);
    }
    {
      std::lock_guard<std::mutex> lk(mu);
      held = mine;
      phase = 1;
    }
    cv.notify_all();
    {
      std::unique_lock<std::mutex> lk(mu);
      cv.wait(lk, [&] { return phase == 2; });
    }
    bool ok = mine.size() == 1000 && AllIntact(mine);
    for (const Block& b : mine) free(b.p);  // local frees, after the child freed its copies
    ok = Churn(55, 20000) && ok;
    holder_ok = ok;
  });
  std::vector<Block> held_copy;
  {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [&] { return phase == 1; });
    held_copy = held;
  }
  std::vector<Block> mine;
  Rng rng(18);
  for (int i = 0; i < 500; i++) {
    Block b = NewBlock(RandomSize(rng, 64), 0xD0000 + i);
    ASSERT_NE(b.p, nullptr);
    mine.push_back(b);
  }
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (held_copy.size() != 1000 || !AllIntact(held_copy)) _exit(20);
    if (!AllIntact(mine)) _exit(21);
    // Half of the holder's blocks now, half after some allocation in between.
    for (size_t i = 0; i < held_copy.size(); i += 2) free(held_copy[i].p);
    if (!Churn(66, 10000)) _exit(22);
    for (size_t i = 1; i < held_copy.size(); i += 2) free(held_copy[i].p);
    ChildThreadArgs args;
    args.parent_blocks = &mine;  // the new thread frees the main thread's blocks
    if (int e = RunOnNewChildThread(&args)) _exit(22 + e);  // 23: create, 24: join
    if (!args.ok) _exit(25);
    if (!Churn(67, 10000)) _exit(26);
    _exit(0);
  }
  {
    std::lock_guard<std::mutex> lk(mu);
    phase = 2;
  }
  cv.notify_all();
  EXPECT_TRUE(AllIntact(mine));
  EXPECT_TRUE(Churn(68, 20000));
  for (const Block& b : mine) free(b.p);
  holder.join();
  EXPECT_TRUE(holder_ok);
  int code = WaitChild(pid, 20.0);
  EXPECT_EQ(code, 0) << DescribeChild(code);
}

// Fork while another thread is busy freeing the forking thread's blocks. The forking
// thread's pages keep filling up (8 blocks of 8 KiB per page), so many of those remote
// frees are delayed-free hand-offs (page state FREEING for a few instructions). The
// child frees the forking thread's remaining blocks and allocates more of that size,
// which touches every one of those pages again; it must never wait for a hand-off
// that will not finish in the child because the freeing thread does not exist there.
TEST(Fork, ForkWhileAnotherThreadFreesTheForkingThreadsBlocks) {
  constexpr size_t kSize = 8192;
  constexpr int kSlots = 2048;
  // Fewer forks under ASan/TSan (kScale): a fork of an ASan process, with its large
  // shadow mappings, takes about 250 ms here.
  const int kForks = (int)hak_test_env::Scaled(400);
  std::vector<std::atomic<void*>> slots(kSlots);
  for (auto& s : slots) s.store(nullptr);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> freed{0};
  std::atomic<bool> freer_running{false};
  std::thread freer([&] {
    freer_running.store(true);
    while (!stop.load(std::memory_order_relaxed)) {
      for (auto& s : slots) {
        void* p = s.exchange(nullptr, std::memory_order_acq_rel);
        if (p != nullptr) {
          free(p);
          freed.fetch_add(1, std::memory_order_relaxed);
        }
      }
    }
  });
  while (!freer_running.load()) sched_yield();  // not mid-start in ASan's runtime (see BusyWorkers)
  int failures = 0;
  std::string first_failure;
  size_t next = 0;
  for (int f = 0; f < kForks && failures == 0; f++) {
    // Refill the slots (the freer empties them concurrently).
    for (int i = 0; i < kSlots; i++, next++) {
      auto& s = slots[next % kSlots];
      if (s.load(std::memory_order_relaxed) != nullptr) continue;
      void* p = malloc(kSize);
      ASSERT_NE(p, nullptr);
      s.store(p, std::memory_order_release);
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      for (auto& s : slots) free(s.exchange(nullptr));  // local frees, possibly on full pages
      std::vector<void*> more;
      for (int i = 0; i < 4000; i++) {
        void* p = malloc(kSize);  // slow path: delayed frees, unfull, full again
        if (p == nullptr) _exit(30);
        ((char*)p)[0] = 1;
        more.push_back(p);
        if (more.size() > 100) {
          free(more.front());
          more.erase(more.begin());
        }
      }
      for (void* p : more) free(p);
      _exit(0);
    }
    int code = WaitChild(pid, 10.0);
    if (code != 0) {
      failures++;
      first_failure = "fork " + std::to_string(f) + ": " + DescribeChild(code);
    }
  }
  stop.store(true);
  freer.join();
  for (auto& s : slots) free(s.exchange(nullptr));
  EXPECT_EQ(failures, 0) << first_failure;
  EXPECT_GT(freed.load(), 0u);
}

// In the child, glibc gives a new thread the cached stack, and so the thread pointer,
// of a thread that existed only in the parent. hakmem knows threads by that pointer: a
// free by the new thread of the vanished thread's blocks took the local path, into a
// heap nobody owns in the child (and that may have been mid-update at the fork). The
// child now marks such heaps dead: those frees are remote (counted so by the stats
// variant), and the new thread's own heap serves it intact.
TEST(Fork, AChildThreadWithAVanishedThreadsIdentityFreesItsBlocksRemotely) {
#if HAK_TEST_TSAN
  GTEST_SKIP() << "TSan cannot start threads in the child of a multithreaded fork";
#endif
  constexpr int kBlocks = 2000;
  std::mutex mu;
  std::condition_variable cv;
  int phase = 0;  // 1: the holder published its blocks; 2: fork done
  std::vector<Block> held;
  uintptr_t holder_id = 0;
  std::thread holder([&] {
    std::vector<Block> mine;
    for (int i = 0; i < kBlocks; i++) {
      Block b = NewBlock(64, 0xE0000 + i);
      if (b.p != nullptr) mine.push_back(b);
    }
    {
      std::lock_guard<std::mutex> lk(mu);
      held = mine;
      holder_id = (uintptr_t)pthread_self();
      phase = 1;
    }
    cv.notify_all();
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [&] { return phase == 2; });
    lk.unlock();
    for (const Block& b : mine) free(b.p);
  });
  {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [&] { return phase == 1; });
  }
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    struct Args {
      const std::vector<Block>* held;
      uintptr_t holder_id;
      int code;
    } args{&held, holder_id, 0};
    pthread_t t;
    auto body = [](void* arg) -> void* {
      Args* a = static_cast<Args*>(arg);
      void* own = malloc(64);  // this thread's heap first
      if ((uintptr_t)pthread_self() != a->holder_id) {
        free(own);
        a->code = 77;  // this libc did not reuse the identity: nothing to check
        return nullptr;
      }
      if (!AllIntact(*a->held)) a->code = 30;
      hak_stats_t before, after;
      hak_stats_read(&before);
      for (const Block& b : *a->held) free(b.p);
      hak_stats_read(&after);
      if (before.counters_enabled &&
          (after.free_local - before.free_local != 0 || after.free_remote - before.free_remote < (uint64_t)kBlocks)) {
        a->code = 31;  // the frees went the local way
      }
      if (a->code == 0 && !Churn(77, 20000)) a->code = 32;
      free(own);
      return nullptr;
    };
    if (pthread_create(&t, nullptr, body, &args) != 0) _exit(33);
    if (pthread_join(t, nullptr) != 0) _exit(34);
    _exit(args.code);
  }
  {
    std::lock_guard<std::mutex> lk(mu);
    phase = 2;
  }
  cv.notify_all();
  holder.join();
  int code = WaitChild(pid, 20.0);
  if (code == 77) GTEST_SKIP() << "the child's new thread did not get the vanished thread's identity";
  EXPECT_EQ(code, 0) << DescribeChild(code);
}

// The child of a fork that cut short a free into an abandoned segment (a thread had
// taken the segment's direct_busy flag, which it holds for a few stores, and is gone
// in the child). Set here by hand on a segment of the forking thread. In the child
// that thread exits, so its segment is abandoned, and a new thread adopts it: the
// adopter waits for the flag to clear, which took forever when the child kept it.
void* AdoptAfterForkerExits(void* arg) {
  pthread_t forker = *static_cast<pthread_t*>(arg);
  if (pthread_join(forker, nullptr) != 0) _exit(40);  // its heap is abandoned now
  if (!Churn(99, 2000)) _exit(41);  // adopts the abandoned segments as it needs pages
  _exit(0);
}

void* ForkWithAFreeCutShort(void* arg) {
  pid_t* out = static_cast<pid_t*>(arg);
  void* p = malloc(64);  // keeps the segment in use, so it is abandoned at exit
  if (p == nullptr) return nullptr;
  conc_probe_set_direct_busy(p, 1);
  pid_t pid = fork();
  if (pid == 0) {
    static pthread_t forker;
    forker = pthread_self();
    pthread_t adopter;
    if (pthread_create(&adopter, nullptr, AdoptAfterForkerExits, &forker) != 0) _exit(42);
    pthread_exit(nullptr);  // the child's only other thread adopts what this leaves
  }
  conc_probe_set_direct_busy(p, 0);
  free(p);
  *out = pid;
  return nullptr;
}

TEST(Fork, AFreeIntoAnAbandonedSegmentCutShortByTheForkStallsNoAdopterInTheChild) {
#if HAK_TEST_TSAN
  GTEST_SKIP() << "TSan cannot start threads in the child of a multithreaded fork";
#endif
  fflush(stdout);
  fflush(stderr);
  pid_t pid = -1;
  pthread_t forker;
  ASSERT_EQ(pthread_create(&forker, nullptr, ForkWithAFreeCutShort, &pid), 0);
  ASSERT_EQ(pthread_join(forker, nullptr), 0);
  ASSERT_GT(pid, 0);
  int code = WaitChild(pid, 20.0);
  EXPECT_EQ(code, 0) << DescribeChild(code);
}

}  // namespace
}  // namespace hak_test
