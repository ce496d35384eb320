"""hak_cc_test: a Google Test cc_test for every hakmem variant.

One call declares <name>_release, <name>_stats and <name>_hardened (or the subset in
`variants`), each linked against that variant and built with its defines, plus a
test_suite <name> running them all. Google Test comes from Debian's libgtest-dev.

link:
  "override"  the test binary's malloc is hakmem's (//hakmem:hakmem{suffix}); such
              tests are tagged noasan and notsan (those sanitizers replace malloc)
  "api"       only the hak_* API; malloc stays glibc's (//hakmem:hakmem{suffix}_api)
variants: names from HAK_VARIANTS (default: all of them) or HAK_INTERNAL_VARIANTS
  (only with link = "api": internal variants have no malloc-replacing library).
c_srcs: C files built against the variant's internal headers (hak_internal.h is C11
  and cannot be included from C++); tests call into them to reach internals.
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
        lib = {
            "override": "//hakmem:hakmem" + v.suffix,
            "api": "//hakmem:hakmem" + v.suffix + "_api",
        }[link]
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
        # ASan and TSan bring their own malloc and cannot run beside a replaced one;
        # their builds cover hakmem through the hak_* API (link = "api") instead.
        sanitizer_tags = ["noasan", "notsan"] if link == "override" else []
        native.cc_test(
            name = name + "_" + vname,
            srcs = srcs,
            deps = [lib] + extra + deps,
            local_defines = v.defines,
            linkopts = ["-lgtest", "-lgtest_main", "-pthread"],
            size = size,
            tags = tags + sanitizer_tags + ["variant_" + vname],
            **kwargs
        )
        tests.append(name + "_" + vname)
    native.test_suite(name = name, tests = tests, tags = tags)
