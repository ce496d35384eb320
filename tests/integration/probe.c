/* SPDX-License-Identifier: MIT */
/* Reports which shared object provides malloc and free in this process, and which hakmem
 * variant is loaded (via hak_variant, looked up at run time so this also runs without
 * hakmem). Build with -ldl; run under LD_PRELOAD. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

static const char* object_of(const char* symbol) {
  void* f = dlsym(RTLD_DEFAULT, symbol);
  Dl_info info;
  if (f == NULL || dladdr(f, &info) == 0 || info.dli_fname == NULL) return "(unknown)";
  return info.dli_fname;
}

int main(void) {
  const char* (*variant)(void) = (const char* (*)(void))dlsym(RTLD_DEFAULT, "hak_variant");
  printf("malloc from %s\n", object_of("malloc"));
  printf("free from %s\n", object_of("free"));
  printf("variant %s\n", variant != NULL ? variant() : "(none)");
  void* p = malloc(100);
  printf("malloc(100) ok %d\n", p != NULL);
  free(p);
  return 0;
}
