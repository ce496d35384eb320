/* SPDX-License-Identifier: MIT */
// whale_tail_test.cc - a 4 MiB whale takes two 4 MiB units of the region and needs
// only one page of the second. When that unit is one a pool segment gave back, full
// of resident pages, they are purged as the whale is handed out instead of staying
// in RSS, unused, for the whale's life and its time in the whale ring. (The bug:
// 4 MiB of RSS per such whale; on the mixed benchmark 12 of its 67 MiB peak.)
//
// Its own binary: the scenario needs a region in a known state (every free unit clean,
// then only the units this test frees dirty and side by side), which other tests in
// the same process would disturb.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "hak_test_env.h"
#include "hak_test_memory.h"
#include "hakmem.h"
#include "hak_test_names.h"  // last: see its rule

namespace {

constexpr size_t kMiB = (size_t)1 << 20;
constexpr size_t kUnit = 4 * kMiB;

hak_stats_t Stats() {
  hak_stats_t s;
  EXPECT_EQ(hak_stats_read(&s), 0);
  return s;
}

TEST(WhaleTail, ALastUnitASegmentLeftResidentIsPurged) {
  hak_collect(true);  // every free unit clean: only what this test frees is resident
  // Pool segments full of written 1 MiB blocks (three per segment), then freed: their
  // units go back to the region dirty, side by side.
  std::vector<void*> blocks;
  blocks.reserve(24);
  for (int i = 0; i < 24; i++) {
    void* p = malloc(kMiB);
    ASSERT_NE(p, nullptr);
    memset(p, 0x33, kMiB);
    blocks.push_back(p);
  }
  for (void* p : blocks) free(p);
  hak_stats_t before = Stats();
  ASSERT_GE(before.region_dirty_bytes, 4 * kUnit) << "the freed segments should be dirty free units";
  // Resident units first: each whale takes two of those units.
  void* whales[3];
  for (int i = 0; i < 3; i++) {
    uint8_t* w = static_cast<uint8_t*>(malloc(4 * kMiB));
    ASSERT_NE(w, nullptr);
    whales[i] = w;
    memset(w, 0x44, 4 * kMiB);
    uint8_t* run = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(w) - 1) & ~(uintptr_t)(kUnit - 1));
    uint8_t* end = w + HakWhaleSlot(4 * kMiB, (size_t)sysconf(_SC_PAGESIZE));  // level 2: a canary's page
    long resident = ResidentPages(end, static_cast<size_t>(run + 2 * kUnit - end));
    ASSERT_GE(resident, 0) << "mincore failed";
    EXPECT_EQ(resident, 0) << "whale " << i << " at " << static_cast<void*>(w) << ": pages past its end stayed resident";
    for (size_t off = 0; off < 4 * kMiB; off += 4096) ASSERT_EQ(w[off], 0x44);
  }
  // Not vacuous: the whales did land on those units and their tails were purged.
  hak_stats_t after = Stats();
  EXPECT_GE(after.purge_ranges, before.purge_ranges + 3) << "no tail purged: the whales took clean units";
  for (void* w : whales) free(w);
}

}  // namespace
