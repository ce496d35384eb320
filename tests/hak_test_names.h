/* SPDX-License-Identifier: MIT */
// hak_test_names.h - how a test's malloc, free, ... reach hakmem.
//
// RULE: include this header LAST in every test .cc - after every system, C++ standard
// and gtest header. A helper header that calls the names itself (tests/api/backends.h,
// tests/concurrency/conc_util.h) includes it after its own system headers, and is then
// itself included after all system headers by the .cc.
//
// Plain and UBSan builds (HAK_TEST_VIA_API not defined): this header does nothing. A
// test declared with hak_cc_test(link = "override") links hakmem's malloc override, so
// malloc, free, ... are hakmem's.
//
// ASan and TSan builds: those runtimes bring their own malloc, which cannot coexist
// with a replaced one, so hak_cc_test links the hak_* API library instead and defines
// HAK_TEST_VIA_API=1. This header then maps every CALL of the plain names to the hak_*
// call with function-like macros - the test code is unchanged and still exercises
// hakmem, now through its API, while the C library, the C++ runtime and gtest allocate
// from the sanitizer. Consequences:
//  - Only calls are mapped. A name without parentheses (a function pointer) still names
//    the C library's function: take hak_* under #ifdef HAK_TEST_VIA_API there.
//  - std::malloc(n) would become std::hak_malloc(n): call the unqualified names.
//  - A header included after this one would have its own declarations of these names
//    rewritten (hence the rule above).
//  - Memory the C library allocates (strdup, getline, std:: containers, ...) is not
//    hakmem's in this build; free it with the C library's free, spelled (free)(p).
//  - A test that needs the override itself (malloc is hakmem's, allocations inside
//    glibc or the C++ runtime go through hakmem) skips with HAK_TEST_NEEDS_OVERRIDE
//    (hak_test_env.h).
#ifndef HAK_TESTS_HAK_TEST_NAMES_H
#define HAK_TESTS_HAK_TEST_NAMES_H

#ifdef HAK_TEST_VIA_API

#include "hakmem.h"

#define malloc(size) hak_malloc(size)
#define free(p) hak_free(p)
#define calloc(count, size) hak_calloc(count, size)
#define realloc(p, size) hak_realloc(p, size)
#define reallocarray(p, count, size) hak_reallocarray(p, count, size)
#define posix_memalign(out, alignment, size) hak_posix_memalign(out, alignment, size)
#define aligned_alloc(alignment, size) hak_aligned_alloc(alignment, size)
#define memalign(alignment, size) hak_memalign(alignment, size)
#define valloc(size) hak_valloc(size)
#define pvalloc(size) hak_pvalloc(size)
#define malloc_usable_size(p) hak_usable_size(p)

#endif  // HAK_TEST_VIA_API

#endif  // HAK_TESTS_HAK_TEST_NAMES_H
