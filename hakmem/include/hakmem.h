/* SPDX-License-Identifier: MIT */
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

/* The release this header belongs to (the repository's VERSION file; semantic
 * versioning: the shared libraries' SONAME carries the major number, which changes
 * only when the ABI breaks). */
#define HAKMEM_VERSION_MAJOR 0
#define HAKMEM_VERSION_MINOR 1
#define HAKMEM_VERSION_PATCH 0
#define HAKMEM_VERSION "0.1.0"

#include <stdbool.h>
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

/* ---- Memory return --------------------------------------------------------- */

/* Gives memory back to the OS now instead of after the purge delay: frees the calling
 * thread's quarantine (hak_quarantine_flush), sends the blocks of other threads' pages
 * that the calling thread freed and kept in its remote cache (HAKMEM_REMOTE_CACHE) back
 * to their pages (their owners take them at their own next hak_collect), takes back the
 * blocks other threads freed onto the calling thread's pages and onto exited threads'
 * segments (once every thread that freed or allocated has called it, in that order,
 * hak_stats_get's in-use figures are exact), empties the calling
 * thread's kept pages, the BigCache and whale cache, and purges every free
 * unit of the region. With force, also unmaps every chunk of address space that holds
 * nothing (otherwise only those beyond HAKMEM_REGION_KEEP). Returns the bytes purged
 * or unmapped. Thread-safe; costs system calls, so call it when idle. */
size_t hak_collect(bool force);

/* The hardened variant keeps the calling thread's last 64 freed small blocks (up to
 * 4 KiB) in a quarantine, so that a freed block is not reused at once; each free lets
 * a random one of them go. This frees them all now, on the calling thread (a thread's
 * exit does too): for leak checks and tests that want freed memory back at once.
 * Nothing to do in the other variants. */
void hak_quarantine_flush(void);

/* ---- Statistics ---------------------------------------------------------- */

#define HAK_STATS_CLASS_COUNT 113 /* 112 size classes (16 B .. 1 MiB) + one for larger blocks */

/* Operating-system calls made by hakmem; counted in every variant. */
typedef struct hak_os_call_stats_s {
  uint64_t count;    /* calls made */
  uint64_t failures; /* calls that failed */
  uint64_t nanos;    /* wall time spent inside them */
} hak_os_call_stats_t;

/* Latency percentiles: latency_ns[op][percentile]. */
enum { HAK_STATS_LATENCY_MALLOC, HAK_STATS_LATENCY_FREE, HAK_STATS_LATENCY_OPS };
enum { HAK_STATS_P50, HAK_STATS_P95, HAK_STATS_P99, HAK_STATS_P999, HAK_STATS_PERCENTILES };
#define HAK_STATS_LATENCY_SAMPLE 256 /* one call in this many is timed */

/* Who made the OS calls: os_by[user][kind]. */
enum { HAK_STATS_OS_REGION, HAK_STATS_OS_PURGE, HAK_STATS_OS_HUGE, HAK_STATS_OS_META, HAK_STATS_OS_USERS };
enum { HAK_STATS_OS_MMAP, HAK_STATS_OS_MUNMAP, HAK_STATS_OS_MADVISE, HAK_STATS_OS_MREMAP, HAK_STATS_OS_MPROTECT, HAK_STATS_OS_KINDS };

/* A cache of freed huge blocks (kept mapped, reused without a system call). */
typedef struct hak_cache_stats_s {
  uint64_t hits;         /* requests served from the cache */
  uint64_t misses;       /* requests it could not serve */
  uint64_t puts;         /* freed blocks it took */
  uint64_t evictions;    /* blocks it gave to the region (over its slots, bytes or age) */
  uint64_t cached;       /* blocks in it now */
  uint64_t cached_bytes; /* bytes of address space in it now */
  uint64_t slots;        /* its limit on blocks (HAKMEM_*_SLOTS) */
  uint64_t bytes_limit;  /* its limit on bytes (HAKMEM_*_BYTES) */
} hak_cache_stats_t;

/* hak_stats_t grows at its end as hakmem learns to count more; a caller says how much
 * of it it knows (size), the library fills that much (or all it knows, if less) and
 * says what it filled: a program built against an older or a newer hakmem.h keeps
 * working. HAK_STATS_VERSION changes when fields are added. */
#define HAK_STATS_VERSION 3 /* 2: purge_delay_now_ms, purge_regrets; 3: the remote cache */

typedef struct hak_stats_s {
  uint32_t size;    /* in: sizeof(hak_stats_t) as the caller knows it (hak_stats_read sets
                       it); out: the bytes hak_stats_get filled */
  uint32_t version; /* out: HAK_STATS_VERSION of the library that filled it */
  int counters_enabled;            /* 1 in the stats variant; else the per-class and per-path counters are 0 */

  /* Every variant: OS calls, totals and by user; mapped address space. */
  hak_os_call_stats_t os_mmap;
  hak_os_call_stats_t os_munmap;
  hak_os_call_stats_t os_madvise;
  hak_os_call_stats_t os_mremap;
  hak_os_call_stats_t os_mprotect;  /* hardened: freed large blocks made inaccessible while cached */
  hak_os_call_stats_t os_by[HAK_STATS_OS_USERS][HAK_STATS_OS_KINDS];
  uint64_t os_mapped_bytes;        /* currently mapped from the OS */
  uint64_t os_meta_mapped_bytes;   /* ... of which metadata hakmem keeps for the process (heap
                                      structs; the hardened variant's ownership map leaves) */
  uint64_t segments_live;          /* pool segments and huge blocks currently in use */

  /* Every variant: the region (address space in 256 MiB chunks, 4 MiB units). */
  uint64_t region_chunks;          /* chunks reserved now */
  uint64_t region_used_bytes;      /* in units handed out (segments, huge blocks) */
  uint64_t region_dirty_bytes;     /* free units that may still hold resident pages */
  uint64_t region_pending_bytes;   /* free units waiting for their purge */
  uint64_t region_clean_bytes;     /* free units purged or never touched */

  /* Every variant: the purge batcher (deferred, batched madvise), and the options in
   * force for it and the region (docs/OPTIONS.md). */
  uint64_t purge_delay_ms;         /* HAKMEM_PURGE_DELAY_MS */
  uint64_t region_keep_bytes;      /* HAKMEM_REGION_KEEP */
  uint64_t region_dirty_bytes_max; /* HAKMEM_REGION_DIRTY */
  uint64_t purge_flushes;          /* batches issued */
  uint64_t purge_ranges;           /* madvise calls they made (adjacent ranges merged) */
  uint64_t purge_bytes;            /* bytes advised */
  uint64_t purge_cancelled_bytes;  /* pending bytes reused before their purge came due */

  /* Every variant: the huge-block caches and realloc of huge blocks. */
  hak_cache_stats_t bigcache;      /* one-unit blocks (requests of 1 MiB up to 4 MiB) */
  hak_cache_stats_t whale;         /* longer blocks: FIFO ring, best fit */
  uint64_t huge_grow_in_place;     /* realloc grew a huge block into the next free units */
  uint64_t huge_moved_by_remap;    /* ... moved its pages with mremap (no copy) */
  uint64_t huge_moved_by_copy;     /* ... copied it */

  /* Every variant: what is in use now, found by walking every segment and whale at
   * each call (nothing is counted on the fast paths). A snapshot: other threads keep
   * allocating meanwhile, and pool blocks freed by another thread count as in use
   * until their owner thread collects them. Blocks in the hardened quarantine are
   * free: not in use (though they hold their pages). */
  uint64_t in_use_bytes;           /* blocks handed out: usable bytes (size classes,
                                      whole slices for big blocks, page-rounded whales) */
  uint64_t in_use_blocks;          /* blocks handed out */
  uint64_t cached_bytes;           /* freed big blocks and whales kept for reuse
                                      (bigcache.cached_bytes + whale.cached_bytes): not in use */
  uint64_t free_dirty_bytes;       /* free slices inside segments that may still be
                                      resident (their purge is pending) */
  uint64_t region_used_max_bytes;  /* the most bytes of units in use at once */
  uint64_t dedicated_count;        /* whales in mappings of their own (in use or cached) */
  uint64_t dedicated_bytes;        /* ... their mapped bytes (in os_mapped_bytes, not in region_used_bytes) */
  uint64_t dedicated_in_use_bytes; /* ... of in_use_bytes, the blocks in them */
  uint64_t dedicated_max_count;    /* the most of them at once */
  uint64_t dedicated_max_bytes;    /* the most bytes of them at once */

  /* Counters of the stats variant, summed over all threads (exited ones included). */
  uint64_t class_size[HAK_STATS_CLASS_COUNT];   /* block size of each class (0 for the last) */
  uint64_t class_allocs[HAK_STATS_CLASS_COUNT];
  uint64_t class_frees[HAK_STATS_CLASS_COUNT];
  uint64_t alloc_fast;         /* served by the thread's current page */
  uint64_t alloc_slow;         /* needed the slow path: new page, collection, adoption */
  uint64_t alloc_large;        /* blocks above the pools (> 1 MiB) or aligned beyond them: big and whales */
  uint64_t free_local;         /* freed by the owning thread */
  uint64_t free_remote;        /* freed by another thread onto the page's atomic list */
  uint64_t free_delayed;       /* remote frees routed through the owner heap (full pages) */
  uint64_t free_large;         /* big blocks and whales freed (by any thread: they have no owner) */
  uint64_t pages_allocated;
  uint64_t pages_freed;
  uint64_t segments_allocated;
  uint64_t segments_freed;
  uint64_t segments_abandoned; /* handed back when their thread exited */
  uint64_t segments_adopted;   /* taken over by another thread */
  uint64_t threads_started;    /* thread heaps created */
  uint64_t threads_ended;

  /* Every variant: the process's resident memory, from /proc/self (0 where unreadable). */
  uint64_t rss_bytes;          /* resident now (VmRSS) */
  uint64_t rss_peak_bytes;     /* the most resident so far (VmHWM) */

  /* Stats variant: latency of malloc and free (hak_malloc, hak_free and their
   * aliases), timed on one call in HAK_STATS_LATENCY_SAMPLE per thread with the CPU's
   * cycle counter (the timer's own few nanoseconds included), in nanoseconds: the
   * 50th, 95th, 99th and 99.9th percentiles of the sampled calls, from a log-linear
   * histogram (8 buckets per doubling: within 12.5%). */
  uint64_t latency_samples[HAK_STATS_LATENCY_OPS];
  uint64_t latency_ns[HAK_STATS_LATENCY_OPS][HAK_STATS_PERCENTILES];

  /* Version 2, every variant: purge regret. Memory purged and taken again within the
   * delay doubles the delay (up to HAKMEM_PURGE_DELAY_MAX_MS); four delays without such
   * reuse halve it again, down to HAKMEM_PURGE_DELAY_MS. Off unless
   * HAKMEM_PURGE_DELAY_MAX_MS is above the delay (it is not by default), and never while
   * the adaptive policy (HAKMEM_POLICY=1) chooses the delay: then the two stay equal. */
  uint64_t purge_delay_now_ms; /* the delay in force now */
  uint64_t purge_regrets;      /* purged memory (units, slices) taken again within the delay */

  /* Version 3: the remote cache (HAKMEM_REMOTE_CACHE; not in the hardened variant): pool
   * blocks of other threads' pages that a thread freed and keeps for its own next
   * allocations of their class (they are not in in_use_bytes). */
  uint64_t remote_cached_bytes; /* every variant: held now, all threads */
  uint64_t alloc_remote_cached; /* stats variant: allocations it served (part of alloc_slow) */
  uint64_t free_remote_cached;  /* stats variant: remote frees it took (part of free_remote) */
} hak_stats_t;

/* Fills the first out->size bytes of *out (at most the library's own sizeof), then
 * sets out->size to the bytes filled and out->version; fields past them stay as the
 * caller left them, and are not computed: a caller that needs no RSS (a read of
 * /proc/self/status, the costly part) sets out->size to offsetof(hak_stats_t,
 * rss_bytes). Returns 0, or EINVAL when out is NULL or out->size does not even cover
 * the header (size, version, counters_enabled). */
int hak_stats_get(hak_stats_t* out);

/* The usual call: fills all of *out as this header describes it. */
static inline int hak_stats_read(hak_stats_t* out) {
  if (out != NULL) out->size = (uint32_t)sizeof(*out);
  return hak_stats_get(out);
}

/* Writes a readable report to the file descriptor (no stdio, no allocation).
 * The stats variant prints it at exit when HAKMEM_STATS=1. */
void hak_stats_print(int fd);

/* The same figures as one JSON object (and a newline), for tools: every field of
 * hak_stats_t under the names it has there, grouped (docs/OPTIONS.md shows an example).
 * The stats variant writes it at exit when HAKMEM_STATS=json. */
void hak_stats_print_json(int fd);

#ifdef __cplusplus
}
#endif

#endif /* HAKMEM_H */
