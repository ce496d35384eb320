/* SPDX-License-Identifier: MIT */
// What each variant is built with, checked from the outside in every variant: its name,
// whether the per-class counters exist, what hak_stats_print reports, that the exit
// report needs the stats variant, and that release and stats carry no free checks.
#include <gtest/gtest.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "hakmem.h"
#include "hak_test_stats.h"
#include "variant_util.h"
#include "hak_test_names.h"  // last: see its rule

namespace hak_variant_test {
namespace {

const char* ExpectedVariant() {
#if HAK_STATS && HAK_HARDENED
  return "stats+hardened";
#elif HAK_STATS
  return "stats";
#elif HAK_HARDENED
  return "hardened";
#else
  return "release";
#endif
}

TEST(Variant, NameMatchesTheBuild) {
  ASSERT_NE(hak_variant(), nullptr);
  EXPECT_STREQ(hak_variant(), ExpectedVariant());
}

TEST(Variant, CountersEnabledOnlyInTheStatsVariant) {
  std::vector<void*> blocks;
  for (size_t size : {16u, 100u, 1000u, 5000u, 40000u, 2000000u}) {
    for (int i = 0; i < 10; i++) blocks.push_back(malloc(size));
  }
  for (void* p : blocks) {
    ASSERT_NE(p, nullptr);
    free(p);
  }
  hak_stats_t s;
  ASSERT_EQ(hak_stats_read(&s), 0);
#if HAK_STATS
  EXPECT_EQ(s.counters_enabled, 1);
  EXPECT_GE(s.alloc_fast + s.alloc_slow, 50u);
  EXPECT_GE(s.alloc_large, 10u);
  EXPECT_GE(s.free_local + s.free_large, 60u);
  EXPECT_GT(s.threads_started, 0u);
#else
  ExpectCountersCompiledOut(s);
#endif
  // OS-call counts and mapped bytes exist in every variant.
  EXPECT_GT(s.os_mmap.count, 0u);
  EXPECT_GT(s.os_mapped_bytes, 0u);
  EXPECT_GT(s.region_chunks, 0u);
  EXPECT_GT(s.segments_live, 0u);
}

TEST(Variant, StatsGetRejectsNull) {
  EXPECT_EQ(hak_stats_get(nullptr), EINVAL);
}

TEST(Variant, ClassSizesAreReportedInEveryVariant) {
  hak_stats_t s;
  ASSERT_EQ(hak_stats_read(&s), 0);
  EXPECT_EQ(s.class_size[0], 16u);
  EXPECT_EQ(s.class_size[79], 65536u);
  EXPECT_EQ(s.class_size[HAK_STATS_CLASS_COUNT - 2], 1048576u);
  EXPECT_EQ(s.class_size[HAK_STATS_CLASS_COUNT - 1], 0u);  // > 1 MiB
  for (int i = 1; i < HAK_STATS_CLASS_COUNT - 1; i++) {
    EXPECT_GT(s.class_size[i], s.class_size[i - 1]) << "class " << i;
    EXPECT_EQ(s.class_size[i] % 16, 0u) << "class " << i;
  }
}

std::string PrintToTempFile() {
  char path[] = "/tmp/hak_variant_report_XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) return "";
  unlink(path);
  hak_stats_print(fd);
  lseek(fd, 0, SEEK_SET);
  std::string out = ReadAll(fd);
  close(fd);
  return out;
}

TEST(Variant, PrintWritesTheReportOfThisVariant) {
  void* p = malloc(300);
  ASSERT_NE(p, nullptr);
  std::string report = PrintToTempFile();
  free(p);
  std::string header = std::string("hakmem stats report (variant ") + ExpectedVariant() + ", pid " +
                       std::to_string(getpid()) + ")";
  EXPECT_EQ(report.rfind(header, 0), 0u) << report;
  EXPECT_NE(report.find("OS calls:"), std::string::npos) << report;
  EXPECT_NE(report.find("mapped bytes"), std::string::npos) << report;
#if HAK_STATS
  EXPECT_NE(report.find("Paths:"), std::string::npos) << report;
  EXPECT_NE(report.find("Size classes"), std::string::npos) << report;
  EXPECT_EQ(report.find("per-class counters need the stats variant"), std::string::npos) << report;
#else
  EXPECT_NE(report.find("(per-class counters need the stats variant)"), std::string::npos) << report;
  EXPECT_EQ(report.find("Size classes"), std::string::npos) << report;
#endif
}

TEST(Variant, PrintToAPipe) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  hak_stats_print(fds[1]);  // a report is far below the pipe's 64 KiB buffer
  close(fds[1]);
  std::string report = ReadAll(fds[0]);
  close(fds[0]);
  EXPECT_NE(report.find("hakmem stats report"), std::string::npos) << report;
  EXPECT_EQ(report.back(), '\n');
}

// The exit report: only the stats variant prints it, and only with HAKMEM_STATS=1 in
// the environment the process started with (options are read once, at start).
TEST(Variant, DISABLED_AllocateAndExit) {
  for (int i = 0; i < 100; i++) free(malloc(64 + i));
  free(malloc(100000));
  fprintf(stderr, "allocate-and-exit helper ran\n");
  exit(0);  // runs hakmem's destructor, which prints the report
}

TEST(Variant, ExitReportNeedsTheStatsVariantAndHakmemStats1) {
  for (const char* value : {"1", "yes", "TRUE", "on"}) {  // booleans read the usual words
    ChildResult on = RunSelfWithEnv("Variant.DISABLED_AllocateAndExit", {std::string("HAKMEM_STATS=") + value});
    ASSERT_TRUE(on.exited && on.code == 0) << Describe(on);
    ASSERT_NE(on.err.find("allocate-and-exit helper ran"), std::string::npos) << on.err;
#if HAK_STATS
    EXPECT_NE(on.err.find("hakmem stats report (variant stats"), std::string::npos) << value << ": " << on.err;
    EXPECT_NE(on.err.find("Size classes"), std::string::npos) << on.err;
#else
    EXPECT_EQ(on.err.find("hakmem stats report"), std::string::npos) << on.err;
#endif
  }
  for (const char* value : {(const char*)nullptr, "0", "", "10", "no", "off"}) {
    std::vector<std::string> env;
    if (value != nullptr) env.push_back(std::string("HAKMEM_STATS=") + value);
    ChildResult off = RunSelfWithEnv("Variant.DISABLED_AllocateAndExit", env);
    ASSERT_TRUE(off.exited && off.code == 0) << Describe(off);
    ASSERT_NE(off.err.find("allocate-and-exit helper ran"), std::string::npos) << off.err;
    EXPECT_EQ(off.err.find("hakmem stats report"), std::string::npos)
        << "HAKMEM_STATS=" << (value ? value : "(unset)") << ": " << off.err;
  }
  // A value that is no boolean gets one warning naming it.
  ChildResult bad = RunSelfWithEnv("Variant.DISABLED_AllocateAndExit", {"HAKMEM_STATS=maybe"});
  EXPECT_NE(bad.err.find("hakmem: warning: HAKMEM_STATS=maybe: not a boolean"), std::string::npos) << bad.err;
}

#if !HAK_HARDENED
// Release and stats trust the caller: a double free is not detected. (In a child
// process: the free list is corrupt afterwards, so the child exits at once.)
TEST(Variant, NoFreeChecksWithoutTheHardenedVariant) {
  ChildResult r = RunChild([] {
    void* keep = malloc(48);  // keeps the page in use whatever happens to p
    void* p = malloc(48);
    if (keep == nullptr || p == nullptr) _exit(3);
    free(p);
    free(p);  // undetected
    _exit(0);
  });
  EXPECT_TRUE(r.exited) << Describe(r);
  EXPECT_EQ(r.code, 0) << Describe(r);
  EXPECT_EQ(r.err.find("hakmem: fatal"), std::string::npos) << r.err;
}
#else
TEST(Variant, HardenedVariantStopsADoubleFree) {
  ChildResult r = RunChild([] {
    void* keep = malloc(48);
    void* p = malloc(48);
    if (keep == nullptr || p == nullptr) _exit(3);
    free(p);
    free(p);
    _exit(0);
  });
  EXPECT_FALSE(r.exited) << Describe(r);
  EXPECT_EQ(r.code, SIGABRT) << Describe(r);
  EXPECT_NE(r.err.find("hakmem: fatal: double free at address 0x"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(", hardened)\n"), std::string::npos) << r.err;
}
#endif

}  // namespace
}  // namespace hak_variant_test
