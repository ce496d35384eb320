#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds, runs and tests examples/bazel_consumer: a Bazel workspace of its own that uses
# hakmem through local_repository, as another project would (docs/BAZEL.md). Checks:
#   - one program per public variant links hakmem's malloc (//:hello_<variant>), also
#     through cc_binary's malloc attribute (//:hello_malloc_attr);
#   - a program that knows nothing of hakmem gets libc's malloc, and hakmem's with
#     --custom_malloc=@hakmem//hakmem:hakmem_stats (//:plain);
#   - a library on the hak_* API (hakmem_headers) links beside the malloc override and
#     beside the API-only library (//:strbuf_override, //:strbuf_api);
#   - the consumer's Google Tests pass (bazel test //...);
#   - hakmem's internal targets are not visible to the consumer, linking the API-only
#     and the override library together fails, and hakmem_headers alone does not link,
#     as docs/BAZEL.md says (//must_fail:*);
#   - @hakmem//hakmem:all leaves the internal variants out, and @hakmem//... loads;
#   - MODULE.bazel's version is the one in VERSION.
# Every program prints one "consumer: ..." line, compared here with the expected one.
# Fails on the first wrong result; shuts the consumer's Bazel server down at exit.
# Usage: ci/bazel_consumer.sh   (CI=true: quiet Bazel output, the consumer's --config=ci)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

bash ci/setup.sh

cd examples/bazel_consumer
flags=()
[ "${CI:-}" = "true" ] && flags+=(--config=ci)
# The consumer is another workspace, so its Bazel server and output base are its own.
trap 'bazel shutdown' EXIT

fail() {
  echo "ci/bazel_consumer.sh: FAILED: $*" >&2
  exit 1
}
step() { printf '\n---- ci/bazel_consumer.sh: %s\n' "$*"; }

# Runs a built program with its arguments and checks its one line of output.
expect_line() {
  local expected="$1" out
  shift
  out="$("$@")" || fail "$* exited with $? (output: $out)"
  echo "$out"
  [ "$out" = "$expected" ] || fail "$*: expected '$expected'"
}

step "build //... (the consumer's programs and tests)"
bazel build "${flags[@]}" //...
bin="$(bazel info "${flags[@]}" bazel-bin 2>/dev/null)"

step "run the programs"
for v in release stats hardened; do
  expect_line "consumer: hello_$v variant=$v malloc=hakmem" "$bin/hello_$v" "hello_$v"
done
expect_line "consumer: hello_malloc_attr variant=release malloc=hakmem" "$bin/hello_malloc_attr" hello_malloc_attr
expect_line "consumer: plain variant=none malloc=libc" "$bin/plain" plain libc
expect_line "consumer: strbuf_override variant=release malloc=hakmem strbuf=ok(2000 bytes)" \
  "$bin/strbuf_override" strbuf_override
expect_line "consumer: strbuf_api variant=release malloc=libc strbuf=ok(2000 bytes)" "$bin/strbuf_api" strbuf_api

step "--custom_malloc=@hakmem//hakmem:hakmem_stats: the same plain program gets hakmem's malloc"
bazel build "${flags[@]}" --custom_malloc=@hakmem//hakmem:hakmem_stats //:plain
expect_line "consumer: plain_custom_malloc variant=stats malloc=hakmem" "$bin/plain" plain_custom_malloc stats

step "test //..."
bazel test "${flags[@]}" //...

step "what must not build"
# Builds one target that must fail, and checks the error says why.
expect_failure() {
  local target="$1" pattern="$2" out
  if out="$(bazel build "${flags[@]}" "$target" 2>&1)"; then
    fail "$target built, but it must not"
  fi
  grep -E -m1 "$pattern" <<<"$out" || { echo "$out" >&2; fail "$target failed, but not with /$pattern/"; }
}
expect_failure //must_fail:internal_core "target '@hakmem//hakmem:hak_core' is not visible"
expect_failure //must_fail:internal_variant "target '@hakmem//hakmem:hakmem_small_api' is not visible"
expect_failure //must_fail:api_and_override "multiple definition of .hak_malloc"
expect_failure //must_fail:headers_only "undefined reference to .hak_"

step "@hakmem//hakmem:all builds the public libraries, not the internal variants"
built="$(bazel query '@hakmem//hakmem:all - attr(tags, "\bmanual\b", @hakmem//hakmem:all)' 2>/dev/null)" ||
  fail "bazel query @hakmem//hakmem:all failed"
echo "$built" | tr '\n' ' '
echo
# The internal variants' label suffixes, from hakmem's table (read as ci/aarch64.py does).
suffixes="$(python3 -c '
import sys, types
g = {"struct": lambda **kw: types.SimpleNamespace(**kw)}
exec(open(sys.argv[1]).read(), g)
print("|".join(v.suffix for v in g["HAK_INTERNAL_VARIANTS"].values()))
' "$root/hakmem/variants.bzl")" || fail "could not read HAK_INTERNAL_VARIANTS from hakmem/variants.bzl"
[ -n "$suffixes" ] || fail "hakmem/variants.bzl lists no internal variants"
internal="$(grep -E "($suffixes)([._]|\$)" <<<"$built" || true)"
[ -z "$internal" ] || fail "@hakmem//hakmem:all would build internal targets: $internal"
for label in hakmem hakmem_api libhakmem.so hakmem_stats hakmem_stats_api libhakmem_stats.so \
  hakmem_hardened hakmem_hardened_api libhakmem_hardened.so hakmem_headers; do
  grep -qx "@hakmem//hakmem:$label" <<<"$built" || fail "@hakmem//hakmem:all lacks the public @hakmem//hakmem:$label"
done
bazel build "${flags[@]}" @hakmem//hakmem:all

# hakmem's .bazelignore lists the convenience links of a checkout named "hakmem"
# (bazel-hakmem); a checkout in a folder of another name has a link of another name,
# which Bazel 4's .bazelignore (no patterns) cannot name in advance.
link="$root/bazel-$(basename "$root")"
if [ -e "$link" ] && ! grep -qx "$(basename "$link")" "$root/.bazelignore"; then
  step "@hakmem//... not checked: $(basename "$link") (this checkout's folder name) is not in .bazelignore"
else
  step "@hakmem//... loads (the .bazelignore keeps Bazel out of hakmem's output links and examples/)"
  all="$(bazel query @hakmem//... 2>&1)" || { echo "$all" >&2; fail "bazel query @hakmem//... failed"; }
  n="$(grep -c '^@hakmem//' <<<"$all" || true)"
  echo "$n targets"
  [ "$n" -gt 0 ] || fail "bazel query @hakmem//... found no targets"
fi

# For Bazel 6+ consumers (untested here: no such Bazel offline): the module's version
# must be the release's.
module_version="$(sed -n 's/^ *version = "\([^"]*\)".*/\1/p' "$root/MODULE.bazel")"
[ "$module_version" = "$(cat "$root/VERSION")" ] ||
  fail "MODULE.bazel says version '$module_version', VERSION says '$(cat "$root/VERSION")'"

printf '\nci/bazel_consumer.sh: all consumer checks passed\n'
