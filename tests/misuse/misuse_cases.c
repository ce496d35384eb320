/* SPDX-License-Identifier: MIT */
/* misuse_cases.c - one heap misuse per case, for the misuse table (misuse_table.sh):
 * run as `misuse_cases <case>` with an allocator preloaded, it commits the misuse and
 * carries on as a careless program would. The allocator catches it if the process
 * stops with its diagnostic; exit 42 means the misuse was made harmless (a freed block
 * read back as zeros, an impossible request refused), exit 0 that it went unseen.
 * The cases follow the classes of issue 10: double and delayed double free, invalid,
 * unaligned and uninitialised free, overflows by 1 and 8 bytes and of a string, read
 * and write after free with and without reuse, zero-size access, malloc_usable_size
 * and realloc misuse. "small" is 16-128 B, "large" 256 KiB, "huge" 2-4 MiB, "whale"
 * 8 MiB. */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define KiB ((size_t)1024)
#define EXIT_HARMLESS 42

static volatile char sink;

static int all_zero(volatile char* p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (p[i] != 0) return 0;
  }
  return 1;
}

/* A free()'d pointer read or written: the compiler must not see through it. */
static char* launder(void* p) {
  char* volatile q = p;
  return q;
}

static int double_free(size_t size) {
  void* p = malloc(size);
  free(p);
  free(p);
  return 0;
}

static int double_free_delayed(size_t size) {
  void* p = malloc(size);
  void* q = malloc(size);
  free(p);
  free(q);
  free(p);
  return 0;
}

static int unaligned_free(size_t size) {
  char* p = malloc(size);
  free(p + 1);
  return 0;
}

/* `by` bytes written past what malloc_usable_size says the block holds. */
static int overflow(size_t size, size_t by) {
  char* p = malloc(size);
  memset(p + malloc_usable_size(p), 'a', by);
  free(p);
  return 0;
}

/* Reads a freed block: harmless if it reads back zeros (zeroed on free). */
static int read_after_free(size_t size, size_t at, size_t n) {
  volatile char* p = malloc(size);
  memset((void*)p, 'a', size);
  free((void*)p);
  return all_zero(p + at, n) ? EXIT_HARMLESS : 0;
}

/* A write into a freed block, then the traffic that would hand its slot out again. */
static int write_after_free(size_t size, int reuse, int traffic) {
  char* p = launder(malloc(size));
  free(p);
  char* q = reuse ? malloc(size) : NULL;
  p[size > 64 * KiB ? 64 * KiB : 65] = 'a';
  for (int i = 0; i < traffic; i++) free(malloc(size));
  free(q);
  return 0;
}

/* A write into a freed block after a dozen more blocks of its size were freed after it:
 * any cache of freed blocks has evicted it by then, none of them handed it out again. */
static int write_after_free_evicted(size_t size) {
  enum { kMore = 12 };
  char* more[kMore];
  char* p = launder(malloc(size));
  for (int i = 0; i < kMore; i++) more[i] = malloc(size);
  free(p);
  for (int i = 0; i < kMore; i++) free(more[i]);
  p[size / 2] = 'a';
  return 0;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: misuse_cases <case>\n");
    return 2;
  }
  const char* t = argv[1];
#define CASE(name) else if (strcmp(t, name) == 0)
  if (0) {
  }
  CASE("double_free_small") return double_free(16);
  CASE("double_free_large") return double_free(256 * KiB);
  CASE("double_free_huge") return double_free(4096 * KiB);
  CASE("double_free_small_delayed") return double_free_delayed(16);
  CASE("double_free_large_delayed") return double_free_delayed(256 * KiB);
  CASE("unaligned_free_small") return unaligned_free(16);
  CASE("unaligned_free_large") return unaligned_free(256 * KiB);
  CASE("invalid_free_protected") {
    free(mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    return 0;
  }
  CASE("invalid_free_unprotected") {
    free(mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    return 0;
  }
  CASE("invalid_free_small_region") {
    char* p = malloc(16);
    free(p + 16 * KiB);
    return 0;
  }
  CASE("invalid_free_small_region_far") {
    char* p = malloc(16);
    free(p + 2048 * KiB);
    return 0;
  }
  CASE("uninitialized_free") {
    void* volatile p = (void*)(uintptr_t)0x7f1234567890;
    free(p);
    return 0;
  }
  CASE("uninitialized_realloc") {
    void* volatile p = (void*)(uintptr_t)0x7f1234567890;
    sink = realloc(p, 32) != NULL;
    return 0;
  }
  CASE("uninitialized_malloc_usable_size") {
    void* volatile p = (void*)(uintptr_t)0x7f1234567890;
    sink = (char)malloc_usable_size(p);
    return 0;
  }
  CASE("overflow_small_1_byte") return overflow(8, 1);
  CASE("overflow_small_8_byte") return overflow(8, 8);
  CASE("overflow_large_1_byte") return overflow(256 * KiB, 1);
  CASE("overflow_large_8_byte") return overflow(256 * KiB, 8);
  CASE("overflow_huge_1_byte") return overflow(2048 * KiB, 1);
  CASE("string_overflow") {
    char* p = malloc(16);
    strcpy(p, launder("0123456789abcdefghijklmn"));  /* 25 bytes into 16 */
    free(p);
    return 0;
  }
  CASE("read_after_free_small") return read_after_free(16, 8, 8);
  CASE("read_after_free_large") return read_after_free(256 * KiB, 4096, 16);
  CASE("read_after_free_huge") return read_after_free(2048 * KiB, 4096, 1);
  CASE("write_after_free_small") return write_after_free(128, 0, 100000);
  CASE("write_after_free_small_reuse") return write_after_free(128, 1, 100000);
  CASE("write_after_free_large") return write_after_free(256 * KiB, 0, 1000);
  CASE("write_after_free_large_reuse") return write_after_free(256 * KiB, 1, 1000);
  CASE("write_after_free_huge") return write_after_free(2048 * KiB, 0, 0);
  CASE("write_after_free_huge_reuse") return write_after_free(2048 * KiB, 1, 0);
  CASE("write_after_free_whale_reuse") return write_after_free(8192 * KiB, 1, 0);
  CASE("write_after_free_huge_evicted") return write_after_free_evicted(2048 * KiB);
  CASE("write_after_free_whale_evicted") return write_after_free_evicted(8192 * KiB);
  CASE("read_zero_size") {
    volatile char* p = malloc(0);
    sink = p[0];
    return 0;
  }
  CASE("write_zero_size") {
    volatile char* p = malloc(0);
    p[0] = 1;
    return 0;
  }
  CASE("unaligned_malloc_usable_size_small") {
    char* p = malloc(16);
    sink = (char)malloc_usable_size(p + 1);
    return 0;
  }
  CASE("invalid_malloc_usable_size_small") {
    char* p = malloc(16);
    sink = (char)malloc_usable_size(p + 16 * KiB);
    return 0;
  }
  CASE("usable_size_after_free") {
    char* p = launder(malloc(16));
    free(p);
    sink = (char)malloc_usable_size(p);
    return 0;
  }
  CASE("realloc_after_free") {
    char* p = launder(malloc(16));
    free(p);
    sink = realloc(p, 32) != NULL;
    return 0;
  }
  CASE("impossibly_large_malloc") return malloc(SIZE_MAX - 4096) == NULL ? EXIT_HARMLESS : 0;
#undef CASE
  fprintf(stderr, "misuse_cases: unknown case %s\n", t);
  return 2;
}
