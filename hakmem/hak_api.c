/* hak_api.c - the public hak_* API (hakmem.h), usable beside the C library's malloc. */
#include "hak_alloc.h"

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

HAK_EXPORT const char* hak_variant(void) {
  return HAK_VARIANT_NAME;
}
