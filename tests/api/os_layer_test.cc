/* SPDX-License-Identifier: MIT */
// os_layer_test.cc - the OS layer (hak_os.c) with injected fakes, and the stats API
// built on its counters.
//
// While a fake is installed the tests avoid anything that may allocate (gtest
// assertions included: the binary's malloc is hakmem): results are stored in locals
// and asserted after hak_probe_os_restore().
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <stdint.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "backends.h"
#include "hak_test_env.h"
#include "hak_test_stats.h"
#include "hak_test_names.h"  // last: see its rule

extern "C" {
int hak_probe_mode_counting(void);
int hak_probe_mode_fail_map(void);
int hak_probe_mode_ignore_hint(void);
int hak_probe_mode_fail_unmap(void);
int hak_probe_mode_fail_unmap_einval(void);
void hak_probe_os_install(int mode);
void hak_probe_os_restore(void);
size_t hak_probe_os_map_calls(void);
size_t hak_probe_os_unmap_calls(void);
size_t hak_probe_os_advise_calls(void);
size_t hak_probe_os_map_hinted(void);
size_t hak_probe_os_remap_calls(void);
size_t hak_probe_os_protect_calls(void);
void* hak_probe_os_map_aligned(size_t size, size_t align, size_t align_offset);
void hak_probe_os_unmap(void* addr, size_t size);
int hak_probe_os_purge(void* addr, size_t size);
size_t hak_probe_segment_size(void);
size_t hak_probe_chunk_size(void);
size_t hak_probe_big_max(void);
size_t hak_probe_os_page_size(void);
size_t hak_probe_class_huge(void);
size_t hak_probe_class_of(size_t size);
int hak_probe_is_whale(const void* p);
size_t hak_probe_whale_mapping_size(const void* p);
int hak_probe_whale_is_dedicated(const void* p);
int hak_probe_is_big(const void* p);
}

namespace {

constexpr size_t kMiB = (size_t)1 << 20;

hak_stats_t Stats() {
  hak_stats_t s;
  EXPECT_EQ(hak_stats_read(&s), 0);
  return s;
}

// Restores the kernel's ops even when a test fails halfway.
struct OpsGuard {
  explicit OpsGuard(int mode) { hak_probe_os_install(mode); }
  ~OpsGuard() { hak_probe_os_restore(); }
};

// ---- A failing map --------------------------------------------------------------------------

template <typename A>
class FailingMap : public ::testing::Test {};
TYPED_TEST_SUITE(FailingMap, Backends, BackendName);

// Requests that need new address space from the OS (larger than a region chunk, or
// aligned beyond one) fail with ENOMEM when the OS refuses, and nothing is lost.
TYPED_TEST(FailingMap, LargeAllocationsFailWithEnomemAndTheAllocatorRecovers) {
  using A = TypeParam;
  const size_t beyond = hak_probe_chunk_size() + 8 * kMiB;  // a mapping of its own
  void* small = A::Malloc(100);  // made before the failure, must survive it
  ASSERT_NE(small, nullptr);
  FillPattern(small, 100, 5);
  hak_stats_t before = Stats();

  struct Result {
    void* p;
    int err;
  } malloc_r, calloc_r, realloc_r, aligned_r, memalign_r, valloc_r, pvalloc_r;
  int pm_rc;
  void* pm_out = reinterpret_cast<void*>(0x99);
  int pm_errno;
  {
    OpsGuard guard(hak_probe_mode_fail_map());
    errno = 0;
    malloc_r.p = A::Malloc(beyond);
    malloc_r.err = errno;
    errno = 0;
    calloc_r.p = A::Calloc(2, beyond / 2);
    calloc_r.err = errno;
    errno = 0;
    realloc_r.p = A::Realloc(small, beyond);
    realloc_r.err = errno;
    errno = 0;
    aligned_r.p = A::AlignedAlloc(2 * hak_probe_chunk_size(), 1);
    aligned_r.err = errno;
    errno = 0;
    memalign_r.p = A::Memalign(2 * hak_probe_chunk_size(), 10);
    memalign_r.err = errno;
    errno = 0;
    valloc_r.p = A::Valloc(beyond);
    valloc_r.err = errno;
    errno = 0;
    pvalloc_r.p = A::Pvalloc(beyond);
    pvalloc_r.err = errno;
    errno = 1234;
    pm_rc = A::PosixMemalign(&pm_out, 2 * hak_probe_chunk_size(), 10);
    pm_errno = errno;
  }
  size_t map_calls = hak_probe_os_map_calls();
  hak_stats_t after = Stats();

  for (const Result* r : {&malloc_r, &calloc_r, &realloc_r, &aligned_r, &memalign_r, &valloc_r, &pvalloc_r}) {
    EXPECT_EQ(r->p, nullptr);
    EXPECT_EQ(r->err, ENOMEM);
  }
  EXPECT_EQ(pm_rc, ENOMEM);
  EXPECT_EQ(pm_out, reinterpret_cast<void*>(0x99));
  EXPECT_EQ(pm_errno, 1234);
  EXPECT_GE(map_calls, 8u) << "the fake was not used";
  EXPECT_GE(after.os_mmap.failures, before.os_mmap.failures + 8);
  EXPECT_EQ(after.os_mapped_bytes, before.os_mapped_bytes) << "a failed map changed the mapped bytes";

  // The failed realloc left the small block alone.
  EXPECT_EQ(FirstPatternMismatch(small, 100, 5), 100u);
  // Usable again with the kernel's ops.
  void* p = A::Malloc(beyond);
  ASSERT_NE(p, nullptr);
  memset(p, 1, kMiB);
  void* q = A::Realloc(small, 3 * kMiB);
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(FirstPatternMismatch(q, 100, 5), 100u);
  void* r = A::AlignedAlloc(2 * hak_probe_chunk_size(), 1);
  ASSERT_NE(r, nullptr);
  EXPECT_TRUE(IsAligned(r, 2 * hak_probe_chunk_size()));
  A::Free(p);
  A::Free(q);
  A::Free(r);
}

TYPED_TEST(FailingMap, SmallAllocationsRunOutThenRecover) {
  // With no new memory from the OS, 8 KiB blocks are served from the pages, segments
  // and region chunks already mapped, then fail with ENOMEM.
  using A = TypeParam;
  constexpr size_t kMax = 80000;  // 640 MiB: more than two chunks hold
  static void* blocks[kMax];      // no allocation while the fake is installed
  size_t n = 0;
  void* failed = reinterpret_cast<void*>(0x1);
  int err = 0;
  {
    OpsGuard guard(hak_probe_mode_fail_map());
    while (n < kMax) {
      errno = 0;
      void* p = A::Malloc(8192);
      if (p == nullptr) {
        failed = p;
        err = errno;
        break;
      }
      static_cast<uint8_t*>(p)[0] = 1;
      static_cast<uint8_t*>(p)[8191] = 2;
      blocks[n++] = p;
    }
  }
  size_t map_calls = hak_probe_os_map_calls();
  EXPECT_EQ(failed, nullptr) << "malloc never failed in " << kMax << " tries";
  EXPECT_EQ(err, ENOMEM);
  EXPECT_GE(map_calls, 1u);
  for (size_t i = 0; i < n; i++) A::Free(blocks[i]);
  // Now the same amount and more works.
  std::vector<void*> again;
  for (size_t i = 0; i < n + 1000; i++) {
    void* p = A::Malloc(8192);
    ASSERT_NE(p, nullptr) << i;
    static_cast<uint8_t*>(p)[0] = 3;
    again.push_back(p);
  }
  for (void* p : again) A::Free(p);
}

// ---- Counting fakes: every OS call goes through the ops -------------------------------------

TEST(OsLayer, EveryOsCallGoesThroughTheOps) {
  const size_t own = hak_probe_chunk_size() + 3 * kMiB + 5;  // a whale with a mapping of its own
  for (int mode : {hak_probe_mode_counting(), hak_probe_mode_ignore_hint()}) {
    hak_collect(true);  // nothing cached from earlier tests: the counts below are exact
    hak_stats_t before = Stats();
    static void* blocks[32768];
    size_t map_calls, unmap_calls, advise_calls, remap_calls, protect_calls;
    void* whale;
    void* grown;
    {
      OpsGuard guard(mode);
      whale = hak_malloc(own);
      if (whale != nullptr) memset(whale, 7, kMiB);
      grown = hak_realloc(hak_malloc(9 * kMiB), 200 * kMiB);  // moves: region whale -> mremap
      hak_free(whale);  // too big for the whale ring: unmapped
      hak_free(grown);
      hak_free(hak_malloc(2 * kMiB));  // to the BigCache (hardened level 2: made inaccessible)
      // 32 MiB of 1 KiB blocks: new segments, emptied; hak_collect purges them at once.
      for (auto& b : blocks) {
        b = hak_malloc(1024);
        if (b != nullptr) static_cast<uint8_t*>(b)[0] = 1;
      }
      for (void* b : blocks) hak_free(b);
      hak_collect(true);
      map_calls = hak_probe_os_map_calls();
      unmap_calls = hak_probe_os_unmap_calls();
      advise_calls = hak_probe_os_advise_calls();
      remap_calls = hak_probe_os_remap_calls();
      protect_calls = hak_probe_os_protect_calls();
    }
    hak_stats_t after = Stats();
    ASSERT_NE(whale, nullptr);
    ASSERT_NE(grown, nullptr);
    for (void* b : blocks) ASSERT_NE(b, nullptr);
    EXPECT_GE(map_calls, 1u);
    EXPECT_GE(unmap_calls, 1u);
    EXPECT_GE(advise_calls, 1u) << "hak_collect should have purged the emptied segments";
    // The stats saw exactly the calls the fake saw: nothing bypasses the ops.
    EXPECT_EQ(after.os_mmap.count - before.os_mmap.count, map_calls);
    EXPECT_EQ(after.os_munmap.count - before.os_munmap.count, unmap_calls);
    EXPECT_EQ(after.os_madvise.count - before.os_madvise.count, advise_calls);
    EXPECT_EQ(after.os_mremap.count - before.os_mremap.count, remap_calls);
    EXPECT_EQ(after.os_mprotect.count - before.os_mprotect.count, protect_calls);
    // Hardened level 2: the cached big block went in inaccessible and came out again
    // (the caches' calls count as huge blocks'); the other calls guard segments (two
    // as each is made, two as it goes back: the region's).
    const uint64_t cache_protects = after.os_by[HAK_STATS_OS_HUGE][HAK_STATS_OS_MPROTECT].count -
                                    before.os_by[HAK_STATS_OS_HUGE][HAK_STATS_OS_MPROTECT].count;
    EXPECT_EQ(cache_protects, kHakHardenedLevel >= 2 ? 2u : 0u);
    EXPECT_EQ(protect_calls - cache_protects, after.os_by[HAK_STATS_OS_REGION][HAK_STATS_OS_MPROTECT].count -
                                                  before.os_by[HAK_STATS_OS_REGION][HAK_STATS_OS_MPROTECT].count);
    if (kHakHardenedLevel < 2) {
      EXPECT_EQ(protect_calls, 0u);
    }
    EXPECT_EQ(after.os_mmap.failures, before.os_mmap.failures);
    EXPECT_EQ(after.os_munmap.failures, before.os_munmap.failures);
    // The totals are the sums over the users.
    for (int k = 0; k < HAK_STATS_OS_KINDS; k++) {
      uint64_t sum = 0;
      for (int u = 0; u < HAK_STATS_OS_USERS; u++) sum += after.os_by[u][k].count;
      const hak_os_call_stats_t* total[] = {&after.os_mmap,   &after.os_munmap, &after.os_madvise,
                                                &after.os_mremap, &after.os_mprotect};
      EXPECT_EQ(sum, total[k]->count) << "kind " << k;
    }
  }
}

// A whale too long for a region chunk gets a mapping of its own: exactly accounted,
// 4 MiB-aligned (so free() finds its header by masking), unmapped when freed (it is
// larger than the whale ring may hold).
TEST(OsLayer, WhalesOfTheirOwnMappingAreExactlyAccounted) {
  const size_t chunk = hak_probe_chunk_size();
  const size_t page = hak_probe_os_page_size();
  for (int mode : {hak_probe_mode_counting(), hak_probe_mode_ignore_hint()}) {
    for (size_t size : {chunk - 4 * kMiB + 1, chunk, chunk + 4 * kMiB + 3}) {
      hak_stats_t a = Stats();
      void* p;
      hak_stats_t b;
      {
        OpsGuard guard(mode);
        p = hak_malloc(size);
        hak_stats_read(&b);
      }
      ASSERT_NE(p, nullptr);
      ASSERT_EQ(hak_probe_is_whale(p), 1);
      ASSERT_EQ(hak_probe_whale_is_dedicated(p), 1) << size;
      size_t rounded = HakWhaleSlot(size, page);
      size_t mapping = hak_probe_whale_mapping_size(p);
      EXPECT_EQ(Addr(p) % (4 * kMiB), page) << "a whale starts one OS page into its first unit";
      EXPECT_EQ(mapping, page + rounded);
      EXPECT_EQ(hak_usable_size(p), HakWhaleUsable(size, page));
      EXPECT_EQ(b.os_mapped_bytes - a.os_mapped_bytes, mapping) << "mode " << mode << " size " << size;
      EXPECT_EQ(b.segments_live, a.segments_live + 1);
      memset(p, 0x6b, kMiB);
      static_cast<uint8_t*>(p)[size - 1] = 1;
      hak_free(p);
      hak_stats_t c = Stats();
      EXPECT_EQ(c.os_mapped_bytes, a.os_mapped_bytes) << "mode " << mode << " size " << size;
      EXPECT_EQ(c.segments_live, a.segments_live);
    }
  }
}

// A whale that fits a chunk is a run of region units: no system call once the chunk is
// there, its usable size is the request rounded to pages, freeing it maps nothing back.
TEST(OsLayer, RegionWhalesNeedNoSystemCall) {
  void* warm = hak_malloc(9 * kMiB);  // makes sure a chunk exists
  ASSERT_NE(warm, nullptr);
  hak_free(warm);
  const size_t page = hak_probe_os_page_size();
  for (size_t size : {hak_probe_big_max() + 1, (size_t)9 * kMiB + 3, (size_t)40 * kMiB}) {
    hak_stats_t a = Stats();
    void* p = hak_malloc(size);
    ASSERT_NE(p, nullptr);
    hak_stats_t b = Stats();
    EXPECT_EQ(hak_probe_is_whale(p), 1) << size;
    EXPECT_EQ(hak_probe_whale_is_dedicated(p), 0) << size;
    EXPECT_EQ(Addr(p) % (4 * kMiB), page);
    EXPECT_EQ(hak_usable_size(p), HakWhaleUsable(size, page));
    EXPECT_EQ(b.segments_live, a.segments_live + 1);
    memset(p, 0x3c, size);
    hak_free(p);
    hak_stats_t c = Stats();
    EXPECT_EQ(c.segments_live, a.segments_live);
    EXPECT_EQ(c.os_munmap.count, a.os_munmap.count) << "a region whale is never unmapped on free";
  }
}

TEST(OsLayer, MapAlignedHonoursAlignmentAndOffset) {
  const size_t seg = hak_probe_segment_size();
  struct Case {
    size_t size, align, offset;
  };
  const Case cases[] = {
      {4096, 4096, 0},     {65536, 4096, 0},    {seg, seg, 0},           {3 * seg + 4096, seg, 0},
      {seg, 2 * seg, seg}, {5 * seg, 4 * seg, seg}, {100, seg, 0},       {seg + 1, 8 * seg, 0},
  };
  for (int mode : {hak_probe_mode_counting(), hak_probe_mode_ignore_hint()}) {
    for (const Case& c : cases) {
      hak_stats_t a = Stats();
      uint8_t* p;
      {
        OpsGuard guard(mode);
        p = static_cast<uint8_t*>(hak_probe_os_map_aligned(c.size, c.align, c.offset));
      }
      ASSERT_NE(p, nullptr);
      const size_t page = hak_probe_os_page_size();  // 4 KiB, or 16/64 KiB on some arm64 kernels
      size_t rounded = (c.size + page - 1) & ~(page - 1);
      EXPECT_EQ((Addr(p) + c.offset) % c.align, 0u)
          << "size " << c.size << " align " << c.align << " offset " << c.offset << " -> " << (void*)p;
      hak_stats_t b = Stats();
      EXPECT_EQ(b.os_mapped_bytes - a.os_mapped_bytes, rounded) << "trimmed mapping size";
      memset(p, 0x55, rounded);  // the whole (page-rounded) mapping is ours
      hak_probe_os_unmap(p, rounded);
      EXPECT_EQ(Stats().os_mapped_bytes, a.os_mapped_bytes);
    }
  }
}

TEST(OsLayer, PurgeZeroesMemoryButKeepsTheMapping) {
  const size_t page = hak_probe_os_page_size();  // purges must be whole pages of the kernel's
  const size_t size = 64 * page;
  uint8_t* p = static_cast<uint8_t*>(hak_probe_os_map_aligned(size, page, 0));
  ASSERT_NE(p, nullptr);
  memset(p, 0xaa, size);
  hak_stats_t a = Stats();
  EXPECT_EQ(hak_probe_os_purge(p + page, size - 2 * page), 1) << "DONTNEED (the default) reads zero after";
  hak_stats_t b = Stats();
  EXPECT_GE(b.os_madvise.count, a.os_madvise.count + 1);
  EXPECT_EQ(b.os_mapped_bytes, a.os_mapped_bytes) << "purge must not count as unmapping";
  EXPECT_EQ(p[0], 0xaa);
  EXPECT_EQ(p[size - 1], 0xaa);
  EXPECT_EQ(FirstNonZero(p + page, size - 2 * page), size - 2 * page);
  memset(p, 1, size);  // still mapped and writable
  hak_probe_os_unmap(p, size);
}

TEST(OsLayer, FailingUnmapIsCountedKeepsErrnoAndStillGivesTheMemoryBack) {
  const size_t size = hak_probe_chunk_size() + kMiB;
  unsigned char* p = static_cast<unsigned char*>(hak_malloc(size));  // a whale of its own mapping
  ASSERT_NE(p, nullptr);
  memset(p, 0x5a, size);  // resident
  hak_stats_t a = Stats();
  int err;
  {
    OpsGuard guard(hak_probe_mode_fail_unmap());
    errno = 4321;
    hak_free(p);  // the fake refuses to unmap: the address space stays mapped
    err = errno;
  }
  hak_stats_t b = Stats();
  EXPECT_EQ(err, 4321) << "free changed errno";
  EXPECT_EQ(b.os_munmap.count, a.os_munmap.count + 1);
  EXPECT_EQ(b.os_munmap.failures, a.os_munmap.failures + 1);
  EXPECT_EQ(b.os_mapped_bytes, a.os_mapped_bytes) << "bytes still mapped must still be counted";
  EXPECT_EQ(b.segments_live + 1, a.segments_live);
  // ... but its memory went back (DONTNEED: the pages read zero), instead of leaking.
  EXPECT_GE(b.os_madvise.count, a.os_madvise.count + 1);
  EXPECT_EQ(FirstNonZero(p, size), size) << "the refused mapping's pages were not given back";
  void* q = hak_malloc(2 * kMiB);  // business as usual
  ASSERT_NE(q, nullptr);
  memset(q, 0, 2 * kMiB);
  hak_free(q);
}

// munmap failing for another reason than ENOMEM: the hardened level 2 stops (hakmem's
// idea of its address space is wrong); the other variants count it and go on as above.
TEST(OsLayer, UnmapFailingWithEinvalStopsTheHardenedVariant) {
  const size_t size = hak_probe_chunk_size() + kMiB;
  auto run = [size] {
    void* p = hak_malloc(size);  // a whale of its own mapping
    if (p == nullptr) _exit(3);
    OpsGuard guard(hak_probe_mode_fail_unmap_einval());
    hak_free(p);
    fprintf(stderr, "went on\n");
    _exit(0);
  };
  if (kHakHardenedLevel >= 2) {
    EXPECT_DEATH(run(), "hakmem: fatal: the OS refused munmap, errno 22 \\(hardened\\)");
  } else {
    EXPECT_EXIT(run(), ::testing::ExitedWithCode(0), "went on");
  }
}

// ---- Stats API, every variant -----------------------------------------------------------------

TEST(Stats, GetNullIsEinval) { EXPECT_EQ(hak_stats_get(nullptr), EINVAL); }

// hak_stats_t is versioned by size: a caller built against an older, shorter struct
// gets exactly the bytes it knows, one built against a newer, longer one gets what
// this library has and is told how much; a size short of the header is refused.
TEST(Stats, GetFillsOnlyTheSizeTheCallerKnows) {
  struct Padded {
    hak_stats_t stats;
    unsigned char after[64];
  };
  const size_t old_size = offsetof(hak_stats_t, os_mprotect);  // an "older" struct
  Padded older;
  memset(&older, 0xAB, sizeof(older));
  older.stats.size = (uint32_t)old_size;
  ASSERT_EQ(hak_stats_get(&older.stats), 0);
  EXPECT_EQ(older.stats.size, old_size);
  EXPECT_EQ(older.stats.version, (uint32_t)HAK_STATS_VERSION);
  EXPECT_GT(older.stats.os_mmap.count, 0u);  // inside the known part: filled
  const unsigned char* bytes = reinterpret_cast<const unsigned char*>(&older);
  for (size_t i = old_size; i < sizeof(older); i++) ASSERT_EQ(bytes[i], 0xAB) << "byte " << i << " written";

  Padded newer;  // a "newer" struct: 64 bytes this library does not know
  memset(&newer, 0xCD, sizeof(newer));
  newer.stats.size = (uint32_t)sizeof(newer);
  ASSERT_EQ(hak_stats_get(&newer.stats), 0);
  EXPECT_EQ(newer.stats.size, sizeof(hak_stats_t));
  for (size_t i = 0; i < sizeof(newer.after); i++) ASSERT_EQ(newer.after[i], 0xCD) << "byte " << i << " past the struct";

  hak_stats_t tiny;
  memset(&tiny, 0, sizeof(tiny));
  tiny.size = (uint32_t)offsetof(hak_stats_t, counters_enabled);  // not even the header
  EXPECT_EQ(hak_stats_get(&tiny), EINVAL);
  tiny.size = 0;
  EXPECT_EQ(hak_stats_get(&tiny), EINVAL);

  hak_stats_t all;
  ASSERT_EQ(hak_stats_read(&all), 0);  // the usual call: everything
  EXPECT_EQ(all.size, sizeof(hak_stats_t));
  EXPECT_EQ(all.version, (uint32_t)HAK_STATS_VERSION);
}

// RSS comes from a read of /proc/self/status: a full read has it, and a caller that
// stops before rss_bytes (the fuzz harness, twice per input) gets the rest without it.
TEST(Stats, RssOnlyForCallersThatAskForIt) {
  hak_stats_t all;
  ASSERT_EQ(hak_stats_read(&all), 0);
  EXPECT_GT(all.rss_bytes, 0u);
  EXPECT_GE(all.rss_peak_bytes, all.rss_bytes);

  hak_stats_t part;
  memset(&part, 0xAB, sizeof(part));
  part.size = (uint32_t)offsetof(hak_stats_t, rss_bytes);
  ASSERT_EQ(hak_stats_get(&part), 0);
  EXPECT_EQ(part.size, offsetof(hak_stats_t, rss_bytes));
  EXPECT_EQ(part.version, (uint32_t)HAK_STATS_VERSION);
  EXPECT_GE(part.os_mmap.count, all.os_mmap.count);  // filled: counters only grow
  EXPECT_EQ(part.rss_bytes, 0xABABABABABABABABull);  // left alone
}

TEST(Stats, VariantName) {
#if defined(HAK_STATS) && HAK_STATS && defined(HAK_HARDENED) && HAK_HARDENED
  const char* expected = "stats+hardened";
#elif defined(HAK_STATS) && HAK_STATS
  const char* expected = "stats";
#elif defined(HAK_HARDENED) && HAK_HARDENED
  const char* expected = "hardened";
#else
  const char* expected = "release";
#endif
  EXPECT_STREQ(hak_variant(), expected);
}

TEST(Stats, OsCallsAreCountedInEveryVariant) {
  const size_t size = hak_probe_chunk_size() + 5 * kMiB;
  hak_stats_t a = Stats();
  void* p = hak_malloc(size);  // a whale of its own mapping
  ASSERT_NE(p, nullptr);
  memset(p, 1, size);
  hak_stats_t b = Stats();
  hak_free(p);
  hak_stats_t c = Stats();

  EXPECT_GT(b.os_mmap.count, a.os_mmap.count);
  EXPECT_GT(b.os_mmap.nanos, a.os_mmap.nanos);
  EXPECT_GE(b.os_mapped_bytes, a.os_mapped_bytes + size);
  EXPECT_EQ(b.segments_live, a.segments_live + 1);
  EXPECT_GT(c.os_munmap.count, b.os_munmap.count);
  EXPECT_GT(c.os_munmap.nanos, b.os_munmap.nanos);
  EXPECT_EQ(c.os_mapped_bytes, a.os_mapped_bytes);
  EXPECT_EQ(c.segments_live, a.segments_live);
  EXPECT_EQ(c.os_mmap.failures, a.os_mmap.failures);
}

TEST(Stats, CountersMatchTheVariant) {
#if defined(HAK_STATS) && HAK_STATS
  const bool enabled = true;
#else
  const bool enabled = false;
#endif
  const size_t huge = hak_probe_class_huge();
  const size_t cls = hak_probe_class_of(200);
  hak_stats_t a = Stats();
  void* big = hak_malloc(2 * kMiB);
  void* small = hak_malloc(200);
  ASSERT_NE(big, nullptr);
  ASSERT_NE(small, nullptr);
  hak_free(small);
  hak_free(big);
  hak_stats_t b = Stats();
  EXPECT_EQ(b.counters_enabled, enabled ? 1 : 0);
  void* whale = hak_malloc(9 * kMiB);
  ASSERT_NE(whale, nullptr);
  hak_free(whale);
  hak_stats_t c = Stats();
  if (enabled) {
    EXPECT_EQ(b.alloc_large, a.alloc_large + 1);
    EXPECT_EQ(b.free_large, a.free_large + 1);
    EXPECT_EQ(b.class_allocs[huge], a.class_allocs[huge] + 1);
    EXPECT_EQ(b.class_frees[huge], a.class_frees[huge] + 1);
    EXPECT_EQ(b.class_allocs[cls], a.class_allocs[cls] + 1);
    EXPECT_EQ(b.class_frees[cls], a.class_frees[cls] + 1);
    EXPECT_EQ(b.alloc_fast + b.alloc_slow, a.alloc_fast + a.alloc_slow + 1);
    EXPECT_EQ(b.free_local, a.free_local + 1);
    EXPECT_EQ(c.alloc_large, b.alloc_large + 1);
    EXPECT_EQ(c.free_large, b.free_large + 1);
    EXPECT_EQ(c.class_frees[huge], b.class_frees[huge] + 1);
    EXPECT_GE(b.threads_started, 1u);
  } else {
    ExpectCountersCompiledOut(b);
  }
}

TEST(Stats, PrintWritesAReport) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  hak_stats_print(fds[1]);
  close(fds[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof(buf))) > 0) out.append(buf, (size_t)n);
  close(fds[0]);
  EXPECT_NE(out.find(std::string("hakmem stats report (variant ") + hak_variant() + ", pid "), std::string::npos)
      << out;
  EXPECT_NE(out.find("mmap"), std::string::npos) << out;
  EXPECT_NE(out.find("mapped bytes"), std::string::npos) << out;
#if defined(HAK_STATS) && HAK_STATS
  EXPECT_NE(out.find("alloc fast"), std::string::npos) << out;
  EXPECT_NE(out.find("Size classes"), std::string::npos) << out;
#else
  EXPECT_NE(out.find("(per-class counters need the stats variant)"), std::string::npos) << out;
#endif
}

}  // namespace
