/* hak_override.c - replaces the C library's allocator: linking this file into a binary
 * (or preloading the shared library) makes every malloc in the process hakmem's,
 * including those glibc makes internally, which glibc routes through these symbols.
 * The __libc_* aliases catch the few programs that call glibc's internal names. */
#include <malloc.h>
#include <stdlib.h>

#include "hak_alloc.h"

HAK_EXPORT void* malloc(size_t size) {
  return hak_malloc_inline(size);
}

HAK_EXPORT void free(void* p) {
  hak_free_inline(p);
}

HAK_EXPORT void* calloc(size_t count, size_t size) {
  return hak_calloc_inline(count, size);
}

HAK_EXPORT void* realloc(void* p, size_t size) {
  return hak_realloc_inline(p, size);
}

HAK_EXPORT void* reallocarray(void* p, size_t count, size_t size) {
  return hak_reallocarray_inline(p, count, size);
}

HAK_EXPORT int posix_memalign(void** out, size_t alignment, size_t size) {
  return hak_posix_memalign_inline(out, alignment, size);
}

HAK_EXPORT void* aligned_alloc(size_t alignment, size_t size) {
  return hak_aligned_alloc_inline(alignment, size);
}

HAK_EXPORT void* memalign(size_t alignment, size_t size) {
  return hak_memalign_inline(alignment, size);
}

HAK_EXPORT void* valloc(size_t size) {
  return hak_valloc_inline(size);
}

HAK_EXPORT void* pvalloc(size_t size) {
  return hak_pvalloc_inline(size);
}

HAK_EXPORT size_t malloc_usable_size(void* p) {
  return hak_usable_size_inline(p);
}

/* The aliases carry fewer attributes than glibc's prototypes give the originals;
 * that is harmless for an alias and GCC's warning about it is noise here. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmissing-attributes"
#endif
HAK_EXPORT void* __libc_malloc(size_t size) __attribute__((alias("malloc")));
HAK_EXPORT void __libc_free(void* p) __attribute__((alias("free")));
HAK_EXPORT void* __libc_calloc(size_t count, size_t size) __attribute__((alias("calloc")));
HAK_EXPORT void* __libc_realloc(void* p, size_t size) __attribute__((alias("realloc")));
HAK_EXPORT void* __libc_memalign(size_t alignment, size_t size) __attribute__((alias("memalign")));
