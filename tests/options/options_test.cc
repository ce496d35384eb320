/* SPDX-License-Identifier: MIT */
// options_test.cc - every HAKMEM_* option (docs/OPTIONS.md), seen from outside: a child
// program (options_child.c) started with the variables set prints the options in force
// and what they did to a small workload. Options are read once, when the process starts,
// so each case is a fresh process.
//   valid value     takes effect (the stats fields, the caches' contents, the purge
//                   mode's LazyFree), nothing on stderr
//   bad value       exactly one warning line naming the variable and the value kept;
//                   every option keeps its default
//   unknown name    exactly one warning line naming it; defaults kept
//   no variables    nothing on stderr at all
#include <errno.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "hak_test_names.h"  // last: see its rule

extern char** environ;

namespace {

struct Child {
  int status = -1;
  std::string out, err;
  std::map<std::string, std::string> values;  // the child's "name=value" lines

  bool Ok() const { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }
  std::string Describe() const { return "status " + std::to_string(status) + "\nstdout:\n" + out + "stderr:\n" + err; }
  std::string Get(const std::string& key) const {
    auto it = values.find(key);
    return it == values.end() ? "(missing)" : it->second;
  }
};

std::string ReadAll(int fd) {
  std::string s;
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) s.append(buf, (size_t)n);
    else if (n < 0 && errno == EINTR) continue;
    else break;
  }
  return s;
}

// The child of the variant ("release" or "small") from this test's runfiles.
std::string ChildPath(const std::string& variant) {
  const char* srcdir = getenv("TEST_SRCDIR");
  const char* workspace = getenv("TEST_WORKSPACE");
  std::string dir = std::string(srcdir ? srcdir : ".") + "/" + (workspace ? workspace : "hakmem");
  return dir + "/tests/options/options_child_" + variant;
}

// The purge delay the runs use unless a case is about the delay itself. Cache entries
// leave once unused for the delay (1 s by default, 1 ms in the small variant), which a
// loaded machine can exceed between two frees of the workload; with ten minutes the
// workload's cache counts do not depend on the machine's speed.
const char kLongDelay[] = "HAKMEM_PURGE_DELAY_MS=600000";

bool SetsPurgeDelay(const std::vector<std::string>& env) {
  for (const std::string& e : env) {
    if (e.rfind("HAKMEM_PURGE_DELAY_MS=", 0) == 0) return true;
  }
  return false;
}

// How RunChild runs the child: with the workload or only printing the options (much
// quicker, under the sanitizers most of all); with nothing but `env` or after kLongDelay
// (unless `env` sets the delay itself).
enum How { kOptionsOnly = 0, kWorkload = 1, kPristine = 2 };

// Runs the child with our environment minus every HAKMEM_* variable, plus `env`.
Child RunChild(const std::string& variant, const std::vector<std::string>& env, int how = kOptionsOnly) {
  Child c;
  std::string path = ChildPath(variant);
  bool pristine = (how & kPristine) != 0;
  std::vector<std::string> envs;
  for (char** e = environ; *e != nullptr; e++) {
    if (strncmp(*e, "HAKMEM_", 7) != 0) envs.push_back(*e);
  }
  if (!pristine && !SetsPurgeDelay(env)) envs.push_back(kLongDelay);
  envs.insert(envs.end(), env.begin(), env.end());
  std::vector<char*> envp;
  for (std::string& s : envs) envp.push_back(&s[0]);
  envp.push_back(nullptr);
  char options_only[] = "options";
  char* argv[] = {&path[0], (how & kWorkload) ? nullptr : options_only, nullptr};
  int out[2], err[2];
  if (pipe(out) != 0 || pipe(err) != 0) return c;
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) return c;
  if (pid == 0) {
    dup2(out[1], 1);
    dup2(err[1], 2);
    close(out[0]);
    close(out[1]);
    close(err[0]);
    close(err[1]);
    execve(path.c_str(), argv, envp.data());
    _exit(98);
  }
  close(out[1]);
  close(err[1]);
  c.out = ReadAll(out[0]);  // the child writes little to stderr: no deadlock on its pipe
  c.err = ReadAll(err[0]);
  close(out[0]);
  close(err[0]);
  waitpid(pid, &c.status, 0);
  size_t at = 0;
  while (at < c.out.size()) {
    size_t nl = c.out.find('\n', at);
    if (nl == std::string::npos) nl = c.out.size();
    std::string line = c.out.substr(at, nl - at);
    size_t eq = line.find('=');
    if (eq != std::string::npos) c.values[line.substr(0, eq)] = line.substr(eq + 1);
    at = nl + 1;
  }
  return c;
}

using Values = std::map<std::string, std::string>;

// The options in force with no variable set (docs/OPTIONS.md).
const Values kReleaseOptions = {
    {"purge_delay_ms", "1000"},     {"region_keep_bytes", "1073741824"}, {"bigcache_slots", "4"},
    {"bigcache_bytes", "16777216"}, {"whale_slots", "8"},                {"whale_bytes", "67108864"},
    {"whale_waste_pct", "25"},      {"madvise", "dontneed"},             {"purge_batch_bytes", "4194304"},
    {"purge_batch_ranges", "256"},  {"purge_min_bytes", "65536"},        {"stats", "0"},
    {"thp", "lean"},                {"region_dirty_bytes", "16777216"},  {"stats_file", ""},
    {"stats_children", "1"},
};
const Values kSmallOptions = {
    {"purge_delay_ms", "1"},       {"region_keep_bytes", "0"},  {"bigcache_slots", "1"},
    {"bigcache_bytes", "4194304"}, {"whale_slots", "2"},        {"whale_bytes", "33554432"},
    {"whale_waste_pct", "25"},     {"madvise", "dontneed"},     {"purge_batch_bytes", "65536"},
    {"purge_batch_ranges", "4"},   {"purge_min_bytes", "65536"}, {"stats", "0"},
    {"thp", "lean"},               {"region_dirty_bytes", "8388608"}, {"stats_file", ""},
    {"stats_children", "1"},
};

// What the default options do to the workload (with the long delay: nothing ages out).
const Values kReleaseWorkload = {
    {"bigcache_cached", "4"}, {"whale_cached", "8"}, {"waste_units", "3"}, {"calloc_zero", "1"}};
const Values kSmallWorkload = {
    {"bigcache_cached", "1"}, {"whale_cached", "2"}, {"waste_units", "3"}, {"calloc_zero", "1"}};

// The defaults a run of RunChild shows: the options, with the long delay unless the run
// was pristine or set the delay itself; the workload's results if it ran, and only under
// the long delay (else they depend on how fast the machine runs the workload).
Values Expected(const std::string& variant, bool long_delay, bool workload) {
  bool release = variant == "release";
  Values v = release ? kReleaseOptions : kSmallOptions;
  if (long_delay) v["purge_delay_ms"] = "600000";
  if (long_delay && workload) {
    const Values& w = release ? kReleaseWorkload : kSmallWorkload;
    v.insert(w.begin(), w.end());
  }
  return v;
}

// Every key of `expected` has that value in the child's output, except `changed`.
void ExpectValues(const Child& c, const Values& expected, const Values& changed, const std::string& what) {
  for (const auto& kv : expected) {
    auto ch = changed.find(kv.first);
    const std::string& want = ch != changed.end() ? ch->second : kv.second;
    EXPECT_EQ(c.Get(kv.first), want) << what << ": " << kv.first << "\n" << c.Describe();
  }
  for (const auto& kv : changed) {
    if (expected.count(kv.first) == 0) {
      EXPECT_EQ(c.Get(kv.first), kv.second) << what << ": " << kv.first;
    }
  }
}

// MADV_DONTNEED gives purged pages back at once; MADV_FREE leaves them in LazyFree.
constexpr unsigned long long kLazyFreeOfFreeKiB = 16 * 1024;  // at least half of the 32 MiB
constexpr unsigned long long kLazyFreeOfDontneedKiB = 8 * 1024;

// ---- (d) no variables ------------------------------------------------------------------

TEST(Options, NoVariablesMeansDefaultsAndNoOutputOnStderr) {
  for (const char* variant : {"release", "small"}) {
    SCOPED_TRACE(variant);
    Child c = RunChild(variant, {}, kPristine | kWorkload);
    ASSERT_TRUE(c.Ok()) << c.Describe();
    EXPECT_EQ(c.err, "") << "hakmem wrote to stderr with no HAKMEM_* variable set";
    ExpectValues(c, Expected(variant, false, true), {}, "defaults");
    EXPECT_EQ(c.Get("calloc_zero"), "1");
    EXPECT_LT(std::stoull(c.Get("lazyfree_kib")), kLazyFreeOfDontneedKiB) << c.Describe();
    // The workload under the defaults, but for a delay nothing can outlast.
    Child w = RunChild(variant, {}, kWorkload);
    ASSERT_TRUE(w.Ok()) << w.Describe();
    EXPECT_EQ(w.err, "");
    ExpectValues(w, Expected(variant, true, true), {}, "defaults, long delay");
  }
  // Variables that only look similar are not hakmem's: ignored in silence.
  Child c = RunChild("release", {"HAKMEMX=1", "MY_HAKMEM_PURGE_DELAY_MS=5", "hakmem_purge_delay_ms=5", "HAKMEM=1"},
                     kPristine);
  ASSERT_TRUE(c.Ok()) << c.Describe();
  EXPECT_EQ(c.err, "");
  ExpectValues(c, Expected("release", false, false), {}, "look-alikes");
}

// ---- (a) valid values ---------------------------------------------------------------------

struct ValidCase {
  std::vector<std::string> env;
  Values changed;  // keys that differ from the defaults, with their values
};

bool IsWorkloadKey(const std::string& key) {
  return kReleaseWorkload.count(key) != 0 || key == "lazyfree_kib";
}

// Runs each case in the release child (with the workload if a result of it changes):
// nothing on stderr, the changed keys as given, every other key at its default.
void ExpectValidCases(const std::vector<ValidCase>& cases) {
  for (const ValidCase& vc : cases) {
    std::string what = vc.env[0];
    bool workload = false;
    for (const auto& kv : vc.changed) workload |= IsWorkloadKey(kv.first);
    Child c = RunChild("release", vc.env, workload ? kWorkload : kOptionsOnly);
    ASSERT_TRUE(c.Ok()) << what << "\n" << c.Describe();
    EXPECT_EQ(c.err, "") << what << ": a valid value drew output on stderr";
    ExpectValues(c, Expected("release", !SetsPurgeDelay(vc.env), workload), vc.changed, what);
  }
}

TEST(Options, ValidDelaysAndSizesTakeEffectQuietly) {
  ExpectValidCases({
      {{"HAKMEM_PURGE_DELAY_MS=250"}, {{"purge_delay_ms", "250"}}},
      {{"HAKMEM_PURGE_DELAY_MS=2s"}, {{"purge_delay_ms", "2000"}}},
      {{"HAKMEM_PURGE_DELAY_MS=15ms"}, {{"purge_delay_ms", "15"}}},
      {{"HAKMEM_PURGE_DELAY_MS=3600000"}, {{"purge_delay_ms", "3600000"}}},
      // A delay of 0 evicts a whale from the ring as soon as it is freed (the free ticks
      // the purge): the one workload count that does not depend on the machine's speed.
      {{"HAKMEM_PURGE_DELAY_MS=0"}, {{"purge_delay_ms", "0"}, {"whale_cached", "0"}}},
      {{"HAKMEM_REGION_KEEP=512m"}, {{"region_keep_bytes", "536870912"}}},
      {{"HAKMEM_REGION_KEEP=2GiB"}, {{"region_keep_bytes", "2147483648"}}},
      {{"HAKMEM_REGION_KEEP=0"}, {{"region_keep_bytes", "0"}}},
      {{"HAKMEM_REGION_KEEP=65536g"}, {{"region_keep_bytes", "70368744177664"}}},
      {{"HAKMEM_REGION_DIRTY=64m"}, {{"region_dirty_bytes", "67108864"}}},
      {{"HAKMEM_REGION_DIRTY=0"}, {{"region_dirty_bytes", "0"}}},
      {{"HAKMEM_PURGE_BATCH_BYTES=1m"}, {{"purge_batch_bytes", "1048576"}}},
      {{"HAKMEM_PURGE_BATCH_RANGES=7"}, {{"purge_batch_ranges", "7"}}},
      {{"HAKMEM_PURGE_MIN_BYTES=128k"}, {{"purge_min_bytes", "131072"}}},
      {{"HAKMEM_PURGE_MIN_BYTES=4096"}, {{"purge_min_bytes", "4096"}}},
      {{"HAKMEM_MADVISE=DontNeed"}, {}},
      {{"HAKMEM_STATS=1"}, {{"stats", "1"}}},
      {{"HAKMEM_STATS=0"}, {}},
      // Booleans read the usual words, in any case.
      {{"HAKMEM_STATS=yes"}, {{"stats", "1"}}},
      {{"HAKMEM_STATS=TRUE"}, {{"stats", "1"}}},
      {{"HAKMEM_STATS=On"}, {{"stats", "1"}}},
      {{"HAKMEM_STATS=no"}, {}},
      {{"HAKMEM_STATS=false"}, {}},
      {{"HAKMEM_STATS=OFF"}, {}},
      {{"HAKMEM_STATS=text"}, {{"stats", "1"}}},
      {{"HAKMEM_STATS=JSON"}, {{"stats", "2"}}},
      {{"HAKMEM_STATS_FILE=/tmp/hakmem.%p.json"}, {{"stats_file", "/tmp/hakmem.%p.json"}}},
      {{"HAKMEM_STATS_CHILDREN=no"}, {{"stats_children", "0"}}},
      {{"HAKMEM_THP=whales"}, {{"thp", "whales"}}},
      {{"HAKMEM_THP=System"}, {{"thp", "system"}}},
      {{"HAKMEM_THP=lean"}, {}},
  });
}

TEST(Options, ValidCacheLimitsShapeTheCaches) {
  ExpectValidCases({
      {{"HAKMEM_BIGCACHE_SLOTS=2"}, {{"bigcache_slots", "2"}, {"bigcache_cached", "2"}}},
      {{"HAKMEM_BIGCACHE_SLOTS=16"}, {{"bigcache_slots", "16"}, {"bigcache_cached", "6"}}},
      {{"HAKMEM_BIGCACHE_SLOTS=0"}, {{"bigcache_slots", "0"}, {"bigcache_cached", "0"}}},
      {{"HAKMEM_BIGCACHE_BYTES=3m"}, {{"bigcache_bytes", "3145728"}, {"bigcache_cached", "1"}}},
      {{"HAKMEM_BIGCACHE_BYTES=4096KB"}, {{"bigcache_bytes", "4194304"}, {"bigcache_cached", "2"}}},
      {{"HAKMEM_WHALE_SLOTS=3"}, {{"whale_slots", "3"}, {"whale_cached", "3"}}},
      {{"HAKMEM_WHALE_SLOTS=0"}, {{"whale_slots", "0"}, {"whale_cached", "0"}}},
      {{"HAKMEM_WHALE_BYTES=24m"}, {{"whale_bytes", "25165824"}, {"whale_cached", "3"}}},
      {{"HAKMEM_WHALE_WASTE_PCT=100"}, {{"whale_waste_pct", "100"}, {"waste_units", "4"}}},
      {{"HAKMEM_WHALE_WASTE_PCT=0"}, {{"whale_waste_pct", "0"}, {"waste_units", "3"}}},
      // Several at once.
      {{"HAKMEM_WHALE_SLOTS=5", "HAKMEM_PURGE_DELAY_MS=600000", "HAKMEM_BIGCACHE_SLOTS=1"},
       {{"whale_slots", "5"}, {"whale_cached", "5"}, {"purge_delay_ms", "600000"}, {"bigcache_slots", "1"},
        {"bigcache_cached", "1"}}},
  });
  // The small variant's defaults give way to the variables too.
  Child s = RunChild("small", {"HAKMEM_WHALE_SLOTS=5", "HAKMEM_REGION_KEEP=1g"}, kWorkload);
  ASSERT_TRUE(s.Ok()) << s.Describe();
  EXPECT_EQ(s.err, "");
  ExpectValues(s, Expected("small", true, true),
               {{"whale_slots", "5"}, {"region_keep_bytes", "1073741824"},
                {"whale_cached", "4"}},  // 32 MiB of 8 MiB runs
               "small variant");
  Child d = RunChild("small", {"HAKMEM_PURGE_DELAY_MS=250"});
  ASSERT_TRUE(d.Ok()) << d.Describe();
  EXPECT_EQ(d.err, "");
  ExpectValues(d, Expected("small", false, false), {{"purge_delay_ms", "250"}}, "small variant, delay");
}

// MADV_FREE: purged pages stay in the process (LazyFree) until the kernel needs them;
// calloc must clear them itself.
TEST(Options, MadviseFreeLeavesPurgedPagesInLazyFree) {
  Child dontneed = RunChild("release", {"HAKMEM_MADVISE=dontneed"}, kWorkload);
  Child free_mode = RunChild("release", {"HAKMEM_MADVISE=free"}, kWorkload);
  ASSERT_TRUE(dontneed.Ok()) << dontneed.Describe();
  ASSERT_TRUE(free_mode.Ok()) << free_mode.Describe();
  EXPECT_EQ(dontneed.err, "");
  EXPECT_EQ(free_mode.err, "");
  ExpectValues(free_mode, Expected("release", true, true), {{"madvise", "free"}}, "HAKMEM_MADVISE=free");
  ExpectValues(dontneed, Expected("release", true, true), {}, "HAKMEM_MADVISE=dontneed");
  EXPECT_GE(std::stoull(free_mode.Get("lazyfree_kib")), kLazyFreeOfFreeKiB) << free_mode.Describe();
  EXPECT_LT(std::stoull(dontneed.Get("lazyfree_kib")), kLazyFreeOfDontneedKiB) << dontneed.Describe();
}

// ---- (b) bad values -----------------------------------------------------------------------

struct BadCase {
  const char* entry;  // NAME=value
  const char* why;    // what the warning says is wrong
};

TEST(Options, BadValuesDrawOneWarningAndKeepTheDefault) {
  const BadCase cases[] = {
      {"HAKMEM_PURGE_DELAY_MS=soon", "not a number"},
      {"HAKMEM_PURGE_DELAY_MS=", "not a number"},
      {"HAKMEM_PURGE_DELAY_MS=-5", "not a number"},
      {"HAKMEM_PURGE_DELAY_MS=10 ms", "not a number"},
      {"HAKMEM_PURGE_DELAY_MS=1e3", "not a number"},
      {"HAKMEM_PURGE_DELAY_MS=5m", "not a number"},
      {"HAKMEM_PURGE_DELAY_MS=99999999999999999999999", "not a number"},
      {"HAKMEM_PURGE_DELAY_MS=3600001", "out of range"},
      {"HAKMEM_PURGE_DELAY_MS=3601s", "out of range"},
      {"HAKMEM_REGION_KEEP=65t", "not a number"},
      {"HAKMEM_REGION_KEEP=65537g", "out of range"},
      {"HAKMEM_BIGCACHE_SLOTS=17", "out of range"},
      {"HAKMEM_BIGCACHE_SLOTS=4k", "not a number"},
      {"HAKMEM_BIGCACHE_BYTES=2T", "not a number"},
      {"HAKMEM_BIGCACHE_BYTES=1025g", "out of range"},
      {"HAKMEM_WHALE_SLOTS=65", "out of range"},
      {"HAKMEM_WHALE_BYTES=lots", "not a number"},
      {"HAKMEM_WHALE_WASTE_PCT=101", "out of range"},
      {"HAKMEM_WHALE_WASTE_PCT=25%", "not a number"},
      {"HAKMEM_PURGE_BATCH_BYTES=0x100", "not a number"},
      {"HAKMEM_PURGE_BATCH_RANGES=0", "out of range"},
      {"HAKMEM_PURGE_BATCH_RANGES=65537", "out of range"},
      {"HAKMEM_PURGE_MIN_BYTES=1k", "out of range"},
      {"HAKMEM_PURGE_MIN_BYTES=8m", "out of range"},
      {"HAKMEM_MADVISE=sometimes", "not a madvise mode"},
      {"HAKMEM_MADVISE=", "not a madvise mode"},
      {"HAKMEM_STATS=2", "not a report mode"},
      {"HAKMEM_STATS=yess", "not a report mode"},
      {"HAKMEM_STATS=", "not a report mode"},
      {"HAKMEM_STATS=xml", "not a report mode"},
      {"HAKMEM_STATS_CHILDREN=some", "not a boolean"},
      {"HAKMEM_THP=always", "not a huge-page mode"},
      {"HAKMEM_THP=", "not a huge-page mode"},
  };
  for (const BadCase& bc : cases) {
    SCOPED_TRACE(bc.entry);
    Child c = RunChild("release", {bc.entry});
    ASSERT_TRUE(c.Ok()) << c.Describe();
    // Exactly one line: the warning, naming the variable and its value.
    std::string prefix = std::string("hakmem: warning: ") + bc.entry + ": " + bc.why + " (";
    EXPECT_EQ(c.err.rfind(prefix, 0), 0u) << "stderr:\n" << c.err;
    EXPECT_EQ(std::count(c.err.begin(), c.err.end(), '\n'), 1) << "stderr:\n" << c.err;
    EXPECT_EQ(c.err.back(), '\n');
    EXPECT_NE(c.err.find("); keeping "), std::string::npos) << c.err;
    // A bad delay comes without the long one (RunChild): the default itself is kept.
    ExpectValues(c, Expected("release", !SetsPurgeDelay({bc.entry}), false), {}, bc.entry);
  }
  // The example of docs/OPTIONS.md, to the letter.
  Child doc = RunChild("release", {"HAKMEM_PURGE_DELAY_MS=soon"});
  EXPECT_EQ(doc.err,
            "hakmem: warning: HAKMEM_PURGE_DELAY_MS=soon: not a number (range 0 .. 3600000); keeping 1000\n");
  Child mode = RunChild("release", {"HAKMEM_MADVISE=sometimes"});
  EXPECT_EQ(mode.err,
            "hakmem: warning: HAKMEM_MADVISE=sometimes: not a madvise mode (dontneed or free); keeping dontneed\n");
  Child flag = RunChild("release", {"HAKMEM_STATS_CHILDREN=maybe"});
  EXPECT_EQ(flag.err,
            "hakmem: warning: HAKMEM_STATS_CHILDREN=maybe: not a boolean (1, yes, true, on or 0, no, false, off); "
            "keeping 1\n");
  Child report = RunChild("release", {"HAKMEM_STATS=maybe"});
  EXPECT_EQ(report.err, "hakmem: warning: HAKMEM_STATS=maybe: not a report mode (a boolean, text or json); keeping 0\n");
  // A file name longer than 255 bytes is refused whole, not cut.
  Child path = RunChild("release", {"HAKMEM_STATS_FILE=/tmp/" + std::string(300, 'x')});
  EXPECT_NE(path.err.find(": too long (at most 255 bytes); keeping stderr\n"), std::string::npos) << path.err;
  ExpectValues(path, Expected("release", true, false), {}, "long HAKMEM_STATS_FILE");
  // The small variant names its own default.
  Child small = RunChild("small", {"HAKMEM_WHALE_SLOTS=99"});
  EXPECT_EQ(small.err, "hakmem: warning: HAKMEM_WHALE_SLOTS=99: out of range (range 0 .. 64); keeping 2\n");
  ExpectValues(small, Expected("small", true, false), {}, "small variant");
}

TEST(Options, EachBadValueWarnsOnceAndTheGoodOnesStillApply) {
  Child c = RunChild("release", {"HAKMEM_WHALE_BYTES=lots", "HAKMEM_WHALE_SLOTS=3", "HAKMEM_BIGCACHE_SLOTS=99"},
                     kWorkload);
  ASSERT_TRUE(c.Ok()) << c.Describe();
  EXPECT_EQ(std::count(c.err.begin(), c.err.end(), '\n'), 2) << c.err;
  EXPECT_NE(c.err.find("hakmem: warning: HAKMEM_WHALE_BYTES=lots: not a number (range 0 .. 1099511627776); "
                       "keeping 67108864\n"),
            std::string::npos)
      << c.err;
  EXPECT_NE(c.err.find("hakmem: warning: HAKMEM_BIGCACHE_SLOTS=99: out of range (range 0 .. 16); keeping 4\n"),
            std::string::npos)
      << c.err;
  ExpectValues(c, Expected("release", true, true), {{"whale_slots", "3"}, {"whale_cached", "3"}}, "mixed");
}

// ---- (c) unknown names --------------------------------------------------------------------

TEST(Options, AnUnknownNameDrawsOneWarning) {
  for (const char* entry : {"HAKMEM_FOO=1", "HAKMEM_PURGE_DELAYMS=5", "HAKMEM_purge_delay_ms=5", "HAKMEM_=3"}) {
    SCOPED_TRACE(entry);
    std::string name(entry, strchr(entry, '=') - entry);
    Child c = RunChild("release", {entry});
    ASSERT_TRUE(c.Ok()) << c.Describe();
    EXPECT_EQ(c.err, "hakmem: warning: unknown option " + name +
                         " ignored (docs/OPTIONS.md lists the HAKMEM_* variables)\n");
    ExpectValues(c, Expected("release", true, false), {}, entry);
  }
}

}  // namespace
