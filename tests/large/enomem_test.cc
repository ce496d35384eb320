/* SPDX-License-Identifier: MIT */
// enomem_test.cc - a request the machine cannot back fails like glibc's: NULL with
// errno ENOMEM, and a failed realloc leaves the old block as it was. Region chunks are
// reserved without commit charge, so the kernel never refuses one request on its own;
// hakmem applies the default overcommit policy (mode 0: a single request larger than
// RAM + swap fails) itself.
#include "large_util.h"  // last of the includes: it includes hak_test_names.h

namespace hak_large_test {
namespace {

// The tests ask for 1 TiB: they hold only where that is more than RAM + swap and the
// kernel's overcommit policy is the default heuristic one.
#define SKIP_UNLESS_1TIB_IS_TOO_MUCH()                                                                 \
  do {                                                                                                 \
    uint64_t backing = MeminfoBytes("MemTotal") + MeminfoBytes("SwapTotal");                           \
    int mode = OvercommitMode();                                                                       \
    if (backing == 0 || backing >= kTiB) GTEST_SKIP() << "RAM + swap is " << backing << " bytes";      \
    if (mode != 0) GTEST_SKIP() << "vm.overcommit_memory is " << mode << ", not 0 (heuristic)";        \
  } while (0)

TEST(Enomem, MallocOf1TiBFails) {
  SKIP_UNLESS_1TIB_IS_TOO_MUCH();
  free(malloc(16));  // this thread's heap exists (its first allocation maps it)
  hak_stats_t before = Stats();
  errno = 0;
  void* p = malloc(kTiB);
  int err = errno;
  EXPECT_EQ(p, nullptr);
  EXPECT_EQ(err, ENOMEM);
  free(p);
  // Refused before any address space was taken.
  hak_stats_t after = Stats();
  EXPECT_EQ(after.os_mapped_bytes, before.os_mapped_bytes);
  EXPECT_EQ(after.region_used_bytes, before.region_used_bytes);
  EXPECT_EQ(after.segments_live, before.segments_live);
  // Just under and just over: still refused; the allocator still works after.
  for (size_t size : {kTiB - 1, kTiB + 4096, 512 * kGiB + 1}) {
    errno = 0;
    void* q = malloc(size);
    EXPECT_EQ(q, nullptr) << size;
    EXPECT_EQ(errno, ENOMEM) << size;
    free(q);
  }
  void* ok = malloc(8 * kMiB);
  ASSERT_NE(ok, nullptr);
  memset(ok, 1, 8 * kMiB);
  free(ok);
}

TEST(Enomem, CallocOf1TiBFails) {
  SKIP_UNLESS_1TIB_IS_TOO_MUCH();
  struct Case {
    size_t count, size;
  } cases[] = {{1, kTiB}, {kTiB, 1}, {kMiB, kMiB}, {1024, kGiB}};
  for (const Case& c : cases) {
    errno = 0;
    void* p = calloc(c.count, c.size);
    int err = errno;
    EXPECT_EQ(p, nullptr) << c.count << " x " << c.size;
    EXPECT_EQ(err, ENOMEM) << c.count << " x " << c.size;
    free(p);
  }
}

TEST(Enomem, AlignedAllocationOf1TiBFails) {
  SKIP_UNLESS_1TIB_IS_TOO_MUCH();
  for (size_t align : {(size_t)64, (size_t)4096, 2 * kMiB, 8 * kMiB}) {
    void* p = reinterpret_cast<void*>(0x1);
    int saved = errno = 4711;
    EXPECT_EQ(posix_memalign(&p, align, kTiB), ENOMEM) << align;
    EXPECT_EQ(p, reinterpret_cast<void*>(0x1)) << "posix_memalign wrote *out on failure";
    EXPECT_EQ(errno, saved) << "posix_memalign changed errno";
    errno = 0;
    void* q = aligned_alloc(align, kTiB);
    EXPECT_EQ(q, nullptr) << align;
    EXPECT_EQ(errno, ENOMEM) << align;
    free(q);
  }
}

// realloc of a live block of every tier to 1 TiB: NULL, ENOMEM, and the block stays
// where it was with its contents, its usable size, and can still be used and freed.
TEST(Enomem, ReallocTo1TiBFailsAndKeepsTheBlock) {
  SKIP_UNLESS_1TIB_IS_TOO_MUCH();
  const size_t dedicated = hak_probe_chunk_size() + 8 * kMiB;  // a whale with a mapping of its own
  unsigned seed = 1;
  for (size_t size : {(size_t)100, 20 * kKiB, 300 * kKiB, 2 * kMiB, 9 * kMiB, 60 * kMiB, dedicated}) {
    SCOPED_TRACE(size);
    void* p = malloc(size);
    ASSERT_NE(p, nullptr);
    const size_t filled = size < 4 * kMiB ? size : 4 * kMiB;  // byte by byte: keep it short
    FillPattern(p, 0, filled, seed);
    size_t usable = malloc_usable_size(p);
    hak_stats_t before = Stats();
    errno = 0;
    void* q = realloc(p, kTiB);
    int err = errno;
    hak_stats_t after = Stats();
    EXPECT_EQ(q, nullptr);
    EXPECT_EQ(err, ENOMEM);
    free(q);
    EXPECT_EQ(malloc_usable_size(p), usable);
    EXPECT_EQ(FirstPatternMismatch(p, 0, filled, seed), filled) << "the failed realloc changed the block";
    EXPECT_EQ(after.segments_live, before.segments_live);
    // Still a live block: it grows by an ordinary amount and keeps its contents.
    void* r = realloc(p, size + 4 * kMiB);
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(FirstPatternMismatch(r, 0, filled, seed), filled);
    memset(static_cast<uint8_t*>(r) + size, 0x5a, 4 * kMiB);
    free(r);
    seed++;
  }
  // reallocarray overflowing size_t is ENOMEM too, and keeps the block. (The count
  // is volatile: a constant product over SIZE_MAX draws a compiler warning.)
  volatile size_t count = kTiB;
  void* p = malloc(1000);
  ASSERT_NE(p, nullptr);
  FillPattern(p, 0, 1000, 9);
  errno = 0;
  EXPECT_EQ(reallocarray(p, count, kTiB), nullptr);
  EXPECT_EQ(errno, ENOMEM);
  errno = 0;
  EXPECT_EQ(reallocarray(p, 1024, kGiB), nullptr);
  EXPECT_EQ(errno, ENOMEM);
  EXPECT_EQ(FirstPatternMismatch(p, 0, 1000, 9), 1000u);
  free(p);
}

}  // namespace
}  // namespace hak_large_test
