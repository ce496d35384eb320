/* SPDX-License-Identifier: MIT */
// conc_util.h - helpers shared by the concurrency tests: block patterns, a bounded
// batch queue, a size generator and mapped-memory sampling. Header-only, C++17.
#ifndef HAK_TESTS_CONCURRENCY_CONC_UTIL_H
#define HAK_TESTS_CONCURRENCY_CONC_UTIL_H

#include <dirent.h>
#include <gtest/gtest.h>
#include <malloc.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include "hak_test_env.h"
#include "hakmem.h"
// After the system headers: NewBlock below calls malloc (hak_malloc under ASan/TSan).
// So this header, too, goes after every system header in the .cc files.
#include "hak_test_names.h"

namespace hak_test {

constexpr size_t KiB = 1024;
constexpr size_t MiB = 1024 * 1024;

// One allocated block in flight between threads.
struct Block {
  unsigned char* p = nullptr;
  size_t size = 0;
  uint64_t seed = 0;
};

inline unsigned char PatternByte(uint64_t seed, size_t i) {
  uint64_t x = seed ^ (i * 0x9E3779B97F4A7C15ull);
  x ^= x >> 29;
  return (unsigned char)(x ^ (x >> 8));
}

// Bytes of a block that carry the pattern: the first and last 64 bytes and one byte
// every 997 (so every OS page of a big block is touched) - enough to detect overlap
// between two live blocks, cheap enough for millions of blocks.
template <typename F>
inline void ForEachPatternIndex(size_t size, F f) {
  size_t head = std::min<size_t>(size, 64);
  for (size_t i = 0; i < head; i++) f(i);
  for (size_t i = 64; i + 64 < size; i += 997) f(i);
  for (size_t i = size > 64 ? std::max<size_t>(size - 64, 64) : size; i < size; i++) f(i);
}

inline void FillPattern(const Block& b) {
  ForEachPatternIndex(b.size, [&](size_t i) { b.p[i] = PatternByte(b.seed, i); });
}

// Returns the first index whose byte is wrong, or SIZE_MAX when the pattern is intact.
inline size_t CheckPattern(const Block& b) {
  size_t bad = SIZE_MAX;
  ForEachPatternIndex(b.size, [&](size_t i) {
    if (bad == SIZE_MAX && b.p[i] != PatternByte(b.seed, i)) bad = i;
  });
  return bad;
}

// Small fast PRNG (xorshift64*), one per thread.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x2545F4914F6CDD1Dull + 0x9E3779B97F4A7C15ull) {}
  uint64_t Next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
  size_t Below(size_t n) { return (size_t)(Next() % n); }
};

// Sizes across every tier: mostly tiny (16 B .. 1 KiB), some mid (1 KiB .. 64 KiB,
// log-uniform so every mid class is hit), and 1 in `huge_one_in` above 64 KiB: mostly
// L2.5 (64 KiB + 1 .. 256 KiB), one in eight big blocks and whales (1 MiB .. 6 MiB).
// huge_one_in == 0 disables them.
inline size_t RandomSize(Rng& rng, size_t huge_one_in = 256) {
  if (huge_one_in != 0 && rng.Below(huge_one_in) == 0) {
    if (rng.Below(8) != 0) return 64 * KiB + 1 + rng.Below(192 * KiB);
    return 1024 * KiB + 1 + rng.Below(5 * 1024 * KiB);
  }
  uint64_t r = rng.Below(100);
  if (r < 85) return 1 + rng.Below(1024);
  size_t shift = 10 + rng.Below(6);  // 1 KiB .. 32 KiB base
  size_t base = (size_t)1 << shift;
  return base + 1 + rng.Below(base);  // (base, 2*base]: up to 64 KiB
}

// Memory hakmem has in use: region units handed out (pool segments and whales). Freed
// memory stays mapped in the region (and purged), so mapped address space no longer
// tells whether memory is reused; units in use do.
inline uint64_t UsedBytes() {
  hak_stats_t s;
  hak_stats_read(&s);
  return s.region_used_bytes;
}

inline hak_stats_t Stats() {
  hak_stats_t s;
  hak_stats_read(&s);
  return s;
}

// Allocates a block of `size` with a fresh pattern; aborts the test helper on NULL
// (callers check b.p).
inline Block NewBlock(size_t size, uint64_t seed) {
  Block b;
  b.p = (unsigned char*)malloc(size);
  b.size = size;
  b.seed = seed;
  if (b.p != nullptr) FillPattern(b);
  return b;
}

// Bounded multi-producer multi-consumer queue of batches. Pop returns false once the
// queue is empty and every producer has called Done().
class BatchQueue {
 public:
  BatchQueue(size_t max_batches, int producers) : max_batches_(max_batches), producers_(producers) {}

  void Push(std::vector<Block>&& batch) {
    std::unique_lock<std::mutex> lk(mu_);
    not_full_.wait(lk, [&] { return q_.size() < max_batches_; });
    q_.push_back(std::move(batch));
    not_empty_.notify_one();
  }

  bool Pop(std::vector<Block>* out) {
    std::unique_lock<std::mutex> lk(mu_);
    not_empty_.wait(lk, [&] { return !q_.empty() || producers_ == 0; });
    if (q_.empty()) return false;
    *out = std::move(q_.front());
    q_.pop_front();
    not_full_.notify_one();
    return true;
  }

  void Done() {
    std::lock_guard<std::mutex> lk(mu_);
    producers_--;
    not_empty_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable not_empty_, not_full_;
  std::deque<std::vector<Block>> q_;
  size_t max_batches_;
  int producers_;
};

// Running maximum of the bytes in use, updated from any thread.
class PeakTracker {
 public:
  void Sample() {
    uint64_t v = UsedBytes();
    uint64_t cur = peak_.load(std::memory_order_relaxed);
    while (v > cur && !peak_.compare_exchange_weak(cur, v)) {
    }
  }
  uint64_t Peak() const { return peak_.load(); }

 private:
  std::atomic<uint64_t> peak_{0};
};

// ---- Watchdog ------------------------------------------------------------------------

// A test stuck inside hakmem (a lost hand-off, a corrupted heap) would otherwise sit
// until the test runner's timeout. Every test here takes seconds, so after 120 s the
// watchdog names the test and aborts: a prompt, attributable failure. It is a hang
// guard, not a timing assertion.
constexpr unsigned kWatchdogSeconds = 120;

// Name of the running test, for the watchdog message.
inline char* WatchdogTestName() {
  static char name[256];
  return name;
}

inline void WatchdogFired(int) {
  static const char kPrefix[] = "\nhakmem test watchdog: still running after 120 s: ";
  if (write(2, kPrefix, sizeof kPrefix - 1) < 0) _exit(3);
  if (write(2, WatchdogTestName(), strlen(WatchdogTestName())) < 0) _exit(3);
  if (write(2, "\n", 1) < 0) _exit(3);
  abort();
}

class WatchdogListener : public ::testing::EmptyTestEventListener {
  void OnTestStart(const ::testing::TestInfo& info) override {
    snprintf(WatchdogTestName(), 256, "%s.%s", info.test_suite_name(), info.name());
    signal(SIGALRM, WatchdogFired);
    alarm(kWatchdogSeconds);
  }
  void OnTestEnd(const ::testing::TestInfo&) override { alarm(0); }
};

inline bool InstallWatchdog() {
  ::testing::UnitTest::GetInstance()->listeners().Append(new WatchdogListener);
  return true;
}

// One per test binary (each includes this header from one .cc).
static const bool g_watchdog_installed __attribute__((unused)) = InstallWatchdog();

// ---- Child processes ------------------------------------------------------------

constexpr int kChildHung = -1;

inline double NowSeconds() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

// The first line of /proc/<pid>/task/<tid>/<file>, without its newline ("" if none).
inline std::string ReadTaskFile(pid_t pid, const char* tid, const char* file) {
  char path[96], line[256] = "";
  snprintf(path, sizeof path, "/proc/%d/task/%s/%s", (int)pid, tid, file);
  FILE* f = fopen(path, "r");
  if (f == nullptr) return "";
  if (fgets(line, sizeof line, f) == nullptr) line[0] = 0;
  fclose(f);
  line[strcspn(line, "\n")] = 0;
  return line;
}

// Says on stderr where a hung child's threads are, so that a hang seen once (on a
// loaded CI machine, say) can be told apart from slowness and traced: each thread's
// state, kernel wait channel and system call (number, stack pointer, program counter),
// then every thread's backtrace if gdb is installed and may attach.
inline void ReportHungChild(pid_t pid) {
  char dir[64];
  snprintf(dir, sizeof dir, "/proc/%d/task", (int)pid);
  DIR* d = opendir(dir);
  if (d == nullptr) return;
  std::string live;
  while (struct dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::string stat = ReadTaskFile(pid, e->d_name, "stat");
    size_t paren = stat.rfind(')');
    char state = paren != std::string::npos && paren + 2 < stat.size() ? stat[paren + 2] : '?';
    if (state != 'Z' && live.empty()) live = e->d_name;
    fprintf(stderr, "hung child %d, thread %s (%s): state %c, wchan %s, syscall %s\n", (int)pid, e->d_name,
            ReadTaskFile(pid, e->d_name, "comm").c_str(), state, ReadTaskFile(pid, e->d_name, "wchan").c_str(),
            ReadTaskFile(pid, e->d_name, "syscall").c_str());
  }
  closedir(d);
  if (live.empty() || access("/usr/bin/gdb", X_OK) != 0) return;
  char cmd[160];
  snprintf(cmd, sizeof cmd, "timeout 60 /usr/bin/gdb -nx -batch -p %s -ex 'thread apply all bt' </dev/null 1>&2",
           live.c_str());
  fflush(stderr);
  if (system(cmd) != 0) fprintf(stderr, "(gdb could not report the child's backtraces)\n");
}

// Waits for a child; returns its exit code, 128 + signal if it was killed by one, or
// kChildHung (after killing it) if it is still running after `deadline_s`.
inline int WaitChild(pid_t pid, double deadline_s) {
  double end = NowSeconds() + deadline_s;
  for (;;) {
    int status = 0;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
      return 255;
    }
    if (r < 0) return 254;
    if (NowSeconds() > end) {
      ReportHungChild(pid);
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return kChildHung;
    }
    usleep(2000);
  }
}

inline std::string DescribeChild(int code) {
  if (code == kChildHung) return "child hung (killed after the deadline)";
  if (code >= 128) return "child killed by signal " + std::to_string(code - 128);
  return "child exit code " + std::to_string(code);
}

}  // namespace hak_test

#endif  // HAK_TESTS_CONCURRENCY_CONC_UTIL_H
