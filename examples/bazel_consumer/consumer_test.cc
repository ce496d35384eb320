/* SPDX-License-Identifier: MIT */
// consumer_test.cc - what a consumer relies on, as a Google Test: malloc (also when the
// C library calls it) is hakmem's, of the variant the test links (EXPECT_VARIANT),
// malloc_usable_size and hak_usable_size agree, and the strbuf library, built on the
// hak_* API through hakmem_headers, works in the same binary as the malloc override.
// Built twice (BUILD): with @hakmem//hakmem:hakmem as a dependency, and with
// cc_test's malloc attribute set to @hakmem//hakmem:hakmem_hardened.
#include <gtest/gtest.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include <string>

#include "hakmem.h"
#include "probe.h"
#include "strbuf.h"

namespace {

TEST(Consumer, MallocIsHakmemsOfTheLinkedVariant) {
  EXPECT_STREQ(hak_variant(), EXPECT_VARIANT);
  probe_result_t r;
  ASSERT_EQ(probe_malloc(&r), 0);
  EXPECT_STREQ(r.owner, "hakmem");
  EXPECT_STREQ(r.variant, EXPECT_VARIANT);
  EXPECT_EQ(r.libc_mallocs_counted, 1) << "blocks the C library allocated did not show up in hakmem's in_use_blocks";
}

TEST(Consumer, MallocUsableSizeIsHakmems) {
  for (size_t size : {1u, 100u, 1000u, 40000u, 3000000u}) {
    void* p = malloc(size);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(malloc_usable_size(p), hak_usable_size(p)) << size;
    EXPECT_GE(hak_usable_size(p), size);
    free(p);
  }
}

TEST(Consumer, BlocksCrossBetweenMallocAndTheApi) {
  // One allocator behind both names: a block from malloc may go to hak_free, and one
  // from hak_malloc to free (only when malloc is hakmem's, as here).
  void* a = malloc(64);
  void* b = hak_malloc(64);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  hak_free(a);
  free(b);
}

TEST(Consumer, StrbufOnTheApiBesideTheOverride) {
  strbuf_t sb = {};
  std::string expected;
  for (int i = 0; i < 500; i++) {
    std::string piece = std::to_string(i) + ";";
    ASSERT_EQ(strbuf_append(&sb, piece.c_str()), 0);
    expected += piece;
  }
  ASSERT_NE(sb.data, nullptr);
  EXPECT_EQ(std::string(sb.data), expected);
  EXPECT_EQ(sb.len, expected.size());
  EXPECT_EQ(sb.cap, hak_usable_size(sb.data));
  EXPECT_EQ(malloc_usable_size(sb.data), sb.cap);
  strbuf_release(&sb);
  EXPECT_EQ(sb.data, nullptr);
}

}  // namespace
