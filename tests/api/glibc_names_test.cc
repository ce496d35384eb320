/* SPDX-License-Identifier: MIT */
// glibc's other allocator entry points (__libc_valloc, __libc_pvalloc, cfree,
// __libc_mallinfo, __libc_mallopt, mallopt) are hakmem's in the replacing library: a
// block they hand out is hakmem's, and cfree gives it back. Before, they reached
// glibc, whose memory hakmem's free then misread.
#include <gtest/gtest.h>
#include <malloc.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>

#include "hakmem.h"
#include "hak_test_names.h"  // last: see its rule

// Weak: glibc exports cfree only as an old version, so a build where hakmem does not
// define it (the sanitizer builds, which skip these tests) must still link.
extern "C" {
__attribute__((weak)) void* __libc_valloc(size_t size);
__attribute__((weak)) void* __libc_pvalloc(size_t size);
__attribute__((weak)) void cfree(void* p);
__attribute__((weak)) struct mallinfo __libc_mallinfo(void);
__attribute__((weak)) int __libc_mallopt(int param, int value);
}

namespace {

uint64_t BlocksInUse() {
  hak_stats_t s;
  EXPECT_EQ(hak_stats_read(&s), 0);
  return s.in_use_blocks;
}

class GlibcNames : public ::testing::Test {
 protected:
  void SetUp() override {
#if HAK_TEST_VIA_API
    GTEST_SKIP() << "the sanitizer's runtime owns malloc's names in this build";
#endif
  }
};

TEST_F(GlibcNames, LibcVallocAndPvallocHandOutHakmemBlocks) {
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  uint64_t before = BlocksInUse();
  void* v = __libc_valloc(100);
  void* pv = __libc_pvalloc(page + 1);
  ASSERT_NE(v, nullptr);
  ASSERT_NE(pv, nullptr);
  EXPECT_EQ((uintptr_t)v % page, 0u);
  EXPECT_EQ((uintptr_t)pv % page, 0u);
  EXPECT_GE(hak_usable_size(pv), 2 * page) << "pvalloc rounds the size up to whole pages";
  EXPECT_EQ(BlocksInUse(), before + 2) << "both blocks must be hakmem's";
  hak_free(v);
  hak_free(pv);
  EXPECT_EQ(BlocksInUse(), before);
}

TEST_F(GlibcNames, CfreeGivesAHakmemBlockBack) {
  uint64_t before = BlocksInUse();
  void* p = hak_malloc(300);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(BlocksInUse(), before + 1);
  cfree(p);
  EXPECT_EQ(BlocksInUse(), before);
  cfree(nullptr);  // like free(NULL)
}

TEST_F(GlibcNames, LibcMallinfoReportsHakmemsFigures) {
  void* p = hak_malloc(10 << 20);
  ASSERT_NE(p, nullptr);
  struct mallinfo a = mallinfo(), b = __libc_mallinfo();
  EXPECT_EQ(a.arena, b.arena);
  EXPECT_EQ(a.uordblks, b.uordblks);
  EXPECT_GE(b.uordblks, 10 << 20) << "glibc's own mallinfo would report its empty arena";
  hak_free(p);
}

TEST_F(GlibcNames, MalloptAcceptsAndIgnoresAsGlibcAnswers) {
  for (int param : {M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_MMAP_MAX, M_CHECK_ACTION, M_PERTURB,
                    M_ARENA_TEST, M_ARENA_MAX}) {
    EXPECT_EQ(mallopt(param, 1 << 20), 1) << "param " << param;
    EXPECT_EQ(__libc_mallopt(param, 1 << 20), 1) << "param " << param;
  }
  EXPECT_EQ(mallopt(M_MXFAST, 64), 1);
  EXPECT_EQ(mallopt(M_MXFAST, 1 << 20), 0) << "beyond glibc's largest fastbin size";
  EXPECT_EQ(mallopt(12345, 1), 1) << "glibc answers 1 for a parameter it does not know";
  // Ignored: allocation goes on as before.
  void* p = hak_malloc(1 << 20);
  ASSERT_NE(p, nullptr);
  hak_free(p);
}

}  // namespace
