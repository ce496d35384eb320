/* SPDX-License-Identifier: MIT */
// alignment_test.cc - posix_memalign, aligned_alloc and memalign for every power-of-two
// alignment from 1 (8 for posix_memalign) to 1 MiB, and 2, 4 and 8 MiB: each block is
// aligned, at least as large as asked, writable over its whole usable size, freeable,
// and no two live blocks overlap.
#include <errno.h>
#include <stdint.h>

#include <algorithm>
#include <string>
#include <vector>

#include "hak_test_stats.h"
#include "backends.h"
#include "hak_test_names.h"  // last: see its rule

namespace {

struct Block {
  void* p;
  size_t size;    // requested
  size_t usable;  // malloc_usable_size
  size_t align;
  uint8_t tag;    // every usable byte was set to this
};

enum class Api { kPosixMemalign, kAlignedAlloc, kMemalign };

const char* ApiName(Api api) {
  switch (api) {
    case Api::kPosixMemalign: return "posix_memalign";
    case Api::kAlignedAlloc: return "aligned_alloc";
    case Api::kMemalign: return "memalign";
  }
  return "?";
}

template <typename A>
void* AllocAligned(Api api, size_t align, size_t size) {
  switch (api) {
    case Api::kPosixMemalign: {
      void* out = reinterpret_cast<void*>(0x1);
      int rc = A::PosixMemalign(&out, align, size);
      EXPECT_EQ(rc, 0) << "posix_memalign(" << align << ", " << size << ")";
      return rc == 0 ? out : nullptr;
    }
    case Api::kAlignedAlloc: return A::AlignedAlloc(align, size);
    case Api::kMemalign: return A::Memalign(align, size);
  }
  return nullptr;
}

std::vector<size_t> SizesFor(size_t align) {
  std::vector<size_t> sizes = {0, 1, align - 1, align, align + 1, 3 * align, 100000};
  std::sort(sizes.begin(), sizes.end());
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
  return sizes;
}

// Allocates `copies` blocks of every size for one alignment and appends them to `live`.
template <typename A>
void AllocateSet(Api api, size_t align, int copies, std::vector<Block>* live) {
  for (int c = 0; c < copies; c++) {
    for (size_t size : SizesFor(align)) {
      void* p = AllocAligned<A>(api, align, size);
      ASSERT_NE(p, nullptr) << ApiName(api) << "(" << align << ", " << size << ")";
      size_t usable = A::Usable(p);
      EXPECT_TRUE(IsAligned(p, align)) << ApiName(api) << "(" << align << ", " << size << ") = " << p;
      EXPECT_TRUE(IsAligned(p, 16)) << p;
      EXPECT_GE(usable, size) << ApiName(api) << "(" << align << ", " << size << ")";
      uint8_t tag = static_cast<uint8_t>(1 + live->size() % 251);
      memset(p, tag, usable);  // the whole usable size must be writable
      live->push_back(Block{p, size, usable, align, tag});
    }
  }
}

// No two blocks share a byte, no two share an address, and every block still holds its
// tag (a write through an overlapping block would have changed it).
void CheckDisjointAndIntact(const std::vector<Block>& live) {
  std::vector<const Block*> sorted;
  for (const Block& b : live) sorted.push_back(&b);
  std::sort(sorted.begin(), sorted.end(), [](const Block* a, const Block* b) { return Addr(a->p) < Addr(b->p); });
  for (size_t i = 1; i < sorted.size(); i++) {
    const Block* a = sorted[i - 1];
    const Block* b = sorted[i];
    EXPECT_NE(a->p, b->p) << "two live blocks at the same address";
    EXPECT_LE(Addr(a->p) + a->usable, Addr(b->p))
        << "block " << a->p << " (align " << a->align << ", size " << a->size << ", usable " << a->usable
        << ") overlaps block " << b->p << " (align " << b->align << ", size " << b->size << ")";
  }
  for (const Block& b : live) {
    const uint8_t* bytes = static_cast<const uint8_t*>(b.p);
    size_t bad = b.usable;
    for (size_t i = 0; i < b.usable; i++) {
      if (bytes[i] != b.tag) {
        bad = i;
        break;
      }
    }
    EXPECT_EQ(bad, b.usable) << "block " << b.p << " (align " << b.align << ", size " << b.size
                             << ") was overwritten at offset " << bad;
  }
}

template <typename A>
void FreeAll(std::vector<Block>* live) {
  // Interleaved order: every other block first, then the rest backwards.
  for (size_t i = 0; i < live->size(); i += 2) A::Free((*live)[i].p);
  for (size_t i = live->size(); i-- > 0;) {
    if (i % 2 == 1) A::Free((*live)[i].p);
  }
  live->clear();
}

template <typename A>
void RunAlignmentSweep(Api api) {
  const size_t first = api == Api::kPosixMemalign ? sizeof(void*) : 1;
  std::vector<Block> small_live;  // alignments up to 1 MiB stay live together
  for (size_t align = first; align <= ((size_t)1 << 20); align *= 2) {
    AllocateSet<A>(api, align, 2, &small_live);
    if (::testing::Test::HasFatalFailure()) return;
  }
  CheckDisjointAndIntact(small_live);
  for (size_t align : {(size_t)2 << 20, (size_t)4 << 20, (size_t)8 << 20}) {
    std::vector<Block> big = small_live;
    AllocateSet<A>(api, align, 1, &big);
    if (::testing::Test::HasFatalFailure()) return;
    CheckDisjointAndIntact(big);
    std::vector<Block> only_new(big.begin() + small_live.size(), big.end());
    FreeAll<A>(&only_new);
  }
  // The small set is still intact after the big blocks came and went.
  CheckDisjointAndIntact(small_live);
  FreeAll<A>(&small_live);
}

template <typename A>
class Alignment : public ::testing::Test {};
TYPED_TEST_SUITE(Alignment, Backends, BackendName);

TYPED_TEST(Alignment, PosixMemalignEveryPowerOfTwo) { RunAlignmentSweep<TypeParam>(Api::kPosixMemalign); }

TYPED_TEST(Alignment, AlignedAllocEveryPowerOfTwo) { RunAlignmentSweep<TypeParam>(Api::kAlignedAlloc); }

TYPED_TEST(Alignment, MemalignEveryPowerOfTwo) { RunAlignmentSweep<TypeParam>(Api::kMemalign); }

TYPED_TEST(Alignment, ZeroBytesAtEveryAlignmentGiveAUsableByte) {
  // aligned_alloc(8192, 0) once returned a pointer one past its mapping (usable size
  // 0; reading it faulted). Every zero-byte aligned block must be a real one.
  using A = TypeParam;
  for (size_t align = 16; align <= ((size_t)8 << 20); align *= 2) {
    unsigned char* p = static_cast<unsigned char*>(A::AlignedAlloc(align, 0));
    ASSERT_NE(p, nullptr) << "aligned_alloc(" << align << ", 0)";
    ASSERT_TRUE(IsAligned(p, align)) << "aligned_alloc(" << align << ", 0) = " << static_cast<void*>(p);
    if (kHakHardenedLevel >= 2 && align <= 16) {
      // Hardened level 2: malloc(0), a unique pointer to memory that faults if touched.
      EXPECT_EQ(A::Usable(p), 0u) << "aligned_alloc(" << align << ", 0)";
    } else if (kHakHardenedLevel >= 2) {
      // Hardened level 2: a block of 0 usable bytes, its canary's zero byte at p[0]
      // (writing it is an overflow the free would report); reading must not fault.
      EXPECT_EQ(A::Usable(p), 0u) << "aligned_alloc(" << align << ", 0)";
      EXPECT_EQ(*static_cast<volatile unsigned char*>(p), 0);
    } else {
      ASSERT_GE(A::Usable(p), 1u) << "aligned_alloc(" << align << ", 0)";
      p[0] = 0x5c;  // faults if the pointer is past the block
      EXPECT_EQ(p[0], 0x5c);
    }
    A::Free(p);
  }
}

TYPED_TEST(Alignment, ManyBlocksOfOneAlignmentAreAllAligned) {
  // Enough blocks to fill several pages of each class an alignment maps to: every block
  // of the page, not only the first, must be aligned.
  using A = TypeParam;
  for (size_t align : {(size_t)32, (size_t)64, (size_t)128, (size_t)512, (size_t)1024, (size_t)2048, (size_t)4096}) {
    for (size_t size : {(size_t)1, align / 2 + 1, align + 16, 5 * align - 3}) {
      std::vector<Block> live;
      for (int i = 0; i < 300; i++) {
        void* p = A::AlignedAlloc(align, size);
        ASSERT_NE(p, nullptr);
        ASSERT_TRUE(IsAligned(p, align)) << "aligned_alloc(" << align << ", " << size << ") #" << i << " = " << p;
        size_t usable = A::Usable(p);
        ASSERT_GE(usable, size);
        uint8_t tag = static_cast<uint8_t>(1 + i % 251);
        memset(p, tag, usable);
        live.push_back(Block{p, size, usable, align, tag});
      }
      CheckDisjointAndIntact(live);
      FreeAll<A>(&live);
    }
  }
}

TYPED_TEST(Alignment, VeryLargeAlignmentsAreTrimmedWithoutLeaking) {
  // Alignments above a region chunk (256 MiB) get a mapping of their own: the OS layer
  // over-maps by the alignment and trims both ends, so exactly the block's mapping is
  // counted. Smaller ones above a unit come from the region, the run placed so the
  // block lands on the alignment. Nothing stays mapped after free and hak_collect.
  using A = TypeParam;
  for (size_t align : {(size_t)16 << 20, (size_t)128 << 20, (size_t)1 << 30, (size_t)1 << 33}) {
    for (size_t size : {(size_t)1, (size_t)100000}) {
      hak_collect(true);
      hak_stats_t before, during, after;
      ASSERT_EQ(hak_stats_read(&before), 0);
      void* p = nullptr;
      ASSERT_EQ(A::PosixMemalign(&p, align, size), 0) << "posix_memalign(" << align << ", " << size << ")";
      ASSERT_EQ(hak_stats_read(&during), 0);
      ASSERT_NE(p, nullptr);
      EXPECT_TRUE(IsAligned(p, align)) << p;
      size_t usable = A::Usable(p);
      EXPECT_GE(usable, size);
      memset(p, 0x3a, usable);
      if (align > ((size_t)256 << 20)) {
        // The block sits one unit (4 MiB) into its mapping, which ends with the block.
        EXPECT_EQ(BlockMappedBytes(during) - BlockMappedBytes(before), (4u << 20) + HakWhaleSlot(usable, (size_t)sysconf(_SC_PAGESIZE)))
            << "align " << align << ": the over-mapped slack was not trimmed";
      }
      A::Free(p);
      hak_collect(true);
      ASSERT_EQ(hak_stats_read(&after), 0);
      EXPECT_LE(BlockMappedBytes(after), BlockMappedBytes(before)) << "align " << align;
    }
  }
}

TYPED_TEST(Alignment, ReallocOfAlignedBlocksKeepsContents) {
  using A = TypeParam;
  unsigned seed = 1;
  for (size_t align : {(size_t)64, (size_t)4096, (size_t)8192, (size_t)1 << 20, (size_t)4 << 20, (size_t)8 << 20}) {
    for (size_t size : {(size_t)100, (size_t)70000}) {
      void* p = A::AlignedAlloc(align, size);
      ASSERT_NE(p, nullptr);
      ASSERT_TRUE(IsAligned(p, align));
      FillPattern(p, size, seed);
      void* q = A::Realloc(p, 3 * size);
      ASSERT_NE(q, nullptr);
      EXPECT_EQ(FirstPatternMismatch(q, size, seed), size) << "align " << align << " size " << size;
      void* r = A::Realloc(q, size / 3);
      ASSERT_NE(r, nullptr);
      EXPECT_EQ(FirstPatternMismatch(r, size / 3, seed), size / 3) << "align " << align << " size " << size;
      A::Free(r);
      seed++;
    }
  }
}

}  // namespace
