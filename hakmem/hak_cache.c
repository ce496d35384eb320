/* SPDX-License-Identifier: MIT */
/* hak_cache.c - caches of freed big blocks and whales, handed out again with no system
 * call and no search of the region.
 *
 *   BigCache  per heap, no lock: the pages of big blocks (above the pools, up to 63
 *             slices: 1 MiB .. 4032 KiB) its thread freed, whoever allocated them (big
 *             segments belong to nobody), up to HAKMEM_BIGCACHE_SLOTS and _BYTES. The
 *             best fit wins; a larger page is cut to size, its tail going back to the
 *             big segments' free spans. The oldest entry is evicted there (still
 *             resident: any big size reuses it).
 *   whale     global, one lock: freed whales (runs of 4 MiB units, or mappings of their
 *             own), a FIFO ring of HAKMEM_WHALE_SLOTS; the best fit wins if it wastes at
 *             most HAKMEM_WHALE_WASTE_PCT; a larger region run is split, its tail going
 *             back to the region. Bounded by slots and bytes; the oldest entry is evicted
 *             to the region (kept mapped, purged later), never unmapped here. Entries
 *             unused for the purge delay are evicted on the next purge tick.
 *
 * Hardened level 2: a block waits in either cache PROT_NONE (a use after free faults),
 * made accessible again as it leaves (reuse or eviction), and the newest entry is not
 * handed out (see hak_cache_hold). */
#include "hak_internal.h"

/* ---- Quarantine (hardened level 2) ------------------------------------------------------ */

/* Makes a cached block's memory inaccessible, or accessible again as it leaves the
 * cache (hak_os_guard: refusals leave it unguarded or give it fresh pages). */
#if HAK_HARDEN_LARGE_QUARANTINE
static void hak_cache_protect(void* block, size_t bytes, bool accessible) {
  if (!hak_large_quarantine_on()) return; /* HAKMEM_LARGE_QUARANTINE=0 */
  hak_os_guard(block, bytes, accessible, HAK_OS_USER_HUGE,
               "a cached block could not be made accessible again (out of memory)");
}
/* A big page going in is closed and its slices marked, so that wherever they end up (the
 * page handed out again, cut, or evicted into a free span) they are opened only as a
 * block is carved there again (hak_span_open). */
static void hak_bigcache_protect(hak_page_t* page, bool accessible) {
  if (!hak_large_quarantine_on()) return;
  hak_segment_t* segment = hak_segment_of(page);
  uint64_t bits = hak_bits_range(page->slice_index, page->slice_count);
  if (accessible) atomic_fetch_and_explicit(&segment->noaccess_slices, ~bits, memory_order_relaxed);
  hak_cache_protect(hak_page_area(page), hak_page_bytes_of(page), accessible);
  if (!accessible) atomic_fetch_or_explicit(&segment->noaccess_slices, bits, memory_order_relaxed);
}
#define hak_whale_protect(segment, accessible) \
  hak_cache_protect((segment)->whale_block, hak_whale_span(segment), (accessible))
#else
#define hak_bigcache_protect(page, accessible) ((void)(page), (void)(accessible))
#define hak_whale_protect(segment, accessible) ((void)(segment), (void)(accessible))
#endif

/* Entries, newest first, that neither a request nor a search for resident memory may
 * take: hardened level 2 holds the last block freed until another one comes in (or the
 * purge delay evicts it), so the next allocation of its size lands elsewhere and a use
 * after free of it still faults. */
static size_t hak_cache_hold(void) {
  return hak_large_quarantine_on() ? 1 : 0;
}

/* ---- BigCache --------------------------------------------------------------------------- */

void hak_bigcache_close(hak_page_t* page) {
  hak_bigcache_protect(page, false);
}

static _Atomic uint64_t hak_bigcache_exited[4]; /* hits, misses, puts, evictions of exited heaps */

static size_t hak_bigcache_slots(void) {
  return hak_options.bigcache_slots < HAK_BIGCACHE_SLOTS_MAX ? hak_options.bigcache_slots : HAK_BIGCACHE_SLOTS_MAX;
}

/* The owner thread writes a BigCache's counters; hak_stats_get reads them from any
 * thread, so writes are relaxed atomic stores (plain moves on x86). */
#define hak_bigcache_set(field, value) __atomic_store_n(&(field), (value), __ATOMIC_RELAXED)
#define hak_bigcache_add(field, n) hak_bigcache_set(field, (field) + (n))

/* Takes entry i out (still inaccessible under the large quarantine: the caller opens
 * what it hands out; an evicted page stays closed in the big segments' free spans). */
static hak_page_t* hak_bigcache_remove(hak_bigcache_t* cache, size_t i) {
  hak_page_t* page = cache->pages[i];
  hak_bigcache_add(cache->bytes, -hak_page_bytes_of(page));
  for (size_t j = i + 1; j < cache->count; j++) {
    cache->pages[j - 1] = cache->pages[j];
    cache->put_ms[j - 1] = cache->put_ms[j];
  }
  hak_bigcache_add(cache->count, -(size_t)1);
  return page;
}

/* Evicts the oldest entry to the big segments' free spans, idle since it came in. */
static void hak_bigcache_evict_oldest(hak_bigcache_t* cache) {
  uint64_t idle_since = cache->put_ms[0];
  hak_segment_big_free(hak_bigcache_remove(cache, 0), idle_since);
  hak_bigcache_add(cache->evictions, 1);
}

hak_page_t* hak_bigcache_get(hak_heap_t* heap, size_t slices) {
  hak_bigcache_t* cache = &heap->bigcache;
  size_t hold = hak_cache_hold();
  long best = -1;
  for (size_t i = 0; i + hold < cache->count; i++) {
    if (cache->pages[i]->slice_count < slices) continue;
    if (best < 0 || cache->pages[i]->slice_count <= cache->pages[best]->slice_count) best = (long)i;
  }
  if (best < 0) {
    hak_bigcache_add(cache->misses, 1);
    return NULL;
  }
  hak_bigcache_add(cache->hits, 1);
  hak_page_t* page = hak_bigcache_remove(cache, (size_t)best);
  if (page->slice_count > slices) hak_segment_big_resize(page, slices); /* the tail stays closed */
  hak_bigcache_protect(page, true);
  return page;
}

void hak_bigcache_put(hak_heap_t* heap, hak_page_t* page) {
  hak_bigcache_t* cache = &heap->bigcache;
  size_t slots = hak_bigcache_slots(), bytes = hak_page_bytes_of(page);
  uint64_t now = hak_purge_now_ms();
  if (slots == 0 || bytes > hak_options.bigcache_bytes) {
    hak_bigcache_close(page);
    hak_segment_big_free(page, now);
    return;
  }
  while (cache->count > 0 && (cache->count >= slots || cache->bytes + bytes > hak_options.bigcache_bytes)) {
    hak_bigcache_evict_oldest(cache);
  }
  hak_bigcache_protect(page, false);
  cache->pages[cache->count] = page;
  cache->put_ms[cache->count] = now;
  hak_bigcache_add(cache->count, 1);
  hak_bigcache_add(cache->bytes, bytes);
  hak_bigcache_add(cache->puts, 1);
}

bool hak_bigcache_flush(hak_heap_t* heap, bool all) {
  hak_bigcache_t* cache = &heap->bigcache;
  size_t keep = all ? 0 : hak_cache_hold();
  if (cache->count <= keep) return false;
  while (cache->count > keep) hak_bigcache_evict_oldest(cache);
  return true;
}

/* Entries unused for the purge delay go back to the big segments, where they decay. */
void hak_bigcache_trim(hak_heap_t* heap, uint64_t now) {
  hak_bigcache_t* cache = &heap->bigcache;
  uint64_t delay = hak_purge_delay_ms();
  while (cache->count > 0 && cache->put_ms[0] + delay <= now) hak_bigcache_evict_oldest(cache);
}

void hak_bigcache_fold(const hak_heap_t* heap) {
  const hak_bigcache_t* c = &heap->bigcache;
  atomic_fetch_add_explicit(&hak_bigcache_exited[0], c->hits, memory_order_relaxed);
  atomic_fetch_add_explicit(&hak_bigcache_exited[1], c->misses, memory_order_relaxed);
  atomic_fetch_add_explicit(&hak_bigcache_exited[2], c->puts, memory_order_relaxed);
  atomic_fetch_add_explicit(&hak_bigcache_exited[3], c->evictions, memory_order_relaxed);
}

static void hak_bigcache_visit(const hak_heap_t* heap, void* arg) {
  hak_cache_stats_t* out = arg;
  const hak_bigcache_t* c = &heap->bigcache;
  out->hits += __atomic_load_n(&c->hits, __ATOMIC_RELAXED);
  out->misses += __atomic_load_n(&c->misses, __ATOMIC_RELAXED);
  out->puts += __atomic_load_n(&c->puts, __ATOMIC_RELAXED);
  out->evictions += __atomic_load_n(&c->evictions, __ATOMIC_RELAXED);
  out->cached += __atomic_load_n(&c->count, __ATOMIC_RELAXED);
  out->cached_bytes += __atomic_load_n(&c->bytes, __ATOMIC_RELAXED);
}

static void hak_bigcache_stats_read(hak_cache_stats_t* out) {
  *out = (hak_cache_stats_t){0};
  out->hits = atomic_load_explicit(&hak_bigcache_exited[0], memory_order_relaxed);
  out->misses = atomic_load_explicit(&hak_bigcache_exited[1], memory_order_relaxed);
  out->puts = atomic_load_explicit(&hak_bigcache_exited[2], memory_order_relaxed);
  out->evictions = atomic_load_explicit(&hak_bigcache_exited[3], memory_order_relaxed);
  hak_heap_visit_all(hak_bigcache_visit, out);
  out->slots = hak_bigcache_slots();
  out->bytes_limit = hak_options.bigcache_bytes;
}

/* ---- Whale ring ---------------------------------------------------------------------------- */

#define HAK_WHALE_SLOTS_MAX 64

typedef struct hak_whale_entry_s {
  hak_segment_t* segment;
  uint64_t put_ms;
} hak_whale_entry_t;

typedef struct hak_whale_ring_s {
  size_t count;
  size_t bytes;
  uint64_t hits, misses, puts, evictions;
  hak_whale_entry_t entries[HAK_WHALE_SLOTS_MAX]; /* oldest first */
} hak_whale_ring_t;

/* Evictions are collected under the lock and released after it. */
typedef struct hak_whale_evicted_s {
  size_t count;
  hak_whale_entry_t entries[HAK_WHALE_SLOTS_MAX];
} hak_whale_evicted_t;

static hak_lock_t hak_whale_lock = HAK_LOCK_INIT;
static hak_whale_ring_t hak_whales;

void hak_cache_fork_lock(void) {
  hak_lock(&hak_whale_lock);
}

void hak_cache_fork_unlock(void) {
  hak_unlock(&hak_whale_lock);
}

static size_t hak_whale_slots(void) {
  return hak_options.whale_slots < HAK_WHALE_SLOTS_MAX ? hak_options.whale_slots : HAK_WHALE_SLOTS_MAX;
}

/* Takes entry i out, still inaccessible under the large quarantine: hak_whale_get
 * opens what it hands out; an evicted whale stays closed in the region. */
static hak_segment_t* hak_whale_remove(size_t i) {
  hak_segment_t* segment = hak_whales.entries[i].segment;
  hak_whales.bytes -= segment->mapping_size;
  for (size_t j = i + 1; j < hak_whales.count; j++) hak_whales.entries[j - 1] = hak_whales.entries[j];
  hak_whales.count--;
  return segment;
}

static void hak_whale_evict_first(hak_whale_evicted_t* out) {
  out->entries[out->count++] = hak_whales.entries[0];
  hak_whale_remove(0);
  hak_whales.evictions++;
}

static void hak_whale_release_all(const hak_whale_evicted_t* evicted) {
  for (size_t i = 0; i < evicted->count; i++) {
    hak_whale_release(evicted->entries[i].segment, evicted->entries[i].put_ms, hak_large_quarantine_on());
  }
}

/* A run fits if it holds `need` bytes from its start (header, offset, block) and, for
 * alignments above a unit, its start is placed right. */
static bool hak_whale_fits(const hak_segment_t* segment, size_t need, size_t align, size_t align_offset) {
  if (segment->mapping_size < need) return false;
  return align <= HAK_SEGMENT_SIZE || (((uintptr_t)segment + align_offset) & (align - 1)) == 0;
}

/* Index of the best entry (fewest units, newest on ties), or -1. Lock held. */
static long hak_whale_best(size_t need, size_t align, size_t align_offset) {
  size_t hold = hak_cache_hold();
  long best = -1;
  for (size_t i = 0; i + hold < hak_whales.count; i++) {
    const hak_segment_t* s = hak_whales.entries[i].segment;
    if (!hak_whale_fits(s, need, align, align_offset)) continue;
    if (best < 0 || s->units <= hak_whales.entries[best].segment->units) best = (long)i;
  }
  return best;
}

hak_segment_t* hak_whale_get(size_t need, size_t align, size_t align_offset) {
  size_t units = (need + HAK_SEGMENT_MASK) >> HAK_SEGMENT_SHIFT;
  hak_segment_t* found = NULL;
  void* tail = NULL;
  size_t tail_units = 0;
  uint64_t tail_idle = 0;
  hak_lock(&hak_whale_lock);
  long i = hak_whales.count > 0 ? hak_whale_best(need, align, align_offset) : -1;
  if (i >= 0) {
    hak_segment_t* s = hak_whales.entries[i].segment;
    if (s->units <= units + units * hak_options.whale_waste_pct / 100) {
      found = hak_whale_remove((size_t)i);
    } else if (!s->is_dedicated) { /* too big: keep what is needed, the tail to the region */
      tail_idle = hak_whales.entries[i].put_ms;
      found = hak_whale_remove((size_t)i);
      tail = (uint8_t*)found + (units << HAK_SEGMENT_SHIFT);
      tail_units = found->units - units;
    }
  }
  if (found != NULL) hak_whales.hits++;
  else hak_whales.misses++;
  hak_unlock(&hak_whale_lock);
  if (tail != NULL) {
    /* The tail goes back to the region (under the large quarantine still PROT_NONE:
     * whoever takes it again opens it). */
    if (hak_large_quarantine_on()) hak_region_note_noaccess(tail, tail_units << HAK_SEGMENT_SHIFT);
    hak_region_free(tail, tail_units, tail_idle, false);
    found->units = units;
    found->mapping_size = units << HAK_SEGMENT_SHIFT;
    if (found->data_end > found->mapping_size) found->data_end = found->mapping_size;
  }
  if (found != NULL) hak_whale_protect(found, true); /* what is handed out (the tail stays closed) */
  return found;
}

bool hak_whale_put(hak_segment_t* segment) {
  size_t slots = hak_whale_slots(), limit = hak_options.whale_bytes;
  if (slots == 0 || segment->mapping_size > limit) return false;
  hak_whale_protect(segment, false);
  uint64_t now = hak_purge_now_ms();
  hak_whale_evicted_t evicted;
  evicted.count = 0;
  hak_lock(&hak_whale_lock);
  while (hak_whales.count > 0 && (hak_whales.count >= slots || hak_whales.bytes + segment->mapping_size > limit)) {
    hak_whale_evict_first(&evicted);
  }
  hak_whales.entries[hak_whales.count++] = (hak_whale_entry_t){segment, now};
  hak_whales.bytes += segment->mapping_size;
  hak_whales.puts++;
  hak_unlock(&hak_whale_lock);
  hak_whale_release_all(&evicted);
  hak_purge_schedule(now + hak_purge_delay_ms());
  return true;
}

/* Gives the oldest whale to the region, so that a region that would otherwise hand out
 * clean units (page faults to come) reuses resident memory the ring holds (not the
 * entries hak_cache_hold keeps from reuse). */
bool hak_whale_evict_oldest(void) {
  hak_whale_evicted_t evicted;
  evicted.count = 0;
  hak_lock(&hak_whale_lock);
  if (hak_whales.count > hak_cache_hold()) hak_whale_evict_first(&evicted);
  hak_unlock(&hak_whale_lock);
  hak_whale_release_all(&evicted);
  return evicted.count > 0;
}

/* Evicts whales unused for the purge delay (every whale with `all`) to the region,
 * which purges them at once since they have been idle that long already. */
void hak_whale_trim(bool all) {
  uint64_t now = hak_purge_now_ms(), delay = hak_purge_delay_ms();
  uint64_t next_due = UINT64_MAX;
  hak_whale_evicted_t evicted;
  evicted.count = 0;
  hak_lock(&hak_whale_lock);
  while (hak_whales.count > 0 && (all || hak_whales.entries[0].put_ms + delay <= now)) {
    hak_whale_evict_first(&evicted);
  }
  if (hak_whales.count > 0) next_due = hak_whales.entries[0].put_ms + delay;
  hak_unlock(&hak_whale_lock);
  hak_whale_release_all(&evicted);
  if (next_due != UINT64_MAX) hak_purge_schedule(next_due);
}

/* ---- Stats ------------------------------------------------------------------------------- */

void hak_cache_stats_read(hak_stats_t* out) {
  hak_bigcache_stats_read(&out->bigcache);
  hak_lock(&hak_whale_lock);
  out->whale = (hak_cache_stats_t){hak_whales.hits,  hak_whales.misses, hak_whales.puts,
                                   hak_whales.evictions, hak_whales.count, hak_whales.bytes,
                                   hak_whale_slots(), hak_options.whale_bytes};
  hak_unlock(&hak_whale_lock);
}
