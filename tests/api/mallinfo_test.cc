/* SPDX-License-Identifier: MIT */
// mallinfo_test.cc - glibc's statistics calls answer with hakmem's figures in the
// replacing libraries: mallinfo2, mallinfo, malloc_stats and malloc_info. With about
// 100 MiB of live blocks of every tier (tiny, mid, L2.5, big, region whales) the
// in-use figure grows by the blocks' usable bytes (at least what was requested, within
// a few percent) and falls back when they are freed; a 3 GiB whale in a mapping of its
// own is an "mmap" chunk. Before, these names reached glibc's allocator, which holds
// nothing of hakmem's: mallinfo2().uordblks stayed 0 with 100 MiB live.
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "hak_test_env.h"
#include "hakmem.h"
#include "hak_test_names.h"  // last: see its rule

namespace {

constexpr size_t kMiB = (size_t)1 << 20;
constexpr size_t kGiB = (size_t)1 << 30;

void* g_blocks[1 << 16];  // static: the bookkeeping must not allocate

struct Live {
  size_t count = 0;
  size_t requested = 0;
  size_t usable = 0;
};

// About 100 MiB requested: many small blocks, mid and L2.5 blocks, big blocks (1-4 MiB)
// and four 8 MiB whales (region runs), each written so it is really used.
Live AllocateMix() {
  static const size_t kSizes[] = {24,    48,    100,    700,          3000,     5000,    40000,
                                  65536, 70000, 200000, 900 * 1024,   kMiB + 1, 3 * kMiB};
  Live live;
  for (int w = 0; w < 4; w++) {
    void* p = malloc(8 * kMiB);
    EXPECT_NE(p, nullptr);
    memset(p, 0x5a, 8 * kMiB);
    g_blocks[live.count++] = p;
    live.requested += 8 * kMiB;
    live.usable += HakTestSlotBytes(malloc_usable_size(p));
  }
  for (size_t i = 0; live.requested < 100 * kMiB && live.count < sizeof g_blocks / sizeof g_blocks[0]; i++) {
    size_t size = kSizes[i % (sizeof kSizes / sizeof kSizes[0])];
    void* p = malloc(size);
    EXPECT_NE(p, nullptr);
    memset(p, 0x5a, size);
    g_blocks[live.count++] = p;
    live.requested += size;
    live.usable += HakTestSlotBytes(malloc_usable_size(p));
  }
  return live;
}

void FreeAll(Live* live) {
  for (size_t i = 0; i < live->count; i++) free(g_blocks[i]);
  live->count = 0;
}

// Reads everything written to fd 2 while fn runs (through a pipe; at most 4 KiB).
template <typename Fn>
std::string CaptureStderr(Fn fn) {
  int fds[2];
  if (pipe(fds) != 0) return "";
  fflush(stderr);
  int saved = dup(2);
  dup2(fds[1], 2);
  fn();
  dup2(saved, 2);
  close(saved);
  close(fds[1]);
  char buf[4096];
  std::string out;
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) out.append(buf, (size_t)n);
  close(fds[0]);
  return out;
}

// The value after `label` ("in use bytes     = ") at its nth occurrence, or -1.
long long FieldAfter(const std::string& text, const std::string& label, int nth = 0) {
  size_t at = 0;
  for (int i = 0; i <= nth; i++) {
    at = text.find(label, i == 0 ? 0 : at + 1);
    if (at == std::string::npos) return -1;
  }
  return atoll(text.c_str() + at + label.size());
}

// The value of attr="..." in the first element that has it, or -1.
long long XmlAttr(const std::string& xml, const std::string& element_prefix, const std::string& attr) {
  size_t at = xml.find(element_prefix);
  if (at == std::string::npos) return -1;
  size_t end = xml.find("/>", at);
  size_t a = xml.find(" " + attr + "=\"", at);
  if (a == std::string::npos || a > end) return -1;
  return atoll(xml.c_str() + a + attr.size() + 3);
}

// Elements nest and close; every attribute value is quoted; nothing but elements.
bool WellFormed(const std::string& xml, std::string* why) {
  std::vector<std::string> open;
  size_t i = 0;
  while (i < xml.size()) {
    if (xml[i] == '\n') {
      i++;
      continue;
    }
    if (xml[i] != '<') return *why = "text outside elements at " + std::to_string(i), false;
    size_t end = xml.find('>', i);
    if (end == std::string::npos) return *why = "unclosed tag", false;
    std::string tag = xml.substr(i + 1, end - i - 1);
    size_t quotes = 0;
    for (char c : tag) quotes += c == '"';
    if (quotes % 2 != 0) return *why = "unbalanced quotes in <" + tag + ">", false;
    if (tag[0] == '/') {
      if (open.empty() || open.back() != tag.substr(1)) return *why = "</" + tag.substr(1) + "> closes nothing", false;
      open.pop_back();
    } else if (tag.back() != '/') {
      open.push_back(tag.substr(0, tag.find(' ')));
    }
    i = end + 1;
  }
  if (!open.empty()) return *why = "<" + open.back() + "> never closed", false;
  return true;
}

TEST(MallInfo, Mallinfo2CountsLiveBytesAndFallsBack) {
  HAK_TEST_NEEDS_OVERRIDE("mallinfo2 is the C library's in this build");
  struct mallinfo2 before = mallinfo2();
  Live live = AllocateMix();
  struct mallinfo2 during = mallinfo2();
  size_t grown = during.uordblks - before.uordblks;
  printf("requested %zu, usable %zu, uordblks %zu -> %zu (+%zu), arena %zu, fordblks %zu, keepcost %zu\n",
         live.requested, live.usable, before.uordblks, during.uordblks, grown, during.arena, during.fordblks,
         during.keepcost);
  EXPECT_GE(during.uordblks, before.uordblks + live.requested) << "glibc's mallinfo2 says 0: not hakmem's";
  EXPECT_LE(grown, live.requested + live.requested / 20) << "in use must be within 5% of what was asked";
  if (kHakCanaryRoom == 0) {
    // (At hardened level 2 usable sizes are the requests; the slots uordblks counts,
    // canaries included, are not visible: the 5% bound above is the check there.)
    EXPECT_LE(grown, live.usable + 64 * 1024) << "more than the blocks' usable bytes";
    EXPECT_GE(grown + 64 * 1024, live.usable) << "less than the blocks' usable bytes";
  }
  EXPECT_GE(during.arena, during.uordblks);
  EXPECT_EQ(during.fordblks, during.arena - during.uordblks);
  EXPECT_EQ(during.hblks, 0u) << "no block here needs a mapping of its own";
  EXPECT_EQ(during.hblkhd, 0u);
  FreeAll(&live);
  struct mallinfo2 after = mallinfo2();
  printf("after free: uordblks %zu, arena %zu, keepcost %zu\n", after.uordblks, after.arena, after.keepcost);
  EXPECT_LE(after.uordblks, before.uordblks + 256 * 1024) << "freed blocks still counted in use";
  EXPECT_GE(after.uordblks + 256 * 1024, before.uordblks);
  malloc_trim(0);
  struct mallinfo2 trimmed = mallinfo2();
  EXPECT_LE(trimmed.arena, after.arena);
  EXPECT_EQ(trimmed.uordblks, after.uordblks) << "malloc_trim frees nothing that is in use";
}

TEST(MallInfo, MallinfoAgreesWithMallinfo2Clamped) {
  HAK_TEST_NEEDS_OVERRIDE("mallinfo is the C library's in this build");
  Live live = AllocateMix();
  // 3 GiB, never touched: a whale in a mapping of its own (longer than a chunk), whose
  // bytes overflow mallinfo's int fields.
  void* whale = malloc(3 * kGiB);
  ASSERT_NE(whale, nullptr);
  struct mallinfo2 m2 = mallinfo2();
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
  struct mallinfo m = mallinfo();
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
  auto clamp = [](size_t v) { return v > (size_t)INT_MAX ? INT_MAX : (int)v; };
  EXPECT_EQ(m.arena, clamp(m2.arena));
  EXPECT_EQ(m.ordblks, clamp(m2.ordblks));
  EXPECT_EQ(m.smblks, clamp(m2.smblks));
  EXPECT_EQ(m.hblks, clamp(m2.hblks));
  EXPECT_EQ(m.hblkhd, clamp(m2.hblkhd));
  EXPECT_EQ(m.usmblks, clamp(m2.usmblks));
  EXPECT_EQ(m.fsmblks, clamp(m2.fsmblks));
  EXPECT_EQ(m.uordblks, clamp(m2.uordblks));
  EXPECT_EQ(m.fordblks, clamp(m2.fordblks));
  EXPECT_EQ(m.keepcost, clamp(m2.keepcost));
  EXPECT_EQ(m2.hblks, 1u);
  EXPECT_GE(m2.hblkhd, 3 * kGiB);
  EXPECT_LE(m2.hblkhd, 3 * kGiB + kMiB);
  EXPECT_EQ(m.hblkhd, INT_MAX) << "3 GiB does not fit an int: clamped, not wrapped";
  EXPECT_GE(m.uordblks, (int)live.requested) << "the whale's bytes are hblkhd, not uordblks";
  EXPECT_LE((size_t)m.uordblks, live.requested + 16 * kMiB);
  hak_stats_t s;
  ASSERT_EQ(hak_stats_read(&s), 0);
  EXPECT_GE(s.in_use_bytes, live.requested + 3 * kGiB) << "the stats API counts the whale in use";
  EXPECT_EQ(s.dedicated_in_use_bytes, HakWhaleSlot(3 * kGiB, (size_t)sysconf(_SC_PAGESIZE)));
  free(whale);
  FreeAll(&live);
  malloc_trim(0);  // the whale ring gives the mapping back
  m2 = mallinfo2();
  EXPECT_EQ(m2.hblks, 0u);
  EXPECT_EQ(m2.hblkhd, 0u);
}

TEST(MallInfo, MallocStatsPrintsGlibcsLines) {
  HAK_TEST_NEEDS_OVERRIDE("malloc_stats is the C library's in this build");
  Live live = AllocateMix();
  void* whale = malloc(512 * kMiB);  // a mapping of its own: "max mmap regions"
  ASSERT_NE(whale, nullptr);
  std::string out = CaptureStderr([] { malloc_stats(); });
  struct mallinfo2 m2 = mallinfo2();
  free(whale);
  FreeAll(&live);
  printf("%s", out.c_str());
  EXPECT_EQ(out.rfind("Arena 0:\nsystem bytes     = ", 0), 0u) << out;
  for (const char* line : {"\nin use bytes     = ", "\nTotal (incl. mmap):\nsystem bytes     = ",
                           "\nmax mmap regions = ", "\nmax mmap bytes   = "}) {
    EXPECT_NE(out.find(line), std::string::npos) << line << " missing from\n" << out;
  }
  long long system0 = FieldAfter(out, "system bytes     = "), in_use0 = FieldAfter(out, "in use bytes     = ");
  long long system_all = FieldAfter(out, "system bytes     = ", 1), in_use_all = FieldAfter(out, "in use bytes     = ", 1);
  EXPECT_GE(in_use0, (long long)live.requested);
  EXPECT_LE(in_use0, (long long)(live.requested + live.requested / 20));
  EXPECT_EQ((size_t)system0, m2.arena);
  EXPECT_GE(system0, in_use0);
  EXPECT_GE(in_use_all, in_use0 + (long long)(512 * kMiB));
  EXPECT_GE(system_all, system0 + (long long)(512 * kMiB));
  EXPECT_GE(FieldAfter(out, "max mmap regions = "), 1);
  EXPECT_GE(FieldAfter(out, "max mmap bytes   = "), (long long)(512 * kMiB));
}

TEST(MallInfo, MallocInfoWritesXmlWithTheInUseFigure) {
  HAK_TEST_NEEDS_OVERRIDE("malloc_info is the C library's in this build");
  Live live = AllocateMix();
  FILE* fp = tmpfile();
  ASSERT_NE(fp, nullptr);
  ASSERT_EQ(malloc_info(0, fp), 0);
  long size = ftell(fp);
  rewind(fp);
  std::string xml((size_t)size, '\0');
  ASSERT_EQ(fread(&xml[0], 1, (size_t)size, fp), (size_t)size);
  FreeAll(&live);
  printf("%s", xml.c_str());
  std::string why;
  EXPECT_TRUE(WellFormed(xml, &why)) << why << "\n" << xml;
  EXPECT_EQ(xml.rfind("<malloc version=\"1\">\n", 0), 0u);
  EXPECT_EQ(xml.substr(xml.size() - 10), "</malloc>\n");
  long long in_use = XmlAttr(xml, "<hakmem ", "in_use_bytes");
  EXPECT_GE(in_use, (long long)live.requested);
  EXPECT_LE(in_use, (long long)(live.requested + live.requested / 20));
  long long current = XmlAttr(xml, "<system type=\"current\"", "size");
  EXPECT_GE(current, in_use) << "the heap's system bytes hold what is in use";
  EXPECT_NE(xml.find("<total type=\"mmap\" count=\"0\" size=\"0\"/>"), std::string::npos);

  rewind(fp);
  errno = 0;
  EXPECT_EQ(malloc_info(1, fp), -1);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(ftell(fp), 0L) << "nothing written for a bad option";
  fclose(fp);
}

}  // namespace
