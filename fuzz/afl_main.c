/* SPDX-License-Identifier: MIT */
/* afl_main.c - AFL++ persistent-mode driver for LLVMFuzzerTestOneInput (built with
 * afl-clang-fast, which defines the __AFL_* macros). Under afl-fuzz the test case
 * arrives through shared memory and one process runs up to 10000 inputs.
 *
 * Run by hand with files or directories as arguments, it replays them like
 * replay_main.c (to reproduce a crash AFL found: `<binary> fuzz-out/crashes/<file>`);
 * with no argument it reads one input from stdin. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
int LLVMFuzzerInitialize(int* argc, char*** argv) __attribute__((weak));
int hak_fuzz_replay_main(int argc, char** argv);

#ifndef __AFL_FUZZ_TESTCASE_LEN
#error "afl_main.c must be compiled with afl-clang-fast (see fuzz/README.md)"
#endif

__AFL_FUZZ_INIT();

int main(int argc, char** argv) {
  if (argc > 1) return hak_fuzz_replay_main(argc, argv);
#ifdef __AFL_HAVE_MANUAL_CONTROL
  __AFL_INIT(); /* fork server starts here, after the process and hakmem are set up */
#endif
  /* After the fork server (a harness's own helper processes, like misuse.c's, belong
   * to one run of the target) and before the loop, whose first pass clears the
   * coverage map: what set-up reaches is no input's coverage. */
  if (LLVMFuzzerInitialize != NULL) LLVMFuzzerInitialize(&argc, &argv);
  unsigned char* buf = __AFL_FUZZ_TESTCASE_BUF;
  while (__AFL_LOOP(10000)) {
    size_t len = (size_t)__AFL_FUZZ_TESTCASE_LEN;
    LLVMFuzzerTestOneInput(buf, len);
  }
  return 0;
}
