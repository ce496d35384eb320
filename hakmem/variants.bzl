# SPDX-License-Identifier: MIT
"""Build variants of hakmem as data, and the one macro that stamps out their targets.

Each variant is a set of compile-time switches over the same sources (hak_config.h
derives everything else). Consumers pick a variant by its label:

    //hakmem:hakmem{suffix}           static, alwayslink: linking it replaces malloc
    //hakmem:hakmem{suffix}_api       static: only the hak_* API, malloc stays libc's
    //hakmem:libhakmem{suffix}.so     shared, for LD_PRELOAD
"""

# The release (the repository's VERSION file and hakmem.h's HAKMEM_VERSION_* say the
# same; tests/symbols checks that they agree): the shared libraries' SONAME is
# libhakmem{suffix}.so.MAJOR.
HAK_VERSION = "0.1.0"
HAK_VERSION_MAJOR = HAK_VERSION.split(".")[0]

HAK_VARIANTS = {
    "release": struct(suffix = "", defines = []),
    "stats": struct(suffix = "_stats", defines = ["HAK_STATS=1"]),
    "hardened": struct(suffix = "_hardened", defines = ["HAK_HARDENED=2"]),
}

# Variants for hakmem's own fuzzers and tests only (HAK_SMALL_LIMITS shrinks caches and
# batches so short runs reach eviction and reuse): core and _api libraries, not public.
HAK_INTERNAL_VARIANTS = {
    "small": struct(suffix = "_small", defines = ["HAK_SMALL_LIMITS=1"]),
    "hardened_small": struct(suffix = "_hardened_small", defines = ["HAK_HARDENED=2", "HAK_SMALL_LIMITS=1"]),
    # Hardened level 1 (checked frees only), so the hardened tests also cover the
    # lower level (the public hardened variant is the highest); its shared library
    # lets the benchmarks and the misuse table measure the level on its own.
    "hardened1": struct(suffix = "_hardened1", defines = ["HAK_HARDENED=1"], shared = True),
    # The thread identity of targets without a thread-pointer register, forced here
    # (with counters, to see which path frees take).
    "tid_fallback": struct(suffix = "_tid_fallback", defines = ["HAK_TID_FALLBACK=1", "HAK_STATS=1"]),
    # Race paths forced: every third compare-and-swap of the remote-free hand-off fails
    # on purpose, so the cross-thread tests run its retry paths every time (a free that
    # lost its block when its CAS failed once passed every test before); test hooks
    # (HAK_TEST_HOOKS) let a test act inside a race window.
    "cas_fail": struct(suffix = "_cas_fail", defines = ["HAK_TEST_CAS_FAIL_EVERY=3", "HAK_TEST_HOOKS=1", "HAK_STATS=1"]),
}

# Flags every hakmem source is built with, whatever the consumer's compilation mode:
# an allocator is never wanted unoptimised, and the fast path is too short to pay for
# a frame pointer (Bazel's default toolchain adds -fno-omit-frame-pointer). -fno-builtin-* stops the compiler from
# turning our own calloc's malloc+memset back into a call to calloc.
HAK_COPTS = [
    "-std=gnu11",
    "-O2",
    "-Wall",
    "-Wextra",
    "-fvisibility=hidden",
    "-fomit-frame-pointer",
    "-ftls-model=initial-exec",
    "-fno-builtin-malloc",
    "-fno-builtin-free",
    "-fno-builtin-calloc",
    "-fno-builtin-realloc",
]

HAK_CORE_SRCS = [
    "hak_cache.c",
    "hak_hardening.c",
    "hak_heap.c",
    "hak_init.c",
    "hak_large.c",
    "hak_mid.c",
    "hak_options.c",
    "hak_os.c",
    "hak_page.c",
    "hak_policy.c",
    "hak_purge.c",
    "hak_region.c",
    "hak_segment.c",
    "hak_stats.c",
    "hak_tiny.c",
]

HAK_INTERNAL_HDRS = [
    "hak_alloc.h",
    "hak_config.h",
    "hak_internal.h",
    "hak_policy.h",
]

def _hak_core_and_api(v, visibility, internal_visibility, tags = []):
    core = "hak_core" + v.suffix
    native.cc_library(
        name = core,
        tags = tags,
        srcs = HAK_CORE_SRCS,
        hdrs = HAK_INTERNAL_HDRS,
        copts = HAK_COPTS,
        local_defines = v.defines,
        deps = [":hakmem_headers"],
        linkopts = ["-pthread"],
        linkstatic = 1,
        visibility = internal_visibility,
    )
    native.cc_library(
        name = "hakmem" + v.suffix + "_api",
        tags = tags,
        srcs = ["hak_api.c"],
        copts = HAK_COPTS,
        local_defines = v.defines,
        deps = [":" + core],
        linkstatic = 1,
        alwayslink = 1,
        visibility = visibility,
    )

def hak_library_variants(internal_visibility):
    """Declares the core and the public libraries of every variant.

    Args:
      internal_visibility: who may depend on the core and on the internal variants
        (tests, fuzzers, benchmarks).
    """
    # Internal variants are "manual": //hakmem:all (and @hakmem//hakmem:all in a
    # consumer) builds only the public ones; the tests, fuzzers and benchmarks that
    # depend on an internal one still build it.
    for v in HAK_INTERNAL_VARIANTS.values():
        _hak_core_and_api(v, internal_visibility, internal_visibility, tags = ["manual"])
        if getattr(v, "shared", False):
            _hak_override_and_shared(v, internal_visibility, tags = ["manual"])
    for v in HAK_VARIANTS.values():
        _hak_core_and_api(v, ["//visibility:public"], internal_visibility)
        _hak_override_and_shared(v, ["//visibility:public"])

def _hak_override_and_shared(v, visibility, tags = []):
    """The malloc-replacing static library of a variant and its shared library."""
    native.cc_library(
        name = "hakmem" + v.suffix,
        tags = tags,
        # hak_new.c: C++'s operator new and delete; a new_handler or bad_alloc may
        # throw through its frames.
        srcs = ["hak_api.c", "hak_new.c"],
        copts = HAK_COPTS + ["-fexceptions"],
        local_defines = v.defines + ["HAK_OVERRIDE=1"],
        deps = [":hak_core" + v.suffix],
        linkstatic = 1,
        alwayslink = 1,
        visibility = visibility,
    )
    native.cc_binary(
        name = "libhakmem" + v.suffix + ".so",
        tags = tags,
        deps = [":hakmem" + v.suffix],
        linkshared = 1,
        # A malloc for every program must not drag in the C++ runtime: drop the
        # libraries the toolchain links by default but nothing here uses. The SONAME
        # carries the major version; hakmem.map exports exactly the public symbols.
        linkopts = [
            "-Wl,-z,nodelete",
            "-Wl,--as-needed",
            "-Wl,-soname,libhakmem%s.so.%s" % (v.suffix, HAK_VERSION_MAJOR),
            "-Wl,--version-script=$(location :hakmem.map)",
        ],
        additional_linker_inputs = [":hakmem.map"],
        visibility = visibility,
    )

    # The file its SONAME names, beside it in bazel-bin: a program linked against
    # libhakmem.so records NEEDED libhakmem.so.MAJOR and finds it there (-rpath).
    native.genrule(
        name = "libhakmem" + v.suffix + "_so_major",
        tags = tags,
        srcs = [":libhakmem" + v.suffix + ".so"],
        outs = ["libhakmem%s.so.%s" % (v.suffix, HAK_VERSION_MAJOR)],
        cmd = "cp $< $@",
        visibility = visibility,
    )
