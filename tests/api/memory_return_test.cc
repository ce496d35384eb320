// memory_return_test.cc - after allocating and freeing 200 MiB (large blocks, small
// blocks, a mix), the bytes hakmem keeps mapped fall back near where they started.
//
// What may legitimately stay mapped once every block is freed (single thread):
//   - blocks > 64 KiB are huge segments, unmapped when freed: nothing;
//   - the heap keeps the last empty page of each size class it used
//     (hak_heap_page_retire), which pins at most one segment per class;
//   - up to HAK_SEGMENT_CACHE_MAX empty segments are cached (purged, still mapped).
// So: mapped_after <= mapped_before + (HAK_SEGMENT_CACHE_MAX + classes used) * 4 MiB,
// and live segments <= live before + classes used. Each test uses at most 8 classes,
// so the bound (<= 48 MiB) is far below the 200 MiB that went through.
#include <errno.h>
#include <stdint.h>
#include <stdio.h>

#include <algorithm>
#include <set>
#include <vector>

#include "backends.h"
#include "hak_test_names.h"  // last: see its rule

extern "C" {
size_t hak_probe_segment_size(void);
size_t hak_probe_segment_cache_max(void);
size_t hak_probe_class_of(size_t size);
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
  EXPECT_EQ(hak_stats_get(&s), 0);
  return s;
}

struct Summary {
  uint64_t start_mapped, peak_mapped, end_mapped;
  uint64_t start_live, end_live;
  size_t classes;  // distinct pool classes (<= 64 KiB) used
};

// Allocates until `target` bytes are live, replaces blocks at random for another
// `target` bytes of churn, then frees everything in a shuffled order.
template <typename A, typename SizeFn>
Summary Churn(uint64_t seed, SizeFn next_size, size_t target) {
  Summary sum = {};
  std::set<size_t> classes;  // filled after the fact: no allocation in the loops
  hak_stats_t s0 = Stats();
  sum.start_mapped = s0.os_mapped_bytes;
  sum.start_live = s0.segments_live;
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
  hak_stats_t s1 = Stats();
  sum.end_mapped = s1.os_mapped_bytes;
  sum.end_live = s1.segments_live;
  // Recompute the classes the sizes map to (the size generator is deterministic).
  Lcg again{seed};
  for (size_t k = 0; k < n + 4096; k++) {
    size_t size = next_size(again);
    if (size <= 65536) classes.insert(hak_probe_class_of(size));
  }
  sum.classes = classes.size();
  return sum;
}

void CheckReturned(const Summary& s, size_t max_classes, const char* what) {
  const uint64_t seg = hak_probe_segment_size();
  const uint64_t cache = hak_probe_segment_cache_max();
  ASSERT_LE(s.classes, max_classes) << what << ": the bound assumes at most " << max_classes << " classes";
  // The test did go through the memory it claims to.
  EXPECT_GE(s.peak_mapped, s.start_mapped + kTarget / 2) << what;
  uint64_t bound = s.start_mapped + (cache + max_classes) * seg;
  fprintf(stderr, "%s: mapped start %.1f MiB, peak %.1f MiB, end %.1f MiB (bound %.1f MiB); live segments %llu -> %llu\n",
          what, s.start_mapped / 1048576.0, s.peak_mapped / 1048576.0, s.end_mapped / 1048576.0, bound / 1048576.0,
          (unsigned long long)s.start_live, (unsigned long long)s.end_live);
  EXPECT_LE(s.end_mapped, bound) << what << ": mapped bytes went from " << s.start_mapped << " (peak "
                                 << s.peak_mapped << ") to " << s.end_mapped << ", more than "
                                 << (cache + max_classes) << " segments above the start";
  EXPECT_LE(s.end_live, s.start_live + max_classes)
      << what << ": live segments " << s.start_live << " -> " << s.end_live;
}

template <typename A>
class MemoryReturn : public ::testing::Test {};
TYPED_TEST_SUITE(MemoryReturn, Backends, BackendName);

TYPED_TEST(MemoryReturn, LargeBlocks64KiBTo1MiB) {
  // Sizes 64 KiB .. 1 MiB: 64 KiB itself is the last pool class (one class), the rest
  // are huge blocks.
  auto size_fn = [](Lcg& r) {
    uint64_t x = r.Next();
    return x % 8 == 0 ? (size_t)65536 : (size_t)65536 + (size_t)(x % (kMiB - 65536 + 1));
  };
  uint64_t first_end = 0;
  for (int round = 0; round < 3; round++) {
    Summary s = Churn<TypeParam>(1000 + round, size_fn, kTarget);
    CheckReturned(s, 1, "64 KiB .. 1 MiB blocks");
    if (round == 0) first_end = s.end_mapped;
    // Repeating the churn does not creep upwards.
    EXPECT_LE(s.end_mapped, first_end + hak_probe_segment_cache_max() * hak_probe_segment_size())
        << "round " << round;
  }
}

TYPED_TEST(MemoryReturn, SmallBlocks) {
  static const size_t kSizes[] = {16, 48, 100, 256, 640, 1024};  // six classes
  auto size_fn = [](Lcg& r) { return kSizes[r.Next() % 6]; };
  uint64_t first_end = 0;
  for (int round = 0; round < 2; round++) {
    Summary s = Churn<TypeParam>(2000 + round, size_fn, kTarget);
    CheckReturned(s, 6, "small blocks");
    if (round == 0) first_end = s.end_mapped;
    EXPECT_LE(s.end_mapped, first_end + hak_probe_segment_cache_max() * hak_probe_segment_size())
        << "round " << round;
  }
}

TYPED_TEST(MemoryReturn, MixedPoolAndHugeBlocks) {
  // Eight pool classes across small and medium pages, plus huge sizes.
  static const size_t kSizes[] = {24, 200, 1000, 3000, 8000, 12000, 30000, 65536, 70000, 300000, kMiB};
  auto size_fn = [](Lcg& r) { return kSizes[r.Next() % 11]; };
  Summary s = Churn<TypeParam>(3000, size_fn, kTarget);
  CheckReturned(s, 8, "mixed blocks");
}

}  // namespace
