# SPDX-License-Identifier: MIT
"""hak_integration_tests: one sh_test per shared hakmem variant.

Declares <name>_release, <name>_stats and <name>_hardened, each running
integration_test.sh with LD_PRELOAD of //hakmem:libhakmem{suffix}.so, plus a
test_suite <name> running them all. All are tagged "integration".
"""

# Library suffix -> variant name (as hak_variant() reports it).
_VARIANT_NAMES = {
    "": "release",
    "_stats": "stats",
    "_hardened": "hardened",
}

_DATA = [
    "workload.py",
    "prog.c",
    "probe.c",
    "double_free.c",
]

def hak_integration_tests(name, size = "medium", tags = []):
    tests = []
    for suffix in ["", "_stats", "_hardened"]:
        variant = _VARIANT_NAMES[suffix]
        lib = "//hakmem:libhakmem" + suffix + ".so"
        test_name = name + "_" + variant
        native.sh_test(
            name = test_name,
            srcs = ["integration_test.sh"],
            # The script gets the variant name and the library's runfiles path.
            args = [variant, "$(rootpath %s)" % lib],
            data = [lib] + _DATA,
            size = size,
            tags = tags + ["integration", "variant_" + variant],
        )
        tests.append(":" + test_name)
    native.test_suite(name = name, tests = tests)
