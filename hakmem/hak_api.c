/* hak_api.c - the API front: the public hak_* functions (hakmem.h), usable beside the
 * C library's malloc; built with HAK_OVERRIDE=1 it also defines malloc, free and the
 * rest as aliases of them, replacing the C library's allocator for the whole process
 * (glibc routes its own internal allocations through these symbols too). The __libc_*
 * aliases catch the few programs that call glibc's internal names. */
#include <malloc.h>
#include <stdlib.h>

#include "hak_alloc.h"

#ifndef HAK_OVERRIDE
#define HAK_OVERRIDE 0
#endif

HAK_EXPORT void* hak_malloc(size_t size) {
  return hak_malloc_inline(size);
}

HAK_EXPORT void hak_free(void* p) {
  hak_free_inline(p);
}

HAK_EXPORT void* hak_calloc(size_t count, size_t size) {
  return hak_calloc_inline(count, size);
}

HAK_EXPORT void* hak_realloc(void* p, size_t size) {
  return hak_realloc_inline(p, size);
}

HAK_EXPORT void* hak_reallocarray(void* p, size_t count, size_t size) {
  return hak_reallocarray_inline(p, count, size);
}

HAK_EXPORT int hak_posix_memalign(void** out, size_t alignment, size_t size) {
  return hak_posix_memalign_inline(out, alignment, size);
}

HAK_EXPORT void* hak_aligned_alloc(size_t alignment, size_t size) {
  return hak_aligned_alloc_inline(alignment, size);
}

HAK_EXPORT void* hak_memalign(size_t alignment, size_t size) {
  return hak_memalign_inline(alignment, size);
}

HAK_EXPORT void* hak_valloc(size_t size) {
  return hak_valloc_inline(size);
}

HAK_EXPORT void* hak_pvalloc(size_t size) {
  return hak_pvalloc_inline(size);
}

HAK_EXPORT size_t hak_usable_size(const void* p) {
  return hak_usable_size_inline(p);
}

HAK_EXPORT size_t hak_collect(bool force) {
  hak_stats_t before, after;
  hak_os_stats_read(&before);
  hak_purge_stats_read(&before);
  hak_heap_collect();
  hak_segment_big_decay(true);
  hak_segment_abandoned_decay(true);
  hak_whale_trim(true);
  hak_region_purge(force ? HAK_REGION_PURGE_ALL_UNMAP : HAK_REGION_PURGE_ALL);
  hak_os_stats_read(&after);
  hak_purge_stats_read(&after);
  uint64_t unmapped = before.os_mapped_bytes > after.os_mapped_bytes ? before.os_mapped_bytes - after.os_mapped_bytes : 0;
  return (size_t)(after.purge_bytes - before.purge_bytes + unmapped);
}

HAK_EXPORT const char* hak_variant(void) {
  return HAK_VARIANT_NAME;
}

#if HAK_OVERRIDE
/* glibc's prototypes give these functions more attributes than an alias can carry;
 * that is harmless and GCC's warning about it is noise here. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmissing-attributes"
#endif
#define HAK_ALIAS_OF(target) __attribute__((alias(#target), visibility("default")))

void* malloc(size_t size) HAK_ALIAS_OF(hak_malloc);
void free(void* p) HAK_ALIAS_OF(hak_free);
void* calloc(size_t count, size_t size) HAK_ALIAS_OF(hak_calloc);
void* realloc(void* p, size_t size) HAK_ALIAS_OF(hak_realloc);
void* reallocarray(void* p, size_t count, size_t size) HAK_ALIAS_OF(hak_reallocarray);
int posix_memalign(void** out, size_t alignment, size_t size) HAK_ALIAS_OF(hak_posix_memalign);
void* aligned_alloc(size_t alignment, size_t size) HAK_ALIAS_OF(hak_aligned_alloc);
void* memalign(size_t alignment, size_t size) HAK_ALIAS_OF(hak_memalign);
void* valloc(size_t size) HAK_ALIAS_OF(hak_valloc);
void* pvalloc(size_t size) HAK_ALIAS_OF(hak_pvalloc);
void* __libc_malloc(size_t size) HAK_ALIAS_OF(hak_malloc);
void __libc_free(void* p) HAK_ALIAS_OF(hak_free);
void* __libc_calloc(size_t count, size_t size) HAK_ALIAS_OF(hak_calloc);
void* __libc_realloc(void* p, size_t size) HAK_ALIAS_OF(hak_realloc);
void* __libc_memalign(size_t alignment, size_t size) HAK_ALIAS_OF(hak_memalign);

/* glibc declares it with a non-const pointer: a function, not an alias, so the types
 * stay exact. */
HAK_EXPORT size_t malloc_usable_size(void* p) {
  return hak_usable_size_inline(p);
}

/* glibc gives back the free memory at the top of its heaps, leaving `pad` bytes there;
 * hakmem has no top to keep, so it gives back all it can at once (hak_collect(true)),
 * whatever the pad. Returns 1 when memory went back to the OS, else 0, like glibc.
 * Without this, the name would reach glibc's allocator, which holds nothing. */
HAK_EXPORT int malloc_trim(size_t pad) {
  (void)pad;
  return hak_collect(true) > 0;
}
#endif
