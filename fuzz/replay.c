/* SPDX-License-Identifier: MIT */
/* replay.c - runs fuzz inputs through LLVMFuzzerTestOneInput without a fuzzing engine:
 * hak_fuzz_replay_main() is the main() of the corpus replay tests (built with the normal
 * toolchain, see replay_main.c), of the fuzz binaries when no engine is configured, and
 * of the AFL++ binaries when given files (afl_main.c).
 *
 *   <binary> [--fork] [--min-inputs=N] [--repeat=R] PATH...
 *
 * Each PATH is an input file or a directory of them. With --fork every input runs in a
 * child process of its own (hakmem starts fresh for each, so each file reproduces on
 * its own), and all failing inputs are listed before the exit status says so; without
 * it, all inputs run in this process, one after the other, and the first failure ends
 * the run (as in a fuzzing campaign, hakmem's state carries over between inputs).
 *
 * Directories are read in name order (deterministic). Fails when fewer than N inputs
 * were found (default 1), so an empty or mistyped corpus path cannot pass silently.
 * --repeat=R replays all PATHs R times (default 1): the concurrent harness's threads
 * interleave differently each time, so each round tries other races. Rounds after the
 * first run in this process even with --fork (hakmem's state carries over, as in a
 * campaign): a fork costs a sanitizer build a few hundred milliseconds.
 * A failing input aborts inside the harness, whose report names the input (through
 * HAK_FUZZ_CURRENT_INPUT). HAK_FUZZ_REPLAY_VERBOSE=1 prints every input's name. */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

static size_t g_inputs, g_failures;
static int g_verbose, g_fork;

static int run_file(const char* path) {
  FILE* f = fopen(path, "rb");
  if (f == NULL) {
    perror(path);
    return 1;
  }
  size_t cap = 1 << 16, len = 0;
  uint8_t* buf = malloc(cap);
  for (size_t n; buf != NULL && (n = fread(buf + len, 1, cap - len, f)) > 0;) {
    len += n;
    if (len == cap) {
      cap *= 2;
      uint8_t* grown = realloc(buf, cap);
      if (grown == NULL) free(buf);
      buf = grown;
    }
  }
  fclose(f);
  if (buf == NULL) {
    fprintf(stderr, "%s: out of memory\n", path);
    return 1;
  }
  if (g_verbose) fprintf(stderr, "replay: %s (%zu bytes)\n", path, len);
  /* The harness names this input in its failure report. */
  setenv("HAK_FUZZ_CURRENT_INPUT", path, 1);
  /* A private copy of exactly len bytes, so reads past the end are caught by ASan. */
  uint8_t* exact = malloc(len ? len : 1);
  if (exact == NULL) {
    free(buf);
    return 1;
  }
  memcpy(exact, buf, len);
  free(buf);
  g_inputs++;
  if (!g_fork) {
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    return 0;
  }
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    free(exact);
    return 1;
  }
  if (pid == 0) {
    LLVMFuzzerTestOneInput(exact, len);
    _exit(0);
  }
  free(exact);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    g_failures++;
    if (WIFSIGNALED(status)) fprintf(stderr, "replay: FAILED: %s (signal %d)\n", path, WTERMSIG(status));
    else fprintf(stderr, "replay: FAILED: %s (exit %d)\n", path, WEXITSTATUS(status));
  }
  return 0;
}

static int run_path(const char* path) {
  struct stat st;
  if (stat(path, &st) != 0) {
    perror(path);
    return 1;
  }
  if (!S_ISDIR(st.st_mode)) return run_file(path);
  struct dirent** names;
  int n = scandir(path, &names, NULL, alphasort);
  if (n < 0) {
    perror(path);
    return 1;
  }
  int rc = 0;
  for (int i = 0; i < n; i++) {
    if (names[i]->d_name[0] != '.' && rc == 0) {
      char child[4096];
      snprintf(child, sizeof(child), "%s/%s", path, names[i]->d_name);
      rc = run_path(child);
    }
    free(names[i]);
  }
  free(names);
  return rc;
}

int hak_fuzz_replay_main(int argc, char** argv);

int hak_fuzz_replay_main(int argc, char** argv) {
  size_t min_inputs = 1, repeat = 1, per_round = 0;
  g_verbose = getenv("HAK_FUZZ_REPLAY_VERBOSE") != NULL;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 1; i < argc; i++) {
    if (strncmp(argv[i], "--min-inputs=", 13) == 0) min_inputs = strtoul(argv[i] + 13, NULL, 10);
    else if (strncmp(argv[i], "--repeat=", 9) == 0) repeat = strtoul(argv[i] + 9, NULL, 10);
    else if (strcmp(argv[i], "--fork") == 0) g_fork = 1;
  }
  LLVMFuzzerTestOneInput((const uint8_t*)"", 0); /* the empty input, always */
  for (size_t round = 0; round < repeat; round++) {
    for (int i = 1; i < argc; i++) {
      if (strncmp(argv[i], "--", 2) == 0) continue;
      if (run_path(argv[i]) != 0) return 1;
    }
    if (round == 0) per_round = g_inputs;
    g_fork = 0;
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
  if (g_failures > 0) {
    fprintf(stderr, "replay: %zu of %zu inputs FAILED (%.0f ms)\n", g_failures, g_inputs, ms);
    return 1;
  }
  fprintf(stderr, "replay: %zu inputs passed in %.0f ms\n", g_inputs, ms);
  if (per_round < min_inputs) {
    fprintf(stderr, "replay: FAILED: found %zu inputs, want at least %zu\n", per_round, min_inputs);
    return 1;
  }
  return 0;
}
