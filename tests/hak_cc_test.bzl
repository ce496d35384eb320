# SPDX-License-Identifier: MIT
"""hak_cc_test: a Google Test cc_test for every hakmem variant.

One call declares <name>_release, <name>_stats and <name>_hardened (or the subset in
`variants`), each linked against that variant and built with its defines, plus a
test_suite <name> running them all. Google Test comes from Debian's libgtest-dev.
Every test also gets //tests:test_support (hak_test_names.h, hak_test_env.h).

link:
  "override"  the test binary's malloc is hakmem's (//hakmem:hakmem{suffix}). Under
              ASan and TSan (--config=asan/tsan: //tests:asan_build, :tsan_build),
              whose runtimes bring their own malloc, the binary links the hak_* API
              library (//hakmem:hakmem{suffix}_api) instead and is compiled with
              HAK_TEST_VIA_API=1: hak_test_names.h, included last by each test .cc,
              then maps malloc, free, ... onto hak_*, so the same tests exercise hakmem
              through its API there. Tests that need the override itself skip in that
              build (GTEST_SKIP). UBSan and the plain build keep the override.
              Internal variants (which have no replacing library) always link
              the API library this way.
  "api"       only the hak_* API; malloc stays the C library's (or the sanitizer's)
              in every build (//hakmem:hakmem{suffix}_api)
variants: names from HAK_VARIANTS (default: all of them) or HAK_INTERNAL_VARIANTS
  (these reach hakmem through the API in every build, as above).
c_srcs: C files built against the variant's internal headers (hak_internal.h is C11
  and cannot be included from C++); tests call into them to reach internals.
tags: passed on; a test that cannot run under a sanitizer carries noasan, notsan or
  noubsan in its BUILD file, with the reason next to it.
"""

load("//hakmem:variants.bzl", "HAK_COPTS", "HAK_INTERNAL_VARIANTS", "HAK_VARIANTS")

def hak_cc_test(
        name,
        srcs,
        link = "override",
        c_srcs = [],
        variants = None,
        deps = [],
        size = "small",
        tags = [],
        **kwargs):
    tests = []
    all_variants = dict(HAK_VARIANTS)
    all_variants.update(HAK_INTERNAL_VARIANTS)
    for vname in (variants or HAK_VARIANTS.keys()):
        v = all_variants[vname]
        api_lib = "//hakmem:hakmem" + v.suffix + "_api"
        if link == "override" and vname in HAK_INTERNAL_VARIANTS:
            # Internal variants have no replacing library: always through the API.
            lib = [api_lib]
            defines = v.defines + ["HAK_TEST_VIA_API=1"]
        elif link == "override":
            via_api = ["//tests:asan_build", "//tests:tsan_build"]
            lib = select(dict(
                [(c, [api_lib]) for c in via_api] +
                [("//conditions:default", ["//hakmem:hakmem" + v.suffix])],
            ))
            defines = v.defines + select(dict(
                [(c, ["HAK_TEST_VIA_API=1"]) for c in via_api] +
                [("//conditions:default", [])],
            ))
        elif link == "api":
            lib = [api_lib]
            defines = v.defines
        else:
            fail("hak_cc_test: link must be \"override\" or \"api\", not %r" % link)
        extra = []
        if c_srcs:
            native.cc_library(
                name = name + "_" + vname + "_probe",
                srcs = c_srcs,
                copts = HAK_COPTS,
                local_defines = v.defines,
                deps = ["//hakmem:hak_core" + v.suffix],
                # Static: the probe is built with -fvisibility=hidden, so as a shared
                # library of its own its functions would be invisible to the test.
                linkstatic = 1,
                testonly = 1,
            )
            extra = [":" + name + "_" + vname + "_probe"]
        native.cc_test(
            name = name + "_" + vname,
            srcs = srcs,
            deps = lib + extra + deps + ["//tests:test_support"],
            local_defines = defines,
            linkopts = ["-lgtest", "-lgtest_main", "-pthread"],
            size = size,
            tags = tags + ["variant_" + vname],
            **kwargs
        )
        tests.append(name + "_" + vname)
    native.test_suite(name = name, tests = tests, tags = tags)
