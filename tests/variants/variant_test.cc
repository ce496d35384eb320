/* SPDX-License-Identifier: MIT */
// What each variant is built with, checked from the outside in every variant: its name,
// whether the per-class counters exist, what hak_stats_print reports, that the exit
// report needs the stats variant, and that release and stats carry no free checks.
#include <gtest/gtest.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
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
  // A value that is no report mode gets one warning naming it.
  ChildResult bad = RunSelfWithEnv("Variant.DISABLED_AllocateAndExit", {"HAKMEM_STATS=maybe"});
  EXPECT_NE(bad.err.find("hakmem: warning: HAKMEM_STATS=maybe: not a report mode"), std::string::npos) << bad.err;
}

// A helper for the children test: forks a child that allocates and exits, and execs
// this binary again (the allocate-and-exit helper) with the environment it has now;
// each process that reports at exit adds a report header to the shared stderr.
TEST(Variant, DISABLED_ForkExecAndExit) {
  for (int i = 0; i < 100; i++) free(malloc(64 + i));
  fflush(stderr);
  pid_t forked = fork();
  if (forked == 0) {
    free(malloc(1000));
    exit(0);  // atexit handlers run: the report would print here
  }
  waitpid(forked, nullptr, 0);
  pid_t execed = fork();
  if (execed == 0) {
    char self[] = "/proc/self/exe";
    char filter[] = "--gtest_filter=Variant.DISABLED_AllocateAndExit";
    char disabled[] = "--gtest_also_run_disabled_tests";
    char* argv[] = {self, filter, disabled, nullptr};
    execv(self, argv);  // inherits this process's environment, as a shell's child would
    _exit(98);
  }
  waitpid(execed, nullptr, 0);
  fprintf(stderr, "fork-exec helper ran\n");
  exit(0);
}

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) n++;
  return n;
}

TEST(Variant, ExitReportAsJson) {
  ChildResult r = RunSelfWithEnv("Variant.DISABLED_AllocateAndExit", {"HAKMEM_STATS=json"});
  ASSERT_TRUE(r.exited && r.code == 0) << Describe(r);
  size_t at = r.err.find("{\"hakmem\":\"" HAKMEM_VERSION "\",\"variant\":\"");
#if HAK_STATS
  ASSERT_NE(at, std::string::npos) << r.err;
  std::string json = r.err.substr(at);
  EXPECT_EQ(json.back(), '\n');
  EXPECT_EQ(Count(json, "{"), Count(json, "}")) << json;
  EXPECT_EQ(Count(json, "["), Count(json, "]")) << json;
  for (const char* key : {"\"os\":{\"mmap\":{\"count\":", "\"memory\":{\"rss_bytes\":", "\"in_use_bytes\":",
                          "\"bigcache\":{\"hits\":", "\"paths\":{\"alloc_fast\":", "\"classes\":[{\"class\":"}) {
    EXPECT_NE(json.find(key), std::string::npos) << key << " missing in " << json;
  }
  EXPECT_EQ(r.err.find("hakmem stats report"), std::string::npos) << "the text report too";
#else
  EXPECT_EQ(at, std::string::npos) << r.err;
#endif
}

TEST(Variant, ExitReportIntoAFileNamedWithThePid) {
  char dir[] = "/tmp/hak_stats_file_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string pattern = std::string(dir) + "/report.%p.txt";
  ChildResult r =
      RunSelfWithEnv("Variant.DISABLED_AllocateAndExit", {"HAKMEM_STATS=1", "HAKMEM_STATS_FILE=" + pattern});
  ASSERT_TRUE(r.exited && r.code == 0) << Describe(r);
  EXPECT_EQ(r.err.find("hakmem stats report"), std::string::npos) << "on stderr too: " << r.err;
  std::vector<std::string> files;
  std::string cmd = std::string("ls ") + dir;
  FILE* ls = popen(cmd.c_str(), "r");
  ASSERT_NE(ls, nullptr);
  char name[256];
  while (fgets(name, sizeof name, ls) != nullptr) files.push_back(std::string(name, strcspn(name, "\n")));
  pclose(ls);
#if HAK_STATS
  ASSERT_EQ(files.size(), 1u);
  const std::string& f = files[0];
  EXPECT_EQ(f.rfind("report.", 0), 0u) << f;
  std::string pid = f.substr(7, f.size() - 7 - 4);
  EXPECT_FALSE(pid.empty());
  EXPECT_EQ(pid.find_first_not_of("0123456789"), std::string::npos) << f;
  int fd = open((std::string(dir) + "/" + f).c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  std::string report = ReadAll(fd);
  close(fd);
  EXPECT_EQ(report.rfind("hakmem stats report (variant stats, pid " + pid + ")", 0), 0u) << report;
#else
  EXPECT_TRUE(files.empty());
#endif
  for (const std::string& f : files) unlink((std::string(dir) + "/" + f).c_str());
  rmdir(dir);
}

// HAKMEM_STATS_CHILDREN=0: the process started with the variables reports, its forked
// child and the program it execs do not; by default all three do.
TEST(Variant, ExitReportOfChildrenCanBeTurnedOff) {
  ChildResult all = RunSelfWithEnv("Variant.DISABLED_ForkExecAndExit", {"HAKMEM_STATS=1"});
  ChildResult one =
      RunSelfWithEnv("Variant.DISABLED_ForkExecAndExit", {"HAKMEM_STATS=1", "HAKMEM_STATS_CHILDREN=0"});
  ASSERT_TRUE(all.exited && all.code == 0) << Describe(all);
  ASSERT_TRUE(one.exited && one.code == 0) << Describe(one);
  ASSERT_NE(all.err.find("allocate-and-exit helper ran"), std::string::npos) << all.err;
  ASSERT_NE(one.err.find("allocate-and-exit helper ran"), std::string::npos) << one.err;
#if HAK_STATS
  EXPECT_EQ(Count(all.err, "hakmem stats report"), 3u) << all.err;
  EXPECT_EQ(Count(one.err, "hakmem stats report"), 1u) << one.err;
  // The one report is the helper's own: written last, after its children ended.
  size_t last = one.err.rfind("fork-exec helper ran");
  ASSERT_NE(last, std::string::npos);
  EXPECT_GT(one.err.find("hakmem stats report"), last) << one.err;
#else
  EXPECT_EQ(Count(all.err, "hakmem stats report"), 0u) << all.err;
  EXPECT_EQ(Count(one.err, "hakmem stats report"), 0u) << one.err;
#endif
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
