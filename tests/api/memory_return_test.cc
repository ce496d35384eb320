/* SPDX-License-Identifier: MIT */
// memory_return_test.cc - after allocating and freeing 200 MiB (L2.5 and big blocks,
// whales, small blocks, a mix), memory goes back to the OS: freed memory stays mapped
// (the region keeps address space and purges it in batches after the purge delay),
// and hak_collect purges at once.
//
// What may legitimately stay resident once every block is freed and hak_collect(true)
// ran on this (the only allocating) thread: nothing but the headers of segments that
// other live blocks keep, so RSS falls back within a few MiB of the start and the
// region holds no dirty free bytes. Address space: chunks that still hold a segment
// stay mapped, so the mapped bytes fall back within one chunk of the start.
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "backends.h"
#include "hak_test_memory.h"
#include "hak_test_names.h"  // last: see its rule

extern "C" {
size_t hak_probe_chunk_size(void);
}

namespace {

constexpr size_t kMiB = (size_t)1 << 20;
constexpr size_t kTarget = 200 * kMiB;
constexpr size_t kMaxBlocks = 1 << 20;
void* g_blocks[kMaxBlocks];  // static: the bookkeeping itself must not allocate
size_t g_sizes[kMaxBlocks];

struct Lcg {
  uint64_t s;
  uint64_t Next() {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return s >> 33;
  }
};

hak_stats_t Stats() {
  hak_stats_t s;
  EXPECT_EQ(hak_stats_read(&s), 0);
  return s;
}

struct Summary {
  uint64_t start_mapped, peak_mapped, end_mapped;
  uint64_t start_live, end_live;
  uint64_t start_rss, peak_rss, end_rss;
  uint64_t end_dirty;
};

// Allocates until `target` bytes are live, replaces blocks at random for another
// `target` bytes of churn, then frees everything in a shuffled order and collects.
template <typename A, typename SizeFn>
Summary Churn(uint64_t seed, SizeFn next_size, size_t target) {
  Summary sum = {};
  // The bookkeeping arrays are touched before the start is measured.
  std::fill(g_blocks, g_blocks + kMaxBlocks, nullptr);
  std::fill(g_sizes, g_sizes + kMaxBlocks, 0);
  hak_collect(true);
  hak_stats_t s0 = Stats();
  sum.start_mapped = s0.os_mapped_bytes;
  sum.start_live = s0.segments_live;
  sum.start_rss = RssBytes();
  Lcg rng{seed};
  size_t n = 0, live_bytes = 0;
  while (live_bytes < target && n < kMaxBlocks) {
    size_t size = next_size(rng);
    void* p = A::Malloc(size);
    EXPECT_NE(p, nullptr) << size;
    if (p == nullptr) break;
    // Touch one byte per page and the last byte: the memory is really used.
    uint8_t* b = static_cast<uint8_t*>(p);
    for (size_t off = 0; off < size; off += 4096) b[off] = static_cast<uint8_t>(off);
    b[size - 1] = 0x7f;
    g_blocks[n] = p;
    g_sizes[n] = size;
    n++;
    live_bytes += size;
  }
  sum.peak_mapped = Stats().os_mapped_bytes;
  sum.peak_rss = RssBytes();
  size_t churned = 0;
  while (churned < target) {
    size_t i = rng.Next() % n;
    A::Free(g_blocks[i]);
    size_t size = next_size(rng);
    void* p = A::Malloc(size);
    EXPECT_NE(p, nullptr) << size;
    if (p == nullptr) {
      g_blocks[i] = g_blocks[--n];
      g_sizes[i] = g_sizes[n];
      continue;
    }
    static_cast<uint8_t*>(p)[0] = 1;
    static_cast<uint8_t*>(p)[size - 1] = 2;
    g_blocks[i] = p;
    g_sizes[i] = size;
    churned += size;
  }
  sum.peak_mapped = std::max<uint64_t>(sum.peak_mapped, Stats().os_mapped_bytes);
  for (size_t i = n; i > 1; i--) {
    size_t j = rng.Next() % i;
    std::swap(g_blocks[i - 1], g_blocks[j]);
  }
  errno = 4711;
  for (size_t i = 0; i < n; i++) A::Free(g_blocks[i]);
  EXPECT_EQ(errno, 4711) << "free changed errno while returning memory";
  hak_collect(true);
  EXPECT_EQ(errno, 4711) << "hak_collect changed errno";
  hak_stats_t s1 = Stats();
  sum.end_mapped = s1.os_mapped_bytes;
  sum.end_live = s1.segments_live;
  sum.end_rss = RssBytes();
  sum.end_dirty = s1.region_dirty_bytes + s1.whale.cached_bytes + s1.bigcache.cached_bytes;
  return sum;
}

// Under AddressSanitizer and ThreadSanitizer the shadow memory of every range touched
// stays resident: RSS says nothing about hakmem there, only its own counters do.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kRssIsMeaningful = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kRssIsMeaningful = false;
#else
constexpr bool kRssIsMeaningful = true;
#endif
#else
constexpr bool kRssIsMeaningful = true;
#endif

void CheckReturned(const Summary& s, const char* what) {
  const uint64_t chunk = hak_probe_chunk_size();
  fprintf(stderr,
          "%s: mapped start %.1f MiB, peak %.1f MiB, end %.1f MiB; RSS start %.1f, peak %.1f, end %.1f MiB; "
          "live segments %llu -> %llu\n",
          what, s.start_mapped / 1048576.0, s.peak_mapped / 1048576.0, s.end_mapped / 1048576.0,
          s.start_rss / 1048576.0, s.peak_rss / 1048576.0, s.end_rss / 1048576.0,
          (unsigned long long)s.start_live, (unsigned long long)s.end_live);
  EXPECT_EQ(s.end_dirty, 0u) << what << ": hak_collect left dirty free memory in the region or caches";
  if (kRssIsMeaningful) {
    // The test did go through the memory it claims to, and gave it back.
    EXPECT_GE(s.peak_rss, s.start_rss + kTarget / 2) << what;
    EXPECT_LE(s.end_rss, s.start_rss + 8 * kMiB)
        << what << ": RSS went from " << s.start_rss << " (peak " << s.peak_rss << ") to " << s.end_rss;
  }
  EXPECT_LE(s.end_mapped, s.start_mapped + chunk) << what << ": mapped bytes went from " << s.start_mapped
                                                  << " (peak " << s.peak_mapped << ") to " << s.end_mapped;
  EXPECT_LE(s.end_live, s.start_live) << what << ": live segments " << s.start_live << " -> " << s.end_live;
}

template <typename A>
class MemoryReturn : public ::testing::Test {};
TYPED_TEST_SUITE(MemoryReturn, Backends, BackendName);

TYPED_TEST(MemoryReturn, L25AndBigBlocks64KiBTo4MiB) {
  auto size_fn = [](Lcg& r) {
    uint64_t x = r.Next();
    return x % 8 == 0 ? (size_t)65536 : (size_t)65536 + (size_t)(x % (4 * kMiB - 65536 + 1));
  };
  for (int round = 0; round < 3; round++) {
    Summary s = Churn<TypeParam>(1000 + round, size_fn, kTarget);
    CheckReturned(s, "64 KiB .. 4 MiB blocks");
  }
}

TYPED_TEST(MemoryReturn, Whales) {
  auto size_fn = [](Lcg& r) { return (size_t)5 * kMiB + (size_t)(r.Next() % (20 * kMiB)); };
  Summary s = Churn<TypeParam>(1500, size_fn, kTarget);
  CheckReturned(s, "whales");
}

TYPED_TEST(MemoryReturn, SmallBlocks) {
  static const size_t kSizes[] = {16, 48, 100, 256, 640, 1024};
  auto size_fn = [](Lcg& r) { return kSizes[r.Next() % 6]; };
  for (int round = 0; round < 2; round++) {
    Summary s = Churn<TypeParam>(2000 + round, size_fn, kTarget);
    CheckReturned(s, "small blocks");
  }
}

TYPED_TEST(MemoryReturn, MixedPoolBigAndWhaleBlocks) {
  static const size_t kSizes[] = {24, 200, 1000, 3000, 8000, 12000, 30000, 65536, 70000, 300000, kMiB, 3 * kMiB, 9 * kMiB};
  auto size_fn = [](Lcg& r) { return kSizes[r.Next() % 13]; };
  Summary s = Churn<TypeParam>(3000, size_fn, kTarget);
  CheckReturned(s, "mixed blocks");
}

// Without hak_collect, freed memory is purged once the purge delay has passed and some
// slow path runs: the region's dirty bytes drain by themselves.
TYPED_TEST(MemoryReturn, FreedMemoryIsPurgedAfterTheDelay) {
  using A = TypeParam;
  hak_collect(true);
  std::vector<void*> whales;
  for (int i = 0; i < 16; i++) {
    void* p = A::Malloc(24 * kMiB);
    ASSERT_NE(p, nullptr);
    memset(p, 0x5a, 24 * kMiB);
    whales.push_back(p);
  }
  for (void* p : whales) A::Free(p);
  EXPECT_GT(Stats().region_dirty_bytes + Stats().whale.cached_bytes, 0u);
  // Poll: slow paths (a new whale each time) tick the purge; the delay is 1 s by
  // default, the deadline generous for a loaded machine.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  uint64_t dirty = 0;
  do {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    A::Free(A::Malloc(300 * 1024 * 1024));
    hak_stats_t s = Stats();
    dirty = s.region_dirty_bytes + s.whale.cached_bytes;
  } while (dirty > 4 * kMiB && std::chrono::steady_clock::now() < deadline);
  EXPECT_LE(dirty, 4 * kMiB) << "freed whales were never purged";
  EXPECT_GE(Stats().purge_bytes, 16 * 24 * kMiB / 2);
}

}  // namespace
