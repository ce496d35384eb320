/* SPDX-License-Identifier: MIT */
// backends.h - the two ways of reaching hakmem, as types for Google Test typed tests.
//
//   LibcNames  malloc, free, ... : hakmem's only when the test links //hakmem:hakmem*
//              (hak_cc_test link = "override"). In the ASan/TSan builds of such a test
//              (HAK_TEST_VIA_API) the names are mapped to hak_* by hak_test_names.h,
//              which this header includes: LibcNames then reaches hakmem through hak_*.
//   HakNames   hak_malloc, hak_free, ... : hakmem's in every link mode.
//
// A test binary built with link = "override" runs its typed tests over both (over
// HakNames only in its ASan/TSan builds, where LibcNames makes the same calls); one
// built with link = "api" defines HAK_TEST_API_ONLY (through copts) and runs them over
// HakNames only, since its malloc is glibc's (HAK_TEST_VIA_API is never defined there).
//
// Include this header after every system header (see hak_test_names.h).
//
// The test targets are compiled with -fno-builtin so that the compiler cannot fold or
// elide allocation calls (e.g. drop a malloc/free pair or assume a result non-null).
#ifndef HAKMEM_TESTS_API_BACKENDS_H
#define HAKMEM_TESTS_API_BACKENDS_H

#include <gtest/gtest.h>
#include <malloc.h>
#include <stdlib.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "hak_test_env.h"
#include "hakmem.h"
// Last: maps the malloc names used below (and in the test .cc) to hak_* under ASan/TSan.
#include "hak_test_names.h"

// glibc declares aligned_alloc and memalign with alloc_align(1): a direct call with an
// invalid alignment, which the tests make on purpose, is then undefined for the caller
// (UBSan flags it). A volatile function pointer carries no such promise, so the tests
// see how the allocator itself handles the bad value. (Names without a call are not
// mapped by hak_test_names.h: the ASan/TSan builds point these at hak_* explicitly.)
#ifdef HAK_TEST_VIA_API
static void* (*volatile const libc_aligned_alloc)(size_t, size_t) = hak_aligned_alloc;
static void* (*volatile const libc_memalign)(size_t, size_t) = hak_memalign;
#else
static void* (*volatile const libc_aligned_alloc)(size_t, size_t) = aligned_alloc;
static void* (*volatile const libc_memalign)(size_t, size_t) = memalign;
#endif

struct LibcNames {
  static void* Malloc(size_t n) { return malloc(n); }
  static void Free(void* p) { free(p); }
  static void* Calloc(size_t c, size_t n) { return calloc(c, n); }
  static void* Realloc(void* p, size_t n) { return realloc(p, n); }
  static void* Reallocarray(void* p, size_t c, size_t n) { return reallocarray(p, c, n); }
  static int PosixMemalign(void** out, size_t a, size_t n) { return posix_memalign(out, a, n); }
  static void* AlignedAlloc(size_t a, size_t n) { return libc_aligned_alloc(a, n); }
  static void* Memalign(size_t a, size_t n) { return libc_memalign(a, n); }
  static void* Valloc(size_t n) { return valloc(n); }
  static void* Pvalloc(size_t n) { return pvalloc(n); }
  static size_t Usable(void* p) { return malloc_usable_size(p); }
};

struct HakNames {
  static void* Malloc(size_t n) { return hak_malloc(n); }
  static void Free(void* p) { hak_free(p); }
  static void* Calloc(size_t c, size_t n) { return hak_calloc(c, n); }
  static void* Realloc(void* p, size_t n) { return hak_realloc(p, n); }
  static void* Reallocarray(void* p, size_t c, size_t n) { return hak_reallocarray(p, c, n); }
  static int PosixMemalign(void** out, size_t a, size_t n) { return hak_posix_memalign(out, a, n); }
  static void* AlignedAlloc(size_t a, size_t n) { return hak_aligned_alloc(a, n); }
  static void* Memalign(size_t a, size_t n) { return hak_memalign(a, n); }
  static void* Valloc(size_t n) { return hak_valloc(n); }
  static void* Pvalloc(size_t n) { return hak_pvalloc(n); }
  static size_t Usable(void* p) { return hak_usable_size(p); }
};

class BackendName {
 public:
  template <typename T>
  static std::string GetName(int) {
    return std::is_same<T, LibcNames>::value ? "libc_names" : "hak_names";
  }
};

#if defined(HAK_TEST_API_ONLY) || defined(HAK_TEST_VIA_API)
// (Under HAK_TEST_VIA_API, LibcNames makes exactly HakNames' calls: running it too
// would only double the run time of the slow sanitizer builds.)
using Backends = ::testing::Types<HakNames>;
#else
using Backends = ::testing::Types<LibcNames, HakNames>;
#endif

// ---- Helpers shared by the API tests ------------------------------------------------

inline uintptr_t Addr(const void* p) { return reinterpret_cast<uintptr_t>(p); }

inline bool IsAligned(const void* p, size_t align) { return (Addr(p) & (align - 1)) == 0; }

// A byte pattern that differs between neighbouring offsets and between seeds, so that
// a copy to the wrong offset or from the wrong block is caught.
inline uint8_t PatternByte(size_t i, unsigned seed) {
  return static_cast<uint8_t>((i * 131u + (i >> 8) * 7u + seed * 29u + 1u) & 0xff);
}

inline void FillPattern(void* p, size_t n, unsigned seed) {
  uint8_t* b = static_cast<uint8_t*>(p);
  for (size_t i = 0; i < n; i++) b[i] = PatternByte(i, seed);
}

// Index of the first byte that differs from the pattern, or n when all match.
inline size_t FirstPatternMismatch(const void* p, size_t n, unsigned seed) {
  const uint8_t* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i < n; i++) {
    if (b[i] != PatternByte(i, seed)) return i;
  }
  return n;
}

// Index of the first non-zero byte, or n when all are zero.
inline size_t FirstNonZero(const void* p, size_t n) {
  const uint8_t* b = static_cast<const uint8_t*>(p);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, b + i, 8);
    if (w != 0) break;
  }
  for (; i < n; i++) {
    if (b[i] != 0) return i;
  }
  return n;
}

// Every size at or around a size-class boundary up to and past the mid pools, plus
// a few huge ones: the block sizes, one less, one more.
inline std::vector<size_t> ClassBoundarySizes() {
  std::vector<size_t> out;
  auto add3 = [&out](size_t b) {
    out.push_back(b - 1);
    out.push_back(b);
    out.push_back(b + 1);
  };
  for (size_t b = 16; b <= 256; b += 16) add3(b);
  for (size_t base = 256; base < 65536; base *= 2) {
    for (size_t step = 1; step <= 8; step++) add3(base + step * (base / 8));
  }
  return out;
}

#endif  // HAKMEM_TESTS_API_BACKENDS_H
