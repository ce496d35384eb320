/* SPDX-License-Identifier: MIT */
// thread_api_test.cc - API semantics when the call is a thread's very first allocator
// call (the thread has no heap yet), and when blocks are freed, reallocated or calloc'ed
// across threads.
//
// The work runs on a raw pthread whose body calls only the function under test and
// records plain results; assertions are made on the main thread after the join.
#include <errno.h>
#include <pthread.h>
#include <stdint.h>

#include <algorithm>
#include <functional>
#include <vector>

#include "backends.h"
#include "hak_test_names.h"  // last: see its rule

namespace {

constexpr size_t kMiB = (size_t)1 << 20;

void* Trampoline(void* arg) {
  (*static_cast<std::function<void()>*>(arg))();
  return nullptr;
}

// Runs fn on a new thread and waits for it (and for its exit, heap teardown included).
void OnFreshThread(std::function<void()> fn) {
  pthread_t t;
  ASSERT_EQ(pthread_create(&t, nullptr, Trampoline, &fn), 0);
  ASSERT_EQ(pthread_join(t, nullptr), 0);
}

template <typename A>
class FreshThread : public ::testing::Test {};
TYPED_TEST_SUITE(FreshThread, Backends, BackendName);

TYPED_TEST(FreshThread, MallocFamilyAsTheFirstCall) {
  using A = TypeParam;
  struct Case {
    const char* what;
    std::function<void*()> call;
    size_t size;   // bytes that must be usable
    size_t align;  // alignment the result must have
    bool zero;     // must read as zero
  };
  std::vector<Case> cases = {
      {"malloc(0)", [] { return A::Malloc(0); }, 0, 16, false},
      {"malloc(100)", [] { return A::Malloc(100); }, 100, 16, false},
      {"malloc(40000)", [] { return A::Malloc(40000); }, 40000, 16, false},
      {"malloc(3 MiB)", [] { return A::Malloc(3 * kMiB); }, 3 * kMiB, 16, false},
      {"calloc(10, 10)", [] { return A::Calloc(10, 10); }, 100, 16, true},
      {"calloc(3, 20000)", [] { return A::Calloc(3, 20000); }, 60000, 16, true},
      {"calloc(1, 2 MiB)", [] { return A::Calloc(1, 2 * kMiB); }, 2 * kMiB, 16, true},
      {"realloc(NULL, 50)", [] { return A::Realloc(nullptr, 50); }, 50, 16, false},
      {"reallocarray(NULL, 3, 4)", [] { return A::Reallocarray(nullptr, 3, 4); }, 12, 16, false},
      {"posix_memalign(64, 100)",
       [] {
         void* p = nullptr;
         return A::PosixMemalign(&p, 64, 100) == 0 ? p : nullptr;
       },
       100, 64, false},
      {"aligned_alloc(256, 1000)", [] { return A::AlignedAlloc(256, 1000); }, 1000, 256, false},
      {"aligned_alloc(8192, 100)", [] { return A::AlignedAlloc(8192, 100); }, 100, 8192, false},
      {"memalign(4 MiB, 10)", [] { return A::Memalign(4 * kMiB, 10); }, 10, 4 * kMiB, false},
      {"valloc(10)", [] { return A::Valloc(10); }, 10, 4096, false},
      {"pvalloc(0)", [] { return A::Pvalloc(0); }, 4096, 4096, false},
  };
  for (const Case& c : cases) {
    void* p = nullptr;
    size_t usable = 0;
    size_t first_nonzero = 0;
    bool wrote = false;
    OnFreshThread([&] {
      p = c.call();
      if (p == nullptr) return;
      usable = A::Usable(p);
      first_nonzero = c.zero ? FirstNonZero(p, c.size) : c.size;
      memset(p, 0x4e, c.size);
      wrote = true;
    });
    ASSERT_NE(p, nullptr) << c.what << " on a fresh thread";
    EXPECT_TRUE(wrote);
    EXPECT_TRUE(IsAligned(p, c.align)) << c.what << " = " << p;
    EXPECT_GE(usable, c.size) << c.what;
    EXPECT_EQ(first_nonzero, c.size) << c.what << " not zeroed";
    // The block outlives its thread and can be used and freed here.
    EXPECT_EQ(A::Usable(p), usable) << c.what;
    memset(p, 0x11, c.size);
    A::Free(p);
  }
}

TYPED_TEST(FreshThread, FailuresAsTheFirstCall) {
  using A = TypeParam;
  void* m = reinterpret_cast<void*>(1);
  void* c = reinterpret_cast<void*>(1);
  void* al = reinterpret_cast<void*>(1);
  int m_err = 0, c_err = 0, al_err = 0, pm_rc = 0;
  size_t usable_null = 1;
  OnFreshThread([&] {
    A::Free(nullptr);
    usable_null = A::Usable(nullptr);
    errno = 0;
    m = A::Malloc(SIZE_MAX);
    m_err = errno;
    errno = 0;
    c = A::Calloc(SIZE_MAX / 2 + 1, 2);
    c_err = errno;
    errno = 0;
    al = A::AlignedAlloc(24, 10);
    al_err = errno;
    void* out = nullptr;
    pm_rc = A::PosixMemalign(&out, 4, 10);
  });
  EXPECT_EQ(usable_null, 0u);
  EXPECT_EQ(m, nullptr);
  EXPECT_EQ(m_err, ENOMEM);
  EXPECT_EQ(c, nullptr);
  EXPECT_EQ(c_err, ENOMEM);
  EXPECT_EQ(al, nullptr);
  EXPECT_EQ(al_err, EINVAL);
  EXPECT_EQ(pm_rc, EINVAL);
}

TYPED_TEST(FreshThread, FreeReallocAndUsableSizeOfAnotherThreadsBlocksAsTheFirstCall) {
  using A = TypeParam;
  const size_t sizes[] = {8, 100, 1000, 7000, 30000, 65536, 100000, 5 * kMiB};
  unsigned seed = 40;
  for (size_t size : sizes) {
    // free as the first call
    void* p = A::Malloc(size);
    ASSERT_NE(p, nullptr);
    FillPattern(p, size, seed);
    OnFreshThread([&] { A::Free(p); });

    // malloc_usable_size as the first call
    void* u = A::Malloc(size);
    ASSERT_NE(u, nullptr);
    size_t there = 0;
    OnFreshThread([&] { there = A::Usable(u); });
    EXPECT_EQ(there, A::Usable(u)) << size;
    A::Free(u);

    // realloc (grow and shrink) as the first call
    for (size_t to : {size * 3 + 1, size / 3 + 1}) {
      void* r = A::Malloc(size);
      ASSERT_NE(r, nullptr);
      FillPattern(r, size, seed);
      void* q = nullptr;
      size_t keep = std::min(size, to);
      size_t bad = 0;
      OnFreshThread([&] {
        q = A::Realloc(r, to);
        if (q != nullptr) {
          bad = FirstPatternMismatch(q, keep, seed);
          memset(q, 0x22, to);
        }
      });
      ASSERT_NE(q, nullptr) << size << " -> " << to;
      EXPECT_EQ(bad, keep) << "realloc on another thread lost contents, " << size << " -> " << to;
      EXPECT_GE(A::Usable(q), to);
      A::Free(q);
    }
    seed++;
  }
}

TYPED_TEST(FreshThread, RemoteFreedBlocksComeBackAndCallocZeroesThem) {
  // Blocks freed by another thread go back to their page; the owner reuses them, and
  // calloc must still zero what it hands out.
  using A = TypeParam;
  for (size_t size : {(size_t)7000, (size_t)200, (size_t)48000}) {
    constexpr int kBlocks = 64;
    // Every other block stays: no page empties (an emptied page would go back to its
    // segment, and a later page of the class may be laid out differently over it).
    std::vector<void*> dirty, keepers;
    for (int i = 0; i < kBlocks; i++) {
      void* k = A::Malloc(size);
      void* p = A::Malloc(size);
      ASSERT_NE(k, nullptr);
      ASSERT_NE(p, nullptr);
      memset(p, 0xd1, A::Usable(p));
      keepers.push_back(k);
      dirty.push_back(p);
    }
    OnFreshThread([&] {
      for (void* p : dirty) A::Free(p);
    });
    size_t reused = 0;
    std::vector<void*> again;
    for (int i = 0; i < 4000 && reused < (size_t)kBlocks; i++) {
      void* p = A::Calloc(1, size);
      ASSERT_NE(p, nullptr);
      ASSERT_EQ(FirstNonZero(p, size), size) << "calloc(1, " << size << ") #" << i << " not zero";
      if (std::find(dirty.begin(), dirty.end(), p) != dirty.end()) reused++;
      again.push_back(p);
    }
    EXPECT_EQ(reused, (size_t)kBlocks) << "blocks freed by another thread were not all reused (size " << size << ")";
    for (void* p : again) A::Free(p);
    for (void* k : keepers) A::Free(k);
  }
}

TYPED_TEST(FreshThread, BlocksOfAnExitedThreadStayValid) {
  // A thread allocates and exits without freeing; its blocks stay intact and are freed
  // (or reallocated) by the main thread afterwards; the memory is then reused.
  using A = TypeParam;
  const size_t sizes[] = {16, 64, 500, 1024, 3000, 9000, 40000, 65536, 200000};
  std::vector<std::pair<void*, size_t>> blocks;
  OnFreshThread([&] {
    blocks.reserve(sizeof(sizes) / sizeof(sizes[0]) * 50);
    for (int round = 0; round < 50; round++) {
      for (size_t size : sizes) {
        void* p = A::Malloc(size);
        if (p != nullptr) FillPattern(p, size, (unsigned)(round + size));
        blocks.emplace_back(p, size);
      }
    }
  });
  ASSERT_EQ(blocks.size(), sizeof(sizes) / sizeof(sizes[0]) * 50);
  for (size_t i = 0; i < blocks.size(); i++) {
    auto [p, size] = blocks[i];
    ASSERT_NE(p, nullptr);
    unsigned seed = (unsigned)(i / (sizeof(sizes) / sizeof(sizes[0])) + size);
    ASSERT_EQ(FirstPatternMismatch(p, size, seed), size) << "block " << i << " of an exited thread changed";
  }
  for (size_t i = 0; i < blocks.size(); i++) {
    auto [p, size] = blocks[i];
    if (i % 3 == 0) {
      unsigned seed = (unsigned)(i / (sizeof(sizes) / sizeof(sizes[0])) + size);
      void* q = A::Realloc(p, size * 2);
      ASSERT_NE(q, nullptr);
      ASSERT_EQ(FirstPatternMismatch(q, size, seed), size);
      A::Free(q);
    } else {
      A::Free(p);
    }
  }
  // Plenty of allocation afterwards (this may adopt the exited thread's segments).
  std::vector<void*> v;
  for (int i = 0; i < 20000; i++) {
    size_t size = sizes[i % (sizeof(sizes) / sizeof(sizes[0]))];
    void* p = A::Malloc(size);
    ASSERT_NE(p, nullptr);
    memset(p, 0x5f, size < 256 ? size : 256);
    v.push_back(p);
    if (v.size() > 2000) {
      A::Free(v.front());
      v.erase(v.begin());
    }
  }
  for (void* p : v) A::Free(p);
}

}  // namespace
