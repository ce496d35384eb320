/* SPDX-License-Identifier: MIT */
// thread_churn_test.cc - thread churn at scale: 10,000 threads created over time, at
// most 64 alive at once, each allocating, freeing blocks other threads left, and
// leaving some of its own behind. Heaps of exited threads are reused (taken from the
// pool's idle list): about 64 heap structs are made, not 10,000; every block keeps its contents across the hand-offs. Runs under TSan too
// (the pool's idle list and the futex locks under contention).
#include <pthread.h>
#include <stdint.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "hak_test_env.h"
#include "hakmem.h"
#include "hak_test_names.h"  // last: see its rule

extern "C" size_t conc_probe_heaps_made(void);

namespace {

constexpr size_t kAlive = 64;
constexpr size_t kLeft = 4;  // blocks each thread leaves for others to free
constexpr size_t kSlots = 4096;

// A block carries its size in its first word and a tag at three places, so whoever
// frees it can check it without any other shared state.
struct Block {
  std::atomic<unsigned char*> p{nullptr};
};
Block g_slots[kSlots];

void Fill(unsigned char* p, size_t size, unsigned char tag) {
  memcpy(p, &size, sizeof size);
  p[sizeof size] = tag;
  p[size / 2] = tag;
  p[size - 1] = tag;
}

bool Intact(const unsigned char* p) {
  size_t size;
  memcpy(&size, p, sizeof size);
  unsigned char tag = p[sizeof size];
  return size >= 24 && size <= 20000 && p[size / 2] == tag && p[size - 1] == tag;
}

void Worker(size_t id, std::atomic<size_t>* bad) {
  static const size_t kSizes[] = {24, 100, 700, 3000, 20000};
  // Free what earlier threads left in some slots (cross-thread frees), then leave ours.
  for (size_t k = 0; k < kLeft; k++) {
    Block& b = g_slots[(id * 7 + k * 131) % kSlots];
    unsigned char* old = b.p.exchange(nullptr, std::memory_order_acquire);
    if (old != nullptr) {
      if (!Intact(old)) bad->fetch_add(1);
      free(old);
    }
  }
  void* local[16];
  for (size_t i = 0; i < 16; i++) {
    size_t size = kSizes[(id + i) % 5];
    local[i] = malloc(size);
    if (local[i] == nullptr) {
      bad->fetch_add(1);
      return;
    }
    Fill(static_cast<unsigned char*>(local[i]), size, (unsigned char)(id + i));
  }
  for (size_t i = 0; i < 16; i++) {
    if (!Intact(static_cast<unsigned char*>(local[i]))) bad->fetch_add(1);
    free(local[i]);
  }
  for (size_t k = 0; k < kLeft; k++) {
    size_t size = kSizes[(id + k) % 5];
    unsigned char* p = static_cast<unsigned char*>(malloc(size));
    if (p == nullptr) {
      bad->fetch_add(1);
      return;
    }
    Fill(p, size, (unsigned char)id);
    Block& b = g_slots[(id * 13 + k * 257 + 1) % kSlots];
    // Take the slot's previous block (if any) first: it is freed here, remotely.
    unsigned char* old = b.p.exchange(nullptr, std::memory_order_acquire);
    if (old != nullptr) {
      if (!Intact(old)) bad->fetch_add(1);
      free(old);
    }
    b.p.store(p, std::memory_order_release);
  }
}

TEST(ThreadChurn, TenThousandThreadsSixtyFourAtATimeReuseHeaps) {
  const size_t total = hak_test_env::Scaled(10000, 500);
  std::atomic<size_t> bad{0};
  std::vector<std::thread> alive;
  alive.reserve(kAlive);
  for (size_t id = 0; id < total; id++) {
    if (alive.size() == kAlive) {  // join the oldest half, keep the rest running
      for (size_t i = 0; i < kAlive / 2; i++) alive[i].join();
      alive.erase(alive.begin(), alive.begin() + kAlive / 2);
    }
    alive.emplace_back(Worker, id, &bad);
  }
  for (auto& t : alive) t.join();
  EXPECT_EQ(bad.load(), 0u) << "blocks lost their contents or malloc failed";
  for (Block& b : g_slots) {
    unsigned char* p = b.p.exchange(nullptr);
    if (p != nullptr) {
      EXPECT_TRUE(Intact(p));
      free(p);
    }
  }
  // Exited threads' heaps are reused: the heap structs made stay near the most threads
  // alive at once (64 workers and this one), not one per thread.
  size_t heaps = conc_probe_heaps_made();
  EXPECT_LE(heaps, kAlive + 8) << heaps << " heap structs for " << total << " threads, " << kAlive << " at a time";
  EXPECT_GE(heaps, 2u);
}

}  // namespace
