/* SPDX-License-Identifier: MIT */
// size_class_test.cc - the size classes of the tiny, mid and L2.5 pools (hak_tiny.c,
// hak_mid.c) through a C probe, checked against their stated properties and an
// independent model, and against what malloc actually hands out.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

#include "hak_test_env.h"
#include "hakmem.h"
#include "hak_test_names.h"  // last: see its rule

extern "C" {
size_t hak_probe_class_of(size_t size);
size_t hak_probe_mid_class_of(size_t size);
size_t hak_probe_block_size(size_t class_index);
size_t hak_probe_tiny_direct(size_t slot);
size_t hak_probe_class_page_slices(size_t class_index, unsigned grow);
unsigned hak_probe_page_grow_max(void);
size_t hak_probe_class_count(void);
size_t hak_probe_tiny_class_count(void);
size_t hak_probe_tiny_direct_count(void);
size_t hak_probe_tiny_max(void);
size_t hak_probe_mid_max(void);
size_t hak_probe_pool_max(void);
size_t hak_probe_slice_size(void);
size_t hak_probe_page_block_size(const void* p);
size_t hak_probe_page_class(const void* p);
int hak_probe_segment_kind_of(const void* p);
int hak_probe_kind_pool(void);
size_t hak_probe_page_slices(const void* p);
size_t hak_probe_page_reserved(const void* p);
size_t hak_probe_canary_room(void);
}

namespace {

constexpr size_t kClasses = 112;
constexpr size_t kMidMax = 65536;
constexpr size_t kPoolMax = 1024 * 1024;
constexpr size_t kSlice = 65536;

// Independent model of the documented scheme: 16 B steps up to 256 B, then 8 classes
// per doubling.
size_t ModelBlockSize(size_t cls) {
  if (cls < 16) return (cls + 1) * 16;
  size_t base = (size_t)256 << ((cls - 16) / 8);
  return base + ((cls - 16) % 8 + 1) * (base / 8);
}

size_t ModelClassOf(size_t size) {
  for (size_t c = 0; c < kClasses; c++) {
    if (ModelBlockSize(c) >= size) return c;
  }
  return kClasses;
}

TEST(SizeClass, Constants) {
  EXPECT_EQ(hak_probe_class_count(), kClasses);
  EXPECT_EQ(hak_probe_mid_max(), kMidMax);
  EXPECT_EQ(hak_probe_pool_max(), kPoolMax);
  EXPECT_EQ(hak_probe_slice_size(), kSlice);
  EXPECT_EQ(hak_probe_tiny_max(), 1024u);
  EXPECT_EQ(hak_probe_tiny_direct_count(), 1024u / 16 + 1);
  EXPECT_EQ(hak_probe_tiny_class_count(), 32u);
  EXPECT_EQ(HAK_STATS_CLASS_COUNT, (int)kClasses + 1);
  // The last class is exactly the L2.5 pool's limit, class 79 the mid pools' limit, the
  // last tiny class the tiny limit.
  EXPECT_EQ(hak_probe_block_size(kClasses - 1), kPoolMax);
  EXPECT_EQ(hak_probe_block_size(79), kMidMax);
  EXPECT_EQ(hak_probe_block_size(hak_probe_tiny_class_count() - 1), hak_probe_tiny_max());
}

TEST(SizeClass, BlockSizesAreIncreasingMultiplesOf16MatchingTheModel) {
  for (size_t c = 0; c < kClasses; c++) {
    size_t b = hak_probe_block_size(c);
    EXPECT_EQ(b % 16, 0u) << "class " << c;
    EXPECT_EQ(b, ModelBlockSize(c)) << "class " << c;
    if (c > 0) {
      EXPECT_GT(b, hak_probe_block_size(c - 1)) << "class " << c;
    }
  }
  EXPECT_EQ(hak_probe_block_size(0), 16u);
}

TEST(SizeClass, ClassOfBlockSizeIsTheClass) {
  for (size_t c = 0; c < kClasses; c++) {
    size_t b = hak_probe_block_size(c);
    EXPECT_EQ(hak_probe_class_of(b), c) << "class_of(block_size(" << c << ") = " << b << ")";
    if (b > 16) {
      EXPECT_EQ(hak_probe_class_of(b - 1), c) << "one below block_size(" << c << ")";
    }
    if (c + 1 < kClasses) {
      EXPECT_EQ(hak_probe_class_of(b + 1), c + 1) << "one above block_size(" << c << ")";
    }
  }
}

TEST(SizeClass, EverySizeUpTo1MiB) {
  size_t prev = hak_probe_class_of(1);
  for (size_t size = 1; size <= kPoolMax; size++) {
    size_t c = hak_probe_class_of(size);
    ASSERT_LT(c, kClasses) << "size " << size;
    ASSERT_GE(c, prev) << "class_of not monotonic at size " << size;
    ASSERT_LE(c, prev + 1) << "class_of skips a class at size " << size;
    prev = c;
    size_t b = hak_probe_block_size(c);
    ASSERT_GE(b, size) << "block too small for size " << size;
    // The smallest class that fits: the one below is too small.
    if (c > 0) {
      ASSERT_LT(hak_probe_block_size(c - 1), size) << "size " << size << " not in its tightest class";
    }
    ASSERT_EQ(c, ModelClassOf(size)) << "size " << size;
    if (size > 128) {
      // (block - size) / size < 1/8, in integers.
      ASSERT_LT((b - size) * 8, size) << "waste >= 12.5% at size " << size << " (block " << b << ")";
    } else {
      ASSERT_LT(b - size, 16u) << "size " << size;
    }
  }
  // malloc(0) is served by the smallest class.
  EXPECT_EQ(hak_probe_class_of(0), 0u);
  EXPECT_EQ(hak_probe_class_of(kMidMax), 79u);
  EXPECT_EQ(hak_probe_class_of(kPoolMax), kClasses - 1);
}

TEST(SizeClass, EveryClassIsUsed) {
  std::vector<int> seen(kClasses, 0);
  for (size_t size = 1; size <= kPoolMax; size++) seen[hak_probe_class_of(size)]++;
  for (size_t c = 0; c < kClasses; c++) EXPECT_GT(seen[c], 0) << "class " << c << " is never chosen";
}

TEST(SizeClass, TinyDirectTableIsConsistent) {
  const size_t slots = hak_probe_tiny_direct_count();
  EXPECT_EQ(hak_probe_tiny_direct(0), 0u) << "slot 0 (malloc(0)) must be the smallest class";
  for (size_t slot = 1; slot < slots; slot++) {
    size_t c = hak_probe_tiny_direct(slot);
    ASSERT_LT(c, hak_probe_tiny_class_count()) << "slot " << slot;
    // Slot s serves sizes 16*(s-1)+1 .. 16*s: every one must fit and map to this class.
    EXPECT_GE(hak_probe_block_size(c), slot * 16) << "slot " << slot;
    if (c > 0) {
      EXPECT_LT(hak_probe_block_size(c - 1), slot * 16) << "slot " << slot << " not tightest";
    }
    EXPECT_EQ(c, ModelClassOf(slot * 16)) << "slot " << slot;
    EXPECT_GE(c, hak_probe_tiny_direct(slot - 1)) << "table not monotonic at slot " << slot;
    for (size_t size = 16 * (slot - 1) + 1; size <= 16 * slot; size++) {
      EXPECT_EQ(hak_probe_class_of(size), c) << "hak_size_class(" << size << ") vs slot " << slot;
    }
  }
  // The generic formula agrees with the table wherever both are defined (257..1024 B),
  // and continues it without a gap.
  for (size_t size = 257; size <= hak_probe_tiny_max(); size++) {
    EXPECT_EQ(hak_probe_mid_class_of(size), hak_probe_tiny_direct((size + 15) / 16)) << "size " << size;
  }
  EXPECT_EQ(hak_probe_class_of(hak_probe_tiny_max() + 1), hak_probe_tiny_class_count());
}

// Pages are spans of 64 KiB slices: blocks up to 8 KiB in 1-slice pages, larger ones
// alone in the fewest slices that hold them; in between, a class's first page is the
// fewest slices that hold 4 blocks, each further page twice that, up to 8 slices.
TEST(SizeClass, PageSlicesByBlockSize) {
  for (size_t c = 0; c < kClasses; c++) {
    size_t b = hak_probe_block_size(c);
    for (unsigned grow = 0; grow <= hak_probe_page_grow_max() + 1; grow++) {
      size_t slices = hak_probe_class_page_slices(c, grow);
      size_t medium = std::min<size_t>(((4 * b + kSlice - 1) / kSlice) << std::min(grow, 3u), 8);
      size_t expected = b <= 8192 ? 1 : b <= 128 * 1024 ? medium : (b + kSlice - 1) / kSlice;
      EXPECT_EQ(slices, expected) << "class " << c << " (" << b << " B), grow " << grow;
      EXPECT_LE(slices, 63u) << "a page must fit in a segment's 63 usable slices";
      size_t blocks = slices * kSlice / b;
      EXPECT_GE(blocks, b > 128 * 1024 ? 1u : 4u) << "class " << c;
    }
    if (b > 8192 && b <= 128 * 1024) {
      EXPECT_EQ(hak_probe_class_page_slices(c, hak_probe_page_grow_max()), 8u) << "class " << c;
    }
  }
}

// A medium class with one block alive holds a page of 4 blocks, not 512 KiB; one with
// many gets ever larger pages; once they have all been given back, its next page is
// half as large (not back to the first size at once: a class used in bursts would
// take a small page each time).
TEST(SizeClass, MediumPagesGrowWithUseAndShrinkWhenGivenBack) {
  std::thread([] {
    const size_t size = 16 * 1024 - hak_probe_canary_room();  // a 16 KiB slot
    const size_t c = hak_probe_class_of(size + hak_probe_canary_room());
    void* first = hak_malloc(size);
    ASSERT_NE(first, nullptr);
    EXPECT_EQ(hak_probe_page_slices(first), 1u) << "4 blocks of 16 KiB fill one slice";
    std::vector<void*> live{first};
    size_t largest = 0;
    for (int i = 0; i < 200; i++) {
      void* p = hak_malloc(size);
      ASSERT_NE(p, nullptr);
      largest = std::max(largest, hak_probe_page_slices(p));
      live.push_back(p);
    }
    EXPECT_EQ(largest, hak_probe_class_page_slices(c, hak_probe_page_grow_max()));
    for (void* p : live) hak_free(p);
    hak_collect(false);  // gives back the page kept for the class, too
    void* again = hak_malloc(size);
    ASSERT_NE(again, nullptr);
    EXPECT_EQ(hak_probe_page_slices(again), largest / 2);
    hak_free(again);
  }).join();
}

TEST(SizeClass, StatsReportTheClassSizes) {
  hak_stats_t s;
  ASSERT_EQ(hak_stats_read(&s), 0);
  for (size_t c = 0; c < kClasses; c++) EXPECT_EQ(s.class_size[c], hak_probe_block_size(c)) << "class " << c;
  EXPECT_EQ(s.class_size[kClasses], 0u) << "the huge pseudo-class has no block size";
}

TEST(SizeClass, MallocUsesTheClassOfTheSize) {
  // What malloc hands out sits in a page of exactly the class hak_size_class names and
  // of the slices that class's pages span, and malloc_usable_size is the block size
  // (hardened level 2: the request goes to the class of its size and the canary's
  // room, and malloc_usable_size is the size requested; and slots above 128 KiB are
  // big blocks, kHakPoolSlotMax).
  const size_t room = hak_probe_canary_room();
  std::vector<void*> live;
  for (size_t size = 0; size + room <= kHakPoolSlotMax; size += (size < 2048 ? 1 : size < kMidMax ? 61 : 4093)) {
    if (size == 0 && room != 0) continue;  // hardened level 2: malloc(0) is no pool block
    void* p = hak_malloc(size);
    ASSERT_NE(p, nullptr);
    size_t c = hak_probe_class_of(size + room);
    ASSERT_EQ(hak_probe_page_class(p), c) << "size " << size;
    ASSERT_EQ(hak_probe_page_block_size(p), hak_probe_block_size(c)) << "size " << size;
    ASSERT_EQ(hak_usable_size(p), room != 0 ? size : hak_probe_block_size(c)) << "size " << size;
    ASSERT_EQ(hak_probe_segment_kind_of(p), hak_probe_kind_pool()) << "size " << size;
    size_t slices = hak_probe_page_slices(p);
    bool a_geometry_of_the_class = false;
    for (unsigned grow = 0; grow <= hak_probe_page_grow_max(); grow++) {
      a_geometry_of_the_class |= slices == hak_probe_class_page_slices(c, grow);
    }
    ASSERT_TRUE(a_geometry_of_the_class) << "size " << size << ": " << slices << " slices";
    ASSERT_EQ(hak_probe_page_reserved(p), slices * kSlice / hak_probe_block_size(c)) << "size " << size;
    live.push_back(p);
    if (live.size() > 256) {
      hak_free(live.front());
      live.erase(live.begin());
    }
  }
  for (void* p : live) hak_free(p);
}

}  // namespace
