/* SPDX-License-Identifier: MIT */
/* thp_repro.c - issue 8 item 4: what transparent huge pages do to a process whose
 * threads each hold a few small blocks. 16 threads each allocate and write two small
 * blocks (48 B and 3000 B) and hold them while the main thread reads the process's
 * memory; it prints one line:
 *   rss_kib=<resident KiB> anon_huge_kib=<AnonHugePages KiB> threads=16
 * A plain program calling malloc: run it under each allocator with LD_PRELOAD, with and
 * without thp_always_shim.so (which makes every anonymous mapping MADV_HUGEPAGE,
 * standing in for /sys/kernel/mm/transparent_hugepage/enabled = always):
 *
 *   bazel build //tests/thp:thp_repro //tests/thp:thp_always_shim.so //hakmem:libhakmem.so
 *   B=bazel-bin; for lib in $B/hakmem/libhakmem.so /usr/lib/x86_64-linux-gnu/libmimalloc.so.2; do
 *     LD_PRELOAD=$lib $B/tests/thp/thp_repro
 *     LD_PRELOAD="$B/tests/thp/thp_always_shim.so $lib" $B/tests/thp/thp_repro; done
 *
 * Optional argument: the thread count (default 16). With THP_REPRO_MAPS=1 in the
 * environment it also prints each mapping that holds huge pages. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_barrier_t held, done;

static void* hold_two(void* arg) {
  (void)arg;
  char* a = malloc(48);
  char* b = malloc(3000);
  if (a == NULL || b == NULL) abort();
  memset(a, 1, 48);
  memset(b, 2, 3000);
  pthread_barrier_wait(&held); /* both blocks live while the main thread measures */
  pthread_barrier_wait(&done);
  free(a);
  free(b);
  return NULL;
}

/* A "Name:   N kB" line of /proc/self/smaps_rollup (or status), 0 if absent. */
static unsigned long kib_field(const char* file, const char* name) {
  static char buf[8192];
  int fd = open(file, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  size_t len = strlen(name);
  for (char* line = buf; line != NULL && *line != '\0';) {
    if (strncmp(line, name, len) == 0 && line[len] == ':') return strtoul(line + len + 1, NULL, 10);
    line = strchr(line, '\n');
    if (line != NULL) line++;
  }
  return 0;
}

/* The mappings of /proc/self/smaps with AnonHugePages, one line each, on stdout. */
static void print_huge_mappings(void) {
  FILE* f = fopen("/proc/self/smaps", "r");
  if (f == NULL) return;
  char line[512], vma[512] = "";
  unsigned long kib;
  while (fgets(line, sizeof line, f) != NULL) {
    if (strchr(line, '-') != NULL && strchr(line, ':') != NULL && line[0] != ' ' &&
        ((line[0] >= '0' && line[0] <= '9') || (line[0] >= 'a' && line[0] <= 'f'))) {
      snprintf(vma, sizeof vma, "%s", line);
    } else if (sscanf(line, "AnonHugePages: %lu kB", &kib) == 1 && kib > 0) {
      printf("  huge_kib=%lu in %s", kib, vma);
    }
  }
  fclose(f);
}

int main(int argc, char** argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 16;
  if (threads < 1 || threads > 1024) return 2;
  pthread_t tid[1024];
  pthread_barrier_init(&held, NULL, (unsigned)threads + 1);
  pthread_barrier_init(&done, NULL, (unsigned)threads + 1);
  for (int i = 0; i < threads; i++) {
    if (pthread_create(&tid[i], NULL, hold_two, NULL) != 0) return 2;
  }
  pthread_barrier_wait(&held);
  printf("rss_kib=%lu anon_huge_kib=%lu threads=%d\n", kib_field("/proc/self/status", "VmRSS"),
         kib_field("/proc/self/smaps_rollup", "AnonHugePages"), threads);
  if (getenv("THP_REPRO_MAPS") != NULL) print_huge_mappings();
  fflush(stdout);
  pthread_barrier_wait(&done);
  for (int i = 0; i < threads; i++) pthread_join(tid[i], NULL);
  return 0;
}
