/* SPDX-License-Identifier: MIT */
/* policy_probe.c - the policy's internals for the C++ tests (hak_internal.h is C11). */
#include "hakmem/hak_internal.h"

/* The knobs as the options hold them now. */
hak_policy_setting_t policy_probe_options(void) {
  return (hak_policy_setting_t){hak_options.whale_slots,    hak_options.whale_bytes,
                                hak_options.bigcache_slots, hak_options.bigcache_bytes,
                                hak_options.purge_delay_ms, hak_options.purge_batch_bytes};
}

void policy_probe_read(hak_policy_status_t* out) {
  hak_policy_read(out);
}

size_t policy_probe_status_size(void) {
  return sizeof(hak_policy_status_t);
}

void policy_probe_tick(uint64_t now_ms) {
  hak_policy_tick(now_ms);
}

uint64_t policy_probe_now_ms(void) {
  return hak_purge_now_ms();
}

uint64_t policy_probe_epoch_ms(void) {
  return hak_options.policy_epoch_ms;
}

/* Holds the policy's lock, as a thread ending an epoch does (hak_policy_tick). */
void policy_probe_hold_lock(void) {
  hak_policy_fork_lock();
}

void policy_probe_release_lock(void) {
  hak_policy_fork_unlock();
}
