/* SPDX-License-Identifier: MIT */
// mappings_test.cc - many live blocks cost few mappings. The kernel allows a process
// vm.max_map_count mappings (65,530 by default); an allocator that gives each block a
// mapping of its own runs out long before memory does. hakmem carves blocks out of
// 256 MiB region chunks, so the mappings (lines of /proc/self/maps) and the mmap calls
// grow with the chunks, not with the blocks, and fall back when the blocks are freed.
#include <algorithm>

#include "large_util.h"  // last of the includes: it includes hak_test_names.h

namespace hak_large_test {
namespace {

// 100,000 blocks of 80 KiB (7.8 GiB of address space, 2 pages of each touched: about
// 800 MiB resident), allocated with malloc (hakmem's override; hak_malloc under
// ASan/TSan, at a quarter of the count).
constexpr size_t kBlocks = 100000;

// ThreadSanitizer maps shadow memory of its own for each range the program maps (a few
// mappings per region chunk) and keeps some of it after the range is unmapped: there,
// /proc/self/maps counts TSan's mappings too, and does not fall back.
constexpr bool kMapsCountsSanitizerShadow = HAK_TEST_TSAN;
constexpr size_t kShadowMappingsPerChunk = kMapsCountsSanitizerShadow ? 4 : 1;
constexpr size_t kBlockSize = 80 * kKiB;
void* g_blocks[kBlocks];  // static: the bookkeeping must not allocate

TEST(Mappings, HundredThousandBlocksOf80KiBStayInAFewMappings) {
  const size_t n = hak_test_env::Scaled(kBlocks, 10000);
  free(malloc(16));  // this thread's heap exists (its first allocation maps it)
  hak_collect(true);
  const hak_stats_t s0 = Stats();
  const size_t vma0 = VmaCount();
  size_t vma_peak = vma0;
  for (size_t i = 0; i < n; i++) {
    uint8_t* p = static_cast<uint8_t*>(malloc(kBlockSize));
    ASSERT_NE(p, nullptr) << "block " << i << " of " << n << ": errno " << errno;
    p[0] = static_cast<uint8_t>(i);
    p[kBlockSize - 1] = static_cast<uint8_t>(~i);
    g_blocks[i] = p;
    if (i % 4096 == 0) vma_peak = std::max(vma_peak, VmaCount());
  }
  vma_peak = std::max(vma_peak, VmaCount());
  const hak_stats_t s1 = Stats();

  // Every block is its own: contents intact, no two overlap.
  for (size_t i = 0; i < n; i++) {
    const uint8_t* p = static_cast<const uint8_t*>(g_blocks[i]);
    ASSERT_EQ(p[0], static_cast<uint8_t>(i)) << "block " << i;
    ASSERT_EQ(p[kBlockSize - 1], static_cast<uint8_t>(~i)) << "block " << i;
    ASSERT_GE(malloc_usable_size(g_blocks[i]), kBlockSize);
  }
  std::sort(g_blocks, g_blocks + n);
  for (size_t i = 1; i < n; i++) ASSERT_GE(Addr(g_blocks[i]) - Addr(g_blocks[i - 1]), kBlockSize) << i;

  const uint64_t chunks = s1.region_chunks - s0.region_chunks;
  const uint64_t mmaps = s1.os_mmap.count - s0.os_mmap.count;
  fprintf(stderr, "%zu blocks of 80 KiB: mappings %zu -> peak %zu, mmap calls %llu, chunks %llu\n", n, vma0,
          vma_peak, (unsigned long long)mmaps, (unsigned long long)chunks);
  EXPECT_GE(s1.region_used_bytes - s0.region_used_bytes, (uint64_t)n * kBlockSize)
      << "the blocks are not in region units";
  // One chunk holds 63 segments of about 42 blocks each: some 2,600 blocks.
  EXPECT_LE(chunks, n / 2000 + 2);
  // A chunk is one mapping (neighbours merge); the hinted placement may take a second
  // mmap (over-map and trim) when a hint is taken.
  EXPECT_LE(mmaps, 3 * chunks + 8);
  // Hardened level 2: each segment's guard pages make it four mappings (per segment of
  // some 42 blocks, not per block; at most HAK_GUARDED_SEGMENTS_MAX segments so).
  const uint64_t guard_vmas = 4 * kHakGuardSlices * (s1.segments_live - s0.segments_live);
  EXPECT_LT(vma_peak - vma0, 100u + guard_vmas) << "mappings grow with the blocks (vm.max_map_count is 65,530)";

  for (size_t i = 0; i < n; i++) free(g_blocks[i]);
  hak_collect(true);
  const hak_stats_t s2 = Stats();
  const size_t vma2 = VmaCount();
  EXPECT_LE(s2.region_used_bytes, s0.region_used_bytes) << "freed blocks still hold region units";
  EXPECT_EQ(s2.region_dirty_bytes, 0u);
  EXPECT_LE(s2.segments_live, s0.segments_live);
  EXPECT_LE(s2.os_mapped_bytes, s0.os_mapped_bytes) << "hak_collect(true) left idle chunks mapped";
  EXPECT_LE(s2.region_chunks, s0.region_chunks);
  if (!kMapsCountsSanitizerShadow) {
    EXPECT_LE(vma2, vma0 + 2) << "mappings did not fall back: " << vma0 << " -> " << vma_peak << " -> " << vma2;
  }
}

// posix_memalign of small blocks with alignments up to a slice (64 KiB) picks a size
// class whose blocks are multiples of the alignment: pool pages, no mapping per block.
// Alignments above a slice make whales: region units, still no mapping per block.
TEST(Mappings, ThousandAlignedBlocksAddNoMappingPerBlock) {
  constexpr size_t kCount = 1000;
  static void* blocks[kCount];
  for (size_t align : {(size_t)4096, (size_t)8192, (size_t)65536, kMiB}) {
    SCOPED_TRACE(align);
    // Warm up: a chunk for this kind of block exists before counting.
    void* warm = nullptr;
    ASSERT_EQ(posix_memalign(&warm, align, 64), 0);
    hak_stats_t s0 = Stats();
    size_t vma0 = VmaCount();
    for (size_t i = 0; i < kCount; i++) {
      void* p = nullptr;
      ASSERT_EQ(posix_memalign(&p, align, 64), 0) << i;
      ASSERT_NE(p, nullptr);
      ASSERT_EQ(Addr(p) % align, 0u) << p;
      ASSERT_GE(malloc_usable_size(p), 64u);
      memset(p, static_cast<int>(i), 64);
      blocks[i] = p;
    }
    hak_stats_t s1 = Stats();
    size_t vma1 = VmaCount();
    uint64_t mmaps = s1.os_mmap.count - s0.os_mmap.count;
    fprintf(stderr, "1000 x posix_memalign(%zu, 64): %llu mmap calls, mappings %zu -> %zu\n", align,
            (unsigned long long)mmaps, vma0, vma1);
    if (align <= 65536) {
      // 1000 blocks of at most 64 KiB: 64 MiB, within one chunk (hardened level 2: four
      // mappings per guarded segment).
      EXPECT_LT(mmaps, 10u);
      EXPECT_LT(vma1, vma0 + 10u + 4 * kHakGuardSlices * (s1.segments_live - s0.segments_live));
    } else {
      // One 4 MiB unit each: 1000 units, 16 chunks of 63.
      const uint64_t chunks = s1.region_chunks - s0.region_chunks;
      EXPECT_LE(chunks, kCount / 63 + 1);
      EXPECT_LE(mmaps, 3 * chunks + 8);
      // (not vma1 - vma0: hardened level 2 has fewer mappings once whales take units
      // whose guard pages segments left)
      EXPECT_LE(vma1, vma0 + kShadowMappingsPerChunk * chunks + 10);
    }
    for (size_t i = 0; i < kCount; i++) {
      const uint8_t* p = static_cast<const uint8_t*>(blocks[i]);
      ASSERT_EQ(p[0], static_cast<uint8_t>(i));
      ASSERT_EQ(p[63], static_cast<uint8_t>(i));
    }
    for (size_t i = 0; i < kCount; i++) free(blocks[i]);
    free(warm);
  }
  hak_collect(true);
}

}  // namespace
}  // namespace hak_large_test
