/* SPDX-License-Identifier: MIT */
/* hak_purge.c - deferred, batched madvise.
 *
 * Memory hakmem stops using is not purged at once: its owner (the region, for free
 * units) marks it pending with a due time `purge delay` ahead, and reuse before then
 * simply cancels the purge (no system call either way). Slow paths call hak_purge_tick,
 * which costs a coarse clock read and one atomic load when nothing is due; when
 * something is, the owner collects what is due into a batch, adjacent ranges merged
 * into one call, and issues it outside its lock (the memory is marked in flight, so it
 * is not handed out meanwhile). DONTNEED or FREE by HAKMEM_MADVISE.
 *
 * Purge regret: memory purged and then taken again within the delay would have been
 * kept by a delay twice as long, and its purge bought nothing but a system call and
 * page faults (a program whose big blocks come back every few hundred milliseconds).
 * The owners report such reuse (hak_purge_regret); the delay then doubles, at most
 * once per delay and up to HAKMEM_PURGE_DELAY_MAX_MS, and halves again after four
 * delays without regret, so memory that stays unused is still given back. With
 * HAKMEM_POLICY=1 the learner owns the delay (one of its knobs): no stretching then.
 * Off by default (HAKMEM_PURGE_DELAY_MAX_MS: hak_options.c says why). */
#include <time.h>

#include "hak_internal.h"

static _Atomic uint64_t hak_purge_next_due = UINT64_MAX;
static _Atomic uint64_t hak_purge_flushes, hak_purge_ranges_issued, hak_purge_bytes_issued;
_Atomic uint32_t hak_purge_stretch; /* the delay is the base << this, capped */
static _Atomic uint64_t hak_purge_stretch_ms; /* when the stretch last changed */
static _Atomic uint64_t hak_purge_regret_ms;  /* the last regret */
static _Atomic uint64_t hak_purge_regrets;    /* reuses of purged memory within the delay */

uint64_t hak_purge_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

size_t hak_purge_delay_at(uint32_t stretch) {
  size_t base = hak_purge_delay_base();
  size_t max = hak_options.purge_delay_max_ms;
  if (stretch == 0 || base >= max) return base;
  return stretch >= 32 || (max >> stretch) < base ? max : base << stretch;
}

/* Threads reporting at once may lose a doubling or a time stamp to each other: that only
 * blurs a heuristic, and the delay stays within its bounds either way. */
void hak_purge_regret(uint64_t purged_ms) {
  if (hak_policy_on) return; /* the learner owns the delay */
  uint64_t now = hak_purge_now_ms();
  uint32_t stretch = atomic_load_explicit(&hak_purge_stretch, memory_order_relaxed);
  size_t delay = hak_purge_delay_at(stretch);
  if (now >= purged_ms + delay) return; /* a purge that held for the whole delay */
  atomic_fetch_add_explicit(&hak_purge_regrets, 1, memory_order_relaxed);
  atomic_store_explicit(&hak_purge_regret_ms, now, memory_order_relaxed);
  /* Once per delay (the units of one purged run come back one by one: one event), so
   * regrets arriving faster than the delay stretch it each delay, not only the first. */
  uint64_t changed = atomic_load_explicit(&hak_purge_stretch_ms, memory_order_relaxed);
  if (now < changed + delay || hak_purge_delay_at(stretch + 1) == delay) return; /* capped */
  if (atomic_compare_exchange_strong_explicit(&hak_purge_stretch, &stretch, stretch + 1, memory_order_relaxed,
                                              memory_order_relaxed))
    atomic_store_explicit(&hak_purge_stretch_ms, now, memory_order_relaxed);
}

/* Four delays without regret: the delay halves (a step per four delays that passed). */
static void hak_purge_unstretch(void) {
  uint32_t stretch = atomic_load_explicit(&hak_purge_stretch, memory_order_relaxed);
  if (hak_likely(stretch == 0)) return;
  uint64_t now = hak_purge_now_ms();
  uint64_t changed = atomic_load_explicit(&hak_purge_stretch_ms, memory_order_relaxed);
  uint64_t regret = atomic_load_explicit(&hak_purge_regret_ms, memory_order_relaxed);
  uint64_t since = changed > regret ? changed : regret;
  uint32_t to = stretch;
  while (to > 0 && now >= since + 4 * (uint64_t)hak_purge_delay_at(to)) {
    since += 4 * (uint64_t)hak_purge_delay_at(to);
    to--;
  }
  if (to == stretch) return;
  if (atomic_compare_exchange_strong_explicit(&hak_purge_stretch, &stretch, to, memory_order_relaxed,
                                              memory_order_relaxed)) {
    atomic_store_explicit(&hak_purge_stretch_ms, now, memory_order_relaxed);
  }
}

bool hak_purge_batch_add(hak_purge_batch_t* batch, void* addr, size_t size) {
  if (batch->count > 0) {
    hak_purge_range_t* last = &batch->ranges[batch->count - 1];
    if (last->addr + last->size == (uint8_t*)addr) {
      last->size += size;
      return true;
    }
  }
  if (batch->count == HAK_PURGE_BATCH_MAX) return false;
  batch->ranges[batch->count++] = (hak_purge_range_t){(uint8_t*)addr, size};
  return true;
}

bool hak_purge_batch_flush(hak_purge_batch_t* batch) {
  bool zeroed = true;
  size_t bytes = 0;
  for (size_t i = 0; i < batch->count; i++) {
    zeroed &= hak_os_purge(batch->ranges[i].addr, batch->ranges[i].size, HAK_OS_USER_PURGE);
    bytes += batch->ranges[i].size;
  }
  if (batch->count > 0) {
    atomic_fetch_add_explicit(&hak_purge_flushes, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&hak_purge_ranges_issued, batch->count, memory_order_relaxed);
    atomic_fetch_add_explicit(&hak_purge_bytes_issued, bytes, memory_order_relaxed);
  }
  batch->count = 0;
  return zeroed;
}

/* For memory that is not free but will not be used either (the tail of a whale's
 * run past its block): no delay, nothing reuses it before the block is freed. */
void hak_purge_range_now(void* addr, size_t size) {
  hak_purge_batch_t batch = {.count = 0};
  hak_purge_batch_add(&batch, addr, size);
  hak_purge_batch_flush(&batch);
}

void hak_purge_schedule(uint64_t due_ms) {
  uint64_t cur = atomic_load_explicit(&hak_purge_next_due, memory_order_relaxed);
  while (due_ms < cur &&
         !atomic_compare_exchange_weak_explicit(&hak_purge_next_due, &cur, due_ms, memory_order_relaxed,
                                                memory_order_relaxed)) {
  }
}

/* One thread at a time claims the due time; the owner's purge re-schedules whatever
 * stays pending. */
void hak_purge_tick(void) {
  if (hak_unlikely(hak_policy_on)) hak_policy_tick(hak_purge_now_ms()); /* HAKMEM_POLICY=1 only */
  hak_purge_unstretch();
  uint64_t due = atomic_load_explicit(&hak_purge_next_due, memory_order_relaxed);
  if (hak_likely(due == UINT64_MAX)) return;
  if (hak_purge_now_ms() < due) return;
  if (!atomic_compare_exchange_strong_explicit(&hak_purge_next_due, &due, UINT64_MAX, memory_order_relaxed,
                                               memory_order_relaxed)) {
    return;
  }
  hak_whale_trim(false);
  hak_region_purge(HAK_REGION_PURGE_DUE);
}

void hak_purge_stats_read(hak_stats_t* out) {
  out->purge_flushes = atomic_load_explicit(&hak_purge_flushes, memory_order_relaxed);
  out->purge_ranges = atomic_load_explicit(&hak_purge_ranges_issued, memory_order_relaxed);
  out->purge_bytes = atomic_load_explicit(&hak_purge_bytes_issued, memory_order_relaxed);
  out->purge_regrets = atomic_load_explicit(&hak_purge_regrets, memory_order_relaxed);
}
