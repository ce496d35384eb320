# SPDX-License-Identifier: MIT
"""Offline stand-in for rules_java: only what @bazel_tools//tools/jdk loads."""

def java_import(**kwargs):
    native.java_import(**kwargs)

def java_runtime(**kwargs):
    native.java_runtime(**kwargs)

def java_toolchain(**kwargs):
    native.java_toolchain(**kwargs)
