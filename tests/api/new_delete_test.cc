/* SPDX-License-Identifier: MIT */
// C++'s replaceable operator new and delete are hakmem's in the replacing libraries:
// every form (plain, array, nothrow, aligned, sized, aligned and sized) lands in
// hakmem directly (its in-use walk counts the block), a failed throwing new calls the
// new_handler and then throws std::bad_alloc, nothrow new returns null, and the
// hardened variant stops on a sized or aligned delete that does not match the block.
// Before, these names were libstdc++'s, which forwards to malloc and drops the size and
// alignment delete is given.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <new>

#include "hakmem.h"
#include "hak_test_names.h"  // last: see its rule

namespace {

uint64_t BlocksInUse() {
  hak_stats_t s;
  EXPECT_EQ(hak_stats_read(&s), 0);
  return s.in_use_blocks;
}

// Far beyond RAM + swap: hakmem refuses it (ENOMEM) without touching memory.
constexpr size_t kImpossible = (size_t)1 << 46;

class NewDelete : public ::testing::Test {
 protected:
  void SetUp() override {
#if HAK_TEST_VIA_API
    GTEST_SKIP() << "the sanitizer's runtime owns operator new in this build";
#endif
  }
};

TEST_F(NewDelete, EveryFormLandsInHakmem) {
  const std::align_val_t a256{256};
  uint64_t before = BlocksInUse();
  void* blocks[8] = {
      ::operator new(100),
      ::operator new[](200),
      ::operator new(300, std::nothrow),
      ::operator new[](400, std::nothrow),
      ::operator new(500, a256),
      ::operator new[](600, a256),
      ::operator new(700, a256, std::nothrow),
      ::operator new[](800, a256, std::nothrow),
  };
  for (void* p : blocks) ASSERT_NE(p, nullptr);
  for (int i = 4; i < 8; i++) EXPECT_EQ((uintptr_t)blocks[i] % 256, 0u) << "form " << i;
  EXPECT_EQ(BlocksInUse(), before + 8) << "every form must allocate from hakmem";
  ::operator delete(blocks[0], (size_t)100);
  ::operator delete[](blocks[1], (size_t)200);
  ::operator delete(blocks[2], std::nothrow);
  ::operator delete[](blocks[3], std::nothrow);
  ::operator delete(blocks[4], (size_t)500, a256);
  ::operator delete[](blocks[5], a256);
  ::operator delete(blocks[6], a256, std::nothrow);
  ::operator delete[](blocks[7], (size_t)800, a256);
  EXPECT_EQ(BlocksInUse(), before) << "every form of delete must give the block back";
}

TEST_F(NewDelete, NewExpressionsAndSizedDeleteOfEveryTier) {
  struct alignas(64) Line {
    unsigned char bytes[64];
  };
  uint64_t before = BlocksInUse();
  for (size_t n : {(size_t)1, (size_t)100, (size_t)3000, (size_t)40000, (size_t)300000, (size_t)3000000,
                   (size_t)9000000}) {
    unsigned char* bytes = new unsigned char[n];
    Line* lines = new Line[n / 64 + 1];
    EXPECT_EQ((uintptr_t)lines % 64, 0u);
    bytes[0] = bytes[n - 1] = 7;
    lines[n / 64].bytes[63] = 9;
    EXPECT_EQ(BlocksInUse(), before + 2) << n;
    delete[] bytes;
    delete[] lines;
    EXPECT_EQ(BlocksInUse(), before) << n;
  }
  int* one = new int(42);
  EXPECT_EQ(*one, 42);
  delete one;  // sized delete under -fsized-deallocation (the default since C++14)
  EXPECT_EQ(BlocksInUse(), before);
}

int handler_calls = 0;
void CountingHandler() {
  handler_calls++;
  std::set_new_handler(nullptr);  // the next failure throws
}

TEST_F(NewDelete, FailedNewCallsTheHandlerThenThrowsBadAlloc) {
  handler_calls = 0;
  std::set_new_handler(CountingHandler);
  bool threw = false;
  try {
    void* p = ::operator new(kImpossible);
    ::operator delete(p);
  } catch (const std::bad_alloc&) {
    threw = true;
  }
  EXPECT_TRUE(threw);
  EXPECT_EQ(handler_calls, 1);
  std::set_new_handler(nullptr);
  threw = false;
  try {
    void* p = ::operator new[](kImpossible, std::align_val_t{4096});
    ::operator delete[](p);
  } catch (const std::bad_alloc&) {
    threw = true;
  }
  EXPECT_TRUE(threw) << "aligned new throws too";
}

TEST_F(NewDelete, NothrowNewReturnsNullAndNeverThrows) {
  EXPECT_EQ(::operator new(kImpossible, std::nothrow), nullptr);
  EXPECT_EQ(::operator new[](kImpossible, std::nothrow), nullptr);
  EXPECT_EQ(::operator new(kImpossible, std::align_val_t{64}, std::nothrow), nullptr);
  EXPECT_EQ(::operator new[](kImpossible, std::align_val_t{64}, std::nothrow), nullptr);
}

#if HAK_HARDENED && !HAK_TEST_VIA_API
TEST(NewDeleteHardened, SizedDeleteWithAWrongSizeStops) {
  EXPECT_DEATH(
      {
        void* p = ::operator new(100);
        ::operator delete(p, (size_t)5000);  // another size class
      },
      "hakmem: fatal: sized or aligned delete with a size or alignment the block does not have at address "
      "0x[0-9a-f]{16}");
  EXPECT_DEATH(
      {
        void* p = ::operator new(3000000);
        ::operator delete(p, (size_t)5000000);  // more than the block holds
      },
      "sized or aligned delete");
}

TEST(NewDeleteHardened, AlignedDeleteOfAnUnalignedBlockStops) {
  EXPECT_DEATH(
      {
        void* a = ::operator new(48);  // 48 bytes apart: one of them is not 4096-aligned
        void* b = ::operator new(48);
        void* p = (uintptr_t)a % 4096 != 0 ? a : b;
        ::operator delete(p, std::align_val_t{4096});
      },
      "hakmem: fatal: sized or aligned delete with a size or alignment the block does not have at address "
      "0x[0-9a-f]{16}");
  EXPECT_DEATH(
      {
        void* p = ::operator new(8192, std::align_val_t{64});
        ::operator delete(static_cast<char*>(p) + 64, (size_t)8192, std::align_val_t{64});
      },
      "hakmem: fatal: free of a pointer hakmem does not own");
}

// Level 2 records the size new was asked for: a sized delete must pass exactly it,
// also within the block's size class.
TEST(NewDeleteHardened, SizedDeleteWithAnotherSizeOfTheSameClassStopsAtLevelTwo) {
  if (HAK_HARDENED < 2) GTEST_SKIP() << "level 2";
  EXPECT_DEATH(
      {
        void* p = ::operator new(24);
        ::operator delete(p, (size_t)20);  // the same 32-byte class
      },
      "hakmem: fatal: sized or aligned delete with a size or alignment the block does not have at address "
      "0x[0-9a-f]{16} \\(size class 1, hardened\\)");
  EXPECT_DEATH(
      {
        void* p = ::operator new[](1000, std::align_val_t{64});
        ::operator delete[](p, (size_t)1008, std::align_val_t{64});
      },
      "sized or aligned delete");
}

TEST(NewDeleteHardened, MatchingSizedAndAlignedDeletesPass) {
  for (size_t n : {(size_t)0, (size_t)1, (size_t)17, (size_t)1000, (size_t)70000, (size_t)2000000}) {
    void* p = ::operator new(n);
    ::operator delete(p, n);
    for (size_t align : {(size_t)32, (size_t)4096, (size_t)65536}) {
      void* q = ::operator new(n, std::align_val_t{align});
      ::operator delete(q, n, std::align_val_t{align});
    }
  }
}
#endif

}  // namespace
