/* SPDX-License-Identifier: MIT */
// cache_test.cc - the BigCache (freed big blocks, per thread) and the whale ring (freed
// whales, global): a free/malloc loop is served from them with no system call; they
// hold at most their slots and bytes (HAKMEM_*_SLOTS / _BYTES, smaller in the "small"
// variant) and evict the oldest beyond; hak_collect(true) empties and purges them.
//
// Cache entries also leave once unused for the purge delay (1 s by default), which a
// loaded machine can exceed between two lines of a test. So each test body runs in a
// fresh process of this binary started with HAKMEM_PURGE_DELAY_MS=600000 (options are
// read once, at start) and HAKMEM_REGION_DIRTY=1g (evicted whales stay pending, not
// purged beyond the region's default 16 MiB budget): nothing ages out while it runs,
// and what the caches evict stays countable in the region. The body is a DISABLED_ test;
// the test of the same name without the prefix starts it and checks it passed.
#include <sys/wait.h>
#include <time.h>

#include <string>
#include <vector>

#include "hak_test_self.h"
#include "large_util.h"  // last of the includes: it includes hak_test_names.h


namespace hak_large_test {
namespace {

constexpr uint64_t kLongDelayMs = 600000;


// In the parent: runs DISABLED_<test> in a child with a purge delay of ten minutes.
#define CACHE_TEST(suite, test)                                                                      \
  TEST(suite, test) {                                                                                \
    int status;                                                                                      \
    std::string out = RunSelf(#suite ".DISABLED_" #test,                                            \
                              {"HAKMEM_PURGE_DELAY_MS=" + std::to_string(kLongDelayMs),           \
                               "HAKMEM_REGION_DIRTY=1g"},                                           \
                              &status);                                                             \
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status << ":\n" \
                                                               << out;                              \
    EXPECT_NE(out.find("[  PASSED  ] 1 test."), std::string::npos) << out;                          \
  }                                                                                                  \
  TEST(suite, DISABLED_##test)

// Every child checks it got the long delay (else the option did not reach it).
void ExpectLongDelay() { ASSERT_EQ(Stats().purge_delay_ms, kLongDelayMs); }

CACHE_TEST(Caches, BigCacheServesAFreeMallocLoopWithoutSystemCalls) {
  ExpectLongDelay();
  constexpr size_t kSize = 2 * kMiB;
  const int loops = (int)hak_test_env::Scaled(1000, 100);
  // Big segments exist, the blocks are in the cache: one, or (hardened level 2, which
  // holds the newest from reuse) two, taking turns.
  std::vector<void*> warm;
  for (size_t i = 0; i <= kHakCacheHold; i++) {
    warm.push_back(hak_malloc(kSize));
    ASSERT_NE(warm.back(), nullptr);
    ASSERT_EQ(hak_probe_is_big(warm.back()), 1);
  }
  for (void* w : warm) hak_free(w);
  const hak_stats_t s0 = Stats();
  for (int i = 0; i < loops; i++) {
    uint8_t* p = static_cast<uint8_t*>(hak_malloc(kSize));
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(p, warm[i % warm.size()]) << "the cached blocks serve every request, oldest first";
    p[0] = static_cast<uint8_t>(i);
    p[kSize - 1] = static_cast<uint8_t>(i);
    hak_free(p);
  }
  const hak_stats_t s1 = Stats();
  EXPECT_EQ(s1.bigcache.hits - s0.bigcache.hits, (uint64_t)loops);
  EXPECT_EQ(s1.bigcache.misses, s0.bigcache.misses);
  EXPECT_EQ(s1.bigcache.puts - s0.bigcache.puts, (uint64_t)loops);
  EXPECT_EQ(s1.bigcache.evictions, s0.bigcache.evictions);
  // Hardened level 2 keeps a cached block inaccessible: two mprotect calls a cycle.
  EXPECT_EQ(s1.os_mprotect.count - s0.os_mprotect.count, kHakHardenedLevel >= 2 ? 2 * (uint64_t)loops : 0);
  EXPECT_EQ(OsCalls(s1) - s1.os_mprotect.count, OsCalls(s0) - s0.os_mprotect.count) << "the BigCache loop made other system calls";
  EXPECT_EQ(s1.os_mapped_bytes, s0.os_mapped_bytes);
}

CACHE_TEST(Caches, WhaleRingServesAFreeMallocLoopWithoutSystemCalls) {
  ExpectLongDelay();
  constexpr size_t kSize = 8 * kMiB;
  const int loops = (int)hak_test_env::Scaled(1000, 100);
  std::vector<void*> warm;  // one whale, or two taking turns (hardened level 2)
  for (size_t i = 0; i <= kHakCacheHold; i++) {
    warm.push_back(hak_malloc(kSize));
    ASSERT_NE(warm.back(), nullptr);
    ASSERT_EQ(hak_probe_is_whale(warm.back()), 1);
  }
  for (void* w : warm) hak_free(w);
  const hak_stats_t s0 = Stats();
  ASSERT_GE(s0.whale.cached, warm.size());
  for (int i = 0; i < loops; i++) {
    uint8_t* p = static_cast<uint8_t*>(hak_malloc(kSize));
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(p, warm[i % warm.size()]) << "the cached whales serve every request, oldest first";
    p[0] = static_cast<uint8_t>(i);
    p[kSize - 1] = static_cast<uint8_t>(i);
    hak_free(p);
  }
  const hak_stats_t s1 = Stats();
  EXPECT_EQ(s1.whale.hits - s0.whale.hits, (uint64_t)loops);
  EXPECT_EQ(s1.whale.misses, s0.whale.misses);
  EXPECT_EQ(s1.whale.puts - s0.whale.puts, (uint64_t)loops);
  EXPECT_EQ(s1.whale.evictions, s0.whale.evictions);
  // Hardened level 2 keeps a cached block inaccessible: two mprotect calls a cycle.
  EXPECT_EQ(s1.os_mprotect.count - s0.os_mprotect.count, kHakHardenedLevel >= 2 ? 2 * (uint64_t)loops : 0);
  EXPECT_EQ(OsCalls(s1) - s1.os_mprotect.count, OsCalls(s0) - s0.os_mprotect.count) << "the whale-ring loop made other system calls";
  EXPECT_EQ(s1.region_used_bytes, s0.region_used_bytes);
  // calloc from the ring still clears (the whale is dirty).
  uint8_t* z = static_cast<uint8_t*>(hak_calloc(1, kSize));
  ASSERT_EQ(z, warm[loops % warm.size()]);
  EXPECT_EQ(FirstNonZero(z, kSize), kSize);
  hak_free(z);
}

// Freed big blocks beyond the BigCache's slots (4, or 1 in the small variant) evict
// the oldest to the big segments' free spans; the newest stay and are served first.
CACHE_TEST(Caches, BigCacheEvictsTheOldestBeyondItsSlots) {
  ExpectLongDelay();
  hak_collect(false);  // this thread's BigCache empty
  constexpr int kBlocks = 6;
  void* blocks[kBlocks];
  for (void*& b : blocks) {
    b = hak_malloc(2 * kMiB);
    ASSERT_NE(b, nullptr);
    memset(b, 0x5c, 4096);
  }
  const hak_stats_t s0 = Stats();
  ASSERT_EQ(s0.bigcache.cached, 0u);
  for (void* b : blocks) hak_free(b);
  const hak_stats_t s1 = Stats();
  const uint64_t slots = s1.bigcache.slots;
#if HAK_SMALL_LIMITS
  EXPECT_EQ(slots, 1u);
#else
  EXPECT_EQ(slots, 4u);
#endif
  EXPECT_EQ(s1.bigcache.cached, slots);
  EXPECT_EQ(s1.bigcache.cached_bytes, slots * HakTestSlotBytes(2 * kMiB));
  EXPECT_EQ(s1.bigcache.puts - s0.bigcache.puts, (uint64_t)kBlocks);
  EXPECT_EQ(s1.bigcache.evictions - s0.bigcache.evictions, kBlocks - slots);
  // The newest entries are still there: the last block freed is a hit (hardened level
  // 2: the one before it, the last is held).
  if (slots > kHakCacheHold) {
    void* again = hak_malloc(2 * kMiB);
    EXPECT_EQ(again, blocks[kBlocks - 1 - kHakCacheHold]);
    EXPECT_EQ(Stats().bigcache.hits, s1.bigcache.hits + 1);
    hak_free(again);
  }
  hak_collect(false);
  EXPECT_EQ(Stats().bigcache.cached, 0u);
}

// Freed whales beyond the ring's slots (8, or 2 in the small variant) or bytes (64 MiB,
// or 32 MiB) evict the oldest to the region, where the units stay mapped until purged.
CACHE_TEST(Caches, WhaleRingEvictsTheOldestBeyondItsSlotsOrBytes) {
  ExpectLongDelay();
  const size_t unit = hak_probe_segment_size();
  for (size_t units : {(size_t)2, (size_t)4}) {
    SCOPED_TRACE(units);
    hak_collect(true);  // the ring empty
    const size_t size = units * unit - 2 * hak_probe_os_page_size();  // a run of `units`
    constexpr int kWhales = 10;
    void* whales[kWhales];
    for (void*& w : whales) {
      w = hak_malloc(size);
      ASSERT_NE(w, nullptr);
      ASSERT_EQ(hak_probe_whale_units(w), units);
      memset(w, 0x6d, 4096);
    }
    const hak_stats_t s0 = Stats();
    ASSERT_EQ(s0.whale.cached, 0u);
    for (void* w : whales) hak_free(w);
    const hak_stats_t s1 = Stats();
#if HAK_SMALL_LIMITS
    EXPECT_EQ(s1.whale.slots, 2u);
    EXPECT_EQ(s1.whale.bytes_limit, 32 * kMiB);
#else
    EXPECT_EQ(s1.whale.slots, 8u);
    EXPECT_EQ(s1.whale.bytes_limit, 64 * kMiB);
#endif
    uint64_t fit = s1.whale.bytes_limit / (units * unit);
    if (fit > s1.whale.slots) fit = s1.whale.slots;
    EXPECT_EQ(s1.whale.cached, fit);
    EXPECT_EQ(s1.whale.cached_bytes, fit * units * unit);
    EXPECT_EQ(s1.whale.puts - s0.whale.puts, (uint64_t)kWhales);
    EXPECT_EQ(s1.whale.evictions - s0.whale.evictions, kWhales - fit);
    // The evicted runs went back to the region, still mapped, their purge pending; the
    // cached ones still hold their units.
    EXPECT_EQ(s0.region_used_bytes - s1.region_used_bytes, (kWhales - fit) * units * unit);
    EXPECT_GE(s1.region_pending_bytes, (kWhales - fit) * units * unit);
    // Hardened level 2: each whale went into the ring inaccessible, and an evicted one
    // stays so in the region (opened only when its units are taken again): no call.
    EXPECT_EQ(s1.os_mprotect.count - s0.os_mprotect.count, kHakHardenedLevel >= 2 ? (uint64_t)kWhales : 0);
    EXPECT_EQ(OsCalls(s1) - s1.os_mprotect.count, OsCalls(s0) - s0.os_mprotect.count)
        << "eviction to the region needs no system call";
    // The newest whale is served from the ring (hardened level 2: the one before it).
    void* again = hak_malloc(size);
    EXPECT_EQ(again, whales[kWhales - 1 - kHakCacheHold]);
    EXPECT_EQ(Stats().whale.hits, s1.whale.hits + 1);
    hak_free(again);
  }
  hak_collect(true);
}

// hak_collect(true) empties both caches and purges what they held: the purge counters
// and the madvise calls of the purge user grow by at least their bytes.
CACHE_TEST(Caches, CollectEmptiesAndPurgesBothCaches) {
  ExpectLongDelay();
  hak_collect(true);
  uint8_t* big = static_cast<uint8_t*>(hak_malloc(2 * kMiB));
  uint8_t* whale = static_cast<uint8_t*>(hak_malloc(8 * kMiB));
  ASSERT_NE(big, nullptr);
  ASSERT_NE(whale, nullptr);
  memset(big, 0x41, 2 * kMiB);
  memset(whale, 0x42, 8 * kMiB);
  hak_free(big);
  hak_free(whale);
  const hak_stats_t s0 = Stats();
  EXPECT_EQ(s0.bigcache.cached, 1u);
  EXPECT_EQ(s0.whale.cached, 1u);
  size_t returned = hak_collect(true);
  const hak_stats_t s1 = Stats();
  EXPECT_EQ(s1.bigcache.cached, 0u);
  EXPECT_EQ(s1.bigcache.cached_bytes, 0u);
  EXPECT_EQ(s1.whale.cached, 0u);
  EXPECT_EQ(s1.whale.cached_bytes, 0u);
  EXPECT_EQ(s1.bigcache.evictions - s0.bigcache.evictions, 1u);
  EXPECT_EQ(s1.whale.evictions - s0.whale.evictions, 1u);
  EXPECT_EQ(s1.region_dirty_bytes, 0u);
  EXPECT_EQ(s1.region_pending_bytes, 0u);
  EXPECT_GE(s1.purge_flushes, s0.purge_flushes + 1);
  EXPECT_GE(s1.purge_bytes - s0.purge_bytes, (uint64_t)(2 + 8) * kMiB);
  EXPECT_GE(s1.os_by[HAK_STATS_OS_PURGE][HAK_STATS_OS_MADVISE].count,
            s0.os_by[HAK_STATS_OS_PURGE][HAK_STATS_OS_MADVISE].count + 1);
  EXPECT_GE(returned, (size_t)(2 + 8) * kMiB) << "hak_collect's return value";
  // Purged memory reads zero again (DONTNEED, the default): calloc gets it cleared.
  uint8_t* z = static_cast<uint8_t*>(hak_calloc(1, 8 * kMiB));
  ASSERT_NE(z, nullptr);
  EXPECT_EQ(FirstNonZero(z, 8 * kMiB), 8 * kMiB);
  hak_free(z);
}

}  // namespace
}  // namespace hak_large_test
