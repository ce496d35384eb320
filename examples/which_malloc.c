/* SPDX-License-Identifier: MIT */
/* which_malloc.c - the example consumers' program: says which allocator serves the
 * malloc the C library calls, and fails (exit 1) unless it is hakmem's.
 *
 * Two builds of it (examples/make_consumer, examples/cmake_consumer):
 *  - HAKMEM_API=1 ("api_user"): a program that uses hakmem.h; hakmem's own figures
 *    (hak_stats_get) must count the block strdup allocated;
 *  - HAKMEM_API=0 ("libc_only"): a program that references no allocator symbol at all
 *    (no malloc, no free, nothing of hakmem's): it allocates only through the C
 *    library (strdup). Nothing but -Wl,-u,malloc (hakmem.pc, the CMake targets) makes
 *    a static link take hakmem here; it reads hakmem's figures from malloc_info's
 *    <hakmem .../> element, reached through the dynamic linker (dlsym), as the
 *    C library would reach it.
 * Either way the check is that a 100000-byte strdup adds at least 100000 bytes to
 * hakmem's in-use figure and its free takes them away again: with glibc's malloc in
 * use, hakmem's figure would not move (or, for libc_only, malloc_info would be
 * glibc's, without the element). It also prints which object defines the malloc the
 * dynamic linker binds (libhakmem*.so.*, the program itself for a static link, or
 * libc.so.6). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef HAKMEM_API
#define HAKMEM_API 0
#endif
#if HAKMEM_API
#include <hakmem.h>
#endif

#define BLOCK 100000

static const char* prog = "which_malloc";

/* Where the malloc of the process's global scope (the one the C library calls) is
 * defined. */
static const char* malloc_home(void) {
  static char where[512];
  void* m = dlsym(RTLD_DEFAULT, "malloc");
  Dl_info mi, self;
  if (m == NULL || !dladdr(m, &mi)) return "(not found)";
  if (dladdr((void*)&malloc_home, &self) && self.dli_fbase == mi.dli_fbase) return "the program itself";
  const char* name = mi.dli_fname != NULL ? mi.dli_fname : "?";
  const char* slash = strrchr(name, '/');
  snprintf(where, sizeof where, "%s", slash != NULL ? slash + 1 : name);
  return where;
}

typedef struct {
  int ok;                /* hakmem's figures could be read */
  char variant[32];
  unsigned long long in_use_bytes;
} figures_t;

#if HAKMEM_API
static figures_t read_figures(void) {
  figures_t f = {0};
  hak_stats_t s;
  if (hak_stats_read(&s) != 0) return f;
  f.ok = 1;
  snprintf(f.variant, sizeof f.variant, "%s", hak_variant());
  f.in_use_bytes = s.in_use_bytes;
  return f;
}
#else
/* malloc_info of whichever allocator the dynamic linker binds; hakmem's adds
 * <hakmem variant="..." in_use_bytes="..." .../>. hakmem reads its figures before
 * printing, so stdio's own buffer (allocated at the first call) is counted from the
 * second call on: callers compare calls after the first. */
static FILE* info_fp;
static char info_buf[8192];

static figures_t read_figures(void) {
  figures_t f = {0};
  int (*info)(int, FILE*) = (int (*)(int, FILE*))dlsym(RTLD_DEFAULT, "malloc_info");
  if (info == NULL) return f;
  if (info_fp == NULL && (info_fp = fmemopen(info_buf, sizeof info_buf, "w")) == NULL) return f;
  memset(info_buf, 0, sizeof info_buf);
  rewind(info_fp);
  if (info(0, info_fp) != 0 || fflush(info_fp) != 0) return f;
  info_buf[sizeof info_buf - 1] = '\0';
  const char* h = strstr(info_buf, "<hakmem variant=\"");
  if (h == NULL) return f;
  if (sscanf(h, "<hakmem variant=\"%31[^\"]\" in_use_bytes=\"%llu\"", f.variant, &f.in_use_bytes) != 2) return f;
  f.ok = 1;
  return f;
}
#endif

int main(int argc, char** argv) {
  if (argc > 0) prog = strrchr(argv[0], '/') != NULL ? strrchr(argv[0], '/') + 1 : argv[0];
  static char text[BLOCK];
  memset(text, 'h', BLOCK - 1);

  /* free as the C library would reach it, so that libc_only references no allocator
   * symbol (a direct call to free would pull hakmem in by itself). */
  void (*release)(void*) = (void (*)(void*))dlsym(RTLD_DEFAULT, "free");
  read_figures(); /* warm-up: stdio's buffers */
  figures_t before = read_figures();
  char* s = strdup(text);
  figures_t during = read_figures();
  if (s == NULL || release == NULL) {
    fprintf(stderr, "%s: strdup or dlsym(free) failed\n", prog);
    return 2;
  }
  release(s);
  figures_t after = read_figures();

  const char* home = malloc_home();
  if (!before.ok || !during.ok || !after.ok) {
    printf("%s: malloc is NOT hakmem's (defined in %s; no hakmem figures from malloc_info)\n", prog, home);
    return 1;
  }
  long long grew = (long long)(during.in_use_bytes - before.in_use_bytes);
  long long shrank = (long long)(during.in_use_bytes - after.in_use_bytes);
  if (grew < BLOCK || shrank < BLOCK) {
    printf("%s: malloc is NOT hakmem's (defined in %s; hakmem %s in use %+lld bytes after strdup(%d), %+lld after free)\n",
           prog, home, before.variant, grew, BLOCK, -shrank);
    return 1;
  }
  printf("%s: malloc is hakmem's, variant %s (defined in %s; in use %+lld bytes after strdup(%d), %+lld after free)\n",
         prog, during.variant, home, grew, BLOCK, -shrank);
  return 0;
}
