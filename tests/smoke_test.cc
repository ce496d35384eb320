/* SPDX-License-Identifier: MIT */
#include <gtest/gtest.h>
#include <stdlib.h>
#include <string.h>
#include <thread>
#include <vector>
#include "hak_test_env.h"
#include "hakmem.h"
#include "hak_test_names.h"  // last: see its rule

TEST(Smoke, MallocIsHakmem) {
  // A link check: with malloc mapped to hak_malloc it would pass without testing it.
  HAK_TEST_NEEDS_OVERRIDE("checks that the plain name malloc reaches hakmem");
  void* p = malloc(100);
  ASSERT_NE(p, nullptr);
  memset(p, 1, 100);
  EXPECT_GE(hak_usable_size(p), 100u);
  free(p);
}

TEST(Smoke, ManySizesManyThreads) {
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; t++) ts.emplace_back([t] {
    std::vector<void*> v;
    // Fewer iterations under ASan/TSan (kScale), to stay well within the small timeout.
    const int n = (int)hak_test_env::Scaled(200000);
    for (int i = 0; i < n; i++) {
      size_t sz = (i * 7919 + t) % 70000;
      void* p = malloc(sz);
      ASSERT_NE(p, nullptr);
      memset(p, i & 0xff, sz < 64 ? sz : 64);
      v.push_back(p);
      if (v.size() > 1000) { free(v[(i * 31) % v.size()]); v[(i * 31) % v.size()] = v.back(); v.pop_back(); }
    }
    for (void* p : v) free(p);
  });
  for (auto& t : ts) t.join();
}
