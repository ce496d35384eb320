/* SPDX-License-Identifier: MIT */
// hak_test_env.h - what a test binary is built as, for the few tests whose checks or
// sizes depend on it: which sanitizer is on, whether the malloc names reach hakmem
// through the override or through hak_* (HAK_TEST_VIA_API, see hak_test_names.h), and
// kScale to shrink iteration counts under the slow sanitizers.
#ifndef HAK_TESTS_HAK_TEST_ENV_H
#define HAK_TESTS_HAK_TEST_ENV_H

#include <gtest/gtest.h>

#include <stddef.h>
#include <unistd.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAK_TEST_ASAN 1
#endif
#if __has_feature(thread_sanitizer)
#define HAK_TEST_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(HAK_TEST_ASAN)
#define HAK_TEST_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__) && !defined(HAK_TEST_TSAN)
#define HAK_TEST_TSAN 1
#endif
#ifndef HAK_TEST_ASAN
#define HAK_TEST_ASAN 0
#endif
#ifndef HAK_TEST_TSAN
#define HAK_TEST_TSAN 0
#endif

namespace hak_test_env {

// Factor for the iteration counts of long-running tests: 1 in the plain and UBSan
// builds (their counts are the tests' own), smaller under ASan and TSan (each 3-10x
// slower here, fork under ASan far more) and under an emulator (HAK_TEST_EMULATED:
// ci/aarch64.sh runs the tests under qemu-user, 5-10x slower, threads dearer still) so
// that every test stays well within the timeout of its size and within its own
// deadlines. A test scales only counts whose purpose (reaching slow paths, page reuse,
// a race window) still holds when smaller.
#ifndef HAK_TEST_EMULATED
#define HAK_TEST_EMULATED 0
#endif
#if HAK_TEST_ASAN || HAK_TEST_TSAN || HAK_TEST_EMULATED
constexpr double kScale = 0.25;
#else
constexpr double kScale = 1.0;
#endif

// n scaled by kScale, at least `min`.
constexpr size_t Scaled(size_t n, size_t min = 1) {
  return (size_t)(n * kScale) < min ? min : (size_t)(n * kScale);
}

}  // namespace hak_test_env

// In a test body: skip the test in the ASan/TSan builds, where the malloc names are
// mapped to hak_* (HAK_TEST_VIA_API) because the override cannot be linked. For checks
// that only the override can satisfy; `why` says which.
#ifdef HAK_TEST_VIA_API
#define HAK_TEST_NEEDS_OVERRIDE(why) \
  GTEST_SKIP() << "needs hakmem's malloc override, which ASan/TSan builds cannot link: " << why
#else
#define HAK_TEST_NEEDS_OVERRIDE(why) static_cast<void>(0)
#endif

// In a test body: skip the test under ThreadSanitizer; `why` names TSan's limitation.
#if HAK_TEST_TSAN
#define HAK_TEST_SKIP_UNDER_TSAN(why) GTEST_SKIP() << "not supported under ThreadSanitizer: " << why
#else
#define HAK_TEST_SKIP_UNDER_TSAN(why) static_cast<void>(0)
#endif

// The variant's hardened level (hak_config.h), 0 outside the hardened variants.
#if defined(HAK_HARDENED)
constexpr int kHakHardenedLevel = HAK_HARDENED;
#else
constexpr int kHakHardenedLevel = 0;
#endif

// Hardened level 2 keeps room for a canary after every block's requested bytes, and
// malloc_usable_size is then the request: a block of n bytes takes the slot (page
// class, slices or whale pages) of n + kHakCanaryRoom.
constexpr size_t kHakCanaryRoom = kHakHardenedLevel >= 2 ? 5 : 0;

// Hardened level 2, its large quarantine on (the default): a request whose slot would
// be above 128 KiB (a page of its own in the L2.5 pool) is a big block instead, so that
// freed it waits PROT_NONE in the BigCache; and the newest entry of the BigCache and of
// the whale ring is held from reuse (the next allocation of its size lands elsewhere):
// tests of cache reuse free one more block first.
// Hardened level 2 keeps each pool and big segment's last slice as a guard: the
// largest big block is one slice shorter there.
constexpr size_t kHakGuardSlices = kHakHardenedLevel >= 2 ? 1 : 0;
constexpr size_t kHakBigMax = (63 - kHakGuardSlices) * ((size_t)64 << 10);
constexpr size_t kHakPoolSlotMax = kHakHardenedLevel >= 2 ? (size_t)128 << 10 : (size_t)1 << 20;
constexpr size_t kHakCacheHold = kHakHardenedLevel >= 2 ? 1 : 0;

// A whale of `size` bytes: the bytes its block takes (the slot rounded to OS pages),
// and what malloc_usable_size says of it (that, or the request at level 2).
constexpr size_t HakWhaleSlot(size_t size, size_t page) {
  return (size + kHakCanaryRoom + page - 1) & ~(page - 1);
}
constexpr size_t HakWhaleUsable(size_t size, size_t page) {
  return kHakCanaryRoom != 0 ? size : HakWhaleSlot(size, page);
}

// The bytes of its pool slot that a block of `usable` bytes takes, which the in-use
// figures count. The hardened level 2 serves a request of n bytes (malloc_usable_size
// n) from the size class of n + 5 (the canary and the size record: HAK_CANARY_ROOM);
// elsewhere, and above the pools, the usable size is the slot (above kHakPoolSlotMax). Class sizes: 16 B apart
// up to 256, then 8 per doubling (docs/ARCHITECTURE.md).
inline size_t HakTestSlotBytes(size_t usable) {
#if defined(HAK_HARDENED) && HAK_HARDENED >= 2
  size_t need = usable + 5;
  if (need > kHakPoolSlotMax) {  // big blocks take whole 64 KiB slices, whales pages
    size_t unit = need <= kHakBigMax ? (size_t)64 << 10 : (size_t)sysconf(_SC_PAGESIZE);
    return (need + unit - 1) & ~(unit - 1);
  }
  if (need <= 256) return (need + 15) & ~(size_t)15;
  size_t step = (size_t)1 << (63 - __builtin_clzll(need - 1) - 3);
  return (need + step - 1) & ~(step - 1);
#else
  return usable;
#endif
}

#endif  // HAK_TESTS_HAK_TEST_ENV_H
