/* hakmem.h - public API of the hakmem allocator.
 *
 * Two ways to use hakmem:
 *  - as the process allocator: link //hakmem:hakmem (or a variant) into a binary, or
 *    LD_PRELOAD libhakmem.so; malloc, free and friends are then hakmem's;
 *  - side by side with the system allocator: link //hakmem:hakmem_api (or a variant)
 *    and call the hak_* functions below; malloc stays the C library's.
 * Memory from one allocator must be freed by the same allocator.
 *
 * Semantics follow glibc: hak_malloc(0) returns a unique pointer, hak_free(NULL) does
 * nothing, failures return NULL with errno = ENOMEM (EINVAL for a bad alignment), and
 * every block is aligned to at least 16 bytes.
 */
#ifndef HAKMEM_H
#define HAKMEM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

void* hak_malloc(size_t size);
void hak_free(void* p);
void* hak_calloc(size_t count, size_t size);
void* hak_realloc(void* p, size_t size);
void* hak_reallocarray(void* p, size_t count, size_t size);
int hak_posix_memalign(void** out, size_t alignment, size_t size);
void* hak_aligned_alloc(size_t alignment, size_t size);
void* hak_memalign(size_t alignment, size_t size);
void* hak_valloc(size_t size);
void* hak_pvalloc(size_t size);
size_t hak_usable_size(const void* p);

/* The variant this library was built as: "release", "stats" or "hardened". */
const char* hak_variant(void);

/* ---- Statistics ---------------------------------------------------------- */

#define HAK_STATS_CLASS_COUNT 81 /* 80 size classes (16 B .. 64 KiB) + one for larger blocks */

/* Operating-system calls made by hakmem; counted in every variant. */
typedef struct hak_os_call_stats_s {
  uint64_t count;    /* calls made */
  uint64_t failures; /* calls that failed */
  uint64_t nanos;    /* wall time spent inside them */
} hak_os_call_stats_t;

typedef struct hak_stats_s {
  int counters_enabled;            /* 1 in the stats variant; else the counters below are 0 */
  hak_os_call_stats_t os_mmap;
  hak_os_call_stats_t os_munmap;
  hak_os_call_stats_t os_madvise;
  uint64_t os_mapped_bytes;        /* currently mapped from the OS, every variant */
  uint64_t segments_live;          /* segments currently in use, every variant */

  /* Counters of the stats variant, summed over all threads (exited ones included). */
  uint64_t class_size[HAK_STATS_CLASS_COUNT];   /* block size of each class (0 for the last) */
  uint64_t class_allocs[HAK_STATS_CLASS_COUNT];
  uint64_t class_frees[HAK_STATS_CLASS_COUNT];
  uint64_t alloc_fast;         /* served by the thread's current page */
  uint64_t alloc_slow;         /* needed the slow path: new page, collection, adoption */
  uint64_t alloc_large;        /* served by a dedicated mapping (> 64 KiB or big alignment) */
  uint64_t free_local;         /* freed by the owning thread */
  uint64_t free_remote;        /* freed by another thread onto the page's atomic list */
  uint64_t free_delayed;       /* remote frees routed through the owner heap (full pages) */
  uint64_t free_large;
  uint64_t pages_allocated;
  uint64_t pages_freed;
  uint64_t segments_allocated;
  uint64_t segments_freed;
  uint64_t segments_abandoned; /* handed back when their thread exited */
  uint64_t segments_adopted;   /* taken over by another thread */
  uint64_t threads_started;    /* thread heaps created */
  uint64_t threads_ended;
} hak_stats_t;

/* Fills *out; returns 0, or EINVAL when out is NULL. */
int hak_stats_get(hak_stats_t* out);

/* Writes a readable report to the file descriptor (no stdio, no allocation).
 * The stats variant prints it at exit when HAKMEM_STATS=1. */
void hak_stats_print(int fd);

#ifdef __cplusplus
}
#endif

#endif /* HAKMEM_H */
