/* SPDX-License-Identifier: MIT */
// huge_realloc_test.cc - realloc of big blocks and whales: in place where it can be
// (shrinking always, growing into the free slices or units after the block), else a
// move by mremap (cold destination: the pages move, nothing is copied) or by copy
// (resident destination). Contents survive every path; the paths are told apart by
// the stats counters huge_grow_in_place, huge_moved_by_remap, huge_moved_by_copy and by
// whether the pointer changed - never by timing.
#include <sys/mman.h>

#include <vector>

#include "hak_test_stats.h"
#include "large_util.h"  // last of the includes: it includes hak_test_names.h

namespace hak_large_test {
namespace {

// Contents are checked byte by byte up to here (the 257 MiB whales of their own mapping
// would take long, under the sanitizers most of all).
constexpr size_t kPatternCap = 16 * kMiB;

struct Moves {
  uint64_t in_place, remap, copy, os_calls;
};

Moves Delta(const hak_stats_t& a, const hak_stats_t& b) {
  return {b.huge_grow_in_place - a.huge_grow_in_place, b.huge_moved_by_remap - a.huge_moved_by_remap,
          b.huge_moved_by_copy - a.huge_moved_by_copy, OsCalls(b) - OsCalls(a)};
}

// One block grown from 1 MiB to 32 MiB in 64 KiB steps (496 reallocs): through the
// L2.5 pool, the big blocks and the whales. Every step keeps the contents; the block
// mostly grows where it is, and the system calls are a handful, not one per step.
TEST(HugeRealloc, GrowingFrom1MiBTo32MiBIn64KiBStepsMostlyStaysInPlace) {
  constexpr size_t kStep = 64 * kKiB;
  constexpr size_t kFrom = kMiB, kTo = 32 * kMiB;
  constexpr size_t kSteps = (kTo - kFrom) / kStep;  // 496
  constexpr unsigned kSeed = 3;
  hak_collect(true);
  uint8_t* p = static_cast<uint8_t*>(malloc(kFrom));
  ASSERT_NE(p, nullptr);
  FillPattern(p, 0, kFrom, kSeed);
  const hak_stats_t s0 = Stats();
  size_t moved = 0, have = kFrom;
  for (size_t step = 1; step <= kSteps; step++) {
    size_t size = kFrom + step * kStep;
    uint8_t* q = static_cast<uint8_t*>(realloc(p, size));
    ASSERT_NE(q, nullptr) << "realloc to " << size;
    ASSERT_GE(malloc_usable_size(q), size);
    if (q != p) moved++;
    // The old contents: one byte per 4 KiB here, every byte every 64 steps.
    for (size_t i = 0; i < have; i += 4096) ASSERT_EQ(q[i], PatternByte(i, kSeed)) << "offset " << i << " at " << size;
    ASSERT_EQ(q[have - 1], PatternByte(have - 1, kSeed)) << size;
    if (step % 64 == 0) {  // braces: ASSERT_EQ is an if/else of its own
      ASSERT_EQ(FirstPatternMismatch(q, 0, have, kSeed), have) << size;
    }
    FillPattern(q, have, size, kSeed);
    p = q;
    have = size;
  }
  const hak_stats_t s1 = Stats();
  EXPECT_EQ(FirstPatternMismatch(p, 0, kTo, kSeed), kTo);
  const Moves d = Delta(s0, s1);
  fprintf(stderr,
          "%zu steps from 1 MiB to 32 MiB: pointer changed %zu times; grown in place %llu, whales moved by mremap "
          "%llu, by copy %llu; %llu system calls\n",
          kSteps, moved, (unsigned long long)d.in_place, (unsigned long long)d.remap, (unsigned long long)d.copy,
          (unsigned long long)d.os_calls);
  // Moves: pool -> big -> whale (two copies), then whales that outgrow their run; a
  // whale that moves takes twice the room it needs, so that happens rarely.
  EXPECT_LE(moved, 10u) << "realloc moved the block too often";
  EXPECT_LE(d.copy, 4u) << "whales copied instead of growing in place or moving their pages";
  EXPECT_GE(d.in_place, kSteps * 3 / 4) << "most steps should grow the block where it is";
  EXPECT_LE(d.os_calls, 20u) << "system calls should be far fewer than the " << kSteps << " steps";
  free(p);
}

// Shrinking keeps the pointer: big blocks give slices back, whales whole units.
TEST(HugeRealloc, ShrinkInPlaceKeepsThePointer) {
  struct Case {
    size_t from, to;
  } cases[] = {
      {4 * kMiB - 64 * kKiB, 2 * kMiB},       // big -> big
      {3 * kMiB, kMiB + 1},                   // big -> big, down to its smallest
      {40 * kMiB, 20 * kMiB},                 // whale -> whale
      {40 * kMiB, 5 * kMiB},                  // whale -> whale of two units
      {9 * kMiB, 2 * kMiB},                   // whale -> a size of the big blocks: stays a whale
      {hak_probe_chunk_size() + 8 * kMiB, hak_probe_chunk_size() / 4},  // mapping of its own
  };
  unsigned seed = 10;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.from);
    SCOPED_TRACE(c.to);
    const size_t checked = c.to < kPatternCap ? c.to : kPatternCap;
    uint8_t* p = static_cast<uint8_t*>(malloc(c.from));
    ASSERT_NE(p, nullptr);
    FillPattern(p, 0, checked, seed);
    hak_stats_t a = Stats();
    uint8_t* q = static_cast<uint8_t*>(realloc(p, c.to));
    hak_stats_t b = Stats();
    ASSERT_EQ(q, p) << "shrinking moved the block";
    EXPECT_GE(malloc_usable_size(q), c.to);
    EXPECT_LT(malloc_usable_size(q), c.to + hak_probe_segment_size()) << "nothing was given back";
    EXPECT_EQ(FirstPatternMismatch(q, 0, checked, seed), checked);
    EXPECT_EQ(b.huge_moved_by_copy, a.huge_moved_by_copy);
    EXPECT_EQ(b.huge_moved_by_remap, a.huge_moved_by_remap);
    // What was given back serves other blocks; this one is still whole.
    const size_t given_back = c.from - c.to;
    void* other = malloc(given_back);
    ASSERT_NE(other, nullptr);
    memset(other, 0x33, given_back < kPatternCap ? given_back : kPatternCap);
    EXPECT_EQ(FirstPatternMismatch(q, 0, checked, seed), checked);
    free(other);
    free(q);
    seed++;
  }
}

// A whale shrunk in place gives its tail units back to the region; growing it again
// takes the same units back where it is, if nothing took them meanwhile.
TEST(HugeRealloc, GrowInPlaceIntoTheFreeUnitsAfterTheWhale) {
  constexpr unsigned kSeed = 21;
  uint8_t* p = static_cast<uint8_t*>(malloc(40 * kMiB));
  ASSERT_NE(p, nullptr);
  FillPattern(p, 0, 8 * kMiB, kSeed);
  uint8_t* q = static_cast<uint8_t*>(realloc(p, 8 * kMiB));
  ASSERT_EQ(q, p);
  size_t units_small = hak_probe_whale_units(q);
  EXPECT_EQ(units_small, 3u) << "8 MiB and the header page: three units";
  hak_stats_t a = Stats();
  for (size_t size : {12 * kMiB, 20 * kMiB, 40 * kMiB}) {
    q = static_cast<uint8_t*>(realloc(p, size));
    ASSERT_EQ(q, p) << "growing into free units after the whale moved it (to " << size << ")";
  }
  hak_stats_t b = Stats();
  EXPECT_EQ(b.huge_grow_in_place - a.huge_grow_in_place, 3u);
  EXPECT_EQ(b.huge_moved_by_copy, a.huge_moved_by_copy);
  EXPECT_EQ(b.huge_moved_by_remap, a.huge_moved_by_remap);
  EXPECT_EQ(OsCalls(b), OsCalls(a)) << "growing into free units needs no system call";
  EXPECT_GE(hak_probe_whale_units(q), 10u);
  EXPECT_EQ(FirstPatternMismatch(q, 0, 8 * kMiB, kSeed), 8 * kMiB);
  memset(q + 8 * kMiB, 0x77, 32 * kMiB);  // the grown part is usable
  free(q);

  // A big block grows into the free slices after it the same way.
  uint8_t* big = static_cast<uint8_t*>(malloc(kHakBigMax - kHakCanaryRoom));  // the largest big block
  ASSERT_NE(big, nullptr);
  ASSERT_EQ(hak_probe_is_big(big), 1);
  FillPattern(big, 0, kMiB + 4096, kSeed);
  ASSERT_EQ(realloc(big, kMiB + 4096), big);  // the tail goes back to the big segment
  a = Stats();
  ASSERT_EQ(realloc(big, 3 * kMiB), big);
  b = Stats();
  EXPECT_EQ(b.huge_grow_in_place - a.huge_grow_in_place, 1u);
  EXPECT_EQ(FirstPatternMismatch(big, 0, kMiB + 4096, kSeed), kMiB + 4096);
  free(big);
}

// Whales allocated one after another until one sits right behind another: the first of
// such a pair cannot grow in place.
struct Neighbours {
  std::vector<void*> all;
  void* blocked = nullptr;  // a whale whose next unit holds another whale
};

Neighbours FindBlockedWhale(size_t size) {
  Neighbours n;
  const uintptr_t unit = hak_probe_segment_size();
  for (int i = 0; i < 64 && n.blocked == nullptr; i++) {
    void* w = malloc(size);
    if (w == nullptr) break;
    for (void* v : n.all) {
      uintptr_t run_v = Addr(v) & ~(unit - 1);
      uintptr_t run_w = Addr(w) & ~(unit - 1);
      if (run_w == run_v + hak_probe_whale_units(v) * unit) n.blocked = v;
      if (run_v == run_w + hak_probe_whale_units(w) * unit) n.blocked = w;
      if (n.blocked != nullptr) break;
    }
    n.all.push_back(w);
  }
  return n;
}

// The three ways a whale moves when it cannot grow in place, contents kept by each:
// by mremap into cold region units, by mremap into a mapping of its own, by copy into
// resident memory (a run the whale ring held).
TEST(HugeRealloc, ContentsSurviveEveryWayOfMoving) {
  const size_t unit = hak_probe_segment_size();
  for (int path = 0; path < 3; path++) {
    SCOPED_TRACE(path == 0 ? "mremap into region units" : path == 1 ? "mremap into a mapping of its own" : "copy");
    hak_collect(true);  // every free unit clean, the whale ring empty
    const unsigned seed = 30 + path;
    const size_t size = 5 * kMiB;  // two units, no room to grow beyond the second
    Neighbours n = FindBlockedWhale(size);
    ASSERT_NE(n.blocked, nullptr) << "no two whales were neighbours";
    uint8_t* p = static_cast<uint8_t*>(n.blocked);
    FillPattern(p, 0, size, seed);
    size_t grow_to = 3 * unit;
    if (path == 1) grow_to = hak_probe_chunk_size() + unit;  // more than a chunk holds
    if (path == 2) {
      // A resident run of eight units in the ring: the new run (twice the size, for
      // room: seven units) comes from there, and the block is copied into it.
      const size_t ring_size = 8 * unit - hak_probe_os_page_size();
      void* ring = malloc(ring_size);
      ASSERT_NE(ring, nullptr);
      memset(ring, 0x11, ring_size);
      free(ring);
      // Hardened level 2 holds the newest entry from reuse: one more whale goes after it.
      for (size_t i = 0; i < kHakCacheHold; i++) free(malloc(size));
    }
    hak_stats_t a = Stats();
    uint8_t* q = static_cast<uint8_t*>(realloc(p, grow_to));
    hak_stats_t b = Stats();
    ASSERT_NE(q, nullptr);
    EXPECT_NE(q, p) << "the whale had a neighbour, yet grew in place";
    Moves d = Delta(a, b);
    EXPECT_EQ(d.remap, path < 2 ? 1u : 0u);
    EXPECT_EQ(d.copy, path == 2 ? 1u : 0u);
    EXPECT_EQ(hak_probe_whale_is_dedicated(q), path == 1 ? 1 : 0);
    EXPECT_EQ(FirstPatternMismatch(q, 0, size, seed), size) << "contents lost moving the whale";
    EXPECT_GE(malloc_usable_size(q), grow_to);
    memset(q + size, 0x22, grow_to - size);
    // The old place is free again: a block allocated there does not disturb the moved one.
    void* again = malloc(size);
    ASSERT_NE(again, nullptr);
    memset(again, 0x44, size);
    EXPECT_EQ(FirstPatternMismatch(q, 0, size, seed), size);
    free(again);
    free(q);
    for (void* w : n.all) {
      if (w != p) free(w);
    }
  }
}

// A whale of its own mapping moved by realloc leaves nothing mapped behind: the move
// gives the new mapping room to grow (twice the size), so the next move out of it has
// to unmap that room too. Before, only the header's part went: the room (301 MiB
// here) stayed mapped for good. A page mapped right after each mapping keeps mremap
// from growing it in place, so each realloc moves.
uint8_t* BlockGrowthAfter(uint8_t* block, size_t room) {
  const size_t unit = hak_probe_segment_size(), page = hak_probe_os_page_size();
  uintptr_t start = reinterpret_cast<uintptr_t>(block) & ~(uintptr_t)(unit - 1);
  room += kHakCanaryRoom;
  uintptr_t end = start + (((reinterpret_cast<uintptr_t>(block) - start) + room + page - 1) & ~(uintptr_t)(page - 1));
  void* blocker = mmap(reinterpret_cast<void*>(end), page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  return blocker == MAP_FAILED ? nullptr : static_cast<uint8_t*>(blocker);
}

TEST(HugeRealloc, MovingAWhaleOfItsOwnMappingUnmapsAllOfTheOld) {
  hak_collect(true);
  const uint64_t start = BlockMappedBytes(Stats());
  const size_t first = hak_probe_chunk_size() + 44 * kMiB;  // more than a chunk holds
  const size_t second = first + kMiB;
  uint8_t* p = static_cast<uint8_t*>(malloc(first));
  ASSERT_NE(p, nullptr);
  ASSERT_EQ(hak_probe_whale_is_dedicated(p), 1);
  p[0] = 0x5a;
  p[first - 1] = 0x5b;
  std::vector<uint8_t*> blockers;
  blockers.push_back(BlockGrowthAfter(p, first));
  uint8_t* q = static_cast<uint8_t*>(realloc(p, second));  // moves, into a mapping with room
  ASSERT_NE(q, nullptr);
  ASSERT_NE(q, p);
  blockers.push_back(BlockGrowthAfter(q, 2 * second));
  uint8_t* r = static_cast<uint8_t*>(realloc(q, 3 * first));  // beyond the room: moves out
  ASSERT_NE(r, nullptr);
  ASSERT_NE(r, q);
  EXPECT_EQ(r[0], 0x5a);
  EXPECT_EQ(r[first - 1], 0x5b);
  free(r);
  hak_collect(true);
  EXPECT_EQ(BlockMappedBytes(Stats()), start) << "address space of a moved whale stayed mapped";
  for (uint8_t* b : blockers) {
    ASSERT_NE(b, nullptr) << "could not map a page after a whale";
    munmap(b, hak_probe_os_page_size());
  }
}

// realloc across the tiers and back: L2.5 -> big -> whale -> whale of its own mapping
// -> whale -> big -> L2.5 -> mid -> tiny; the common prefix survives every step.
TEST(HugeRealloc, ContentsSurviveReallocAcrossTiers) {
  const size_t chunk = hak_probe_chunk_size();
  const size_t sizes[] = {300 * kKiB, kMiB,      2 * kMiB, 4 * kMiB - 64 * kKiB, 6 * kMiB, 30 * kMiB,
                          chunk + kMiB, 30 * kMiB, 6 * kMiB, 3 * kMiB,            2 * kMiB, 700 * kKiB,
                          200 * kKiB, 40 * kKiB, 900,     100,                  24};
  constexpr unsigned kSeed = 44;
  uint8_t* p = static_cast<uint8_t*>(malloc(200 * kKiB));
  ASSERT_NE(p, nullptr);
  size_t have = 200 * kKiB, valid = have;  // the pattern holds in [0, valid)
  FillPattern(p, 0, valid, kSeed);
  for (size_t size : sizes) {
    uint8_t* q = static_cast<uint8_t*>(realloc(p, size));
    ASSERT_NE(q, nullptr) << have << " -> " << size;
    if (size < valid) valid = size;
    ASSERT_EQ(FirstPatternMismatch(q, 0, valid, kSeed), valid) << have << " -> " << size;
    ASSERT_GE(malloc_usable_size(q), size);
    size_t fill_to = size < 2 * kPatternCap ? size : 2 * kPatternCap;
    if (fill_to > valid) {
      FillPattern(q, valid, fill_to, kSeed);
      valid = fill_to;
    }
    p = q;
    have = size;
  }
  free(p);
  // The same through calloc'd blocks and reallocarray.
  uint8_t* z = static_cast<uint8_t*>(calloc(1, 2 * kMiB));
  ASSERT_NE(z, nullptr);
  z[0] = 1;
  z = static_cast<uint8_t*>(reallocarray(z, 3, 3 * kMiB));
  ASSERT_NE(z, nullptr);
  EXPECT_EQ(z[0], 1);
  EXPECT_EQ(FirstNonZero(z + 1, 2 * kMiB - 1), 2 * kMiB - 1) << "calloc'd bytes changed in realloc";
  free(z);
}

}  // namespace
}  // namespace hak_large_test
