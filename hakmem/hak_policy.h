/* SPDX-License-Identifier: MIT */
/* hak_policy.h - the adaptive policy's pure part: candidate settings (arms), the UCB1
 * bandit that picks one per epoch, the ELO ratings from pairwise epoch comparisons, and
 * the score of an epoch. Nothing here touches allocator state, allocates, or reads a
 * clock, so unit tests drive it with made-up epochs (the header is C and C++). The
 * hook into hakmem (measuring epochs, applying settings to hak_options) is in
 * hak_policy.c behind hak_policy_tick. */
#ifndef HAK_POLICY_H
#define HAK_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HAK_POLICY_ARMS 4
#define HAK_POLICY_ELO_START 1500.0
#define HAK_POLICY_ELO_K 32.0      /* rating points one decisive game moves, at most */
#define HAK_POLICY_TIE_PERMILLE 50 /* scores within 5% of each other: a draw (noise) */
#define HAK_POLICY_FAULT_NS 1000   /* a page fault's cost: ~1.25 us measured on the project's VMs */
#define HAK_POLICY_HELD_SAMPLES 8  /* readings of the held bytes per epoch, averaged */
#define HAK_POLICY_ELO_MARGIN 40.0 /* rated this far below the leader: out of the running
                                      (after one round, an arm that lost both its games
                                      to arms that then drew is about 45 below) */
#define HAK_POLICY_RECHECK_FIRST 128 /* arms out of the running are played at epochs 128, 256,
                                        ... (25.6 s, 51 s, ... at the default 200 ms epoch) */

/* The knobs the policy turns (fields of hak_options). The caps are the values the
 * options hold at start (the user's or the defaults): an arm only ever scales them down,
 * so cached and dirty bytes never exceed what the user allowed. */
typedef struct hak_policy_setting_s {
  size_t whale_slots, whale_bytes;
  size_t bigcache_slots, bigcache_bytes;
  size_t purge_delay_ms;
  size_t purge_batch_bytes;
} hak_policy_setting_t;

/* One arm: fractions of the caps, in per mille. */
typedef struct hak_policy_arm_s {
  const char* name;
  uint16_t cache_permille; /* whale and BigCache slots and bytes */
  uint16_t delay_permille; /* purge delay and purge batch threshold */
} hak_policy_arm_t;

extern const hak_policy_arm_t hak_policy_arm_table[HAK_POLICY_ARMS];

/* The setting of `arm` under `caps`: every field <= its cap. */
hak_policy_setting_t hak_policy_resolve(const hak_policy_setting_t* caps, int arm);

/* What an epoch measured, as deltas over the epoch. */
typedef struct hak_policy_epoch_s {
  uint64_t wall_ns;    /* the epoch's length */
  uint64_t os_ns;      /* time inside mmap/munmap/madvise/mremap/mprotect (hak_os.c) */
  uint64_t faults;     /* page faults (getrusage: minor + major) */
  uint64_t held_bytes; /* the mean over the epoch of the bytes the knobs keep resident
                          (cached blocks, free dirty region units) */
} hak_policy_epoch_t;

/* Lower is better: the share of the epoch spent in OS calls and page faults, in parts
 * per million, plus rss_weight ppm per MiB held (memory priced as time). */
double hak_policy_epoch_score(const hak_policy_epoch_t* epoch, uint64_t rss_weight);

/* ELO: a's expected score against b, and the update after a game in which a scored
 * score_a (1 win, 0.5 draw, 0 loss) and b 1 - score_a; the total is conserved. */
double hak_policy_elo_expected(double ra, double rb);
void hak_policy_elo_update(double* ra, double* rb, double score_a, double k);
/* a's result against b from their epoch scores (lower cost wins; close is a draw). */
double hak_policy_outcome(double score_a, double score_b);

/* The learner: UCB1 over the arms in the running (rated within HAK_POLICY_ELO_MARGIN
 * of the leader; the others only at rechecks, epochs 128, 256, 512, ...) with rewards in
 * [0, 1] (the arm's results in its epoch's games against the other arms' latest
 * epochs), ELO ratings from the same games. Deterministic: the seed fixes the order of the first pulls and breaks ties. */
typedef struct hak_policy_learner_s {
  uint64_t rng;
  uint64_t epochs;                       /* epochs learned from */
  uint64_t pulls[HAK_POLICY_ARMS];
  double reward_sum[HAK_POLICY_ARMS];
  double elo[HAK_POLICY_ARMS];
  double last_score[HAK_POLICY_ARMS];    /* the latest epoch of each arm (valid if pulled) */
  uint8_t order[HAK_POLICY_ARMS];        /* exploration order, from the seed */
  int leader;                            /* highest ELO */
  uint64_t leader_since;                 /* epochs when it last changed */
} hak_policy_learner_t;

void hak_policy_learner_init(hak_policy_learner_t* l, uint64_t seed);
int hak_policy_ucb_select(hak_policy_learner_t* l); /* the arm for the next epoch */
/* Learns from an epoch played with `arm`; returns the reward given to it. */
double hak_policy_learn(hak_policy_learner_t* l, int arm, double score);
uint64_t hak_policy_rng_next(uint64_t* state);

/* The hook's state, as hak_policy_read copies it (for tests). */
typedef struct hak_policy_status_s {
  bool on;
  int arm; /* in force now */
  hak_policy_learner_t learner;
  hak_policy_setting_t caps;
} hak_policy_status_t;

/* Transcendentals without libm (a malloc should not pull it in): tests check them
 * against libm. */
double hak_policy_sqrt(double x);
double hak_policy_ln(double x);
double hak_policy_exp(double x);

#ifdef __cplusplus
}
#endif

#endif /* HAK_POLICY_H */
