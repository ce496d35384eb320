/* SPDX-License-Identifier: MIT */
// realloc_chain_test.cc - one buffer reallocated again and again (growing one byte at a
// time, doubling, shrinking), its content pattern verified after every step.
#include <stdint.h>

#include <vector>

#include "backends.h"
#include "hak_test_names.h"  // last: see its rule

namespace {

constexpr size_t kMiB = (size_t)1 << 20;

// Reference pattern, long enough for the largest chain (64 MiB); built once.
const std::vector<uint8_t>& Reference() {
  static const std::vector<uint8_t>* ref = [] {
    auto* v = new std::vector<uint8_t>(64 * kMiB + 1);
    for (size_t i = 0; i < v->size(); i++) (*v)[i] = PatternByte(i, 77);
    return v;
  }();
  return *ref;
}

// Index of the first byte of p[0, n) that differs from the reference, or n.
size_t FirstMismatch(const void* p, size_t n) {
  const uint8_t* ref = Reference().data();
  if (memcmp(p, ref, n) == 0) return n;
  const uint8_t* b = static_cast<const uint8_t*>(p);
  size_t i = 0;
  while (b[i] == ref[i]) i++;
  return i;
}

// realloc p from `have` valid bytes to `size`, check the surviving prefix, then fill
// the rest of the new size from the reference. Returns the new pointer (nullptr after a
// failed assertion).
template <typename A>
void* Step(void* p, size_t have, size_t size) {
  void* q = A::Realloc(p, size);
  EXPECT_NE(q, nullptr) << "realloc " << have << " -> " << size;
  if (q == nullptr) return nullptr;
  EXPECT_TRUE(IsAligned(q, 16)) << q;
  EXPECT_GE(A::Usable(q), size) << "realloc " << have << " -> " << size;
  size_t keep = have < size ? have : size;
  size_t bad = FirstMismatch(q, keep);
  EXPECT_EQ(bad, keep) << "realloc " << have << " -> " << size << " lost contents at offset " << bad;
  if (bad != keep) {
    A::Free(q);
    return nullptr;
  }
  if (size > have) memcpy(static_cast<uint8_t*>(q) + have, Reference().data() + have, size - have);
  return q;
}

template <typename A>
class ReallocChain : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { Reference(); }
};
TYPED_TEST_SUITE(ReallocChain, Backends, BackendName);

TYPED_TEST(ReallocChain, GrowOneByteAtATimeTo100KB) {
  using A = TypeParam;
  void* p = A::Malloc(1);
  ASSERT_NE(p, nullptr);
  static_cast<uint8_t*>(p)[0] = Reference()[0];
  size_t moves = 0;
  for (size_t size = 2; size <= 100000; size++) {
    void* q = Step<A>(p, size - 1, size);
    ASSERT_NE(q, nullptr);
    if (q != p) moves++;
    p = q;
  }
  // Every class boundary up to 64 KiB, and the step into a huge block, must have moved
  // the buffer; growth inside a class must not have (80 classes, 79 boundaries + huge).
  EXPECT_GE(moves, 79u);
  EXPECT_LT(moves, 200u) << "realloc moved the buffer on growth inside its usable size";
  A::Free(p);
}

TYPED_TEST(ReallocChain, ShrinkOneByteAtATimeFrom100KB) {
  using A = TypeParam;
  size_t size = 100000;
  void* p = A::Malloc(size);
  ASSERT_NE(p, nullptr);
  memcpy(p, Reference().data(), size);
  for (size_t next = size - 1; next >= 1; next--) {
    void* q = Step<A>(p, next + 1, next);
    ASSERT_NE(q, nullptr);
    p = q;
  }
  EXPECT_GE(A::Usable(p), 1u);
  A::Free(p);
}

TYPED_TEST(ReallocChain, DoubleTo64MiBThenHalveBackTo1) {
  using A = TypeParam;
  void* p = A::Malloc(1);
  ASSERT_NE(p, nullptr);
  static_cast<uint8_t*>(p)[0] = Reference()[0];
  size_t size = 1;
  while (size < 64 * kMiB) {
    void* q = Step<A>(p, size, size * 2);
    ASSERT_NE(q, nullptr);
    p = q;
    size *= 2;
  }
  while (size > 1) {
    void* q = Step<A>(p, size, size / 2);
    ASSERT_NE(q, nullptr);
    p = q;
    size /= 2;
  }
  A::Free(p);
}

TYPED_TEST(ReallocChain, OddDoublingAndVectorGrowth) {
  using A = TypeParam;
  // 2n + 1: never a power of two, so never exactly a class size.
  void* p = A::Malloc(1);
  ASSERT_NE(p, nullptr);
  static_cast<uint8_t*>(p)[0] = Reference()[0];
  size_t size = 1;
  while (size * 2 + 1 <= 40 * kMiB) {
    void* q = Step<A>(p, size, size * 2 + 1);
    ASSERT_NE(q, nullptr);
    p = q;
    size = size * 2 + 1;
  }
  // Shrink by about 10% a step, all the way down.
  while (size > 1) {
    size_t next = size - size / 10 - 1;
    void* q = Step<A>(p, size, next);
    ASSERT_NE(q, nullptr);
    p = q;
    size = next;
  }
  // Growth by 1.5x (a typical vector), from 10 bytes to past 30 MiB.
  for (size_t next = 10; next < 30 * kMiB; next += next / 2) {
    void* q = Step<A>(p, size, next);
    ASSERT_NE(q, nullptr);
    p = q;
    size = next;
  }
  A::Free(p);
}

TYPED_TEST(ReallocChain, SawtoothAcrossTheHugeBoundary) {
  using A = TypeParam;
  const size_t sizes[] = {65000, 70000, 65536, 65537, 1000, 300000, 64000, 4 * kMiB + 1, 65536, 16, 2 * kMiB, 3};
  void* p = A::Malloc(sizes[0]);
  ASSERT_NE(p, nullptr);
  memcpy(p, Reference().data(), sizes[0]);
  size_t have = sizes[0];
  for (int round = 0; round < 5; round++) {
    for (size_t i = 1; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
      void* q = Step<A>(p, have, sizes[i]);
      ASSERT_NE(q, nullptr) << "round " << round;
      p = q;
      have = sizes[i];
    }
    void* q = Step<A>(p, have, sizes[0]);
    ASSERT_NE(q, nullptr);
    p = q;
    have = sizes[0];
  }
  A::Free(p);
}

TYPED_TEST(ReallocChain, ManyBuffersGrowingTogether) {
  // Interleaved chains: a move of one buffer must never land on another.
  using A = TypeParam;
  constexpr int kBuffers = 16;
  void* bufs[kBuffers];
  for (int i = 0; i < kBuffers; i++) {
    bufs[i] = A::Malloc(1);
    ASSERT_NE(bufs[i], nullptr);
    FillPattern(bufs[i], 1, i);
  }
  size_t size = 1;
  for (size_t next = 2; next <= 300000; next += next / 8 + 1) {
    for (int i = 0; i < kBuffers; i++) {
      void* q = A::Realloc(bufs[i], next);
      ASSERT_NE(q, nullptr);
      // Each buffer holds the pattern of its own seed over its whole size.
      ASSERT_EQ(FirstPatternMismatch(q, size, i), size) << "buffer " << i << " at size " << size;
      FillPattern(q, next, i);
      bufs[i] = q;
    }
    size = next;
  }
  for (int i = 0; i < kBuffers; i++) {
    EXPECT_EQ(FirstPatternMismatch(bufs[i], size, i), size);
    A::Free(bufs[i]);
  }
}

}  // namespace
