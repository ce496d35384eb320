/* SPDX-License-Identifier: MIT */
// The hardened variant's ownership map (hak_segment.c): one bit per 4 MiB unit of a
// 57-bit address space, in lazily mapped leaves. Segments at any address a 64-bit
// kernel hands out are found: above 2^47 (aarch64 with 48-bit addresses, where mmap
// starts just below 2^48), up to 2^57 (x86_64 with five-level paging). The map only
// records addresses, so the tests mark units where nothing is mapped. Addresses beyond
// the map are not ours, never a fault. The release variant's twin answers "ours" for
// every non-null pointer.
#include <gtest/gtest.h>
#include <stdint.h>

#include <atomic>
#include <thread>
#include <vector>

#include "hakmem.h"

extern "C" {
void map_probe_set(uintptr_t segment, bool present);
bool map_probe_contains(uintptr_t p);
unsigned map_probe_address_bits(void);
size_t map_probe_leaf_bytes(void);
uintptr_t map_probe_leaf_span(void);
size_t map_probe_segment_size(void);
bool map_probe_hardened(void);
}

namespace {

constexpr uintptr_t kBit47 = (uintptr_t)1 << 47;
constexpr uintptr_t kBit48 = (uintptr_t)1 << 48;
constexpr uintptr_t kBit52 = (uintptr_t)1 << 52;
constexpr uintptr_t kBit56 = (uintptr_t)1 << 56;
constexpr uintptr_t kBit57 = (uintptr_t)1 << 57;

uint64_t MetaCalls(int kind) {
  hak_stats_t st;
  EXPECT_EQ(hak_stats_read(&st), 0);
  return st.os_by[HAK_STATS_OS_META][kind].count;
}

class SegmentMap : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!map_probe_hardened()) GTEST_SKIP() << "the ownership map exists in the hardened variant only";
    hak_free(hak_malloc(16));  // hakmem initialised, this thread's heap made
    seg_ = map_probe_segment_size();
  }
  // A unit is in the map for every pointer into it past its first byte (the first byte
  // belongs to the unit before: hak_segment_of masks p - 1) and up to its end.
  void ExpectUnit(uintptr_t unit, bool present) {
    EXPECT_EQ(map_probe_contains(unit + 1), present) << std::hex << unit;
    EXPECT_EQ(map_probe_contains(unit + seg_ / 2), present) << std::hex << unit;
    EXPECT_EQ(map_probe_contains(unit + seg_), present) << std::hex << unit;
  }
  size_t seg_ = 0;
};

// Units above the old 47-bit map's reach, up to its last unit below 2^57: set, found,
// neighbours untouched, cleared.
TEST_F(SegmentMap, FindsSegmentsAboveBit47UpToBit57) {
  ASSERT_GE(map_probe_address_bits(), 57u);
  const uintptr_t units[] = {
      kBit47,                 // the first unit the old map missed
      kBit47 + 3 * seg_,      //
      kBit48 - 4 * seg_,      // aarch64, 48-bit: where mmap starts
      kBit48 + 5 * seg_,      //
      kBit52 - 6 * seg_,      // aarch64, 52-bit
      kBit56 - seg_,          // near 2^56
      kBit56,                 //
      kBit56 + 7 * seg_,      //
      kBit57 - seg_,          // the last unit of x86_64 five-level paging
  };
  for (uintptr_t u : units) ExpectUnit(u, false);
  for (uintptr_t u : units) map_probe_set(u, true);
  for (uintptr_t u : units) {
    ExpectUnit(u, true);
    if (u != kBit56) ExpectUnit(u - seg_, false);  // (kBit56 - seg_ is set too)
  }
  EXPECT_FALSE(map_probe_contains(kBit47 + seg_ + 1));
  EXPECT_FALSE(map_probe_contains(kBit48 - 3 * seg_ + 1));
  EXPECT_FALSE(map_probe_contains(kBit56 + 8 * seg_ + 1));
  for (uintptr_t u : units) map_probe_set(u, false);
  for (uintptr_t u : units) ExpectUnit(u, false);
}

// Beyond 2^57 (tagged pointers, garbage): not ours, answered without a fault; marking
// there changes nothing.
TEST_F(SegmentMap, AddressesBeyondTheMapAreNotOurs) {
  const uintptr_t beyond[] = {kBit57 + 1, kBit57 + seg_ + 64, (uintptr_t)1 << 60, (uintptr_t)0xff << 56 | 0x1000,
                              UINTPTR_MAX - 15};
  for (uintptr_t p : beyond) EXPECT_FALSE(map_probe_contains(p)) << std::hex << p;
  map_probe_set(kBit57, true);
  map_probe_set((uintptr_t)1 << 62, true);
  EXPECT_FALSE(map_probe_contains(kBit57 + 1));
  EXPECT_FALSE(map_probe_contains(((uintptr_t)1 << 62) + 1));
  EXPECT_FALSE(map_probe_contains(0));
  EXPECT_FALSE(map_probe_contains(1));  // unit 0 (the null page)
}

// A leaf is mapped (one META mmap) when the first unit of its range is set, not for
// further units there, not for a clear of a range that never had one, and never unmapped.
TEST_F(SegmentMap, LeavesAreMappedOnFirstUseAndKept) {
  const uintptr_t span = map_probe_leaf_span();
  ASSERT_EQ(span, (uintptr_t)4 << 40);  // 2^20 units of 4 MiB
  const uintptr_t base = kBit56 + 17 * span;  // a leaf no other test uses
  const uint64_t maps0 = MetaCalls(HAK_STATS_OS_MMAP), unmaps0 = MetaCalls(HAK_STATS_OS_MUNMAP);
  map_probe_set(base + 40 * span, false);  // clear in a range without a leaf: nothing mapped
  EXPECT_FALSE(map_probe_contains(base + 40 * span + 1));
  EXPECT_EQ(MetaCalls(HAK_STATS_OS_MMAP), maps0);
  map_probe_set(base, true);
  EXPECT_EQ(MetaCalls(HAK_STATS_OS_MMAP), maps0 + 1);
  map_probe_set(base + span - seg_, true);  // the same leaf's last unit
  map_probe_set(base + 1000 * seg_, true);
  EXPECT_EQ(MetaCalls(HAK_STATS_OS_MMAP), maps0 + 1);
  map_probe_set(base + span, true);  // the next leaf's first unit
  EXPECT_EQ(MetaCalls(HAK_STATS_OS_MMAP), maps0 + 2);
  ExpectUnit(base, true);
  ExpectUnit(base + span - seg_, true);
  ExpectUnit(base + 1000 * seg_, true);
  ExpectUnit(base + span, true);
  ExpectUnit(base + seg_, false);
  for (uintptr_t u : {base, base + span - seg_, base + 1000 * seg_, base + span}) map_probe_set(u, false);
  ExpectUnit(base, false);
  EXPECT_EQ(MetaCalls(HAK_STATS_OS_MUNMAP), unmaps0);
  EXPECT_EQ(MetaCalls(HAK_STATS_OS_MMAP), maps0 + 2);
  EXPECT_GE(map_probe_leaf_bytes(), (size_t)1 << 17);
}

// Threads marking units of one fresh leaf at once: one leaf wins the CAS (the others'
// are unmapped again), every bit lands in it, and readers never fault meanwhile.
TEST_F(SegmentMap, ConcurrentFirstUseInstallsOneLeaf) {
  constexpr int kThreads = 8;
  constexpr int kUnitsEach = 64;
  const uintptr_t base = kBit56 + 40 * map_probe_leaf_span();
  const uint64_t maps0 = MetaCalls(HAK_STATS_OS_MMAP), unmaps0 = MetaCalls(HAK_STATS_OS_MUNMAP);
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      ready++;
      while (!go.load()) {
      }
      for (int i = 0; i < kUnitsEach; i++) {
        uintptr_t unit = base + (uintptr_t)(i * kThreads + t) * seg_;
        map_probe_set(unit, true);
        if (!map_probe_contains(unit + 1)) ADD_FAILURE() << std::hex << unit;
        (void)map_probe_contains(base + (uintptr_t)(kThreads * kUnitsEach - 1 - i) * seg_ + 1);
      }
    });
  }
  while (ready.load() < kThreads) {
  }
  go = true;
  for (std::thread& th : threads) th.join();
  for (int i = 0; i < kThreads * kUnitsEach; i++) ExpectUnit(base + (uintptr_t)i * seg_, true);
  ExpectUnit(base + (uintptr_t)kThreads * kUnitsEach * seg_, false);
  // Each loser of the race unmapped its leaf; exactly one stays.
  EXPECT_EQ(MetaCalls(HAK_STATS_OS_MMAP) - maps0 - (MetaCalls(HAK_STATS_OS_MUNMAP) - unmaps0), 1u);
  for (int i = 0; i < kThreads * kUnitsEach; i++) map_probe_set(base + (uintptr_t)i * seg_, false);
  ExpectUnit(base, false);
}

// Real blocks of every tier are in the map while live, wherever the kernel put them.
TEST_F(SegmentMap, LiveBlocksAreInTheMap) {
  for (size_t size : {(size_t)16, (size_t)5000, (size_t)300000, (size_t)2 << 20, (size_t)16 << 20}) {
    void* p = hak_malloc(size);
    ASSERT_NE(p, nullptr);
    EXPECT_TRUE(map_probe_contains((uintptr_t)p)) << size << " at " << p;
    hak_free(p);
  }
}

// Release and stats: no map; every non-null pointer passes (the twin compiles to it).
TEST(SegmentMapTwin, NonHardenedVariantsAnswerOursForNonNull) {
  if (map_probe_hardened()) GTEST_SKIP() << "the hardened variant keeps a real map";
  EXPECT_FALSE(map_probe_contains(0));
  EXPECT_TRUE(map_probe_contains(kBit56 + 1));
  map_probe_set(kBit56, false);
  EXPECT_TRUE(map_probe_contains(kBit56 + 1));
}

}  // namespace
