/* SPDX-License-Identifier: MIT */
/* hak_api.c - the API front: the public hak_* functions (hakmem.h), usable beside the
 * C library's malloc; built with HAK_OVERRIDE=1 it also defines malloc, free and the
 * rest as aliases of them, replacing the C library's allocator for the whole process
 * (glibc routes its own internal allocations through these symbols too). The __libc_*
 * aliases catch the few programs that call glibc's internal names, and cfree old
 * binaries: every allocator entry point glibc exports is defined here, so none of them
 * hands out glibc memory that hakmem's free would then misread (the integration test
 * compares the two lists). */
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>

#include "hak_alloc.h"

#ifndef HAK_OVERRIDE
#define HAK_OVERRIDE 0
#endif

#if HAK_STATS
/* The stats variant's sampled calls (hak_latency_due): timed with the cycle counter. */
__attribute__((noinline)) static void* hak_malloc_timed(size_t size) {
  uint64_t start = hak_cycles();
  void* p = hak_malloc_inline(size);
  hak_latency_record(HAK_STATS_LATENCY_MALLOC, hak_cycles() - start);
  return p;
}

__attribute__((noinline)) static void hak_free_timed(void* p) {
  uint64_t start = hak_cycles();
  hak_free_inline(p);
  hak_latency_record(HAK_STATS_LATENCY_FREE, hak_cycles() - start);
}
#endif

HAK_EXPORT void* hak_malloc(size_t size) {
#if HAK_STATS
  if (hak_latency_due(HAK_STATS_LATENCY_MALLOC)) return hak_malloc_timed(size);
#endif
  return hak_malloc_inline(size);
}

HAK_EXPORT void hak_free(void* p) {
#if HAK_STATS
  if (hak_latency_due(HAK_STATS_LATENCY_FREE)) {
    hak_free_timed(p);
    return;
  }
#endif
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

HAK_EXPORT void hak_quarantine_flush(void) {
  hak_heap_t* heap = hak_heap_get();
  if (heap != &hak_heap_empty) hak_hardening_quarantine_flush(heap);
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
void* __libc_valloc(size_t size) HAK_ALIAS_OF(hak_valloc);
void* __libc_pvalloc(size_t size) HAK_ALIAS_OF(hak_pvalloc);
void cfree(void* p) HAK_ALIAS_OF(hak_free); /* removed from glibc's headers, still exported */

/* glibc's tuning knobs do not apply to hakmem (its own are HAKMEM_* variables,
 * docs/OPTIONS.md): every call is accepted and ignored, answering as glibc would: 1
 * (success), also for parameters it does not know, except M_MXFAST beyond glibc's
 * largest fastbin size (0). */
HAK_EXPORT int mallopt(int param, int value) {
  if (param == M_MXFAST) return value >= 0 && (size_t)value <= 80 * sizeof(size_t) / 4;
  return 1;
}
int __libc_mallopt(int param, int value) HAK_ALIAS_OF(mallopt);

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

/* glibc's statistics calls answer with hakmem's figures (hak_glibc_info_t in
 * hak_internal.h, filled by hak_stats_glibc): glibc's heap ("arena") is the region's
 * units in use, its mmapped chunks the whales in mappings of their own. Without these,
 * the names would reach glibc's allocator, which reports its own empty heap. Each call
 * walks every segment in use (a snapshot, see hak_region_usage): cheap enough for
 * monitoring, not for a hot loop.
 *   arena     bytes of region units in use (segments, whales, whales in the ring)
 *   ordblks, smblks, fsmblks, usmblks   0 (no bins, no fastbins; usmblks is 0 in glibc too)
 *   hblks     whales in mappings of their own (in use or cached)
 *   hblkhd    their mapped bytes
 *   uordblks  bytes of blocks in use in the units (usable sizes: the size class, whole
 *             slices for big blocks, page-rounded whales)
 *   fordblks  arena - uordblks: free slices and blocks inside segments, blocks in the
 *             BigCache and the whale ring, headers
 *   keepcost  at most what malloc_trim would give back now: free units and free slices
 *             that may be resident, cached blocks */
HAK_EXPORT struct mallinfo2 mallinfo2(void) {
  hak_stats_t s;
  hak_stats_collect(&s);
  hak_glibc_info_t g;
  hak_stats_glibc(&s, &g);
  struct mallinfo2 mi = {0};
  mi.arena = (size_t)g.arena;
  mi.hblks = (size_t)g.hblks;
  mi.hblkhd = (size_t)g.hblkhd;
  mi.uordblks = (size_t)g.uordblks;
  mi.fordblks = (size_t)g.fordblks;
  mi.keepcost = (size_t)g.keepcost;
  return mi;
}

static int hak_clamp_int(size_t v) {
  return v > (size_t)INT_MAX ? INT_MAX : (int)v;
}

/* The same with glibc's int fields, each clamped to INT_MAX (glibc lets them wrap). */
HAK_EXPORT struct mallinfo mallinfo(void) {
  struct mallinfo2 m = mallinfo2();
  struct mallinfo mi = {0};
  mi.arena = hak_clamp_int(m.arena);
  mi.hblks = hak_clamp_int(m.hblks);
  mi.hblkhd = hak_clamp_int(m.hblkhd);
  mi.uordblks = hak_clamp_int(m.uordblks);
  mi.fordblks = hak_clamp_int(m.fordblks);
  mi.keepcost = hak_clamp_int(m.keepcost);
  return mi;
}
struct mallinfo __libc_mallinfo(void) HAK_ALIAS_OF(mallinfo);

/* glibc's report on stderr, line for line ("Arena 0:", "system bytes     = ", ...,
 * "max mmap bytes   = "), written without malloc or stdio (hak_stats_print_glibc). */
HAK_EXPORT void malloc_stats(void) {
  hak_stats_print_glibc(2);
}

/* glibc's XML document with hakmem's figures in its elements: one heap (the region),
 * no bins ("fast" and "rest" hold no free chunks; "rest" has the free bytes of
 * fordblks), "mmap": the mappings of their own; then an element of hakmem's own with
 * the bytes and blocks in use and what is cached. options must be 0 (EINVAL, -1
 * otherwise, as glibc). The figures are read first, then printed with stdio, which may
 * allocate: no lock of hakmem's is held by then. */
HAK_EXPORT int malloc_info(int options, FILE* fp) {
  if (options != 0 || fp == NULL) {
    errno = EINVAL;
    return -1;
  }
  hak_stats_t s;
  hak_stats_collect(&s);
  hak_glibc_info_t g;
  hak_stats_glibc(&s, &g);
  unsigned long long arena = g.arena, free_bytes = g.fordblks, arena_max = g.arena_max;
  unsigned long long total = g.arena + g.hblkhd, total_max = g.arena_max + g.hblkhd_max;
  unsigned long long space = g.address_space, region_space = s.region_chunks << HAK_CHUNK_SHIFT;
  int n = fprintf(fp,
                  "<malloc version=\"1\">\n"
                  "<heap nr=\"0\">\n<sizes>\n</sizes>\n"
                  "<total type=\"fast\" count=\"0\" size=\"0\"/>\n"
                  "<total type=\"rest\" count=\"0\" size=\"%llu\"/>\n"
                  "<system type=\"current\" size=\"%llu\"/>\n"
                  "<system type=\"max\" size=\"%llu\"/>\n"
                  "<aspace type=\"total\" size=\"%llu\"/>\n"
                  "<aspace type=\"mprotect\" size=\"%llu\"/>\n"
                  "</heap>\n"
                  "<total type=\"fast\" count=\"0\" size=\"0\"/>\n"
                  "<total type=\"rest\" count=\"0\" size=\"%llu\"/>\n"
                  "<total type=\"mmap\" count=\"%llu\" size=\"%llu\"/>\n"
                  "<system type=\"current\" size=\"%llu\"/>\n"
                  "<system type=\"max\" size=\"%llu\"/>\n"
                  "<aspace type=\"total\" size=\"%llu\"/>\n"
                  "<aspace type=\"mprotect\" size=\"%llu\"/>\n"
                  "<hakmem variant=\"%s\" in_use_bytes=\"%llu\" in_use_blocks=\"%llu\" "
                  "cached_bytes=\"%llu\" mapped_bytes=\"%llu\"/>\n"
                  "</malloc>\n",
                  free_bytes, arena, arena_max, region_space, arena, free_bytes, (unsigned long long)g.hblks,
                  (unsigned long long)g.hblkhd, total, total_max, space, total, HAK_VARIANT_NAME,
                  (unsigned long long)s.in_use_bytes, (unsigned long long)s.in_use_blocks,
                  (unsigned long long)s.cached_bytes, (unsigned long long)s.os_mapped_bytes);
  return n < 0 ? -1 : 0;
}
#endif
