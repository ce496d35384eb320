# SPDX-License-Identifier: MIT
"""hak_fuzz_target: one fuzz harness source, three ways to run it.

hak_fuzz_target(name, variant, threads) declares, for hakmem's internal variant
`variant` ("small" or "hardened_small": HAK_SMALL_LIMITS=1) linked through its hak_*
API library:

  <name>_fuzzer       the fuzz binary. Its engine is the build's: with
                      --config=libfuzzer it links libFuzzer (clang, ASan); with
                      --config=afl the AFL++ persistent-mode driver (afl-clang-fast,
                      ASan); with neither, the replay driver (files or directories as
                      arguments), so `bazel build //...` builds it with gcc as well.
                      Tagged "fuzzer".
  <name>_replay_test  a cc_test running every file of fuzz/corpus/<name>/ (seeds and
                      crash regressions) through the harness replay_rounds times (each
                      in a process of its own), with the normal toolchain and under
                      each sanitizer config. Tagged "fuzz_replay".

threads = 1 builds the harness with HAK_FUZZ_THREADS=1: operations can run on a second
thread (remote frees, thread exit and adoption), one thread at a time (reproducible).
concurrent = 1 builds it with HAK_FUZZ_CONCURRENT=1: the input is split into two
streams of operations that run at the same time on two threads and hand blocks to each
other (remote frees and reallocs racing the owner; not reproducible run to run).
extra_srcs: more sources of the harness (its own helpers, with their headers).
madvise = "free" runs the target with HAKMEM_MADVISE=free (MADV_FREE purges, so calloc
must clear purged memory) unless the environment sets it; each variant has targets of
both purge modes.
"""

load("//hakmem:variants.bzl", "HAK_INTERNAL_VARIANTS")

FUZZ_COPTS = [
    "-std=gnu11",
    "-Wall",
    "-Wextra",
    # The harness's own memcmp/memcpy must stay calls (ASan checks them).
    "-fno-builtin",
]

def hak_fuzz_target(name, variant, threads = 0, concurrent = 0, replay_size = "small", replay_rounds = 1, src = "hak_fuzz.c", extra_srcs = [], madvise = ""):
    v = HAK_INTERNAL_VARIANTS[variant]
    harness = name + "_harness"
    native.cc_library(
        name = harness,
        srcs = [src] + extra_srcs,
        copts = FUZZ_COPTS,
        local_defines = [
            "HAK_FUZZ_THREADS=%d" % threads,
            "HAK_FUZZ_CONCURRENT=%d" % concurrent,
            "HAK_FUZZ_TARGET=\\\"%s\\\"" % name,
        ] + (["HAK_FUZZ_MADVISE=\\\"%s\\\"" % madvise] if madvise else []),
        linkopts = ["-pthread"],
        deps = ["//hakmem:hakmem" + v.suffix + "_api"],
        linkstatic = 1,
        alwayslink = 1,
    )
    native.cc_binary(
        name = name + "_fuzzer",
        deps = [":" + harness] + select({
            ":engine_libfuzzer": [],
            ":engine_afl": [":afl_driver"],
            "//conditions:default": [":replay_driver"],
        }),
        linkopts = select({
            ":engine_libfuzzer": ["-fsanitize=fuzzer"],
            "//conditions:default": [],
        }),
        tags = ["fuzzer"],
    )
    native.cc_test(
        name = name + "_replay_test",
        deps = [":" + harness, ":replay_driver"],
        data = native.glob(["corpus/" + name + "/**"]),
        args = ["--fork", "--min-inputs=10", "--repeat=%d" % replay_rounds, "fuzz/corpus/" + name],
        size = replay_size,
        tags = ["fuzz_replay"],
    )
