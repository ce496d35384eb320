/* SPDX-License-Identifier: MIT */
// zero_test.cc - calloc's zero provenance. calloc skips clearing memory hakmem knows to
// be zero (fresh from the OS, or purged with MADV_DONTNEED, never handed out since); it
// must never skip memory that a freed block left dirty. Each case fills a block with
// 0xAA, frees it, and callocs the same size (or another size that reuses the memory):
// right after the free (dirty reuse from the free list, the BigCache, the whale ring,
// the region's resident units), and after hak_collect(true) purged it.
#include <vector>

#include "hak_test_memory.h"

#include "large_util.h"  // last of the includes: it includes hak_test_names.h

namespace hak_large_test {
namespace {

struct Tier {
  const char* name;
  size_t size;
};

// Sizes in each tier, at its edges and inside.
std::vector<Tier> Tiers() {
  const size_t big_max = hak_probe_big_max();
  return {
      {"tiny", 24},           {"tiny", 1000},        {"mid", 1100},         {"mid", 40 * kKiB},
      {"mid", 64 * kKiB},     {"L2.5", 64 * kKiB + 1}, {"L2.5", 200 * kKiB}, {"L2.5", kMiB},
      {"big", kMiB + 1},      {"big", 3 * kMiB},     {"big", big_max},      {"whale", big_max + 1},
      {"whale", 8 * kMiB},    {"whale", 30 * kMiB},
  };
}

// calloc(1, size) and calloc(size / 16, 16) both read zero, whole.
void ExpectCallocZero(size_t size, const char* what, const void* reused_from) {
  for (int form = 0; form < 2; form++) {
    void* q = form == 0 ? calloc(1, size) : calloc(size / 16 + 1, 16);
    size_t n = form == 0 ? size : (size / 16 + 1) * 16;
    ASSERT_NE(q, nullptr) << what << " " << size;
    size_t bad = FirstNonZero(q, n);
    EXPECT_EQ(bad, n) << what << ": calloc(" << size << ") returned non-zero memory at offset " << bad
                      << (q == reused_from ? " (reusing the freed block)" : "");
    memset(q, 0xAA, n);  // leaves it dirty for the next form
    free(q);
  }
}

TEST(ZeroProvenance, CallocAfterFreeOfADirtyBlockOfEveryTier) {
  for (const Tier& t : Tiers()) {
    SCOPED_TRACE(t.size);
    // A neighbour keeps the page or segment in use, so the freed block is reused as is.
    void* keep = malloc(t.size);
    ASSERT_NE(keep, nullptr);
    void* p = malloc(t.size);
    ASSERT_NE(p, nullptr);
    memset(p, 0xAA, malloc_usable_size(p));
    free(p);
    ExpectCallocZero(t.size, t.name, p);
    free(keep);
  }
}

TEST(ZeroProvenance, CallocReusesTheFreedBlock) {
  // The case above is only worth it if calloc really gets the dirty memory: the free
  // list, the BigCache and the whale ring hand the freed block out again.
  for (const Tier& t : Tiers()) {
    SCOPED_TRACE(t.size);
    hak_quarantine_flush();  // hardened: the quarantine empty, then p alone in it,
    void* keep = malloc(t.size);
    void* p = malloc(t.size);
    ASSERT_NE(p, nullptr);
    memset(p, 0xAA, t.size);
    const bool cached = hak_probe_is_big(p) == 1 || hak_probe_is_whale(p) == 1;
    free(p);
    hak_quarantine_flush();  // then out at the head of its page's free list
    // Hardened level 2 holds the newest BigCache or whale-ring entry from reuse: one
    // more block goes in after it.
    for (size_t i = 0; cached && i < kHakCacheHold; i++) free(malloc(t.size));
    void* q = calloc(1, t.size);
    EXPECT_EQ(q, p) << t.name << ": calloc did not reuse the block just freed";
    EXPECT_EQ(FirstNonZero(q, t.size), t.size);
    free(q);
    free(keep);
  }
}

TEST(ZeroProvenance, CallocAfterPurgeReadsZero) {
  for (const Tier& t : Tiers()) {
    SCOPED_TRACE(t.size);
    void* p = malloc(t.size);
    ASSERT_NE(p, nullptr);
    memset(p, 0xAA, t.size);
    free(p);
    hak_collect(true);
    ExpectCallocZero(t.size, t.name, p);
    hak_collect(true);
  }
}

// Pages emptied by one size class and taken by another: the span's memory is dirty.
TEST(ZeroProvenance, CallocOfAnotherClassOnFreedPages) {
  struct Pair {
    size_t first, second;
  } pairs[] = {{48, 64}, {3000, 4000}, {20 * kKiB, 24 * kKiB}, {100 * kKiB, 128 * kKiB},
               {300 * kKiB, 900 * kKiB}, {kMiB + 1, 3 * kMiB}, {3 * kMiB, 2 * kMiB}};
  constexpr size_t kMaxCount = 64;
  for (const Pair& pr : pairs) {
    SCOPED_TRACE(pr.first);
    // Enough blocks to empty whole pages, at most 32 MiB of them.
    const size_t larger = pr.first > pr.second ? pr.first : pr.second;
    const size_t count = larger * kMaxCount <= 32 * kMiB ? kMaxCount : 32 * kMiB / larger;
    void* blocks[kMaxCount];
    for (size_t i = 0; i < count; i++) {
      blocks[i] = malloc(pr.first);
      ASSERT_NE(blocks[i], nullptr);
      memset(blocks[i], 0xAA, pr.first);
    }
    for (size_t i = 0; i < count; i++) free(blocks[i]);
    for (size_t i = 0; i < count; i++) {
      blocks[i] = calloc(1, pr.second);
      ASSERT_NE(blocks[i], nullptr);
      size_t bad = FirstNonZero(blocks[i], pr.second);
      EXPECT_EQ(bad, pr.second) << "calloc(" << pr.second << ") after " << pr.first << "-byte blocks: offset " << bad;
    }
    for (size_t i = 0; i < count; i++) free(blocks[i]);
  }
}

// A big block shrunk by realloc gives its tail back to the big segment; a whale shrunk
// gives whole units back to the region. Either tail is dirty.
TEST(ZeroProvenance, CallocOfTailsGivenBackByRealloc) {
  for (size_t from : {3 * kMiB + 512 * kKiB, 40 * kMiB}) {
    SCOPED_TRACE(from);
    hak_collect(true);
    void* p = malloc(from);
    ASSERT_NE(p, nullptr);
    memset(p, 0xAA, from);
    void* q = realloc(p, from / 3);
    ASSERT_NE(q, nullptr);
    std::vector<void*> got;
    for (size_t size : {from / 2, from / 3, from / 4, from / 8}) {
      void* r = calloc(1, size);
      ASSERT_NE(r, nullptr);
      EXPECT_EQ(FirstNonZero(r, size), size) << "calloc(" << size << ") after a shrink from " << from;
      got.push_back(r);
    }
    for (void* r : got) free(r);
    free(q);
  }
}

// A whale that shrank in place keeps its old bytes past the new end, in units it still
// holds; so does a smaller whale served from the whale ring's run of a larger one. When
// such a whale later moves by mremap, only the block's pages move: the bytes past its
// end stay where they were, in units that go back to the region. Those units are not
// zero, and calloc must not take them for zero.
TEST(ZeroProvenance, UnitsLeftBehindByAWhaleMovedWithMremap) {
  const size_t page = hak_probe_os_page_size();
  const size_t unit = hak_probe_segment_size();
  struct Case {
    bool from_ring;  // else: shrunk in place by realloc
    size_t size;     // the block's size when it moves
  } cases[] = {{false, 5 * kMiB}, {false, 2 * kMiB}, {true, 5 * kMiB}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.from_ring ? "from the ring" : "shrunk");
    SCOPED_TRACE(c.size);
    hak_collect(true);  // every free unit clean; the whale ring empty
    // Two units, written to the end.
    const size_t full = 2 * unit - page - kHakCanaryRoom;
    uint8_t* p = static_cast<uint8_t*>(malloc(full));
    ASSERT_NE(p, nullptr);
    ASSERT_EQ(hak_probe_is_whale(p), 1);
    ASSERT_EQ(hak_probe_whale_units(p), 2u);
    memset(p, 0xAA, full);
    uint8_t* q;
    if (c.from_ring) {
      free(p);
      // (hardened level 2 holds the newest ring entry from reuse: one more goes after it)
      for (size_t i = 0; i < kHakCacheHold; i++) free(malloc(full));
      q = static_cast<uint8_t*>(malloc(c.size));  // the ring's best fit: the same run
    } else {
      q = static_cast<uint8_t*>(realloc(p, c.size));  // in place: still a whale
    }
    ASSERT_EQ(q, p);
    memset(q, 0xAA, c.size);
    // More than a region chunk holds: cannot grow in place; moves (mremap) to a mapping of
    // its own. The old run goes back to the region.
    hak_stats_t before = Stats();
    uint8_t* r = static_cast<uint8_t*>(realloc(q, hak_probe_chunk_size() + unit));
    ASSERT_NE(r, nullptr);
    hak_stats_t after = Stats();
    EXPECT_NE(r, q);
    EXPECT_EQ(after.huge_moved_by_remap, before.huge_moved_by_remap + 1);
    for (size_t i = 0; i < c.size; i += 4096) ASSERT_EQ(r[i], 0xAA) << i;
    // Whales of one unit take the old run's units back (the first chunk with a free unit
    // serves them, so it may take a few), then pool segments and whales of two: all must
    // read zero under calloc.
    const uintptr_t run = Addr(p) & ~(uintptr_t)(unit - 1);
    std::vector<void*> got;
    auto check = [&](void* z, size_t size) {
      size_t bad = FirstNonZero(z, size);
      EXPECT_EQ(bad, size) << "calloc(" << size << ") at " << z << " (old run at " << reinterpret_cast<void*>(run)
                           << "): non-zero at offset " << bad;
    };
    const size_t one_unit = unit - 5 * page;  // above the big blocks: a whale of one unit
    bool second_unit_taken = false;
    for (int i = 0; i < 256 && !second_unit_taken; i++) {
      void* z = calloc(1, one_unit);
      ASSERT_NE(z, nullptr);
      ASSERT_EQ(hak_probe_whale_units(z), 1u);
      got.push_back(z);
      if ((Addr(z) & ~(uintptr_t)(unit - 1)) == run + unit) second_unit_taken = true;
      if ((Addr(z) & ~(uintptr_t)(unit - 1)) == run || second_unit_taken) check(z, one_unit);
      else check(z, 64 * kKiB);  // fresh units elsewhere: the start is enough
    }
    EXPECT_TRUE(second_unit_taken) << "no calloc took the old run's second unit: the case was not exercised";
    for (void* z : got) free(z);
    got.clear();
    for (size_t size : {600 * kKiB, full}) {
      for (int i = 0; i < 8; i++) {
        void* z = calloc(1, size);
        ASSERT_NE(z, nullptr);
        check(z, size);
        got.push_back(z);
      }
    }
    for (void* z : got) free(z);
    free(r);
  }
}

}  // namespace

// The same move leaves the old run's bytes past the block's end resident. They are
// memory hakmem no longer uses: the units holding them go back to the region dirty and
// are purged like any freed unit (here by hak_collect(false)). The bug was that the run went
// back marked clean, so those pages stayed resident until the units were reused.
TEST(ZeroProvenance, BytesAWhaleMovedWithMremapLeftBehindArePurged) {
  const size_t page = hak_probe_os_page_size();
  const size_t unit = hak_probe_segment_size();
  hak_collect(true);
  const size_t full = 2 * unit - page - kHakCanaryRoom;
  uint8_t* p = static_cast<uint8_t*>(malloc(full));
  ASSERT_NE(p, nullptr);
  ASSERT_EQ(hak_probe_whale_units(p), 2u);
  memset(p, 0xAA, full);
  uint8_t* q = static_cast<uint8_t*>(realloc(p, 5 * kMiB));  // shrunk in place: old bytes stay past 5 MiB
  ASSERT_EQ(q, p);
  uint64_t moved = Stats().huge_moved_by_remap;
  uint8_t* r = static_cast<uint8_t*>(realloc(q, hak_probe_chunk_size() + unit));
  ASSERT_NE(r, nullptr);
  ASSERT_EQ(Stats().huge_moved_by_remap, moved + 1) << "the case needs a move by mremap";
  EXPECT_GT(Stats().region_dirty_bytes, 0u) << "the old run went back as if clean";
  // What lay past the old block's end: [p + 5 MiB, run end).
  uint8_t* run = reinterpret_cast<uint8_t*>(Addr(p) & ~(uintptr_t)(unit - 1));
  uint8_t* left = p + 5 * kMiB;
  size_t len = static_cast<size_t>(run + 2 * unit - left);
  long resident = ResidentPages(left, len);
  ASSERT_GE(resident, 0) << "mincore failed";
  EXPECT_GT(resident, 0) << "nothing resident to begin with: the case was not exercised";
  hak_collect(false);  // purges every free unit; true could also unmap the chunk (no other block in it)
  resident = ResidentPages(left, len);
  ASSERT_GE(resident, 0) << "mincore failed";
  EXPECT_EQ(resident, 0) << "bytes left past the moved whale's end stayed resident after hak_collect";
  free(r);
}


// ... and when nothing lay past the block's end, the old run goes back clean: marking
// its units dirty would make the region take them for resident memory (a later move
// would copy into them instead of moving pages; the realloc benchmark's peak RSS went
// from 141 to 263 MiB).
TEST(ZeroProvenance, AWhaleMovedWithMremapLeavesNoDirtyUnitsWhenNothingLayPastIt) {
  const size_t page = hak_probe_os_page_size();
  const size_t unit = hak_probe_segment_size();
  hak_collect(true);
  const size_t full = 2 * unit - page - kHakCanaryRoom;  // the header's page, then the block to the run's end
  uint8_t* p = static_cast<uint8_t*>(malloc(full));
  ASSERT_NE(p, nullptr);
  ASSERT_EQ(hak_probe_whale_units(p), 2u);
  memset(p, 0xAA, full);
  hak_stats_t before = Stats();
  ASSERT_EQ(before.region_dirty_bytes, 0u);
  uint8_t* r = static_cast<uint8_t*>(realloc(p, hak_probe_chunk_size() + unit));
  ASSERT_NE(r, nullptr);
  hak_stats_t after = Stats();
  ASSERT_EQ(after.huge_moved_by_remap, before.huge_moved_by_remap + 1) << "the case needs a move by mremap";
  EXPECT_EQ(after.region_dirty_bytes, 0u) << "the old run went back dirty though its pages moved away";
  for (size_t i = 0; i < full; i += 4096) ASSERT_EQ(r[i], 0xAA) << i;
  free(r);
}

}  // namespace hak_large_test
