#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Checks (or, with --fix, adds) the licence line at the head of every source file.

Every file git tracks whose kind is listed below must carry
`SPDX-License-Identifier: MIT` in its first three lines, in the comment syntax of
its language; a shebang stays first. Data files (corpora, dictionaries, JSON,
Markdown, VERSION) carry none. Exit status 1 lists the files without one.
  ci/license_headers.py          check (CI's build stage runs this)
  ci/license_headers.py --fix    add the line where it is missing
"""
import os
import subprocess
import sys

TAG = "SPDX-License-Identifier: MIT"
C_STYLE = "/* " + TAG + " */\n"
HASH_STYLE = "# " + TAG + "\n"

SUFFIXES = {".c": C_STYLE, ".h": C_STYLE, ".cc": C_STYLE, ".map": C_STYLE,
            ".py": HASH_STYLE, ".sh": HASH_STYLE, ".bzl": HASH_STYLE,
            ".bazelrc": HASH_STYLE, ".yml": HASH_STYLE, ".yaml": HASH_STYLE,
            ".cmake": HASH_STYLE, ".in": HASH_STYLE}
NAMES = {"BUILD": HASH_STYLE, "BUILD.bazel": HASH_STYLE, "WORKSPACE": HASH_STYLE,
         "MODULE.bazel": HASH_STYLE, "Makefile": HASH_STYLE, "CMakeLists.txt": HASH_STYLE,
         "Dockerfile": HASH_STYLE, "run": HASH_STYLE, ".bazelignore": HASH_STYLE}
SKIP_DIRS = ("fuzz/corpus/", "fuzz/dict/")


def header_for(path):
    if path.startswith(SKIP_DIRS):
        return None
    name = os.path.basename(path)
    if name in NAMES:
        return NAMES[name]
    return SUFFIXES.get(os.path.splitext(name)[1] or name)


def has_tag(text):
    return any(TAG in line for line in text.splitlines()[:3])


def add_tag(text, line):
    if text.startswith("#!"):
        first, _, rest = text.partition("\n")
        return first + "\n" + line + rest
    return line + text


def main():
    fix = "--fix" in sys.argv[1:]
    root = subprocess.run(["git", "rev-parse", "--show-toplevel"], check=True,
                          capture_output=True, text=True).stdout.strip()
    os.chdir(root)
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           check=True, capture_output=True, text=True).stdout.split()
    missing = []
    for path in files:
        line = header_for(path)
        if line is None or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if has_tag(text):
            continue
        if fix:
            with open(path, "w", encoding="utf-8") as f:
                f.write(add_tag(text, line))
        else:
            missing.append(path)
    if missing:
        print("license_headers: no '%s' line in the first three lines of:" % TAG)
        for path in missing:
            print("  " + path)
        print("run ci/license_headers.py --fix to add it")
        return 1
    print("license_headers: every source file carries the licence line")
    return 0


if __name__ == "__main__":
    sys.exit(main())
