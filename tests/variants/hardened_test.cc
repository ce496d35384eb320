/* SPDX-License-Identifier: MIT */
// The hardened variant stops the process on a double free, a free of a pointer it does
// not own (foreign memory, the middle of a block), and realloc or malloc_usable_size of
// such pointers, with "hakmem: fatal: <fault> at address 0x<16 hex digits> (size class N,
// hardened)".
//
// Death tests run "threadsafe" (the child re-executes this binary), so the child's
// addresses differ from the parent's: each statement first announces the pointer it
// is about to misuse on stderr, and the matcher checks the fault line names exactly
// that address (formatted with %016lx).
#include <gtest/gtest.h>
#include <malloc.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "hak_test_env.h"
#include "hakmem.h"

extern "C" void hardened_probe_forge_link(void* freed_block, void* next);
extern "C" int hardened_probe_level(void);
extern "C" int hardened_probe_is_big(const void* p);

#include "hak_test_names.h"  // last: see its rule

namespace hak_variant_test {
namespace {

constexpr const char kDoubleFree[] = "double free";
constexpr const char kInvalidFree[] = "free of a pointer hakmem does not own";
constexpr const char kInvalidRealloc[] = "realloc of a pointer hakmem does not own or already freed";
constexpr const char kInvalidUsableSize[] = "malloc_usable_size of a pointer hakmem does not own";

// In a death test's child: stops it (exit 3, not the death expected) with `what`.
void Require(bool ok, const char* what) {
  if (ok) return;
  if (write(2, what, strlen(what)) < 0) {
  }
  _exit(3);
}

// Writes "hak-test-ptr=0x<16 hex>" to stderr without allocating.
void Announce(const void* p) {
  char buf[64];
  int n = snprintf(buf, sizeof buf, "hak-test-ptr=0x%016lx\n", (unsigned long)(uintptr_t)p);
  if (write(2, buf, (size_t)n) < 0) abort();
}

// The end of a fault line after "(": "size class N, hardened)", "huge block, hardened)"
// or, when the pointer is not one of ours, "hardened)".
bool ClassSuffixOk(const std::string& rest) {
  regex_t re;
  if (regcomp(&re, "^((size class [0-9]{1,3}|huge block), )?hardened\\)$", REG_EXTENDED | REG_NOSUB) != 0) return false;
  bool ok = regexec(&re, rest.c_str(), 0, nullptr, 0) == 0;
  regfree(&re);
  return ok;
}

// Matches a death test's stderr: the fault line of `fault` in the documented format,
// naming the address the statement announced.
class FaultAtAnnouncedAddress : public ::testing::MatcherInterface<const std::string&> {
 public:
  explicit FaultAtAnnouncedAddress(const char* fault) : fault_(fault) {}

  bool MatchAndExplain(const std::string& err, ::testing::MatchResultListener* listener) const override {
    std::string escaped;
    for (char c : fault_) {
      if (strchr("()[]{}.*+?^$|\\", c) != nullptr) escaped += '\\';
      escaped += c;
    }
    std::string pattern = "hakmem: fatal: " + escaped + " at address 0x[0-9a-f]{16}";
    regex_t re;
    if (regcomp(&re, pattern.c_str(), REG_EXTENDED | REG_NOSUB) != 0) {
      *listener << "bad regex " << pattern;
      return false;
    }
    bool format_ok = regexec(&re, err.c_str(), 0, nullptr, 0) == 0;
    regfree(&re);
    if (!format_ok) {
      *listener << "no line matching /" << pattern << "/";
      return false;
    }
    size_t at = err.find("hak-test-ptr=0x");
    if (at == std::string::npos) {
      *listener << "the statement announced no pointer";
      return false;
    }
    unsigned long announced = strtoul(err.substr(at + 15, 16).c_str(), nullptr, 16);
    char expected[256];
    snprintf(expected, sizeof expected, "hakmem: fatal: %s at address 0x%016lx (", fault_.c_str(), announced);
    size_t line = err.find(expected, at);
    if (line == std::string::npos) {
      *listener << "expected a line starting \"" << expected << "\" after the announcement";
      return false;
    }
    size_t tail = line + strlen(expected);
    std::string rest = err.substr(tail, err.find('\n', tail) - tail);
    if (!ClassSuffixOk(rest)) {
      *listener << "the line ends \"(" << rest << "\", not \"(size class N, hardened)\"";
      return false;
    }
    return true;
  }

  void DescribeTo(std::ostream* os) const override {
    *os << "reports \"" << fault_ << "\" at the announced address";
  }

 private:
  std::string fault_;
};

::testing::Matcher<const std::string&> FaultAt(const char* fault) {
  return ::testing::MakeMatcher(new FaultAtAnnouncedAddress(fault));
}

class Hardened : public ::testing::Test {
 protected:
  void SetUp() override { ::testing::FLAGS_gtest_death_test_style = "threadsafe"; }
};

TEST_F(Hardened, IsTheHardenedVariant) {
  EXPECT_STREQ(hak_variant(), "hardened");
  EXPECT_EQ(hardened_probe_level(), HAK_HARDENED);
}

// ---- Level 2: heap integrity --------------------------------------------------------
// Freed small blocks are zeroed; a slot handed out again must still be zero, and every
// free-list link is encoded and checked on decode. Blocks of 2000 B (a mid class no
// other code of the child uses in the statement) make the reuse order certain: a
// local free pushes on the page's list, the next malloc of the class pops it.

constexpr const char kWriteAfterFree[] = "write after free";

// Under AddressSanitizer hakmem poisons the blocks it holds, so a write into a freed
// block is reported by ASan itself, at the write, before hakmem could see it: there
// the tests expect ASan's report instead.
#if HAK_TEST_ASAN
#define EXPECT_FREED_WRITE_CAUGHT(statement, fault) \
  EXPECT_DEATH(statement, "AddressSanitizer: use-after-poison")
#else
#define EXPECT_FREED_WRITE_CAUGHT(statement, fault) EXPECT_DEATH(statement, FaultAt(fault))
#endif
// An access to memory hakmem keeps inaccessible (malloc(0)'s slots, freed large blocks
// in the caches) faults; hakmem's SIGSEGV handler names it, or, under ASan and TSan,
// theirs (hakmem leaves SIGSEGV to them).
#if HAK_TEST_ASAN || HAK_TEST_TSAN
#define EXPECT_ACCESS_CAUGHT(statement, fault) EXPECT_DEATH(statement, "Sanitizer: SEGV")
#elif defined(HAK_UBSAN) && HAK_UBSAN
// UBSan's static runtime breaks sigaction, so no handler names the fault: the access
// still stops the process.
#define EXPECT_ACCESS_CAUGHT(statement, fault) EXPECT_DEATH(statement, "")
#else
#define EXPECT_ACCESS_CAUGHT(statement, fault) EXPECT_DEATH(statement, FaultAt(fault))
#endif
constexpr const char kUseAfterFree[] = "use after free (a freed block was read or written)";
constexpr const char kZeroSizeAccess[] = "read or write of a zero-size block";
constexpr const char kCorruptFreeList[] = "corrupted free list (a freed block was overwritten)";
constexpr const char kHandedOutTwice[] = "block handed out while still in use (corrupted free list)";

TEST_F(Hardened, WriteAfterFreeIsCaughtWhenTheSlotIsHandedOutAgain) {
  if (HAK_HARDENED < 2) GTEST_SKIP() << "level 2";
  EXPECT_FREED_WRITE_CAUGHT(
      {
        char* keep = (char*)malloc(2000);
        char* p = (char*)malloc(2000);
        free(p);
        hak_quarantine_flush();  // out of the quarantine: p heads its page's free list
        p[1000] = 'x';  // the write after free, past the link word
        Announce(p);
        char* q = (char*)malloc(2000);
        fprintf(stderr, "not caught: %p\n", (void*)q);
        free(keep);
      },
      kWriteAfterFree);
}

// ---- Level 2: the quarantine of small blocks -----------------------------------------

TEST_F(Hardened, AFreedBlockIsNotHandedOutRightAway) {
  if (HAK_HARDENED < 2) GTEST_SKIP() << "level 2";
  std::vector<char*> v;
  v.reserve(200);  // no free in the loop (a vector growing frees its old buffer)
  char* keep = (char*)malloc(2000);
  char* p = (char*)malloc(2000);
  free(p);
  for (int i = 0; i < 200; i++) {
    v.push_back((char*)malloc(2000));
    ASSERT_NE(v.back(), p) << "handed out again after " << i << " allocations and no free";
  }
  for (char* q : v) free(q);
  free(keep);
}

TEST_F(Hardened, AWriteAfterFreeIntoAQuarantinedBlockIsCaughtWhenItIsReused) {
  if (HAK_HARDENED < 2) GTEST_SKIP() << "level 2";
  // The program reallocates at once (without the quarantine q would be p, and the
  // write would land in a live block unseen), then keeps allocating and freeing.
  EXPECT_FREED_WRITE_CAUGHT(
      {
        char* p = (char*)malloc(128);
        free(p);
        char* q = (char*)malloc(128);
        p[65] = 'a';
        Announce(p);
        for (int i = 0; i < 100000; i++) free(malloc(128));
        fprintf(stderr, "not caught %p\n", (void*)q);
      },
      kWriteAfterFree);
}

TEST_F(Hardened, TheQuarantineIsFlushedAndNotCountedInUse) {
  if (HAK_HARDENED < 2) GTEST_SKIP() << "level 2";
  std::vector<void*> v, again;
  v.reserve(300);  // (the vectors' own blocks must not move the counts)
  again.reserve(300);
  hak_collect(false);
  hak_stats_t before, held, flushed;
  ASSERT_EQ(hak_stats_read(&before), 0);
  for (int i = 0; i < 300; i++) v.push_back(malloc(100));
  for (void* p : v) free(p);
  ASSERT_EQ(hak_stats_read(&held), 0);
  EXPECT_EQ(held.in_use_blocks, before.in_use_blocks) << "quarantined blocks are free";
  EXPECT_EQ(held.in_use_bytes, before.in_use_bytes);
  hak_quarantine_flush();
  ASSERT_EQ(hak_stats_read(&flushed), 0);
  EXPECT_EQ(flushed.in_use_blocks, before.in_use_blocks);
  // Every block is back on its page: 300 allocations of the class reuse them.
  for (int i = 0; i < 300; i++) again.push_back(malloc(100));
  size_t reused = 0;
  for (void* p : again) reused += std::find(v.begin(), v.end(), p) != v.end();
  EXPECT_EQ(reused, 300u);
  for (void* p : again) free(p);
}

TEST_F(Hardened, ALinkOverwrittenWithAChosenAddressIsCaught) {
  if (HAK_HARDENED < 2) GTEST_SKIP() << "level 2";
  static char target[4096];
  EXPECT_FREED_WRITE_CAUGHT(
      {
        char* keep = (char*)malloc(2000);
        char* p = (char*)malloc(2000);
        free(p);
        hak_quarantine_flush();  // out of the quarantine: p heads its page's free list
        void* chosen = target;
        memcpy(p, &chosen, sizeof chosen);  // a plain pointer, as an attacker would write
        Announce(p);
        void* q = malloc(2000);  // p itself: its link decodes to garbage
        void* r = malloc(2000);  // would be `target` without the check
        fprintf(stderr, "not caught: %p %p\n", q, r);
        free(keep);
      },
      kCorruptFreeList);
}

TEST_F(Hardened, ZerosWrittenOverALinkAreCaught) {
  if (HAK_HARDENED < 2) GTEST_SKIP() << "level 2";
  EXPECT_FREED_WRITE_CAUGHT(
      {
        char* keep = (char*)malloc(2000);
        char* p = (char*)malloc(2000);
        free(p);
        hak_quarantine_flush();  // out of the quarantine: p heads its page's free list
        memset(p, 0, sizeof(void*));  // NULL in plain: the list would end here
        Announce(p);
        void* q = malloc(2000);
        fprintf(stderr, "not caught: %p\n", q);
        free(keep);
      },
      kCorruptFreeList);
}

TEST_F(Hardened, AFreeListSteeredToALiveBlockIsCaught) {
  if (HAK_HARDENED < 2) GTEST_SKIP() << "level 2";
  // With the secret (the probe encodes as hakmem does) a link can point at a block of
  // the page that is still live: the live bit stops it being handed out twice.
  EXPECT_DEATH(
      {
        char* keep = (char*)malloc(2000);
        char* p = (char*)malloc(2000);
        char* live = (char*)malloc(2000);
        free(p);
        hak_quarantine_flush();  // out of the quarantine: p heads its page's free list
        hardened_probe_forge_link(p, live);
        Announce(live);
        void* q = malloc(2000);  // p
        void* r = malloc(2000);  // live, a second time
        fprintf(stderr, "not caught: %p %p\n", q, r);
        free(keep);
      },
      FaultAt(kHandedOutTwice));
}

TEST_F(Hardened, CorruptLinksOfRemoteFreesAreCaughtWhenCollected) {
  if (HAK_HARDENED < 2) GTEST_SKIP() << "level 2";
  EXPECT_FREED_WRITE_CAUGHT(
      {
        // Every block of one page of the 2000 B class, so the next malloc of the
        // class must collect the blocks other threads freed.
        std::vector<char*> v;
        for (int i = 0; i < 32; i++) v.push_back((char*)malloc(2000));
        std::thread([&v] {
          for (char* b : v) free(b);
        }).join();
        char* p = v.back();  // the head of the remote list
        memset(p, 0x41, sizeof(void*));
        Announce(p);
        for (int i = 0; i < 64; i++) {
          if (malloc(2000) == nullptr) break;
        }
        fprintf(stderr, "not caught\n");
      },
      kCorruptFreeList);
}

// ---- Level 2: canaries after the requested bytes -------------------------------------

constexpr const char kOverflow[] = "heap buffer overflow (the canary after the requested bytes was overwritten)";

TEST_F(Hardened, OverflowsByOneAndEightBytesAreCaughtOnFree) {
  if (HAK_HARDENED < 2) GTEST_SKIP() << "level 2";
  // 24 and 40 bytes sit in 32- and 48-byte slots: the overflow stays inside the slot,
  // where only the canary can see it.
  EXPECT_DEATH(
      {
        char* p = (char*)malloc(24);
        p[24] = 'A';
        Announce(p);
        free(p);
        fprintf(stderr, "not caught\n");
      },
      FaultAt(kOverflow));
  EXPECT_DEATH(
      {
        char* p = (char*)malloc(40);
        memset(p + 40, 'B', 8);
        Announce(p);
        free(p);
        fprintf(stderr, "not caught\n");
      },
      FaultAt(kOverflow));
  EXPECT_DEATH(
      {
        char* p = (char*)malloc(3000);  // a mid class
        p[3000] = 1;
        Announce(p);
        free(p);
        fprintf(stderr, "not caught\n");
      },
      FaultAt(kOverflow));
}

TEST_F(Hardened, OverflowsOfLargeBlocksAreCaughtOnFree) {
  if (HAK_HARDENED < 2) GTEST_SKIP() << "level 2";
  // A big block of whole slices and a whale of whole pages: without room kept for
  // the canary, the byte after either would be the next block's or an unused page.
  EXPECT_DEATH(
      {
        char* p = (char*)malloc((size_t)2 << 20);
        p[(size_t)2 << 20] = 1;
        Announce(p);
        free(p);
        fprintf(stderr, "not caught\n");
      },
      FaultAt(kOverflow));
  EXPECT_DEATH(
      {
        char* p = (char*)malloc((size_t)8 << 20);
        memset(p + ((size_t)8 << 20), 'B', 8);
        Announce(p);
        free(p);
        fprintf(stderr, "not caught\n");
      },
      FaultAt(kOverflow));
  EXPECT_DEATH(
      {
        char* p = (char*)malloc((size_t)5 << 20);
        p = (char*)realloc(p, (size_t)9 << 20);  // grown: the canary follows the new end
        p[(size_t)9 << 20] = 1;
        Announce(p);
        p = (char*)realloc(p, (size_t)3 << 20);
        fprintf(stderr, "not caught %p\n", (void*)p);
      },
      FaultAt(kOverflow));
  EXPECT_DEATH(
      {
        void* q = nullptr;
        if (posix_memalign(&q, (size_t)1 << 20, 300000) != 0) abort();  // a whale at 1 MiB
        static_cast<char*>(q)[300000] = 1;
        Announce(q);
        fprintf(stderr, "not caught %zu\n", malloc_usable_size(q));
      },
      FaultAt(kOverflow));
}

TEST_F(Hardened, CanaryReportOnlyReportsOverflowsAndGoesOn) {
  if (HAK_HARDENED < 2) GTEST_SKIP() << "level 2";
  setenv("HAKMEM_CANARY_REPORT", "1", 1);  // the death tests' children read it at start
  EXPECT_EXIT(
      {
        char* p = (char*)malloc(24);
        p[24] = 'A';
        free(p);
        fprintf(stderr, "went on\n");
        exit(0);
      },
      ::testing::ExitedWithCode(0),
      "hakmem: error: heap buffer overflow \\(the canary after the requested bytes was overwritten\\) at address "
      "0x[0-9a-f]{16} \\(size class [0-9]+, hardened\\)\n(.|\n)*went on");
  EXPECT_DEATH(
      {
        void* p = malloc(24);
        free(p);
        Announce(p);
        free(p);
      },
      FaultAt(kDoubleFree));
  unsetenv("HAKMEM_CANARY_REPORT");
}

TEST_F(Hardened, AStringOverflowIsCaughtOnReallocAndUsableSize) {
  if (HAK_HARDENED < 2) GTEST_SKIP() << "level 2";
  // 25 bytes with its NUL into a block of 20 (a 32-byte slot: the overflow stays in
  // the slot, so under ASan too it is the canary that sees it)
  static const char kLong[] = "0123456789abcdefghijklmn";
  EXPECT_DEATH(
      {
        char* p = (char*)malloc(20);
        memcpy(p, kLong, sizeof kLong);  // as strcpy would
        Announce(p);
        p = (char*)realloc(p, 12);
        fprintf(stderr, "not caught %p\n", (void*)p);
      },
      FaultAt(kOverflow));
  EXPECT_DEATH(
      {
        char* p = (char*)malloc(20);
        memcpy(p, kLong, sizeof kLong);
        Announce(p);
        fprintf(stderr, "not caught %zu\n", malloc_usable_size(p));
      },
      FaultAt(kOverflow));
}

TEST_F(Hardened, UsableSizeIsTheRequestedSizeAndReallocKeepsTheCanary) {
  if (HAK_HARDENED < 2) GTEST_SKIP() << "level 2";
  for (size_t n : {(size_t)0, (size_t)1, (size_t)11, (size_t)27, (size_t)1000, (size_t)4091, (size_t)70000,
                   (size_t)2 << 20, ((size_t)63 << 16) - 5, (size_t)8 << 20, ((size_t)12 << 20) + 3}) {
    char* p = (char*)malloc(n);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(malloc_usable_size(p), n);
    memset(p, 0x5a, n);  // every requested byte is the caller's
    p = (char*)realloc(p, n + 3);  // in place when it fits: the canary moves
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(malloc_usable_size(p), n + 3);
    memset(p, 0x5a, n + 3);
    p = (char*)realloc(p, n / 2 + 1);
    EXPECT_EQ(malloc_usable_size(p), n / 2 + 1);
    free(p);
    void* q = aligned_alloc(64, n + 64);
    EXPECT_EQ((uintptr_t)q % 64, 0u);
    EXPECT_EQ(malloc_usable_size(q), n + 64);
    memset(q, 0x5a, n + 64);
    free(q);
  }
}

// ---- Level 2: fresh blocks in a random order ----------------------------------------

TEST_F(Hardened, FreshBlocksOfAPageComeInARandomOrder) {
  if (HAK_HARDENED < 2) GTEST_SKIP() << "level 2";
  // 40 blocks of 200 B (208-byte slots: 19 to each 4 KiB carved at once) from a new
  // thread's fresh pages: handed out in address order, each would be the previous one
  // plus 208; shuffled, hardly two in a row are (1 in 19 on average).
  size_t in_order = 0, pairs = 0;
  std::thread([&] {
    std::vector<char*> v;
    for (int i = 0; i < 40; i++) v.push_back((char*)malloc(200));
    for (size_t i = 1; i < v.size(); i++, pairs++) in_order += v[i] == v[i - 1] + 208;
    for (char* p : v) free(p);
  }).join();
  EXPECT_LT(in_order, pairs / 2) << in_order << " of " << pairs << " blocks followed their predecessor";
}

// ---- Level 2: malloc(0) --------------------------------------------------------------

TEST_F(Hardened, ZeroSizeBlocksAreUniqueAndWorkWithEveryCall) {
  if (HAK_HARDENED < 2) GTEST_SKIP() << "level 2";
  std::vector<void*> v;
  for (int i = 0; i < 1000; i++) {
    void* p = malloc(0);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(malloc_usable_size(p), 0u);
    v.push_back(p);
  }
  std::vector<void*> sorted = v;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end()) << "two live malloc(0) share a pointer";
  void* c = calloc(0, 8);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(malloc_usable_size(c), 0u);
  v.push_back(c);
  char* r = (char*)realloc(v[0], 10);  // out of the zero segment, into a pool block
  ASSERT_NE(r, nullptr);
  memset(r, 7, 10);
  EXPECT_EQ(malloc_usable_size(r), 10u);
  v[0] = r;
  for (void* p : v) free(p);
}

TEST_F(Hardened, ZeroSizeBlocksFaultWhenReadOrWritten) {
  if (HAK_HARDENED < 2) GTEST_SKIP() << "level 2";
  EXPECT_ACCESS_CAUGHT(
      {
        volatile char* p = (volatile char*)malloc(0);
        Announce((void*)p);
        fprintf(stderr, "read %d\n", p[0]);
      },
      kZeroSizeAccess);
  EXPECT_ACCESS_CAUGHT(
      {
        volatile char* p = (volatile char*)malloc(0);
        Announce((void*)(p + 3));
        p[3] = 1;
        fprintf(stderr, "written\n");
      },
      kZeroSizeAccess);
}

// ---- Level 2: freed large blocks wait in the caches inaccessible ----------------------

TEST_F(Hardened, ReadAndWriteAfterFreeOfLargeBlocksFault) {
  if (HAK_HARDENED < 2) GTEST_SKIP() << "level 2";
  EXPECT_ACCESS_CAUGHT(
      {
        volatile char* p = (volatile char*)malloc((size_t)2 << 20);  // a big block: to the BigCache
        p[100] = 1;
        free((void*)p);
        Announce((void*)(p + 100));
        fprintf(stderr, "read %d\n", p[100]);
      },
      kUseAfterFree);
  EXPECT_ACCESS_CAUGHT(
      {
        volatile char* p = (volatile char*)malloc((size_t)8 << 20);  // a whale: to the whale ring
        free((void*)p);
        Announce((void*)(p + ((size_t)6 << 20)));  // in its second unit
        p[(size_t)6 << 20] = 1;
        fprintf(stderr, "written\n");
      },
      kUseAfterFree);
}

// A freed large block stays inaccessible after it leaves its cache: evicted (the cache
// over its slots) into the big segments' free spans or the region, or never cached (a
// whale above HAKMEM_WHALE_BYTES), it is opened only when its memory is handed out
// again. Before, eviction made it accessible, so a late use after free went unseen.
TEST_F(Hardened, UseAfterFreeOfAnEvictedLargeBlockFaults) {
  if (HAK_HARDENED < 2) GTEST_SKIP() << "level 2";
  EXPECT_ACCESS_CAUGHT(
      {
        constexpr int kMore = 8;  // more than the BigCache's 4 slots
        volatile char* p = (volatile char*)malloc((size_t)2 << 20);
        void* more[kMore];
        for (auto& m : more) m = malloc((size_t)2 << 20);
        p[100] = 1;
        free((void*)p);
        for (auto& m : more) free(m);  // p, the oldest entry, is evicted to a free span
        Announce((void*)(p + 100));
        fprintf(stderr, "read %d\n", p[100]);
      },
      kUseAfterFree);
  EXPECT_ACCESS_CAUGHT(
      {
        constexpr int kMore = 12;  // more than the whale ring's 8 slots
        volatile char* p = (volatile char*)malloc((size_t)8 << 20);
        void* more[kMore];
        for (auto& m : more) m = malloc((size_t)8 << 20);
        free((void*)p);
        for (auto& m : more) free(m);  // p is evicted to the region
        Announce((void*)(p + ((size_t)5 << 20)));
        p[(size_t)5 << 20] = 1;
        fprintf(stderr, "written\n");
      },
      kUseAfterFree);
  EXPECT_ACCESS_CAUGHT(
      {
        volatile char* p = (volatile char*)malloc((size_t)80 << 20);  // above the ring's bytes
        Require(p != nullptr, "malloc failed\n");
        p[0] = 1;
        free((void*)p);  // straight to the region
        Announce((void*)(p + ((size_t)70 << 20)));
        fprintf(stderr, "read %d\n", p[(size_t)70 << 20]);
      },
      kUseAfterFree);
}

// The memory of evicted, closed blocks is usable again by whatever takes it next:
// big blocks of other sizes, whales, pool segments.
TEST_F(Hardened, MemoryOfEvictedLargeBlocksIsUsableWhenReused) {
  if (HAK_HARDENED < 2) GTEST_SKIP() << "level 2";
  for (int round = 0; round < 3; round++) {
    std::vector<char*> blocks;
    for (int i = 0; i < 12; i++) blocks.push_back((char*)malloc(((size_t)1 << 20) + (size_t)i * (300 << 10)));
    for (int i = 0; i < 12; i++) blocks.push_back((char*)malloc(((size_t)5 << 20) + (size_t)i * (1 << 20)));
    for (char* b : blocks) ASSERT_NE(b, nullptr);
    for (char* b : blocks) free(b);  // most are evicted, closed
    blocks.clear();
    for (int i = 0; i < 12; i++) blocks.push_back((char*)malloc(((size_t)3 << 20) - (size_t)i * (100 << 10)));
    for (int i = 0; i < 6; i++) blocks.push_back((char*)malloc(((size_t)16 << 20) + (size_t)i * (3 << 20)));
    for (char* b : blocks) {
      ASSERT_NE(b, nullptr);
      memset(b, 0x5b, malloc_usable_size(b));  // every byte writable
    }
    std::vector<char*> small;  // pool segments may take the region's closed units too
    for (int i = 0; i < 20000; i++) small.push_back((char*)malloc(200));
    for (char* q : small) memset(q, 1, 200);
    for (char* q : small) free(q);
    for (char* b : blocks) free(b);
  }
  hak_collect(true);
}

// The usage walk (hak_stats_get) reads the header of every region run in use. Units
// a freed whale left PROT_NONE must be opened before they count as in use: opened
// after the region's lock was released, a snapshot taken in between faulted on the
// header (seen as a rare crash of a cross-thread test's memory sampling). And it must
// read headers only where runs begin: stepping by a header not yet rewritten (the old
// one of a longer run) it faulted in the middle of a whale closed in the ring (a rare
// crash of this test in CI; tests/large/usage_walk_test opens that window every run).
TEST_F(Hardened, SnapshotsWhileClosedUnitsAreTakenAgainDoNotFault) {
  if (HAK_HARDENED < 2) GTEST_SKIP() << "level 2";
  std::atomic<bool> done{false};
  std::atomic<uint64_t> snapshots{0};
  std::thread reader([&] {
    while (!done.load()) {
      hak_stats_t s;
      ASSERT_EQ(hak_stats_read(&s), 0);
      snapshots.fetch_add(1);
    }
  });
  const int rounds = (int)hak_test_env::Scaled(300);
  for (int round = 0; round < rounds; round++) {
    void* whales[12];  // more than the ring keeps: the rest go back to the region closed
    for (int i = 0; i < 12; i++) {
      whales[i] = malloc(((size_t)5 << 20) + (size_t)((round + i) % 7) * ((size_t)1 << 20));
      ASSERT_NE(whales[i], nullptr);
      ((char*)whales[i])[0] = 1;
    }
    for (void* w : whales) free(w);
  }
  done.store(true);
  reader.join();
  EXPECT_GT(snapshots.load(), 0u);
}

// Blocks above 128 KiB (a page of their own in the L2.5 pool otherwise) are big blocks
// at level 2, so they wait in the BigCache inaccessible too.
TEST_F(Hardened, ReadAndWriteAfterFreeOfL25SizedBlocksFault) {
  if (HAK_HARDENED < 2) GTEST_SKIP() << "level 2";
  for (size_t size : {(size_t)128 << 10, (size_t)256 << 10, (size_t)1 << 20}) {
    SCOPED_TRACE(size);
    EXPECT_ACCESS_CAUGHT(
        {
          volatile char* p = (volatile char*)malloc(size);
          p[0] = 1;
          free((void*)p);
          Announce((void*)p);
          fprintf(stderr, "read %d\n", p[0]);
        },
        kUseAfterFree);
    EXPECT_ACCESS_CAUGHT(
        {
          volatile char* p = (volatile char*)malloc(size);
          free((void*)p);
          Announce((void*)(p + size - 1));
          p[size - 1] = 1;
          fprintf(stderr, "written\n");
        },
        kUseAfterFree);
  }
  void* big = malloc((size_t)128 << 10);
  ASSERT_NE(big, nullptr);
  EXPECT_EQ(hardened_probe_is_big(big), 1);
  free(big);
  // Just below, the pool serves them (the zeroed-slot check covers up to 4 KiB only).
  void* pooled = malloc(((size_t)128 << 10) - 5);
  ASSERT_NE(pooled, nullptr);
  EXPECT_EQ(hardened_probe_is_big(pooled), 0);
  free(pooled);
}

// The next allocation of the same size does not get the block just freed (the caches
// hold their newest entry), so a write through the old pointer still faults.
TEST_F(Hardened, WriteAfterFreeOfALargeBlockFaultsAfterAnAllocationOfItsSize) {
  if (HAK_HARDENED < 2) GTEST_SKIP() << "level 2";
  for (size_t size : {(size_t)256 << 10, (size_t)2 << 20, (size_t)8 << 20}) {
    SCOPED_TRACE(size);
    EXPECT_ACCESS_CAUGHT(
        {
          volatile char* p = (volatile char*)malloc(size);
          free((void*)p);
          volatile char* q = (volatile char*)malloc(size);
          Require(q != nullptr && q != p, "the block just freed was handed out again\n");
          q[0] = 2;
          Announce((void*)(p + 65537));
          p[65537] = 1;
          fprintf(stderr, "written\n");
        },
        kUseAfterFree);
  }
}

// ---- Level 2: guard pages ---------------------------------------------------------------
// Every pool and big segment keeps its last slice, and its header slice's last OS page,
// PROT_NONE: the largest big block ends right before the one and starts right after
// the other.
TEST_F(Hardened, OverflowOffASegmentsEndOrBeforeItsFirstPageHitsAGuard) {
  if (HAK_HARDENED < 2) GTEST_SKIP() << "level 2";
  constexpr const char kGuard[] = "heap buffer overflow into a guard page";
  EXPECT_ACCESS_CAUGHT(
      {
        volatile char* p = (volatile char*)malloc(kHakBigMax - kHakCanaryRoom);
        Require(p != nullptr && hardened_probe_is_big((void*)p) == 1, "not a big block\n");
        Announce((void*)(p + kHakBigMax));
        p[kHakBigMax] = 1;  // the first byte past the slot: the segment's last slice
        fprintf(stderr, "written\n");
      },
      kGuard);
  if (sysconf(_SC_PAGESIZE) < 64 * 1024) {  // a 64 KiB page would leave the header no room
    EXPECT_ACCESS_CAUGHT(
        {
          volatile char* p = (volatile char*)malloc(kHakBigMax - kHakCanaryRoom);
          Require(p != nullptr, "malloc failed\n");
          Announce((void*)(p - 8));
          p[-8] = 1;  // just before the segment's first page: the header slice's guard
          fprintf(stderr, "written\n");
        },
        kGuard);
  }
  // A pool segment's last page is followed by the guard too: a run of writes off the
  // end of any segment stops there.
  EXPECT_ACCESS_CAUGHT(
      {
        volatile char* p = (volatile char*)malloc(100);
        Require(p != nullptr, "malloc failed\n");
        volatile char* end = (volatile char*)(((uintptr_t)p | (((size_t)4 << 20) - 1)) + 1) - 64 * 1024;
        Announce((void*)end);
        end[0] = 1;
        fprintf(stderr, "written\n");
      },
      kGuard);
}

// A segment going back to the region leaves its guard pages in place: taking the unit
// again as a segment costs no call, and a whale taking it gets every byte accessible.
TEST_F(Hardened, GuardPagesOfAFreedSegmentStayForSegmentsAndOpenForWhales) {
  if (HAK_HARDENED < 2) GTEST_SKIP() << "level 2";
  constexpr size_t kUnitBytes = (size_t)4 << 20;
  auto region_protects = [] {
    hak_stats_t s;
    EXPECT_EQ(hak_stats_read(&s), 0);
    return s.os_by[HAK_STATS_OS_REGION][HAK_STATS_OS_MPROTECT].count;
  };
  std::thread([&] {  // a heap of its own: its segments go back when it frees everything
    hak_collect(false);
    std::vector<void*> blocks;
    std::set<uintptr_t> units;
    for (size_t i = 0; i < 12 * 1024; i++) {  // 12 MiB of 1 KiB blocks: a few segments
      void* p = malloc(1000);
      ASSERT_NE(p, nullptr);
      memset(p, 1, 1000);
      blocks.push_back(p);
      units.insert(reinterpret_cast<uintptr_t>(p) & ~(kUnitBytes - 1));
    }
    ASSERT_GE(units.size(), 2u);
    for (void* p : blocks) free(p);
    hak_quarantine_flush();  // every block freed: the emptied segments go back (unpurged)
    // Segments again on the same units: their guards are there already.
    uint64_t before = region_protects();
    blocks.clear();
    for (size_t i = 0; i < 12 * 1024; i++) blocks.push_back(malloc(1000));
    size_t reused = 0;
    for (void* p : blocks) reused += units.count(reinterpret_cast<uintptr_t>(p) & ~(kUnitBytes - 1));
    EXPECT_GT(reused, 0u) << "no unit was taken again by a segment";
    uint64_t calls = region_protects() - before;
    EXPECT_LT(calls, 2 * units.size()) << "segments on units they guarded before guarded them anew";
    for (void* p : blocks) free(p);
    hak_quarantine_flush();
    // A whale over those units: every byte of it writable.
    char* whale = static_cast<char*>(malloc(units.size() * kUnitBytes - 8192));
    ASSERT_NE(whale, nullptr);
    uintptr_t run = reinterpret_cast<uintptr_t>(whale) & ~(kUnitBytes - 1);
    size_t covered = 0;
    for (uintptr_t u : units) covered += u >= run && u < run + units.size() * kUnitBytes;
    EXPECT_GT(covered, 0u) << "the whale took none of the units the segments had";
    memset(whale, 7, units.size() * kUnitBytes - 8192);
    free(whale);
  }).join();
}

TEST_F(Hardened, TheLargeQuarantineCanBeTurnedOff) {
  if (HAK_HARDENED < 2) GTEST_SKIP() << "level 2";
  setenv("HAKMEM_LARGE_QUARANTINE", "0", 1);  // the child reads it at start
  EXPECT_EXIT(
      {
        hak_stats_t before;
        hak_stats_t after;
        hak_stats_read(&before);
        for (int i = 0; i < 10; i++) free(malloc((size_t)2 << 20));
        hak_stats_read(&after);
        fprintf(stderr, "mprotect calls %llu\n",  // of the caches (segment guards count as the region's)
                (unsigned long long)(after.os_by[HAK_STATS_OS_HUGE][HAK_STATS_OS_MPROTECT].count -
                                     before.os_by[HAK_STATS_OS_HUGE][HAK_STATS_OS_MPROTECT].count));
        exit(0);
      },
      ::testing::ExitedWithCode(0), "mprotect calls 0\n");
  unsetenv("HAKMEM_LARGE_QUARANTINE");
}

TEST_F(Hardened, CachedLargeBlocksComeBackUsable) {
  if (HAK_HARDENED < 2) GTEST_SKIP() << "level 2";
  for (size_t size : {(size_t)2 << 20, (size_t)3 << 20, (size_t)8 << 20, (size_t)20 << 20}) {
    for (int round = 0; round < 3; round++) {
      char* p = (char*)malloc(size);
      ASSERT_NE(p, nullptr);
      memset(p, 0x3c, size);  // every byte writable again after its time in the cache
      free(p);
    }
    char* z = (char*)calloc(1, size);
    ASSERT_NE(z, nullptr);
    for (size_t i = 0; i < size; i += 4096) ASSERT_EQ(z[i], 0) << i;
    free(z);
  }
  hak_collect(true);  // the caches empty: everything accessible again, back to the region
  char* q = (char*)malloc((size_t)6 << 20);
  ASSERT_NE(q, nullptr);
  memset(q, 1, (size_t)6 << 20);
  free(q);
}

TEST_F(Hardened, ZeroSizeBlockMisuseIsNamed) {
  if (HAK_HARDENED < 2) GTEST_SKIP() << "level 2";
  EXPECT_DEATH(
      {
        void* p = malloc(0);
        free(p);
        Announce(p);
        free(p);
      },
      FaultAt(kDoubleFree));
  EXPECT_DEATH(
      {
        char* p = (char*)malloc(0);
        Announce(p + 8);
        free(p + 8);
      },
      FaultAt(kInvalidFree));
}

TEST_F(Hardened, LevelOneDoesNotCheckFreedMemory) {
  if (HAK_HARDENED >= 2) GTEST_SKIP() << "level 1 only";
  if (HAK_TEST_ASAN) GTEST_SKIP() << "ASan reports the write into the freed block";
  char* keep = (char*)malloc(2000);
  char* p = (char*)malloc(2000);
  free(p);
  p[1000] = 'x';
  char* q = (char*)malloc(2000);
  EXPECT_EQ(q, p);
  free(q);
  free(keep);
}

// ---- Double free ------------------------------------------------------------------

TEST_F(Hardened, DoubleFreeOfATinyBlock) {
  EXPECT_DEATH(
      {
        void* keep = malloc(32);  // keeps the page in use
        void* p = malloc(32);
        free(p);
        Announce(p);
        free(p);
        free(keep);
      },
      "hakmem: fatal: double free at address 0x[0-9a-f]{16}");
  EXPECT_DEATH(
      {
        void* keep = malloc(32);
        void* p = malloc(32);
        free(p);
        Announce(p);
        free(p);
        free(keep);
      },
      FaultAt(kDoubleFree));
}

TEST_F(Hardened, DoubleFreeOfAMidBlock) {
  EXPECT_DEATH(
      {
        void* keep = malloc(20 * 1024);
        void* p = malloc(20 * 1024);
        free(p);
        Announce(p);
        free(p);
        free(keep);
      },
      FaultAt(kDoubleFree));
}

TEST_F(Hardened, DoubleFreeOfAHugeBlock) {
  EXPECT_DEATH(
      {
        void* p = malloc(2 * 1024 * 1024);
        free(p);  // unmapped at once
        Announce(p);
        free(p);
      },
      FaultAt(kDoubleFree));
}

TEST_F(Hardened, DoubleFreeOfAnAlignedHugeBlock) {
  EXPECT_DEATH(
      {
        void* p = aligned_alloc(8 * 1024 * 1024, 3 * 1024 * 1024);  // header 4 MiB before the block
        free(p);
        Announce(p);
        free(p);
      },
      FaultAt(kDoubleFree));
}

TEST_F(Hardened, DoubleFreeAcrossThreads) {
  EXPECT_DEATH(
      {
        void* keep = malloc(100);
        void* p = malloc(100);
        std::thread a([p] { free(p); });  // remote free
        a.join();
        std::thread b([p] {
          Announce(p);
          free(p);  // again, from yet another thread
        });
        b.join();
        free(keep);
      },
      FaultAt(kDoubleFree));
}

TEST_F(Hardened, DoubleFreeRemoteThenByTheOwner) {
  EXPECT_DEATH(
      {
        void* keep = malloc(3000);
        void* p = malloc(3000);
        std::thread a([p] { free(p); });
        a.join();
        Announce(p);
        free(p);
        free(keep);
      },
      FaultAt(kDoubleFree));
}

// The owner exited: its segment is abandoned with a block still live (`keep`).
TEST_F(Hardened, DoubleFreeOfABlockOfAnExitedThread) {
  EXPECT_DEATH(
      {
        void* keep = nullptr;
        void* p = nullptr;
        std::thread t([&] {
          keep = malloc(500);
          p = malloc(500);
        });
        t.join();
        free(p);
        Announce(p);
        free(p);
        free(keep);
      },
      FaultAt(kDoubleFree));
}

// Two threads free the same block at the same moment: exactly one wins, the other
// must be reported (the live bit is cleared atomically).
TEST_F(Hardened, RacingDoubleFreeIsCaught) {
  EXPECT_DEATH(
      {
        void* keep = malloc(64);
        for (int round = 0; round < 1000; round++) {
          void* p = malloc(64);
          std::atomic<int> go{0};
          auto racer = [&] {
            go.fetch_add(1);
            while (go.load() < 2) {
            }
            free(p);
          };
          Announce(p);  // the last announcement before the fault is the one that counts
          std::thread a(racer);
          std::thread b(racer);
          a.join();
          b.join();
        }
        free(keep);
      },
      "hakmem: fatal: double free at address 0x[0-9a-f]{16}");
}

// The block's memory went back before the second free - its page to the segment (all
// its blocks were freed and it was not the only page of its class), or its whole
// segment (its thread freed everything and exited). Still a double free, and it should
// be named as one, as it is for huge blocks whose mapping is gone.
TEST_F(Hardened, DoubleFreeAfterTheBlocksMemoryWentBackIsNamedDoubleFree) {
  EXPECT_DEATH(
      {
        // 20 KiB blocks, 25 per 512 KiB page: 64 blocks span three pages.
        std::vector<void*> blocks;
        for (int i = 0; i < 64; i++) blocks.push_back(malloc(20 * 1024));
        void* p = blocks[0];
        void* keep = blocks.back();  // keeps the last page (and the segment) in use
        blocks.pop_back();
        for (void* q : blocks) free(q);  // the first page is now empty and returned
        Announce(p);
        free(p);
        free(keep);
      },
      FaultAt(kDoubleFree));
  EXPECT_DEATH(
      {
        void* p = nullptr;
        std::thread t([&] {
          p = malloc(700);
          free(p);
        });
        t.join();  // the thread's only segment was released when it exited
        Announce(p);
        free(p);
      },
      FaultAt(kDoubleFree));
}

// A freed block the caches hold, and a whale realloc moved, are free: a second free of
// them is a double free, caught at the address freed. Each child checks the block took
// the intended path (stats counters) before the second free, else exits with 3.
namespace {

constexpr size_t kMiB = (size_t)1 << 20;
constexpr size_t kUnit = 4 * kMiB;

hak_stats_t StatsNow() {
  hak_stats_t s;
  if (hak_stats_read(&s) != 0) _exit(4);
  return s;
}

// A whale of 5 MiB (a run of two units) with another whale right after its run, so it
// cannot grow in place. The other whales are left allocated.
void* WhaleWithANeighbour() {
  void* whales[64];
  for (int i = 0; i < 64; i++) {
    whales[i] = malloc(5 * kMiB);
    Require(whales[i] != nullptr, "malloc failed\n");
    uintptr_t run_i = (uintptr_t)whales[i] & ~(kUnit - 1);
    for (int j = 0; j < i; j++) {
      uintptr_t run_j = (uintptr_t)whales[j] & ~(kUnit - 1);
      if (run_i == run_j + 2 * kUnit) return whales[j];
      if (run_j == run_i + 2 * kUnit) return whales[i];
    }
  }
  Require(false, "no two whales were neighbours\n");
  return nullptr;
}

}  // namespace

TEST_F(Hardened, DoubleFreeOfCachedOrMovedHugeBlocks) {
  // A big block sitting in the freeing thread's BigCache.
  EXPECT_DEATH(
      {
        void* p = malloc(2 * kMiB);
        uint64_t cached = StatsNow().bigcache.cached;
        free(p);
        Require(StatsNow().bigcache.cached == cached + 1, "the block did not go to the BigCache\n");
        Announce(p);
        free(p);
      },
      FaultAt(kDoubleFree));
  // A whale sitting in the whale ring.
  EXPECT_DEATH(
      {
        void* p = malloc(8 * kMiB);
        uint64_t cached = StatsNow().whale.cached;
        free(p);
        Require(StatsNow().whale.cached == cached + 1, "the whale did not go to the ring\n");
        Announce(p);
        free(p);
      },
      FaultAt(kDoubleFree));
  // A whale realloc moved by mremap into a mapping of its own (more than a 256 MiB
  // region chunk holds): the old pointer, freed.
  EXPECT_DEATH(
      {
        void* p = malloc(8 * kMiB);
        uint64_t remaps = StatsNow().huge_moved_by_remap;
        void* q = realloc(p, 260 * kMiB);
        Require(q != nullptr && q != p && StatsNow().huge_moved_by_remap == remaps + 1, "not moved by mremap\n");
        Announce(p);
        free(p);
      },
      FaultAt(kDoubleFree));
  // A whale with a neighbour moved by mremap into cold region units.
  EXPECT_DEATH(
      {
        hak_collect(true);  // every free unit clean, the ring empty: the new run is cold
        void* p = WhaleWithANeighbour();
        uint64_t remaps = StatsNow().huge_moved_by_remap;
        void* q = realloc(p, 12 * kMiB);
        Require(q != nullptr && q != p && StatsNow().huge_moved_by_remap == remaps + 1, "not moved by mremap\n");
        Announce(p);
        free(p);
      },
      FaultAt(kDoubleFree));
  // A whale with a neighbour moved by copy into a resident run from the ring (the old
  // whale then goes to the ring itself).
  EXPECT_DEATH(
      {
        hak_collect(true);
        void* p = WhaleWithANeighbour();
        void* resident = malloc(8 * kUnit - 4096);  // eight units: room for the move's 7
        Require(resident != nullptr, "malloc failed\n");
        memset(resident, 1, 8 * kUnit - 4096);
        free(resident);
        for (size_t i = 0; i < kHakCacheHold; i++) free(malloc(5 * kMiB));  // the newest is held
        uint64_t copies = StatsNow().huge_moved_by_copy;
        void* q = realloc(p, 12 * kMiB);
        Require(q != nullptr && q != p && StatsNow().huge_moved_by_copy == copies + 1, "not moved by copy\n");
        Announce(p);
        free(p);
      },
      FaultAt(kDoubleFree));
}

// ---- Invalid free ------------------------------------------------------------------

TEST_F(Hardened, FreeOfAStackAddress) {
  EXPECT_DEATH(
      {
        char on_stack[64];
        memset(on_stack, 0, sizeof on_stack);
        void* volatile p = on_stack;
        Announce(p);
        free(p);
      },
      FaultAt(kInvalidFree));
}

TEST_F(Hardened, FreeOfAGlobal) {
  static char global_buffer[256];
  EXPECT_DEATH(
      {
        void* volatile p = global_buffer;
        Announce(p);
        free(p);
      },
      FaultAt(kInvalidFree));
}

TEST_F(Hardened, FreeOfAPointerIntoTheMiddleOfABlock) {
  EXPECT_DEATH(
      {
        char* p = (char*)malloc(64);
        Announce(p + 16);
        free(p + 16);
      },
      FaultAt(kInvalidFree));
  EXPECT_DEATH(
      {
        char* p = (char*)malloc(20 * 1024);
        Announce(p + 4096);
        free(p + 4096);
      },
      FaultAt(kInvalidFree));
}

TEST_F(Hardened, FreeOfAPointerInsideAHugeBlock) {
  EXPECT_DEATH(
      {
        char* p = (char*)malloc(2 * 1024 * 1024);
        Announce(p + 16);
        free(p + 16);
      },
      FaultAt(kInvalidFree));
  EXPECT_DEATH(
      {
        char* p = (char*)malloc(2 * 1024 * 1024);
        Announce(p + 1024 * 1024);
        free(p + 1024 * 1024);
      },
      FaultAt(kInvalidFree));
  // Past the block's first 4 MiB: that 4 MiB unit holds no segment header of ours.
  EXPECT_DEATH(
      {
        char* p = (char*)malloc(12 * 1024 * 1024);
        Announce(p + 6 * 1024 * 1024);
        free(p + 6 * 1024 * 1024);
      },
      FaultAt(kInvalidFree));
}

TEST_F(Hardened, FreeOfMemoryFromAnotherMapping) {
  EXPECT_DEATH(
      {
        // A block of glibc's own allocator would do as well; any memory hakmem did not
        // hand out: here a page of the test's read-write data.
        static long page[1024] __attribute__((aligned(4096)));
        void* volatile p = &page[512];
        Announce(p);
        free(p);
      },
      FaultAt(kInvalidFree));
}

// ---- realloc and malloc_usable_size of bad pointers -------------------------------------

TEST_F(Hardened, ReallocOfAFreedPointer) {
  EXPECT_DEATH(
      {
        void* keep = malloc(100);
        void* p = malloc(100);
        free(p);
        Announce(p);
        void* q = realloc(p, 200);
        free(q);
        free(keep);
      },
      FaultAt(kInvalidRealloc));
}

TEST_F(Hardened, ReallocAndUsableSizeOfAFreedWhale) {
  // The whale waits in the ring: its header says it is free (before, realloc went on
  // with the freed block).
  EXPECT_DEATH(
      {
        void* p = malloc((size_t)8 << 20);
        free(p);
        Announce(p);
        void* q = realloc(p, (size_t)9 << 20);
        fprintf(stderr, "not caught %p\n", q);
      },
      FaultAt(kInvalidRealloc));
  EXPECT_DEATH(
      {
        void* p = malloc((size_t)8 << 20);
        free(p);
        Announce(p);
        fprintf(stderr, "not caught %zu\n", malloc_usable_size(p));
      },
      FaultAt(kInvalidUsableSize));
}

TEST_F(Hardened, ReallocOfAFreedHugePointer) {
  EXPECT_DEATH(
      {
        void* p = malloc(1024 * 1024);
        free(p);
        Announce(p);
        void* q = realloc(p, 2 * 1024 * 1024);
        free(q);
      },
      FaultAt(kInvalidRealloc));
}

TEST_F(Hardened, ReallocOfAnInteriorPointer) {
  EXPECT_DEATH(
      {
        char* p = (char*)malloc(256);
        Announce(p + 32);
        void* q = realloc(p + 32, 512);
        free(q);
      },
      FaultAt(kInvalidRealloc));
}

TEST_F(Hardened, UsableSizeOfAFreedPointer) {
  EXPECT_DEATH(
      {
        void* keep = malloc(100);
        void* p = malloc(100);
        free(p);
        Announce(p);
        size_t n = malloc_usable_size(p);
        fprintf(stderr, "usable %zu\n", n);
        free(keep);
      },
      FaultAt(kInvalidUsableSize));
}

// ---- Correct use never faults ---------------------------------------------------------

TEST_F(Hardened, CorrectUseDoesNotAbort) {
  // Every API call, every pool, across threads and thread exits; frees in every order.
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  std::vector<std::vector<void*>> handoff(4);
  for (int t = 0; t < 4; t++) {
    threads.emplace_back([t, &bad, &handoff] {
      std::vector<void*> mine;
      unsigned seed = 1234 + t;
      for (int i = 0; i < 20000; i++) {
        seed = seed * 1103515245u + 12345u;
        size_t size = (seed >> 8) % (i % 97 == 0 ? 300000 : 3000);
        void* p = nullptr;
        switch (i % 6) {
          case 0: p = malloc(size); break;
          case 1: p = calloc(1, size); break;
          case 2: p = aligned_alloc(64, (size + 63) & ~(size_t)63); break;
          case 3: if (posix_memalign(&p, 256, size) != 0) p = nullptr; break;
          case 4: p = memalign(8192, size); break;
          case 5: p = realloc(malloc(16), size + 1); break;
        }
        if (p == nullptr && size != 0) {
          bad++;
          continue;
        }
        if (p != nullptr && malloc_usable_size(p) < size) bad++;
        if (p != nullptr) memset(p, t, size < 64 ? size : 64);
        mine.push_back(p);
        if (mine.size() > 200) {
          size_t k = (seed >> 4) % mine.size();
          if (k % 3 == 0) mine[k] = realloc(mine[k], (seed >> 6) % 5000 + 1);
          else {
            free(mine[k]);
            mine[k] = mine.back();
            mine.pop_back();
          }
        }
      }
      // Half for another thread to free after this one exited.
      size_t half = mine.size() / 2;
      handoff[t].assign(mine.begin(), mine.begin() + half);
      for (size_t i = half; i < mine.size(); i++) free(mine[i]);
    });
  }
  for (auto& th : threads) th.join();
  std::thread reaper([&handoff] {
    for (auto& v : handoff) {
      for (void* p : v) free(p);
    }
  });
  reaper.join();
  EXPECT_EQ(bad.load(), 0);
  // Also in a death-test child, to be sure the process really exits normally.
  EXPECT_EXIT(
      {
        std::vector<void*> v;
        for (int i = 0; i < 10000; i++) v.push_back(malloc((size_t)(i * 37) % 70000));
        for (size_t i = 0; i < v.size(); i += 2) free(v[i]);
        for (size_t i = 1; i < v.size(); i += 2) v[i] = realloc(v[i], 100);
        for (size_t i = 1; i < v.size(); i += 2) free(v[i]);
        fprintf(stderr, "clean\n");
        exit(0);
      },
      ::testing::ExitedWithCode(0), "^clean\n$");
}

}  // namespace
}  // namespace hak_variant_test
