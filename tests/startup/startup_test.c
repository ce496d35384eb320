/* SPDX-License-Identifier: MIT */
/* startup_test - hakmem's start-up cannot deadlock or hand a thread two heaps (issue 9,
 * item 1). A plain C program (no test framework, whose own start-up would allocate
 * first), linked with a replacing hakmem library; exits 0 when every check holds.
 *
 * 1. Before anything allocates, a constructor that runs before hakmem's registers 64
 *    fork handlers. glibc keeps 48 in place and grows its list with malloc while it
 *    holds its atfork lock, so the 49th registration makes the process's first malloc
 *    from inside that lock. hakmem used to register its own fork handlers from inside
 *    that first malloc: the process hung there (an alarm turns a hang into a failure).
 * 2. The same constructor takes 40 thread-specific keys, so hakmem's key lies past
 *    glibc's first 32 and pthread_setspecific allocates when a new thread's heap is
 *    registered: a malloc nested in the thread's heap set-up, which must use that heap.
 *    Each of 8 threads' first call is malloc; the stats variant counts exactly 8 new
 *    thread heaps.
 * 3. fork() runs all 64 handlers of the program and hakmem's own; the child allocates
 *    and frees in every tier. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hakmem.h"

#define HANDLERS 64
#define KEYS 40
#define THREADS 8

static int prepared, in_parent, in_child;
static int registered = -1;
static pthread_key_t keys[KEYS];

static void on_prepare(void) { prepared++; }
static void on_parent(void) { in_parent++; }
static void on_child(void) { in_child++; }

static void fail(const char* what) {
  fprintf(stderr, "startup_test: FAIL: %s\n", what);
  exit(1);
}

__attribute__((constructor(101))) static void register_before_anything(void) {
  alarm(20); /* a hang fails the test instead of stalling it */
  registered = 0;
  for (int i = 0; i < HANDLERS; i++) {
    if (pthread_atfork(on_prepare, on_parent, on_child) != 0) return;
    registered++;
  }
  for (int i = 0; i < KEYS; i++) pthread_key_create(&keys[i], NULL);
}

static void* first_call_is_malloc(void* arg) {
  (void)arg;
  char* p = malloc(100);
  if (p == NULL) return (void*)1;
  memset(p, 7, 100);
  free(p);
  return NULL;
}

static uint64_t threads_started(void) {
  hak_stats_t s;
  hak_stats_read(&s);
  return s.threads_started;
}

static void touch_every_tier(void) {
  static const size_t sizes[] = {16, 3000, 40000, 300000, 3u << 20, 9u << 20};
  for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
    char* p = malloc(sizes[i]);
    if (p == NULL) _exit(3);
    p[0] = p[sizes[i] - 1] = 1;
    free(p);
  }
}

int main(void) {
  if (registered != HANDLERS) fail("the constructor did not register its 64 fork handlers");
  hak_stats_t s;
  hak_stats_read(&s);
  uint64_t before = threads_started();
  pthread_t threads[THREADS];
  for (int i = 0; i < THREADS; i++) {
    if (pthread_create(&threads[i], NULL, first_call_is_malloc, NULL) != 0) fail("pthread_create");
    void* result;
    pthread_join(threads[i], &result);
    if (result != NULL) fail("a thread's first malloc failed");
  }
  if (s.counters_enabled && threads_started() - before != THREADS) {
    fprintf(stderr, "startup_test: %llu thread heaps for %d threads\n",
            (unsigned long long)(threads_started() - before), THREADS);
    fail("a thread got more than one heap (a nested malloc during its set-up)");
  }
  touch_every_tier();
  pid_t child = fork();
  if (child < 0) fail("fork");
  if (child == 0) {
    if (in_child != HANDLERS) _exit(2);
    touch_every_tier();
    _exit(0);
  }
  int status = 0;
  if (waitpid(child, &status, 0) != child) fail("waitpid");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) fail("the child's handlers or allocations failed");
  if (prepared != HANDLERS || in_parent != HANDLERS) fail("the parent's fork handlers did not all run");
  for (int i = 0; i < KEYS; i++) pthread_key_delete(keys[i]);
  printf("startup_test: ok (%s variant)\n", hak_variant());
  return 0;
}
