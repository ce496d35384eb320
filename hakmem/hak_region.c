/* SPDX-License-Identifier: MIT */
/* hak_region.c - address space for segments and huge blocks.
 *
 * The region reserves address space in chunks of 256 MiB (aligned to their size,
 * placed at a random base per process, one VMA each, no commit charge) and hands out
 * runs of 4 MiB units. Unit 0 of a chunk holds the chunk's descriptor. Freed runs stay
 * mapped: this is the region cache. Their pages are purged later, in batches, once the
 * purge delay has passed (hak_purge.c); reusing a unit before that cancels its purge,
 * and allocation prefers units that may still be resident, so hot memory is reused
 * without page faults. Whole chunks are unmapped only when more than
 * HAKMEM_REGION_KEEP of free address space is kept, or by hak_collect(true).
 *
 * Per unit the descriptor keeps: used (handed out), nonzero (may hold data: cleared
 * only by a DONTNEED purge), dirty (may have resident pages: cleared by any purge),
 * pending (free, purge scheduled; expire[] says when), purging (in a purge call right
 * now: neither free nor handed out), purged (purged and not taken since; expire[] says
 * when: taking it soon after is purge regret, hak_purge.c), run_starts (where freed
 * runs began: a new run placed there follows the old layout, so a block growing by
 * realloc finds the room its predecessor had), heads (units in use where a run handed out
 * begins: its header is there; the usage walk reads headers there only), thp_lean / thp_huge (the unit's pages
 * are all advised MADV_NOHUGEPAGE / MADV_HUGEPAGE; neither: unknown or mixed), guarded
 * (hardened level 2: a segment's guard pages are PROT_NONE there). One lock guards every
 * descriptor; purge calls, madvise and mmap/munmap run outside it.
 *
 * Transparent huge pages (HAKMEM_THP): under the kernel's `always` setting a 4 MiB
 * segment holding a few small blocks would fault in a 2 MiB huge page. Unless the mode
 * is `system`, a new chunk is advised MADV_NOHUGEPAGE as a whole (one call); a run then
 * keeps that advice whatever it serves, except whales in `whales` mode, advised
 * MADV_HUGEPAGE when taken (and back to NOHUGEPAGE when a segment takes the units).
 *
 * Under AddressSanitizer, units may come back still poisoned by the pool blocks that
 * lived there: whoever takes them unpoisons what it uses (segment headers, whale
 * headers and blocks, pages as they are laid out). */
#include "hak_internal.h"

typedef struct hak_chunk_s {
  struct hak_chunk_s* next;
  uint64_t used;    /* bit 0 (this descriptor's unit) is always set */
  uint64_t nonzero;
  uint64_t dirty;
  uint64_t pending;
  uint64_t purging;
  uint64_t purged;     /* free units the delay purged, not taken since (expire[]: when) */
  uint64_t early;      /* pending units the dirty budget brought forward (not the delay) */
  uint64_t dense;      /* dirty units a segment gave back: most of their pages are resident */
  uint64_t run_starts; /* free units where a freed run began */
  uint64_t heads;      /* units in use where a run handed out begins (its header) */
  uint64_t thp_lean;   /* units wholly advised MADV_NOHUGEPAGE */
  uint64_t thp_huge;   /* units wholly advised MADV_HUGEPAGE */
  uint64_t guarded;    /* units whose segment guard pages are PROT_NONE (hardened level 2) */
  uint64_t noaccess;   /* free units holding a freed large block kept PROT_NONE (hardened
                          level 2's large quarantine): opened again when taken */
  uint64_t expire[HAK_CHUNK_UNITS];
} hak_chunk_t;

static hak_lock_t hak_region_lock = HAK_LOCK_INIT;
static hak_lock_t hak_region_purge_lock = HAK_LOCK_INIT; /* one purge pass at a time */
static hak_chunk_t* hak_region_chunks;
static size_t hak_region_chunk_count;
static size_t hak_region_free_units; /* free units in all chunks */
static size_t hak_region_used_max_units; /* the most units in use at once */
/* Whales in mappings of their own, linked through ->next/->prev (hak_region_usage). */
static hak_segment_t* hak_region_dedicated;
static size_t hak_region_dedicated_count, hak_region_dedicated_bytes;
static size_t hak_region_dedicated_max_count, hak_region_dedicated_max_bytes;
static _Atomic uint64_t hak_region_cancelled_units;

void hak_region_fork_lock(void) {
  hak_lock(&hak_region_purge_lock);
  hak_lock(&hak_region_lock);
}

void hak_region_fork_unlock(void) {
  hak_unlock(&hak_region_lock);
  hak_unlock(&hak_region_purge_lock);
}

/* ---- Bits ------------------------------------------------------------------------------ */

/* Bit i set iff bits i .. i+n-1 of `avail` are all set. */
static uint64_t hak_bits_run_starts(uint64_t avail, size_t n) {
  uint64_t m = avail;
  for (size_t have = 1; have < n && m != 0;) {
    size_t step = have * 2 <= n ? have : n - have;
    m &= m >> step;
    have += step;
  }
  return m;
}

static hak_chunk_t* hak_region_chunk_of(const void* run) {
  return (hak_chunk_t*)((uintptr_t)run & ~(uintptr_t)(HAK_CHUNK_SIZE - 1));
}

static size_t hak_region_unit_index(const hak_chunk_t* chunk, const void* run) {
  return (size_t)(((uintptr_t)run - (uintptr_t)chunk) >> HAK_SEGMENT_SHIFT);
}

static uint8_t* hak_region_unit_addr(hak_chunk_t* chunk, size_t index) {
  return (uint8_t*)chunk + (index << HAK_SEGMENT_SHIFT);
}

/* Units of `chunk` where a run may start so that (start + align_offset) is a multiple
 * of align (align above a unit; smaller alignments hold for every unit). */
static uint64_t hak_region_aligned_starts(hak_chunk_t* chunk, size_t align, size_t align_offset) {
  if (align <= HAK_SEGMENT_SIZE) return ~(uint64_t)0;
  uint64_t mask = 0;
  for (size_t i = 1; i < HAK_CHUNK_UNITS; i++) {
    if ((((uintptr_t)hak_region_unit_addr(chunk, i) + align_offset) & (align - 1)) == 0) mask |= (uint64_t)1 << i;
  }
  return mask;
}

/* ---- Chunks ------------------------------------------------------------------------------ */

static hak_chunk_t* hak_region_chunk_new(void) {
  hak_chunk_t* chunk = hak_os_map_aligned(HAK_CHUNK_SIZE, HAK_CHUNK_SIZE, 0, HAK_OS_MAP_NORESERVE, HAK_OS_USER_REGION);
  if (chunk == NULL) return NULL;
  /* before the first write: writing the descriptor would fault in a huge page */
  bool lean = hak_options.thp_mode != HAK_THP_SYSTEM && hak_os_advise_thp(chunk, HAK_CHUNK_SIZE, false, HAK_OS_USER_REGION);
  chunk->next = NULL;
  chunk->used = 1;
  chunk->nonzero = chunk->dirty = 1;
  chunk->pending = chunk->purging = chunk->purged = chunk->early = chunk->run_starts = chunk->heads = 0;
  chunk->thp_lean = lean ? ~(uint64_t)0 : 0;
  chunk->thp_huge = 0;
  chunk->noaccess = 0;
  return chunk;
}

static void hak_region_chunk_link(hak_chunk_t* chunk) {
  chunk->next = hak_region_chunks;
  hak_region_chunks = chunk;
  hak_region_chunk_count++;
  hak_region_free_units += HAK_CHUNK_UNITS - 1;
}

/* ---- Allocation -------------------------------------------------------------------------- */

/* Units purged and taken again: purge regret if the newest purge among them was less
 * than a delay ago. Lock held. */
static void hak_region_note_reuse(hak_chunk_t* chunk, uint64_t run) {
  uint64_t regret = chunk->purged & run;
  if (regret == 0) return;
  chunk->purged &= ~run;
  hak_purge_regret(hak_bits_latest(regret, chunk->expire));
}

/* Takes units [start, start+n) of chunk (lock held) and says what they held; a new run
 * (is_head) or the extension of one in use. */
static void* hak_region_take(hak_chunk_t* chunk, size_t start, size_t n, bool is_head, hak_run_state_t* state) {
  uint64_t run = hak_bits_range(start, n);
  uint64_t cancelled = chunk->pending & run;
  if (cancelled != 0) {
    atomic_fetch_add_explicit(&hak_region_cancelled_units, (uint64_t)__builtin_popcountll(cancelled),
                              memory_order_relaxed);
  }
  chunk->pending &= ~run;
  chunk->early &= ~run;
  chunk->run_starts &= ~run;
  hak_region_note_reuse(chunk, run);
  state->is_zero = (chunk->nonzero & run) == 0;
  state->is_resident = (chunk->dirty & run) == run;
  state->dense_units = (chunk->dense & chunk->dirty & run) >> start;
  uint64_t dirty = chunk->dirty & run;
  state->resident_units = dirty == 0 ? 0 : (size_t)(64 - __builtin_clzll(dirty)) - start;
  if ((chunk->noaccess & run) != 0) {
    /* Opened under the lock: the usage walk reads the header of every run in use, and
     * must not find one still PROT_NONE (rare: only where a freed large block waited). */
    hak_os_guard(hak_region_unit_addr(chunk, start), n << HAK_SEGMENT_SHIFT, true, HAK_OS_USER_REGION,
                 "units a freed block left inaccessible could not be opened again (out of memory)");
    chunk->noaccess &= ~run;
  }
  chunk->dense &= ~run;
  chunk->used |= run;
  if (is_head) chunk->heads |= (uint64_t)1 << start;
  chunk->nonzero |= run;
  chunk->dirty |= run;
  hak_region_free_units -= n;
  size_t in_use = hak_region_chunk_count * (HAK_CHUNK_UNITS - 1) - hak_region_free_units;
  if (in_use > hak_region_used_max_units) hak_region_used_max_units = in_use;
  return hak_region_unit_addr(chunk, start);
}

/* The start among `starts` whose run of n units holds the most units that may be
 * resident (the lowest such start); *dirty_units says how many. */
static size_t hak_region_most_dirty_start(const hak_chunk_t* chunk, uint64_t starts, size_t n, int* dirty_units) {
  size_t best = (size_t)__builtin_ctzll(starts);
  int best_dirty = -1;
  for (uint64_t s = starts; s != 0; s &= s - 1) {
    size_t start = (size_t)__builtin_ctzll(s);
    int dirty = __builtin_popcountll(chunk->dirty & hak_bits_range(start, n));
    if (dirty > best_dirty) {
      best = start;
      best_dirty = dirty;
    }
  }
  *dirty_units = best_dirty;
  return best;
}

/* A run of n free units whose units may all be resident (reuse without page faults),
 * preferring one where a freed run began; or with !hot_only any free run: the one with
 * the most units that may be resident (a request that no freed run fits whole still
 * reuses what it can: bench/eviction's sizes, or 20 random 5-25 MiB buffers replaced
 * at random, fault a fraction of their pages instead of all), then in the fullest
 * chunk, lowest first: packing what is in use into few chunks lets the others empty and
 * go back to the OS (a stray segment pins its whole chunk's address space). Lock held. */
static void* hak_region_find(size_t n, size_t align, size_t align_offset, bool hot_only, hak_run_state_t* state) {
  hak_chunk_t* best = NULL;
  size_t best_start = 0;
  int best_dirty = -1, best_used = -1;
  for (hak_chunk_t* c = hak_region_chunks; c != NULL; c = c->next) {
    uint64_t avail = ~(c->used | c->purging);
    if (hot_only) avail &= c->dirty;
    uint64_t starts = hak_bits_run_starts(avail, n) & hak_region_aligned_starts(c, align, align_offset);
    if (starts == 0) continue;
    uint64_t old = hot_only ? starts & c->run_starts : 0;
    if (old != 0) return hak_region_take(c, (size_t)__builtin_ctzll(old), n, true, state);
    int dirty = (int)n; /* hot_only: every unit of the run */
    size_t start = hot_only ? (size_t)__builtin_ctzll(starts) : hak_region_most_dirty_start(c, starts, n, &dirty);
    int used = __builtin_popcountll(c->used);
    if (dirty > best_dirty || (dirty == best_dirty && used > best_used)) {
      best = c;
      best_start = start;
      best_dirty = dirty;
      best_used = used;
    }
  }
  if (best == NULL) return NULL;
  return hak_region_take(best, best_start, n, true, state);
}

static void* hak_region_find_locked(size_t n, size_t align, size_t align_offset, bool hot_only,
                                    hak_run_state_t* state) {
  hak_lock(&hak_region_lock);
  void* run = hak_region_find(n, align, align_offset, hot_only, state);
  hak_unlock(&hak_region_lock);
  return run;
}

/* Resident memory first: free units that may still hold their pages, then blocks the
 * whale ring holds (evicted oldest first until a resident run appears), then
 * clean units, then a new chunk. */
void* hak_region_alloc(size_t units, size_t align, size_t align_offset, hak_run_state_t* state) {
  if (units == 0 || units > HAK_CHUNK_RUN_MAX || align > HAK_CHUNK_SIZE) return NULL;
  void* run;
  do {
    run = hak_region_find_locked(units, align, align_offset, true, state);
    if (run != NULL) return run;
  } while (hak_whale_evict_oldest());
  for (;;) {
    run = hak_region_find_locked(units, align, align_offset, false, state);
    if (run != NULL) return run;
    hak_chunk_t* chunk = hak_region_chunk_new();
    if (chunk == NULL) return NULL;
    hak_lock(&hak_region_lock);
    hak_region_chunk_link(chunk);
    hak_unlock(&hak_region_lock);
  }
}

bool hak_region_extend(void* run, size_t units, size_t extra_units) {
  hak_chunk_t* chunk = hak_region_chunk_of(run);
  size_t start = hak_region_unit_index(chunk, run) + units;
  if (start + extra_units > HAK_CHUNK_UNITS) return false;
  uint64_t want = hak_bits_range(start, extra_units);
  bool ok = false;
  hak_run_state_t state;
  hak_lock(&hak_region_lock);
  if (((chunk->used | chunk->purging) & want) == 0) {
    hak_region_take(chunk, start, extra_units, false, &state);
    ok = true;
  }
  hak_unlock(&hak_region_lock);
  return ok;
}

void hak_region_note_noaccess(const void* addr, size_t bytes) {
  if (bytes == 0) return;
  hak_chunk_t* chunk = hak_region_chunk_of(addr);
  size_t first = hak_region_unit_index(chunk, addr);
  size_t last = hak_region_unit_index(chunk, (const uint8_t*)addr + bytes - 1);
  hak_lock(&hak_region_lock);
  chunk->noaccess |= hak_bits_range(first, last - first + 1);
  hak_unlock(&hak_region_lock);
}

bool hak_region_fault_is_freed(const void* addr) {
  const hak_chunk_t* chunk = hak_region_chunk_of(addr); /* one of ours only if listed */
  for (const hak_chunk_t* c = __atomic_load_n(&hak_region_chunks, __ATOMIC_ACQUIRE); c != NULL;
       c = __atomic_load_n(&c->next, __ATOMIC_RELAXED)) {
    if (c != chunk) continue;
    uint64_t bit = (uint64_t)1 << hak_region_unit_index(c, addr);
    uint64_t noaccess = __atomic_load_n(&c->noaccess, __ATOMIC_RELAXED);
    uint64_t used = __atomic_load_n(&c->used, __ATOMIC_RELAXED);
    return (noaccess & bit) != 0 && (used & bit) == 0;
  }
  return false;
}

/* ---- Huge pages ------------------------------------------------------------------------ */

void hak_region_thp_prepare(void* run, size_t units, bool whale) {
  if (hak_options.thp_mode == HAK_THP_SYSTEM) return;
  bool huge = whale && hak_options.thp_mode == HAK_THP_WHALES;
  hak_chunk_t* chunk = hak_region_chunk_of(run);
  uint64_t bits = hak_bits_range(hak_region_unit_index(chunk, run), units);
  hak_lock(&hak_region_lock);
  bool advised = ((huge ? chunk->thp_huge : chunk->thp_lean) & bits) == bits;
  hak_unlock(&hak_region_lock);
  if (advised) return;
  bool ok = hak_os_advise_thp(run, units << HAK_SEGMENT_SHIFT, huge, HAK_OS_USER_REGION);
  hak_lock(&hak_region_lock);
  chunk->thp_lean &= ~bits;
  chunk->thp_huge &= ~bits;
  if (ok && huge) chunk->thp_huge |= bits;
  else if (ok) chunk->thp_lean |= bits;
  hak_unlock(&hak_region_lock);
}

/* ---- Guard pages of segments (hardened level 2) -------------------------------------------- */

#if HAK_HARDEN_GUARDS
static size_t hak_region_guarded_units; /* lock held */

/* A segment takes the unit `run`: true if its guard pages are in place, either already
 * (*already: a segment left them when it gave the unit back, so reuse costs no call) or
 * for the caller to make now; false beyond HAK_GUARDED_SEGMENTS_MAX (unguarded). */
bool hak_region_guard_claim(void* run, bool* already) {
  hak_chunk_t* chunk = hak_region_chunk_of(run);
  uint64_t bit = (uint64_t)1 << hak_region_unit_index(chunk, run);
  hak_lock(&hak_region_lock);
  *already = (chunk->guarded & bit) != 0;
  bool ok = *already || hak_region_guarded_units < HAK_GUARDED_SEGMENTS_MAX;
  if (ok && !*already) {
    chunk->guarded |= bit;
    hak_region_guarded_units++;
  }
  hak_unlock(&hak_region_lock);
  return ok;
}

/* A whale takes `run`: guard pages segments left in its units become accessible. */
void hak_region_guard_clear(void* run, size_t units) {
  hak_chunk_t* chunk = hak_region_chunk_of(run);
  size_t start = hak_region_unit_index(chunk, run);
  hak_lock(&hak_region_lock);
  uint64_t guarded = chunk->guarded & hak_bits_range(start, units);
  chunk->guarded &= ~guarded;
  hak_region_guarded_units -= (size_t)__builtin_popcountll(guarded);
  hak_unlock(&hak_region_lock);
  for (; guarded != 0; guarded &= guarded - 1) {
    hak_segment_guards_open(hak_region_unit_addr(chunk, (size_t)__builtin_ctzll(guarded)));
  }
}
#endif

/* ---- Free -------------------------------------------------------------------------------- */

/* Free units wait out the purge delay, resident, for reuse; but not without bound: at
 * most HAKMEM_REGION_DIRTY of them, or a quarter of the units in use if that is more.
 * Beyond it the units freed longest ago come due at once, so a heap that just shrank
 * a lot (a phase that freed most of its data, an exited thread's memory freed) gives
 * the memory back now instead of after the delay, while one that churns at a steady
 * size keeps reusing its memory without page faults. Only dense units count (those a
 * segment gave back, most of their pages resident): a whale's units may hold a few
 * touched pages of a huge block, and purging them early would cost a call each for
 * little memory (bench/eviction: 30x slower with whales counted). Lock held; returns
 * whether any unit came due. */
static bool hak_region_limit_pending(uint64_t now) {
  size_t waiting = 0, in_use = 0;
  for (hak_chunk_t* c = hak_region_chunks; c != NULL; c = c->next) {
    in_use += (size_t)__builtin_popcountll(c->used) - 1;
    for (uint64_t p = c->pending & c->dense; p != 0; p &= p - 1) waiting += c->expire[__builtin_ctzll(p)] > now;
  }
  size_t budget = hak_options.region_dirty_bytes >> HAK_SEGMENT_SHIFT;
  if (in_use / 4 > budget) budget = in_use / 4;
  if (waiting <= budget) return false;
  for (size_t n = waiting - budget; n > 0; n--) {
    hak_chunk_t* oldest_chunk = NULL;
    size_t oldest = 0;
    for (hak_chunk_t* c = hak_region_chunks; c != NULL; c = c->next) {
      for (uint64_t p = c->pending & c->dense; p != 0; p &= p - 1) {
        size_t i = (size_t)__builtin_ctzll(p);
        if (c->expire[i] > now && (oldest_chunk == NULL || c->expire[i] < oldest_chunk->expire[oldest])) {
          oldest_chunk = c;
          oldest = i;
        }
      }
    }
    oldest_chunk->expire[oldest] = now;
    oldest_chunk->early |= (uint64_t)1 << oldest; /* no purge regret for this one */
  }
  return true;
}

void hak_region_free(void* run, size_t units, uint64_t idle_since_ms, bool dense) {
  hak_chunk_t* chunk = hak_region_chunk_of(run);
  size_t start = hak_region_unit_index(chunk, run);
  uint64_t due = idle_since_ms + hak_purge_delay_ms();
  hak_lock(&hak_region_lock);
  uint64_t bits = hak_bits_range(start, units);
  chunk->used &= ~bits;
  chunk->heads &= ~bits;
  chunk->pending |= bits;
  if (dense) chunk->dense |= bits;
  else chunk->dense &= ~bits;
  chunk->run_starts |= (uint64_t)1 << start;
  for (size_t i = start; i < start + units; i++) chunk->expire[i] = due;
  hak_region_free_units += units;
  if (hak_region_limit_pending(idle_since_ms)) due = idle_since_ms;
  hak_unlock(&hak_region_lock);
  hak_purge_schedule(due);
}

/* mremap moved the pages of [hole, hole + hole_size) away: map fresh pages there again
 * and free the run. Only units wholly inside the hole are clean and read zero now: the
 * others keep what the run held outside the block (the header in the first unit; bytes
 * past the block's end, up to data_end, left by a shrink in place or a larger block of
 * the run). Units holding such bytes stay dirty and are purged after the delay; the
 * header's page alone does not make its unit dirty. If even the new mapping fails, the
 * units stay marked in use: address space lost, never memory handed out twice. */
void hak_region_free_moved(void* run, size_t units, void* hole, size_t hole_size, void* data_end) {
  if (!hak_os_map_fixed(hole, hole_size, HAK_OS_USER_REGION)) return;
  hak_chunk_t* chunk = hak_region_chunk_of(run);
  size_t start = hak_region_unit_index(chunk, run);
  uint64_t bits = hak_bits_range(start, units);
  uintptr_t hole_end = (uintptr_t)hole + hole_size;
  size_t zero_first = (size_t)((uintptr_t)hole - (uintptr_t)chunk + HAK_SEGMENT_MASK) >> HAK_SEGMENT_SHIFT;
  size_t zero_end = (size_t)(hole_end - (uintptr_t)chunk) >> HAK_SEGMENT_SHIFT;
  uint64_t zeroed = zero_end > zero_first ? hak_bits_range(zero_first, zero_end - zero_first) : 0;
  uint64_t kept = 0;
  if ((uintptr_t)data_end > hole_end) {
    size_t first = (size_t)(hole_end - (uintptr_t)chunk) >> HAK_SEGMENT_SHIFT;
    size_t end = (size_t)((uintptr_t)data_end - (uintptr_t)chunk + HAK_SEGMENT_MASK) >> HAK_SEGMENT_SHIFT;
    kept = hak_bits_range(first, end - first) & bits;
  }
  uint64_t due = hak_purge_now_ms() + hak_purge_delay_ms();
  hak_lock(&hak_region_lock);
  chunk->used &= ~bits;
  chunk->heads &= ~bits;
  chunk->dirty = (chunk->dirty & ~bits) | kept;
  chunk->dense &= ~bits;
  chunk->nonzero &= ~(bits & zeroed);
  /* the fresh mapping in the hole has the kernel's default advice: unknown from now */
  size_t hole_first = (size_t)((uintptr_t)hole - (uintptr_t)chunk) >> HAK_SEGMENT_SHIFT;
  size_t hole_units_end = (size_t)(hole_end - (uintptr_t)chunk + HAK_SEGMENT_MASK) >> HAK_SEGMENT_SHIFT;
  uint64_t advice_lost = hak_bits_range(hole_first, hole_units_end - hole_first);
  chunk->thp_lean &= ~advice_lost;
  chunk->thp_huge &= ~advice_lost;
  chunk->pending |= kept;
  for (uint64_t k = kept; k != 0; k &= k - 1) chunk->expire[__builtin_ctzll(k)] = due;
  chunk->run_starts |= (uint64_t)1 << start;
  hak_region_free_units += units;
  hak_unlock(&hak_region_lock);
  if (kept != 0) hak_purge_schedule(due);
}

/* ---- Purge ------------------------------------------------------------------------------- */

/* Marks the due units of every chunk as in flight and adds them to the batch; returns
 * whether anything was taken. Lock held. A pass purges when what is due fills a batch
 * (HAKMEM_PURGE_BATCH_BYTES / _RANGES), when the oldest due unit has waited another
 * purge delay, or when forced (every pending unit then). */
static bool hak_region_collect_due(uint64_t now, bool force, hak_purge_batch_t* batch, uint64_t* next_due) {
  size_t due_units = 0, due_ranges = 0;
  uint64_t oldest = UINT64_MAX;
  *next_due = UINT64_MAX;
  for (hak_chunk_t* c = hak_region_chunks; c != NULL; c = c->next) {
    for (uint64_t p = c->pending; p != 0; p &= p - 1) {
      size_t i = (size_t)__builtin_ctzll(p);
      if (force || c->expire[i] <= now) {
        due_units++;
        if (i == 0 || ((c->pending >> (i - 1)) & 1) == 0) due_ranges++;
        if (c->expire[i] < oldest) oldest = c->expire[i];
      } else if (c->expire[i] < *next_due) {
        *next_due = c->expire[i];
      }
    }
  }
  if (due_units == 0) return false;
  bool full = (due_units << HAK_SEGMENT_SHIFT) >= hak_options.purge_batch_bytes ||
              due_ranges >= hak_options.purge_batch_ranges;
  uint64_t again = oldest + hak_purge_delay_ms(); /* the oldest due unit waited another delay */
  if (!force && !full && again > now) {
    if (again < *next_due) *next_due = again;
    return false;
  }
  bool taken = false;
  for (hak_chunk_t* c = hak_region_chunks; c != NULL; c = c->next) {
    for (uint64_t p = c->pending; p != 0; p &= p - 1) {
      size_t i = (size_t)__builtin_ctzll(p);
      if (!force && c->expire[i] > now) continue;
      if (!hak_purge_batch_add(batch, hak_region_unit_addr(c, i), HAK_SEGMENT_SIZE)) {
        if (c->expire[i] < *next_due) *next_due = now; /* batch full: the next pass takes it */
        continue;
      }
      c->purging |= (uint64_t)1 << i;
      c->pending &= ~((uint64_t)1 << i);
      taken = true;
    }
  }
  return taken;
}

/* Lock held. Units the delay purged (not a forced pass, not the dirty budget) are
 * remembered with the time, for purge regret. Hardened level 2: a purged unit also loses the guard pages a segment left
 * there (it went cold; a segment taking it again makes them anew), so that idle address
 * space does not keep four mappings per unit. Rare (once per purge delay at most), so
 * the two calls per unit are made here, while the unit is neither free nor in use. */
static void hak_region_finish_purge(bool zeroed, bool forced) {
  uint64_t now = hak_purge_now_ms();
  for (hak_chunk_t* c = hak_region_chunks; c != NULL; c = c->next) {
    uint64_t timed = forced ? 0 : c->purging & ~c->early;
    for (uint64_t p = timed; p != 0; p &= p - 1) c->expire[__builtin_ctzll(p)] = now;
    c->purged |= timed;
    c->early &= ~c->purging;
#if HAK_HARDEN_GUARDS
    uint64_t guarded = c->guarded & c->purging;
    c->guarded &= ~guarded;
    hak_region_guarded_units -= (size_t)__builtin_popcountll(guarded);
    for (; guarded != 0; guarded &= guarded - 1) {
      hak_segment_guards_open(hak_region_unit_addr(c, (size_t)__builtin_ctzll(guarded)));
    }
#endif
    c->dirty &= ~c->purging;
    c->dense &= ~c->purging;
    if (zeroed) c->nonzero &= ~c->purging;
    c->purging = 0;
  }
}

/* Unlinks chunks that hold nothing while more free address space is kept than allowed
 * (all of them when forced); returns them chained through ->next. A chunk with units
 * whose purge is not due yet stays (they were freed too recently: likely reused).
 * Lock held. */
static hak_chunk_t* hak_region_unlink_idle(bool force, uint64_t now) {
  hak_chunk_t* idle = NULL;
  hak_chunk_t** link = &hak_region_chunks;
  while (*link != NULL) {
    hak_chunk_t* c = *link;
    bool over = ((uint64_t)hak_region_free_units << HAK_SEGMENT_SHIFT) > hak_options.region_keep_bytes;
    bool recent = false;
    for (uint64_t p = c->pending; p != 0 && !recent; p &= p - 1) recent = c->expire[__builtin_ctzll(p)] > now;
    if (c->used == 1 && c->purging == 0 && (force || (over && !recent))) {
      *link = c->next;
      hak_region_chunk_count--;
#if HAK_HARDEN_GUARDS
      hak_region_guarded_units -= (size_t)__builtin_popcountll(c->guarded); /* unmapped with it */
#endif
      hak_region_free_units -= HAK_CHUNK_UNITS - 1;
      c->next = idle;
      idle = c;
    } else {
      link = &c->next;
    }
  }
  return idle;
}

void hak_region_purge(hak_region_purge_t how) {
  bool force = how != HAK_REGION_PURGE_DUE;
  if (force) {
    hak_lock(&hak_region_purge_lock);
  } else if (!hak_trylock(&hak_region_purge_lock)) {
    /* Another thread is purging: its pass may have started before what came due for
     * this one was freed, so the next tick tries again. */
    hak_purge_schedule(hak_purge_now_ms());
    return;
  }
  hak_purge_batch_t batch;
  batch.count = 0;
  uint64_t next_due;
  for (;;) {
    hak_lock(&hak_region_lock);
    bool taken = hak_region_collect_due(hak_purge_now_ms(), force, &batch, &next_due);
    hak_unlock(&hak_region_lock);
    if (!taken) break;
    bool zeroed = hak_purge_batch_flush(&batch);
    hak_lock(&hak_region_lock);
    hak_region_finish_purge(zeroed, force);
    hak_unlock(&hak_region_lock);
  }
  hak_lock(&hak_region_lock);
  hak_chunk_t* idle = hak_region_unlink_idle(how == HAK_REGION_PURGE_ALL_UNMAP, hak_purge_now_ms());
  hak_unlock(&hak_region_lock);
  while (idle != NULL) {
    hak_chunk_t* next = idle->next;
    hak_os_unmap(idle, HAK_CHUNK_SIZE, HAK_OS_USER_REGION);
    idle = next;
  }
  hak_unlock(&hak_region_purge_lock);
  if (next_due != UINT64_MAX) hak_purge_schedule(next_due);
}

/* ---- Dedicated mappings ------------------------------------------------------------------- */

static void hak_region_dedicated_peaks(void) {
  if (hak_region_dedicated_count > hak_region_dedicated_max_count) {
    hak_region_dedicated_max_count = hak_region_dedicated_count;
  }
  if (hak_region_dedicated_bytes > hak_region_dedicated_max_bytes) {
    hak_region_dedicated_max_bytes = hak_region_dedicated_bytes;
  }
}

void hak_region_dedicated_link(hak_segment_t* segment) {
  hak_lock(&hak_region_lock);
  segment->prev = NULL;
  segment->next = hak_region_dedicated;
  if (hak_region_dedicated != NULL) hak_region_dedicated->prev = segment;
  hak_region_dedicated = segment;
  hak_region_dedicated_count++;
  hak_region_dedicated_bytes += segment->mapping_size;
  hak_region_dedicated_peaks();
  hak_unlock(&hak_region_lock);
}

void hak_region_dedicated_unlink(hak_segment_t* segment) {
  hak_lock(&hak_region_lock);
  if (segment->prev != NULL) segment->prev->next = segment->next;
  else hak_region_dedicated = segment->next;
  if (segment->next != NULL) segment->next->prev = segment->prev;
  segment->next = segment->prev = NULL;
  hak_region_dedicated_count--;
  hak_region_dedicated_bytes -= segment->mapping_size;
  hak_unlock(&hak_region_lock);
}

void hak_region_dedicated_resize(hak_segment_t* segment, size_t mapping_size) {
  hak_lock(&hak_region_lock);
  hak_region_dedicated_bytes += mapping_size - segment->mapping_size;
  segment->mapping_size = mapping_size;
  hak_region_dedicated_peaks();
  hak_unlock(&hak_region_lock);
}

/* ---- Usage walk ------------------------------------------------------------------------------ */

/* Every run in use and every dedicated whale, under the lock: no chunk is unmapped and
 * no dedicated whale unlinked (and unmapped) meanwhile. Their headers are read as a
 * racy snapshot (hak_segment_usage), at the heads the region recorded only: never where
 * a header says its run ends, which a header being written for a new run may say
 * wrongly (the old one of a longer run at that address), into another run's middle (in
 * hardened level 2 maybe PROT_NONE there). Costs a read of each segment's page
 * descriptors: for mallinfo and the stats API, never on an allocation path. */
void hak_region_usage(hak_usage_t* out) {
  *out = (hak_usage_t){0};
  hak_lock(&hak_region_lock);
  for (hak_chunk_t* c = hak_region_chunks; c != NULL; c = c->next) {
    uint64_t used = c->used & ~(uint64_t)1;
    out->unit_bytes += (uint64_t)__builtin_popcountll(used) << HAK_SEGMENT_SHIFT;
    for (uint64_t heads = c->heads & used; heads != 0; heads &= heads - 1) {
      hak_segment_usage((const hak_segment_t*)hak_region_unit_addr(c, (size_t)__builtin_ctzll(heads)), out);
    }
  }
  out->unit_max_bytes = (uint64_t)hak_region_used_max_units << HAK_SEGMENT_SHIFT;
  for (hak_segment_t* s = hak_region_dedicated; s != NULL; s = s->next) {
    hak_usage_t one = {0};
    hak_segment_usage(s, &one);
    out->in_use_bytes += one.in_use_bytes;
    out->in_use_blocks += one.in_use_blocks;
    out->dedicated_in_use_bytes += one.in_use_bytes;
  }
  out->dedicated_count = hak_region_dedicated_count;
  out->dedicated_bytes = hak_region_dedicated_bytes;
  out->dedicated_max_count = hak_region_dedicated_max_count;
  out->dedicated_max_bytes = hak_region_dedicated_max_bytes;
  hak_unlock(&hak_region_lock);
}

/* ---- Stats --------------------------------------------------------------------------------- */

void hak_region_stats_read(hak_stats_t* out) {
  uint64_t used = 0, dirty = 0, pending = 0, clean = 0;
  hak_lock(&hak_region_lock);
  for (hak_chunk_t* c = hak_region_chunks; c != NULL; c = c->next) {
    uint64_t free_units = ~(c->used | c->purging);
    used += (uint64_t)__builtin_popcountll(c->used & ~(uint64_t)1);
    dirty += (uint64_t)__builtin_popcountll(free_units & c->dirty);
    pending += (uint64_t)__builtin_popcountll(c->pending);
    clean += (uint64_t)__builtin_popcountll(free_units & ~c->dirty);
  }
  out->region_chunks = hak_region_chunk_count;
  hak_unlock(&hak_region_lock);
  out->region_used_bytes = used << HAK_SEGMENT_SHIFT;
  out->region_dirty_bytes = dirty << HAK_SEGMENT_SHIFT;
  out->region_pending_bytes = pending << HAK_SEGMENT_SHIFT;
  out->region_clean_bytes = clean << HAK_SEGMENT_SHIFT;
  out->purge_cancelled_bytes = atomic_load_explicit(&hak_region_cancelled_units, memory_order_relaxed)
                               << HAK_SEGMENT_SHIFT;
}
