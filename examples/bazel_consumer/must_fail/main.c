/* SPDX-License-Identifier: MIT */
/* must_fail/main.c - the source of the targets in must_fail/BUILD, which must not
 * build (ci/bazel_consumer.sh checks each fails for the stated reason). */
#include <stdio.h>

int main(void) {
  puts("this program should not have been built");
  return 1;
}
