/* SPDX-License-Identifier: MIT */
// policy_hook_test.cc - the adaptive policy inside hakmem (HAKMEM_POLICY): each case
// runs in a child of its own (RunSelf), with its options. The allocations go through
// the hak_* API; malloc stays the C library's, wrapped here to count calls, so the
// test sees whether the policy's hook ever calls it.
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "hak_test_env.h"
#include "hak_test_self.h"
#include "hakmem.h"
#include "hakmem/hak_policy.h"

extern "C" {
hak_policy_setting_t policy_probe_options(void);
void policy_probe_read(hak_policy_status_t* out);
void policy_probe_tick(uint64_t now_ms);
uint64_t policy_probe_now_ms(void);
uint64_t policy_probe_epoch_ms(void);
void policy_probe_hold_lock(void);
void policy_probe_release_lock(void);
}

// ---- Counting the C library's malloc (not under ASan/TSan, whose runtimes own it) ----
static std::atomic<uint64_t> g_mallocs{0};
#if !HAK_TEST_ASAN && !HAK_TEST_TSAN
#define POLICY_COUNTS_MALLOC 1
extern "C" {
void* __libc_malloc(size_t);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void __libc_free(void*);
void* malloc(size_t n) {
  g_mallocs.fetch_add(1, std::memory_order_relaxed);
  return __libc_malloc(n);
}
void* calloc(size_t n, size_t m) {
  g_mallocs.fetch_add(1, std::memory_order_relaxed);
  return __libc_calloc(n, m);
}
void* realloc(void* p, size_t n) {
  g_mallocs.fetch_add(1, std::memory_order_relaxed);
  return __libc_realloc(p, n);
}
void free(void* p) {
  __libc_free(p);
}
}
#else
#define POLICY_COUNTS_MALLOC 0
#endif

namespace {

// Runs Policy.DISABLED_<test> in a child with `env`; the child must pass.
void ExpectChildPasses(const char* test, const std::vector<std::string>& env) {
  int status;
  std::string out = RunSelf(std::string("Policy.DISABLED_") + test, env, &status);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  EXPECT_NE(out.find("[  PASSED  ] 1 test"), std::string::npos) << out;
}

bool WithinCaps(const hak_policy_setting_t& s, const hak_policy_setting_t& caps) {
  return s.whale_slots <= caps.whale_slots && s.whale_bytes <= caps.whale_bytes &&
         s.bigcache_slots <= caps.bigcache_slots && s.bigcache_bytes <= caps.bigcache_bytes &&
         s.purge_delay_ms <= caps.purge_delay_ms && s.purge_batch_bytes <= caps.purge_batch_bytes;
}

bool Equal(const hak_policy_setting_t& a, const hak_policy_setting_t& b) {
  return memcmp(&a, &b, sizeof a) == 0;
}

// Whales and big blocks of changing sizes, freed at once: every free ticks the purge
// (and so the policy), the caches fill and evict.
void Churn(int i) {
  size_t size = ((size_t)(2 + i % 9) << 20) + (size_t)(i % 5) * 4096;
  char* p = static_cast<char*>(hak_malloc(size));
  ASSERT_NE(p, nullptr);
  p[0] = p[size - 1] = (char)i;
  hak_free(p);
}

const std::vector<std::string> kOn = {"HAKMEM_POLICY=1", "HAKMEM_POLICY_EPOCH_MS=10", "HAKMEM_WHALE_BYTES=128m",
                                      "HAKMEM_WHALE_SLOTS=16", "HAKMEM_PURGE_DELAY_MS=50"};

TEST(Policy, OffByDefault) {
  ExpectChildPasses("OffByDefault", {"HAKMEM_WHALE_BYTES=128m", "HAKMEM_PURGE_DELAY_MS=50"});
}
TEST(Policy, DISABLED_OffByDefault) {
  hak_policy_setting_t before = policy_probe_options();
  EXPECT_EQ(before.whale_bytes, 128u << 20);
  EXPECT_EQ(before.purge_delay_ms, 50u);
  uint64_t end = policy_probe_now_ms() + 300;
  for (int i = 0; policy_probe_now_ms() < end; i++) Churn(i);
  hak_policy_status_t st;
  policy_probe_read(&st);
  EXPECT_FALSE(st.on);
  EXPECT_EQ(st.learner.epochs, 0u);
  EXPECT_TRUE(Equal(before, policy_probe_options()));  // nobody turned the knobs
}

TEST(Policy, OptionsParsedAndBadValuesWarned) {
  int status;
  std::string out = RunSelf("Policy.DISABLED_EpochIs30", {"HAKMEM_POLICY_EPOCH_MS=30ms", "HAKMEM_POLICY_SEED=7"}, &status);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  EXPECT_EQ(out.find("hakmem: warning"), std::string::npos) << out;
  out = RunSelf("Policy.DISABLED_StaysOff", {"HAKMEM_POLICY=maybe", "HAKMEM_POLICY_EPOCH_MS=5"}, &status);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  EXPECT_NE(out.find("hakmem: warning: HAKMEM_POLICY=maybe: not a boolean (1, yes, true, on or 0, no, false, off); "
                     "keeping 0\n"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("hakmem: warning: HAKMEM_POLICY_EPOCH_MS=5: out of range (range 10 .. 60000); keeping 200\n"),
            std::string::npos)
      << out;
}
TEST(Policy, DISABLED_EpochIs30) {
  EXPECT_EQ(policy_probe_epoch_ms(), 30u);
  hak_policy_status_t st;
  policy_probe_read(&st);
  EXPECT_FALSE(st.on);
}
TEST(Policy, DISABLED_StaysOff) {
  EXPECT_EQ(policy_probe_epoch_ms(), 200u);
  Churn(1);
  hak_policy_status_t st;
  policy_probe_read(&st);
  EXPECT_FALSE(st.on);
}

TEST(Policy, PlaysEveryArmWithinTheCaps) {
  ExpectChildPasses("PlaysEveryArmWithinTheCaps", kOn);
}
TEST(Policy, DISABLED_PlaysEveryArmWithinTheCaps) {
  hak_policy_status_t st;
  policy_probe_read(&st);
  ASSERT_TRUE(st.on);
  // The caps are the options as set at start.
  EXPECT_EQ(st.caps.whale_bytes, 128u << 20);
  EXPECT_EQ(st.caps.whale_slots, 16u);
  EXPECT_EQ(st.caps.purge_delay_ms, 50u);
  uint64_t deadline = policy_probe_now_ms() + 20000;
  for (int i = 0; policy_probe_now_ms() < deadline; i++) {
    Churn(i);
    hak_policy_setting_t now = policy_probe_options();
    ASSERT_TRUE(WithinCaps(now, st.caps)) << "op " << i;
    if (i % 64 == 0) {
      policy_probe_read(&st);
      if (st.learner.epochs >= 3 * HAK_POLICY_ARMS) break;
    }
  }
  policy_probe_read(&st);
  ASSERT_GE(st.learner.epochs, (uint64_t)(3 * HAK_POLICY_ARMS));
  for (int a = 0; a < HAK_POLICY_ARMS; a++) EXPECT_GE(st.learner.pulls[a], 1u) << "arm " << a;
  // The options are the arm in force, exactly.
  hak_policy_setting_t want = hak_policy_resolve(&st.caps, st.arm);
  EXPECT_TRUE(Equal(want, policy_probe_options()));
}

TEST(Policy, TheHookNeverCallsMallocNorTheOs) {
  if (!POLICY_COUNTS_MALLOC) GTEST_SKIP() << "the sanitizer's runtime owns malloc: calls not counted";
  ExpectChildPasses("TheHookNeverCallsMallocNorTheOs",
                    {"HAKMEM_POLICY=1", "HAKMEM_POLICY_EPOCH_MS=10", "HAKMEM_POLICY_LOG=1"});
}
TEST(Policy, DISABLED_TheHookNeverCallsMallocNorTheOs) {
  for (int i = 0; i < 64; i++) Churn(i);  // caches and region in use
  hak_stats_t before, after;
  before.size = after.size = sizeof(hak_stats_t);
  ASSERT_EQ(hak_stats_get(&before), 0);
  hak_policy_status_t st0, st1;
  policy_probe_read(&st0);
  uint64_t now = policy_probe_now_ms(), step = policy_probe_epoch_ms();
  // The counter counts: a malloc here is seen.
  uint64_t m0 = g_mallocs.load();
  void* volatile probe = malloc(24);
  free(probe);
  EXPECT_EQ(g_mallocs.load(), m0 + 1);
  m0 = g_mallocs.load();
  for (int e = 1; e <= 50; e++) policy_probe_tick(now + (uint64_t)e * step);  // each ends an epoch
  uint64_t m1 = g_mallocs.load();
  EXPECT_EQ(m1, m0) << "the policy's epoch ends called malloc";
  policy_probe_read(&st1);
  EXPECT_EQ(st1.learner.epochs, st0.learner.epochs + 50);
  ASSERT_EQ(hak_stats_get(&after), 0);
  EXPECT_EQ(after.os_mmap.count, before.os_mmap.count);
  EXPECT_EQ(after.os_munmap.count, before.os_munmap.count);
  EXPECT_EQ(after.os_madvise.count, before.os_madvise.count);
  EXPECT_EQ(after.os_mremap.count, before.os_mremap.count);
  EXPECT_EQ(after.os_mprotect.count, before.os_mprotect.count);
}

TEST(Policy, TwoThreadsEndEpochsUnderTheTryLock) {
  ExpectChildPasses("TwoThreadsEndEpochsUnderTheTryLock", kOn);
}
TEST(Policy, DISABLED_TwoThreadsEndEpochsUnderTheTryLock) {
  hak_policy_status_t st0, st1;
  policy_probe_read(&st0);
  uint64_t base = policy_probe_now_ms(), step = policy_probe_epoch_ms();
  std::atomic<int> ready{0};
  int ticks = (int)hak_test_env::Scaled(2000, 100);
  auto run = [&](int id) {
    ready.fetch_add(1);
    while (ready.load() < 2) {
    }
    for (int i = 0; i < ticks; i++) {
      // Both threads claim the same epoch ends: the try-lock lets one end each.
      policy_probe_tick(base + (uint64_t)(i + 1) * step * 2);
      if (i % 16 == id) Churn(i);
    }
  };
  std::thread a(run, 0), b(run, 1);
  a.join();
  b.join();
  policy_probe_read(&st1);
  uint64_t ended = st1.learner.epochs - st0.learner.epochs;
  // A thread that finds the lock taken skips its claim and runs ahead; the other then
  // finds its claims older than the epoch in force: fewer ends than claims, never more
  // (bar a real-time end or two from the churn's own ticks).
  EXPECT_GE(ended, 1u);
  EXPECT_LE(ended, (uint64_t)ticks + 4);
  uint64_t pulls = 0;
  for (int a2 = 0; a2 < HAK_POLICY_ARMS; a2++) pulls += st1.learner.pulls[a2];
  EXPECT_EQ(pulls, st1.learner.epochs);  // every end counted once, whole
  double total = 0;
  for (int a2 = 0; a2 < HAK_POLICY_ARMS; a2++) total += st1.learner.elo[a2];
  EXPECT_NEAR(total, HAK_POLICY_ARMS * HAK_POLICY_ELO_START, 1e-6);  // no torn update
  EXPECT_TRUE(WithinCaps(policy_probe_options(), st1.caps));
}

// fork() while another thread ends an epoch (holds the policy's lock): the fork waits
// for it (hakmem's fork handlers take the lock), so the child neither inherits a lock
// nobody will release (hak_policy_read would wait forever) nor stops ending epochs (the
// try-lock would fail forever).
TEST(Policy, AForkDuringAnEpochsEndLeavesTheChildAWorkingPolicy) {
  ExpectChildPasses("AForkDuringAnEpochsEndLeavesTheChildAWorkingPolicy", kOn);
}
TEST(Policy, DISABLED_AForkDuringAnEpochsEndLeavesTheChildAWorkingPolicy) {
  std::atomic<bool> held{false}, forked{false};
  std::thread holder([&] {
    policy_probe_hold_lock();
    held.store(true);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    policy_probe_release_lock();
    // Still running when the fork completes: a thread that was exiting then counts as
    // a leak in a TSan child.
    while (!forked.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  while (!held.load()) std::this_thread::yield();
  pid_t pid = fork();
  if (pid != 0) forked.store(true);
  if (pid < 0) holder.join();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    alarm(30);  // a child stuck on the lock dies of SIGALRM
    hak_policy_status_t st0, st1;
    policy_probe_read(&st0);
    uint64_t now = policy_probe_now_ms(), step = policy_probe_epoch_ms();
    for (int e = 1; e <= 3; e++) policy_probe_tick(now + (uint64_t)e * step);
    policy_probe_read(&st1);
    _exit(st1.learner.epochs == st0.learner.epochs + 3 ? 0 : 1);
  }
  holder.join();
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status)) << "the child was killed by signal " << WTERMSIG(status)
                                 << (WTERMSIG(status) == SIGALRM ? " (SIGALRM: stuck on the policy's lock)" : "");
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the child ended fewer epochs than it ticked";
}

}  // namespace
