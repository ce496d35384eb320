/* SPDX-License-Identifier: MIT */
/* hak_stats.c - the stats API and report. OS-call counts exist in every variant; the
 * per-class and per-path counters only in the stats variant, where each thread counts
 * into its own heap (no atomics on the fast path) and exiting threads fold their
 * counters into the global totals here. The report is formatted without stdio or
 * allocation, so it is safe at exit and inside the allocator. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hak_internal.h"

/* Counters with no heap at hand, and the counters exiting threads fold in: words laid
 * out like hak_stats_t, of which only uint64_t counter fields are ever added to. Read
 * one word at a time and copied out with memcpy: nothing is accessed through a pointer
 * of another type. */
#define HAK_STATS_WORDS (sizeof(hak_stats_t) / sizeof(uint64_t))
_Static_assert(sizeof(hak_stats_t) % sizeof(uint64_t) == 0, "hak_stats_t: whole words");
static uint64_t hak_stats_global[HAK_STATS_WORDS];

static uint64_t* hak_stats_global_word(size_t field_offset) {
  return &hak_stats_global[field_offset / sizeof(uint64_t)];
}

void hak_stats_count_global(size_t field_offset) {
  __atomic_fetch_add(hak_stats_global_word(field_offset), 1, __ATOMIC_RELAXED);
}

/* Copies the global words into `out` (the caller holds the heap pool's lock). */
static void hak_stats_copy_global(void* out) {
  for (size_t i = 0; i < HAK_STATS_WORDS; i++) {
    uint64_t v = __atomic_load_n(&hak_stats_global[i], __ATOMIC_RELAXED);
    memcpy((uint8_t*)out + i * sizeof(uint64_t), &v, sizeof(v));
  }
}

#if HAK_STATS
/* Adds a heap's counters: atomically into the global words, plainly into a snapshot. */
#define HAK_STATS_HEAP_FIELDS(X) \
  X(alloc_slow) X(alloc_large) X(free_remote) X(free_delayed) \
  X(free_large) X(pages_allocated) X(pages_freed) X(alloc_remote_cached) X(free_remote_cached)

/* ---- Frees of the local fast path ----------------------------------------------------
 * That path counts nothing (three instructions of each free fewer). Per pool class,
 * every allocation counted in class_allocs raised a page's used count by one, but those
 * from the remote cache; every other change of it is a free's decrement: on the fast
 * path, or on a slow path (remote frees collected, delayed and abandoned frees, cached
 * blocks sent home). So with the slow paths and the remote cache adding what they did
 * to class_used_adjust (hak_stats_used_adjust), the fast path's frees are
 *     class_allocs - class_used_adjust - (the used counts of the class's pages now),
 * and the pages' counts come from the walk of the segments every snapshot makes anyway
 * (hak_region_usage). Exact when no other thread runs meanwhile. A concurrent snapshot
 * reads the counters before the walk, so a call in between can move the count by one
 * either way; it is clamped so that no class shows more frees than allocations. */
static uint64_t hak_stats_global_adjust[HAK_STATS_CLASS_COUNT]; /* exited and heap-less threads */

void hak_stats_used_adjust(size_t class_index, uint64_t n) {
  hak_heap_t* heap = hak_heap_get();
  if (heap == &hak_heap_empty) { /* a thread that never allocated, or one exiting */
    __atomic_fetch_add(&hak_stats_global_adjust[class_index], n, __ATOMIC_RELAXED);
    return;
  }
  uint64_t* word = &heap->stats.class_used_adjust[class_index]; /* the owner writes */
  __atomic_store_n(word, __atomic_load_n(word, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

/* A snapshot's counters, and the per-class adjustments that are not part of hak_stats_t. */
typedef struct hak_stats_snapshot_s {
  hak_stats_t* out;
  uint64_t used_adjust[HAK_STATS_CLASS_COUNT];
} hak_stats_snapshot_t;

/* Adds the fast path's frees of each pool class to class_frees (`class_used`: the used
 * counts of the class's pages, from the walk). */
static void hak_stats_local_frees(hak_stats_t* out, const uint64_t* used_adjust, const uint64_t* class_used) {
  for (size_t i = 0; i < HAK_CLASS_COUNT; i++) {
    uint64_t allocs = out->class_allocs[i], passed = used_adjust[i] + class_used[i];
    uint64_t local = allocs > passed ? allocs - passed : 0;
    uint64_t most = allocs > out->class_frees[i] ? allocs - out->class_frees[i] : 0;
    out->class_frees[i] += local < most ? local : most;
  }
}

void hak_stats_global_add(const hak_heap_t* heap) {
  const hak_heap_stats_t* s = &heap->stats;
  for (size_t i = 0; i < HAK_STATS_CLASS_COUNT; i++) {
    __atomic_fetch_add(hak_stats_global_word(offsetof(hak_stats_t, class_allocs) + i * sizeof(uint64_t)),
                       s->class_allocs[i], __ATOMIC_RELAXED);
    __atomic_fetch_add(hak_stats_global_word(offsetof(hak_stats_t, class_frees) + i * sizeof(uint64_t)),
                       s->class_frees[i], __ATOMIC_RELAXED);
    __atomic_fetch_add(&hak_stats_global_adjust[i], s->class_used_adjust[i], __ATOMIC_RELAXED);
  }
#define HAK_STATS_FOLD(f) __atomic_fetch_add(hak_stats_global_word(offsetof(hak_stats_t, f)), s->f, __ATOMIC_RELAXED);
  HAK_STATS_HEAP_FIELDS(HAK_STATS_FOLD)
#undef HAK_STATS_FOLD
}

/* The malloc fast path counts only the class of each block, the local free fast path
 * nothing (hak_stats_local_frees adds its frees to the class counts first): every pool
 * allocation is fast or slow and every pool free local or remote, so the fast and
 * local counts are what the class counts leave (huge blocks have their own paths).
 * Other threads count on meanwhile: a snapshot can move one call from one path to the
 * other (and a free in or out, see hak_stats_local_frees). */
static void hak_stats_derive_paths(hak_stats_t* out) {
  uint64_t allocs = 0, frees = 0;
  for (size_t i = 0; i < HAK_STATS_CLASS_COUNT; i++) {
    if (i == HAK_CLASS_HUGE) continue;
    allocs += out->class_allocs[i];
    frees += out->class_frees[i];
  }
  out->alloc_fast = allocs > out->alloc_slow ? allocs - out->alloc_slow : 0;
  out->free_local = frees > out->free_remote ? frees - out->free_remote : 0;
}

static void hak_stats_copy_global_counted(void* arg) {
  hak_stats_snapshot_t* snap = arg;
  hak_stats_copy_global(snap->out);
  for (size_t i = 0; i < HAK_STATS_CLASS_COUNT; i++) {
    snap->used_adjust[i] = __atomic_load_n(&hak_stats_global_adjust[i], __ATOMIC_RELAXED);
  }
}

static void hak_stats_visit_heap(const hak_heap_t* heap, void* arg) {
  hak_stats_snapshot_t* snap = arg;
  hak_stats_t* out = snap->out;
  const hak_heap_stats_t* s = &heap->stats;
  /* The owner counts with plain stores: a relaxed read of each is all that is safe. */
  for (size_t i = 0; i < HAK_STATS_CLASS_COUNT; i++) {
    out->class_allocs[i] += __atomic_load_n(&s->class_allocs[i], __ATOMIC_RELAXED);
    out->class_frees[i] += __atomic_load_n(&s->class_frees[i], __ATOMIC_RELAXED);
    snap->used_adjust[i] += __atomic_load_n(&s->class_used_adjust[i], __ATOMIC_RELAXED);
  }
#define HAK_STATS_SUM(f) out->f += __atomic_load_n(&s->f, __ATOMIC_RELAXED);
  HAK_STATS_HEAP_FIELDS(HAK_STATS_SUM)
#undef HAK_STATS_SUM
}
#endif

/* ---- Latency (stats variant) ---------------------------------------------------------- */

#if HAK_STATS
/* A log-linear histogram of cycles per op: below 8 one bucket per value, then 8 buckets
 * per doubling (each within 12.5%), up to 2^40 cycles; shared by all threads (one
 * relaxed add per sampled call, 1 in HAK_STATS_LATENCY_SAMPLE). */
#define HAK_LATENCY_SUB 8
#define HAK_LATENCY_BUCKETS (HAK_LATENCY_SUB * 40)
static _Atomic uint64_t hak_latency_hist[HAK_STATS_LATENCY_OPS][HAK_LATENCY_BUCKETS];
static uint64_t hak_latency_cycles0, hak_latency_ns0; /* hak_latency_clock_start */

static uint64_t hak_latency_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void hak_latency_clock_start(void) {
  hak_latency_cycles0 = hak_cycles();
  hak_latency_ns0 = hak_latency_now_ns();
}

static size_t hak_latency_bucket(uint64_t cycles) {
  if (cycles < HAK_LATENCY_SUB) return (size_t)cycles;
  size_t e = 63 - (size_t)__builtin_clzll(cycles); /* 2^e <= cycles, e >= 3 */
  size_t b = (e - 2) * HAK_LATENCY_SUB + (size_t)((cycles >> (e - 3)) & (HAK_LATENCY_SUB - 1));
  return b < HAK_LATENCY_BUCKETS ? b : HAK_LATENCY_BUCKETS - 1;
}

/* The middle of a bucket, in cycles. */
static uint64_t hak_latency_bucket_mid(size_t b) {
  if (b < HAK_LATENCY_SUB) return b;
  size_t e = b / HAK_LATENCY_SUB + 2;
  uint64_t width = (uint64_t)1 << (e - 3);
  return ((uint64_t)(HAK_LATENCY_SUB + b % HAK_LATENCY_SUB) << (e - 3)) + width / 2;
}

void hak_latency_record(int op, uint64_t cycles) {
  atomic_fetch_add_explicit(&hak_latency_hist[op][hak_latency_bucket(cycles)], 1, memory_order_relaxed);
}

/* Nanoseconds per cycle, times 2^20: from the clock and the counter since start-up; a
 * process younger than 10 ms waits out the rest once so the ratio means something. */
static uint64_t hak_latency_ns_per_cycle_q20(void) {
#if defined(__x86_64__) || defined(__aarch64__)
  uint64_t ns = hak_latency_now_ns();
  while (ns - hak_latency_ns0 < 10000000u) ns = hak_latency_now_ns();
  uint64_t cycles = hak_cycles() - hak_latency_cycles0;
  return cycles == 0 ? (uint64_t)1 << 20 : (uint64_t)((((__uint128_t)(ns - hak_latency_ns0)) << 20) / cycles);
#else
  return (uint64_t)1 << 20; /* hak_cycles counts nanoseconds there */
#endif
}

static void hak_latency_read(hak_stats_t* out) {
  static const uint32_t per_mille[HAK_STATS_PERCENTILES] = {500, 950, 990, 999};
  uint64_t q20 = 0;
  for (int op = 0; op < HAK_STATS_LATENCY_OPS; op++) {
    uint64_t counts[HAK_LATENCY_BUCKETS], total = 0;
    for (size_t b = 0; b < HAK_LATENCY_BUCKETS; b++) {
      counts[b] = atomic_load_explicit(&hak_latency_hist[op][b], memory_order_relaxed);
      total += counts[b];
    }
    out->latency_samples[op] = total;
    if (total == 0) continue;
    if (q20 == 0) q20 = hak_latency_ns_per_cycle_q20();
    for (int p = 0; p < HAK_STATS_PERCENTILES; p++) {
      uint64_t rank = (total * per_mille[p] + 999) / 1000, seen = 0; /* the rank-th smallest sample */
      size_t b = 0;
      while (b < HAK_LATENCY_BUCKETS - 1 && (seen += counts[b]) < rank) b++;
      out->latency_ns[op][p] = (uint64_t)(((__uint128_t)hak_latency_bucket_mid(b) * q20) >> 20);
    }
  }
}
#endif

/* The value of a "Name:   123 kB" line of `status` (NUL-terminated), in KiB; 0 if absent. */
static uint64_t hak_stats_status_kib(const char* status, const char* name) {
  size_t len = strlen(name);
  for (const char* line = status; line != NULL && *line != '\0';) {
    if (strncmp(line, name, len) == 0) {
      uint64_t v = 0;
      for (const char* c = line + len; *c != '\n' && *c != '\0'; c++) {
        if (*c >= '0' && *c <= '9') v = v * 10 + (uint64_t)(*c - '0');
      }
      return v;
    }
    line = strchr(line, '\n');
    if (line != NULL) line++;
  }
  return 0;
}

/* RSS and its peak from one read of /proc/self/status (without stdio or allocation):
 * the kernel formats the whole file on every read, so once per snapshot. */
static void hak_stats_read_rss(hak_stats_t* out) {
  char buf[4096];
  int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0) return;
  buf[n] = '\0';
  out->rss_bytes = hak_stats_status_kib(buf, "VmRSS:") * 1024;
  out->rss_peak_bytes = hak_stats_status_kib(buf, "VmHWM:") * 1024;
}

/* Freed blocks the heaps hold, which the walk of the segments counts in use: the
 * hardened quarantine and the remote cache. Each owner writes its counts with relaxed
 * atomic stores. */
typedef struct hak_stats_held_s {
  uint64_t blocks, bytes;
  uint64_t remote_cached_bytes;
} hak_stats_held_t;

static void hak_stats_held_visit(const hak_heap_t* heap, void* arg) {
  hak_stats_held_t* held = arg;
  (void)heap;
  (void)held;
#if HAK_HARDEN_QUARANTINE
  held->blocks += __atomic_load_n(&heap->quarantine_count, __ATOMIC_RELAXED);
  held->bytes += __atomic_load_n(&heap->quarantine_bytes, __ATOMIC_RELAXED);
#endif
#if HAK_REMOTE_CACHE
  uint64_t cached = __atomic_load_n(&heap->remote_cache_bytes, __ATOMIC_RELAXED);
  held->blocks += __atomic_load_n(&heap->remote_cache_blocks, __ATOMIC_RELAXED);
  held->bytes += cached;
  held->remote_cached_bytes += cached;
#endif
}

/* Everything hak_stats_t holds, for hakmem's own reports. */
void hak_stats_collect(hak_stats_t* out) {
  hak_stats_collect_upto(out, sizeof(*out));
}

/* The same, computing only what the first `want` bytes hold that costs more than a
 * copy: RSS (a read of /proc) and the latency percentiles. */
void hak_stats_collect_upto(hak_stats_t* out, size_t want) {
  memset(out, 0, sizeof(*out));
  /* The global words and the live heaps under one hold of the pool's lock, under which
   * an exiting thread folds its counters and leaves the live set: counted once. */
#if HAK_STATS
  hak_stats_snapshot_t snap;
  memset(&snap, 0, sizeof(snap));
  snap.out = out;
  hak_heap_visit_all_after(hak_stats_copy_global_counted, hak_stats_visit_heap, &snap);
  out->counters_enabled = 1;
#else
  hak_heap_visit_all_after(hak_stats_copy_global, NULL, out);
  out->counters_enabled = 0;
#endif
  out->size = (uint32_t)sizeof(*out); /* after the copy of the global words, laid out alike */
  out->version = HAK_STATS_VERSION;
  for (size_t i = 0; i < HAK_CLASS_COUNT; i++) out->class_size[i] = hak_class_block_size(i);
  out->class_size[HAK_CLASS_HUGE] = 0;
  hak_os_stats_read(out);
  hak_region_stats_read(out);
  hak_purge_stats_read(out);
  out->purge_delay_ms = hak_options.purge_delay_ms;
  out->purge_delay_now_ms = hak_purge_delay_ms();
  out->region_keep_bytes = hak_options.region_keep_bytes;
  out->region_dirty_bytes_max = hak_options.region_dirty_bytes;
  hak_cache_stats_read(out);
  hak_large_stats_read(out);
  out->segments_live = hak_segment_live_count();
  hak_usage_t usage;
  hak_region_usage(&usage);
  out->region_used_bytes = usage.unit_bytes; /* the walk's: consistent with in_use_bytes */
  out->region_used_max_bytes = usage.unit_max_bytes;
  out->in_use_bytes = usage.in_use_bytes;
  out->in_use_blocks = usage.in_use_blocks;
#if HAK_STATS
  hak_stats_local_frees(out, snap.used_adjust, usage.class_used); /* after the counters: see there */
  hak_stats_derive_paths(out);
#endif
  hak_stats_held_t held = {0, 0, 0}; /* freed: not in use */
  hak_heap_visit_all(hak_stats_held_visit, &held);
  out->in_use_blocks -= held.blocks < out->in_use_blocks ? held.blocks : out->in_use_blocks;
  out->in_use_bytes -= held.bytes < out->in_use_bytes ? held.bytes : out->in_use_bytes;
  out->remote_cached_bytes = held.remote_cached_bytes;
  out->cached_bytes = out->bigcache.cached_bytes + out->whale.cached_bytes;
  out->free_dirty_bytes = usage.free_dirty_bytes;
  out->dedicated_count = usage.dedicated_count;
  out->dedicated_bytes = usage.dedicated_bytes;
  out->dedicated_in_use_bytes = usage.dedicated_in_use_bytes;
  out->dedicated_max_count = usage.dedicated_max_count;
  out->dedicated_max_bytes = usage.dedicated_max_bytes;
  if (want > offsetof(hak_stats_t, rss_bytes)) hak_stats_read_rss(out);
#if HAK_STATS
  if (want > offsetof(hak_stats_t, latency_samples)) hak_latency_read(out);
#endif
}

HAK_EXPORT int hak_stats_get(hak_stats_t* out) {
  if (out == NULL || out->size < offsetof(hak_stats_t, counters_enabled) + sizeof(out->counters_enabled)) {
    return EINVAL;
  }
  hak_stats_t all;
  size_t n = out->size < sizeof(all) ? out->size : sizeof(all);
  hak_stats_collect_upto(&all, n);
  memcpy(out, &all, n);
  out->size = (uint32_t)n;
  return 0;
}

/* glibc's fields from hakmem's figures (see hak_glibc_info_t). The walk reads units in
 * use and blocks in use under one hold of the region's lock, so uordblks <= arena
 * holds but for the racy snapshot of other threads' pages: clamped. */
void hak_stats_glibc(const hak_stats_t* s, hak_glibc_info_t* out) {
  *out = (hak_glibc_info_t){0};
  out->arena = s->region_used_bytes;
  uint64_t in_region = s->in_use_bytes - s->dedicated_in_use_bytes;
  out->uordblks = in_region < out->arena ? in_region : out->arena;
  out->fordblks = out->arena - out->uordblks;
  out->hblks = s->dedicated_count;
  out->hblkhd = s->dedicated_bytes;
  out->keepcost = s->region_dirty_bytes + s->free_dirty_bytes + s->cached_bytes;
  out->in_use_total = out->uordblks + s->dedicated_in_use_bytes;
  out->arena_max = s->region_used_max_bytes > out->arena ? s->region_used_max_bytes : out->arena;
  out->hblks_max = s->dedicated_max_count;
  out->hblkhd_max = s->dedicated_max_bytes;
  out->address_space = (s->region_chunks << HAK_CHUNK_SHIFT) + s->dedicated_bytes;
}

/* ---- Report ------------------------------------------------------------------------ */

typedef struct hak_report_s {
  int fd;
  size_t len;
  char buf[1024];
} hak_report_t;

static void hak_report_flush(hak_report_t* r) {
  size_t off = 0;
  while (off < r->len) {
    ssize_t n = write(r->fd, r->buf + off, r->len - off);
    if (n <= 0 && errno != EINTR) break;
    if (n > 0) off += (size_t)n;
  }
  r->len = 0;
}

static void hak_report_str(hak_report_t* r, const char* s) {
  for (; *s != '\0'; s++) {
    if (r->len == sizeof(r->buf)) hak_report_flush(r);
    r->buf[r->len++] = *s;
  }
}

/* Right-aligned unsigned decimal in `width` columns. */
static void hak_report_u64(hak_report_t* r, uint64_t v, int width) {
  char digits[24];
  int n = hak_u64_digits(v, digits);
  for (int pad = width - n; pad > 0; pad--) hak_report_str(r, " ");
  char out[2] = {0, 0};
  while (n > 0) {
    out[0] = digits[--n];
    hak_report_str(r, out);
  }
}

static void hak_report_line(hak_report_t* r, const char* label, uint64_t v) {
  hak_report_str(r, "  ");
  hak_report_str(r, label);
  size_t len = strlen(label);
  for (size_t pad = len; pad < 26; pad++) hak_report_str(r, " ");
  hak_report_u64(r, v, 14);
  hak_report_str(r, "\n");
}

static void hak_report_os(hak_report_t* r, const char* name, const hak_os_call_stats_t* c) {
  hak_report_str(r, "  ");
  hak_report_str(r, name);
  hak_report_u64(r, c->count, 12);
  hak_report_str(r, " calls");
  hak_report_u64(r, c->failures, 8);
  hak_report_str(r, " failed");
  hak_report_u64(r, c->nanos / 1000, 12);
  hak_report_str(r, " us");
  if (c->count > 0) {
    hak_report_u64(r, c->nanos / c->count, 10);
    hak_report_str(r, " ns/call");
  }
  hak_report_str(r, "\n");
}

static void hak_report_os_by_user(hak_report_t* r, const hak_stats_t* s) {
  static const char* const users[HAK_STATS_OS_USERS] = {"region ", "purge  ", "huge   ", "meta   "};
  static const char* const kinds[HAK_STATS_OS_KINDS] = {" mmap    ", " munmap  ",
                                                                " madvise ", " mremap  ", " mprotect"};
  hak_report_str(r, "OS calls by user:\n");
  for (int u = 0; u < HAK_STATS_OS_USERS; u++) {
    for (int k = 0; k < HAK_STATS_OS_KINDS; k++) {
      if (s->os_by[u][k].count == 0) continue;
      hak_report_str(r, "  ");
      hak_report_str(r, users[u]);
      hak_report_os(r, kinds[k], &s->os_by[u][k]);
    }
  }
}

/* "  name  hits H  misses M  hit rate P%  puts U  evictions E  cached N/S (B bytes)" */
static void hak_report_cache(hak_report_t* r, const char* name, const hak_cache_stats_t* c) {
  uint64_t lookups = c->hits + c->misses;
  hak_report_str(r, "  ");
  hak_report_str(r, name);
  hak_report_str(r, " hits");
  hak_report_u64(r, c->hits, 10);
  hak_report_str(r, "  misses");
  hak_report_u64(r, c->misses, 10);
  hak_report_str(r, "  hit rate");
  hak_report_u64(r, lookups == 0 ? 0 : c->hits * 100 / lookups, 4);
  hak_report_str(r, "%  puts");
  hak_report_u64(r, c->puts, 10);
  hak_report_str(r, "  evictions");
  hak_report_u64(r, c->evictions, 10);
  hak_report_str(r, "  cached");
  hak_report_u64(r, c->cached, 3);
  hak_report_str(r, "/");
  hak_report_u64(r, c->slots, 0);
  hak_report_str(r, " (");
  hak_report_u64(r, c->cached_bytes, 0);
  hak_report_str(r, " of ");
  hak_report_u64(r, c->bytes_limit, 0);
  hak_report_str(r, " bytes)\n");
}

/* "Latency (ns, 1 in 256 calls timed):" then a line per op: samples and percentiles. */
static void hak_report_latency(hak_report_t* r, const hak_stats_t* s) {
  static const char* const ops[HAK_STATS_LATENCY_OPS] = {"malloc", "free  "};
  hak_report_str(r, "Latency (ns; 1 in ");
  hak_report_u64(r, HAK_STATS_LATENCY_SAMPLE, 0);
  hak_report_str(r, " calls timed):\n              samples     p50     p95     p99   p99.9\n");
  for (int op = 0; op < HAK_STATS_LATENCY_OPS; op++) {
    hak_report_str(r, "  ");
    hak_report_str(r, ops[op]);
    hak_report_u64(r, s->latency_samples[op], 15);
    for (int p = 0; p < HAK_STATS_PERCENTILES; p++) hak_report_u64(r, s->latency_ns[op][p], 8);
    hak_report_str(r, "\n");
  }
}

HAK_EXPORT void hak_stats_print(int fd) {
  hak_stats_t s;
  hak_stats_collect(&s);
  hak_report_t r = {.fd = fd, .len = 0};
  hak_report_str(&r, "hakmem stats report (variant ");
  hak_report_str(&r, HAK_VARIANT_NAME);
  hak_report_str(&r, ", pid ");
  hak_report_u64(&r, (uint64_t)getpid(), 0);
  hak_report_str(&r, ")\nOS calls:\n");
  hak_report_os(&r, "mmap    ", &s.os_mmap);
  hak_report_os(&r, "munmap  ", &s.os_munmap);
  hak_report_os(&r, "madvise ", &s.os_madvise);
  hak_report_os(&r, "mremap  ", &s.os_mremap);
  hak_report_os(&r, "mprotect", &s.os_mprotect);
  hak_report_line(&r, "mapped bytes", s.os_mapped_bytes);
  hak_report_line(&r, "  of which metadata", s.os_meta_mapped_bytes);
  hak_report_line(&r, "live segments", s.segments_live);
  hak_report_os_by_user(&r, &s);
  hak_report_str(&r, "Region:\n");
  hak_report_line(&r, "chunks", s.region_chunks);
  hak_report_line(&r, "used bytes", s.region_used_bytes);
  hak_report_line(&r, "free dirty bytes", s.region_dirty_bytes);
  hak_report_line(&r, "purge pending bytes", s.region_pending_bytes);
  hak_report_line(&r, "dirty budget bytes", s.region_dirty_bytes_max);
  hak_report_line(&r, "free clean bytes", s.region_clean_bytes);
  hak_report_str(&r, "Purge batcher:\n");
  hak_report_line(&r, "delay ms", s.purge_delay_ms);
  hak_report_line(&r, "delay now ms (regret)", s.purge_delay_now_ms);
  hak_report_line(&r, "regrets", s.purge_regrets);
  hak_report_line(&r, "flushes", s.purge_flushes);
  hak_report_line(&r, "madvise ranges", s.purge_ranges);
  hak_report_line(&r, "bytes purged", s.purge_bytes);
  hak_report_line(&r, "bytes reused in time", s.purge_cancelled_bytes);
  hak_report_str(&r, "Huge-block caches:\n");
  hak_report_cache(&r, "bigcache", &s.bigcache);
  hak_report_cache(&r, "whale   ", &s.whale);
  hak_report_line(&r, "realloc grown in place", s.huge_grow_in_place);
  hak_report_line(&r, "realloc moved by mremap", s.huge_moved_by_remap);
  hak_report_line(&r, "realloc moved by copy", s.huge_moved_by_copy);
  hak_report_str(&r, "In use (a walk of the segments now):\n");
  hak_report_line(&r, "in use bytes", s.in_use_bytes);
  hak_report_line(&r, "in use blocks", s.in_use_blocks);
  hak_report_line(&r, "cached bytes", s.cached_bytes);
  hak_report_line(&r, "remote cache bytes", s.remote_cached_bytes);
  hak_report_line(&r, "free dirty slice bytes", s.free_dirty_bytes);
  hak_report_line(&r, "units used max bytes", s.region_used_max_bytes);
  hak_report_line(&r, "own mappings", s.dedicated_count);
  hak_report_line(&r, "own mapping bytes", s.dedicated_bytes);
  hak_report_line(&r, "own mappings in use bytes", s.dedicated_in_use_bytes);
  hak_report_line(&r, "resident bytes (RSS)", s.rss_bytes);
  hak_report_line(&r, "resident bytes, peak", s.rss_peak_bytes);
  if (!s.counters_enabled) {
    hak_report_str(&r, "(per-class counters need the stats variant)\n");
    hak_report_flush(&r);
    return;
  }
  hak_report_str(&r, "Paths:\n");
  hak_report_line(&r, "alloc fast", s.alloc_fast);
  hak_report_line(&r, "alloc slow", s.alloc_slow);
  hak_report_line(&r, "alloc large", s.alloc_large);
  hak_report_line(&r, "free local", s.free_local);
  hak_report_line(&r, "free remote", s.free_remote);
  hak_report_line(&r, "free delayed", s.free_delayed);
  hak_report_line(&r, "alloc from remote cache", s.alloc_remote_cached);
  hak_report_line(&r, "free into remote cache", s.free_remote_cached);
  hak_report_line(&r, "free large", s.free_large);
  hak_report_line(&r, "pages allocated", s.pages_allocated);
  hak_report_line(&r, "pages freed", s.pages_freed);
  hak_report_line(&r, "segments allocated", s.segments_allocated);
  hak_report_line(&r, "segments freed", s.segments_freed);
  hak_report_line(&r, "segments abandoned", s.segments_abandoned);
  hak_report_line(&r, "segments adopted", s.segments_adopted);
  hak_report_line(&r, "threads started", s.threads_started);
  hak_report_line(&r, "threads ended", s.threads_ended);
  hak_report_latency(&r, &s);
  hak_report_str(&r, "Size classes (classes never used are omitted):\n");
  hak_report_str(&r, "  class     size        allocs         frees\n");
  for (size_t i = 0; i < HAK_STATS_CLASS_COUNT; i++) {
    if (s.class_allocs[i] == 0 && s.class_frees[i] == 0) continue;
    hak_report_u64(&r, i, 7);
    if (i == HAK_CLASS_HUGE) hak_report_str(&r, "    > 1MiB");
    else hak_report_u64(&r, s.class_size[i], 9);
    hak_report_u64(&r, s.class_allocs[i], 14);
    hak_report_u64(&r, s.class_frees[i], 14);
    hak_report_str(&r, "\n");
  }
  hak_report_flush(&r);
}

/* glibc's malloc_stats report, line for line (one "arena": the region; its mmapped
 * chunks: whales in mappings of their own), 64-bit figures where glibc truncates to
 * unsigned int. Written with write(2) from a stack buffer: no malloc, no stdio. */
void hak_stats_print_glibc(int fd) {
  hak_stats_t s;
  hak_stats_collect(&s);
  hak_glibc_info_t g;
  hak_stats_glibc(&s, &g);
  hak_report_t r = {.fd = fd, .len = 0};
  hak_report_str(&r, "Arena 0:\nsystem bytes     = ");
  hak_report_u64(&r, g.arena, 10);
  hak_report_str(&r, "\nin use bytes     = ");
  hak_report_u64(&r, g.uordblks, 10);
  hak_report_str(&r, "\nTotal (incl. mmap):\nsystem bytes     = ");
  hak_report_u64(&r, g.arena + g.hblkhd, 10);
  hak_report_str(&r, "\nin use bytes     = ");
  hak_report_u64(&r, g.in_use_total, 10);
  hak_report_str(&r, "\nmax mmap regions = ");
  hak_report_u64(&r, g.hblks_max, 10);
  hak_report_str(&r, "\nmax mmap bytes   = ");
  hak_report_u64(&r, g.hblkhd_max, 10);
  hak_report_str(&r, "\n");
  hak_report_flush(&r);
}

/* ---- JSON -------------------------------------------------------------------------- */

/* A JSON writer on the report buffer: keys in order, commas placed by nesting depth. */
typedef struct hak_json_s {
  hak_report_t r;
  int depth;
  bool first[8];
} hak_json_t;

static void hak_json_open(hak_json_t* j, const char* key, char bracket) {
  if (j->depth > 0 && !j->first[j->depth]) hak_report_str(&j->r, ",");
  if (j->depth > 0) j->first[j->depth] = false;
  if (key != NULL) {
    hak_report_str(&j->r, "\"");
    hak_report_str(&j->r, key);
    hak_report_str(&j->r, "\":");
  }
  char b[2] = {bracket, 0};
  hak_report_str(&j->r, b);
  j->first[++j->depth] = true;
}

static void hak_json_close(hak_json_t* j, char bracket) {
  char b[2] = {bracket, 0};
  hak_report_str(&j->r, b);
  j->depth--;
}

static void hak_json_u64(hak_json_t* j, const char* key, uint64_t v) {
  if (!j->first[j->depth]) hak_report_str(&j->r, ",");
  j->first[j->depth] = false;
  if (key != NULL) {
    hak_report_str(&j->r, "\"");
    hak_report_str(&j->r, key);
    hak_report_str(&j->r, "\":");
  }
  hak_report_u64(&j->r, v, 0);
}

static void hak_json_str(hak_json_t* j, const char* key, const char* v) {
  if (!j->first[j->depth]) hak_report_str(&j->r, ",");
  j->first[j->depth] = false;
  hak_report_str(&j->r, "\"");
  hak_report_str(&j->r, key);
  hak_report_str(&j->r, "\":\"");
  hak_report_str(&j->r, v); /* hakmem's own names only: nothing to escape */
  hak_report_str(&j->r, "\"");
}

static void hak_json_os_call(hak_json_t* j, const char* key, const hak_os_call_stats_t* c) {
  hak_json_open(j, key, '{');
  hak_json_u64(j, "count", c->count);
  hak_json_u64(j, "failures", c->failures);
  hak_json_u64(j, "nanos", c->nanos);
  hak_json_close(j, '}');
}

static void hak_json_cache(hak_json_t* j, const char* key, const hak_cache_stats_t* c) {
  hak_json_open(j, key, '{');
  hak_json_u64(j, "hits", c->hits);
  hak_json_u64(j, "misses", c->misses);
  hak_json_u64(j, "puts", c->puts);
  hak_json_u64(j, "evictions", c->evictions);
  hak_json_u64(j, "cached", c->cached);
  hak_json_u64(j, "cached_bytes", c->cached_bytes);
  hak_json_u64(j, "slots", c->slots);
  hak_json_u64(j, "bytes_limit", c->bytes_limit);
  hak_json_close(j, '}');
}

#define HAK_JSON_FIELD(j, s, f) hak_json_u64((j), #f, (s)->f)

static void hak_json_os(hak_json_t* j, const hak_stats_t* s) {
  static const char* const users[HAK_STATS_OS_USERS] = {"region", "purge", "huge", "meta"};
  static const char* const kinds[HAK_STATS_OS_KINDS] = {"mmap", "munmap", "madvise", "mremap", "mprotect"};
  hak_json_open(j, "os", '{');
  hak_json_os_call(j, "mmap", &s->os_mmap);
  hak_json_os_call(j, "munmap", &s->os_munmap);
  hak_json_os_call(j, "madvise", &s->os_madvise);
  hak_json_os_call(j, "mremap", &s->os_mremap);
  hak_json_os_call(j, "mprotect", &s->os_mprotect);
  hak_json_open(j, "by_user", '{');
  for (int u = 0; u < HAK_STATS_OS_USERS; u++) {
    hak_json_open(j, users[u], '{');
    for (int k = 0; k < HAK_STATS_OS_KINDS; k++) hak_json_os_call(j, kinds[k], &s->os_by[u][k]);
    hak_json_close(j, '}');
  }
  hak_json_close(j, '}');
  hak_json_u64(j, "mapped_bytes", s->os_mapped_bytes);
  hak_json_u64(j, "meta_mapped_bytes", s->os_meta_mapped_bytes);
  hak_json_close(j, '}');
}

static void hak_json_memory(hak_json_t* j, const hak_stats_t* s) {
  hak_json_open(j, "memory", '{');
  HAK_JSON_FIELD(j, s, rss_bytes);
  HAK_JSON_FIELD(j, s, rss_peak_bytes);
  HAK_JSON_FIELD(j, s, in_use_bytes);
  HAK_JSON_FIELD(j, s, in_use_blocks);
  HAK_JSON_FIELD(j, s, cached_bytes);
  HAK_JSON_FIELD(j, s, remote_cached_bytes);
  HAK_JSON_FIELD(j, s, free_dirty_bytes);
  HAK_JSON_FIELD(j, s, segments_live);
  HAK_JSON_FIELD(j, s, dedicated_count);
  HAK_JSON_FIELD(j, s, dedicated_bytes);
  HAK_JSON_FIELD(j, s, dedicated_in_use_bytes);
  HAK_JSON_FIELD(j, s, dedicated_max_count);
  HAK_JSON_FIELD(j, s, dedicated_max_bytes);
  hak_json_close(j, '}');
  hak_json_open(j, "region", '{');
  HAK_JSON_FIELD(j, s, region_chunks);
  HAK_JSON_FIELD(j, s, region_used_bytes);
  HAK_JSON_FIELD(j, s, region_used_max_bytes);
  HAK_JSON_FIELD(j, s, region_dirty_bytes);
  HAK_JSON_FIELD(j, s, region_pending_bytes);
  HAK_JSON_FIELD(j, s, region_clean_bytes);
  HAK_JSON_FIELD(j, s, region_keep_bytes);
  HAK_JSON_FIELD(j, s, region_dirty_bytes_max);
  hak_json_close(j, '}');
  hak_json_open(j, "purge", '{');
  HAK_JSON_FIELD(j, s, purge_delay_ms);
  HAK_JSON_FIELD(j, s, purge_delay_now_ms);
  HAK_JSON_FIELD(j, s, purge_regrets);
  HAK_JSON_FIELD(j, s, purge_flushes);
  HAK_JSON_FIELD(j, s, purge_ranges);
  HAK_JSON_FIELD(j, s, purge_bytes);
  HAK_JSON_FIELD(j, s, purge_cancelled_bytes);
  hak_json_close(j, '}');
  hak_json_cache(j, "bigcache", &s->bigcache);
  hak_json_cache(j, "whale", &s->whale);
  hak_json_open(j, "huge_realloc", '{');
  HAK_JSON_FIELD(j, s, huge_grow_in_place);
  HAK_JSON_FIELD(j, s, huge_moved_by_remap);
  HAK_JSON_FIELD(j, s, huge_moved_by_copy);
  hak_json_close(j, '}');
}

static void hak_json_counters(hak_json_t* j, const hak_stats_t* s) {
  hak_json_open(j, "paths", '{');
  HAK_JSON_FIELD(j, s, alloc_fast);
  HAK_JSON_FIELD(j, s, alloc_slow);
  HAK_JSON_FIELD(j, s, alloc_large);
  HAK_JSON_FIELD(j, s, free_local);
  HAK_JSON_FIELD(j, s, free_remote);
  HAK_JSON_FIELD(j, s, free_delayed);
  HAK_JSON_FIELD(j, s, alloc_remote_cached);
  HAK_JSON_FIELD(j, s, free_remote_cached);
  HAK_JSON_FIELD(j, s, free_large);
  HAK_JSON_FIELD(j, s, pages_allocated);
  HAK_JSON_FIELD(j, s, pages_freed);
  HAK_JSON_FIELD(j, s, segments_allocated);
  HAK_JSON_FIELD(j, s, segments_freed);
  HAK_JSON_FIELD(j, s, segments_abandoned);
  HAK_JSON_FIELD(j, s, segments_adopted);
  HAK_JSON_FIELD(j, s, threads_started);
  HAK_JSON_FIELD(j, s, threads_ended);
  hak_json_close(j, '}');
  static const char* const ops[HAK_STATS_LATENCY_OPS] = {"malloc", "free"};
  static const char* const pcts[HAK_STATS_PERCENTILES] = {"p50_ns", "p95_ns", "p99_ns", "p999_ns"};
  hak_json_open(j, "latency", '{');
  hak_json_u64(j, "sample_every", HAK_STATS_LATENCY_SAMPLE);
  for (int op = 0; op < HAK_STATS_LATENCY_OPS; op++) {
    hak_json_open(j, ops[op], '{');
    hak_json_u64(j, "samples", s->latency_samples[op]);
    for (int p = 0; p < HAK_STATS_PERCENTILES; p++) hak_json_u64(j, pcts[p], s->latency_ns[op][p]);
    hak_json_close(j, '}');
  }
  hak_json_close(j, '}');
  hak_json_open(j, "classes", '['); /* the classes used; size 0: blocks above the pools */
  for (size_t i = 0; i < HAK_STATS_CLASS_COUNT; i++) {
    if (s->class_allocs[i] == 0 && s->class_frees[i] == 0) continue;
    hak_json_open(j, NULL, '{');
    hak_json_u64(j, "class", i);
    hak_json_u64(j, "size", s->class_size[i]);
    hak_json_u64(j, "allocs", s->class_allocs[i]);
    hak_json_u64(j, "frees", s->class_frees[i]);
    hak_json_close(j, '}');
  }
  hak_json_close(j, ']');
}

HAK_EXPORT void hak_stats_print_json(int fd) {
  hak_stats_t s;
  hak_stats_collect(&s);
  hak_json_t j = {.r = {.fd = fd, .len = 0}, .depth = 0};
  hak_json_open(&j, NULL, '{');
  hak_json_str(&j, "hakmem", HAKMEM_VERSION);
  hak_json_str(&j, "variant", HAK_VARIANT_NAME);
  hak_json_u64(&j, "pid", (uint64_t)getpid());
  hak_json_u64(&j, "stats_version", s.version);
  hak_json_u64(&j, "counters_enabled", (uint64_t)s.counters_enabled);
  hak_json_os(&j, &s);
  hak_json_memory(&j, &s);
  if (s.counters_enabled) hak_json_counters(&j, &s);
  hak_json_close(&j, '}');
  hak_report_str(&j.r, "\n");
  hak_report_flush(&j.r);
}

/* ---- At exit --------------------------------------------------------------------------- */

#if HAK_STATS
/* HAKMEM_STATS_FILE with each %p replaced by the pid (%% by %); false if too long. */
static bool hak_stats_file_name(char* out, size_t cap) {
  char pid[24];
  size_t n = 0, len = 0;
  for (uint64_t v = (uint64_t)getpid(); v != 0 || n == 0; v /= 10) pid[n++] = (char)('0' + v % 10);
  for (const char* c = hak_options.stats_file; *c != '\0'; c++) {
    if (c[0] == '%' && (c[1] == 'p' || c[1] == '%')) {
      c++;
      if (*c == '%') {
        if (len + 1 >= cap) return false;
        out[len++] = '%';
        continue;
      }
      if (len + n >= cap) return false;
      for (size_t i = n; i > 0; i--) out[len++] = pid[i - 1];
      continue;
    }
    if (len + 1 >= cap) return false;
    out[len++] = *c;
  }
  out[len] = '\0';
  return true;
}
#endif

/* The stats variant's report at exit (HAKMEM_STATS=1 or json, hak_options.c): on
 * stderr or into HAKMEM_STATS_FILE; with HAKMEM_STATS_CHILDREN=0 only in the process
 * that read the options (a forked child has another pid). */
void hak_stats_atexit(void) {
#if HAK_STATS
  if (hak_options.stats_report == HAK_STATS_OFF) return;
  if (!hak_options.stats_children && (int)getpid() != hak_options.stats_pid) return;
  int fd = 2;
  if (hak_options.stats_file[0] != '\0') {
    char name[HAK_STATS_FILE_MAX + 64];
    fd = hak_stats_file_name(name, sizeof(name)) ? open(name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : -1;
    if (fd < 0) {
      hak_report_t r = {.fd = 2, .len = 0};
      hak_report_str(&r, "hakmem: warning: cannot write the stats report to ");
      hak_report_str(&r, hak_options.stats_file);
      hak_report_str(&r, "; writing it here\n");
      hak_report_flush(&r);
      fd = 2;
    }
  }
  if (hak_options.stats_report == HAK_STATS_JSON) hak_stats_print_json(fd);
  else hak_stats_print(fd);
  if (fd != 2) close(fd);
#endif
}
