/* SPDX-License-Identifier: MIT */
/* hak_policy.c - the adaptive policy (HAKMEM_POLICY=1; off by default): picks, epoch by
 * epoch, one of a few candidate settings of the large-block caches and the purge
 * (hak_policy_arm_table), learning which costs least on this process's workload.
 *
 *   pure part   arms, epoch score, ELO ratings, UCB1 (hak_policy.h): no allocator state,
 *               no clock, no allocation; unit-tested on made-up epochs.
 *   hook        hak_policy_tick, from hak_purge_tick (slow paths only, no thread): when
 *               an epoch (HAKMEM_POLICY_EPOCH_MS) has passed, one thread (try-lock; the
 *               others skip) measures it, scores it, learns, and writes the next arm's
 *               setting into hak_options, which the caches and the purge read at each
 *               use. Never calls malloc: the measures are counters, getrusage and two
 *               short locked reads.
 *
 * The caps are the options' values at start: every arm scales them down, never up. */
#define _GNU_SOURCE
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "hak_internal.h"
#include "hak_policy.h"

/* ---- Arms -------------------------------------------------------------------------- */

/* Two knobs of two levels each: cache capacity (whale ring and BigCache, slots and
 * bytes) and how long freed memory stays resident (purge delay, and the batch threshold
 * with it, so a short delay is not undone by waiting for a full batch). */
const hak_policy_arm_t hak_policy_arm_table[HAK_POLICY_ARMS] = {
    {"caps", 1000, 1000},
    {"short-delay", 1000, 100},
    {"small-cache", 250, 1000},
    {"small-short", 250, 100},
};

static size_t hak_policy_scale(size_t cap, unsigned permille) {
  if (permille > 1000) permille = 1000;
  if (cap > SIZE_MAX / 1000) return cap / 1000 * permille; /* no overflow, a little coarser */
  return cap * permille / 1000;
}

/* Slots keep at least one while the cap allows one: a fraction of a cache is smaller,
 * not switched off. */
static size_t hak_policy_scale_slots(size_t cap, unsigned permille) {
  size_t v = hak_policy_scale(cap, permille);
  return v == 0 && cap > 0 && permille > 0 ? 1 : v;
}

hak_policy_setting_t hak_policy_resolve(const hak_policy_setting_t* caps, int arm) {
  const hak_policy_arm_t* a = &hak_policy_arm_table[arm];
  hak_policy_setting_t s;
  s.whale_slots = hak_policy_scale_slots(caps->whale_slots, a->cache_permille);
  s.whale_bytes = hak_policy_scale(caps->whale_bytes, a->cache_permille);
  s.bigcache_slots = hak_policy_scale_slots(caps->bigcache_slots, a->cache_permille);
  s.bigcache_bytes = hak_policy_scale(caps->bigcache_bytes, a->cache_permille);
  s.purge_delay_ms = hak_policy_scale(caps->purge_delay_ms, a->delay_permille);
  s.purge_batch_bytes = hak_policy_scale(caps->purge_batch_bytes, a->delay_permille);
  return s;
}

/* ---- Math without libm -------------------------------------------------------------- */

#define HAK_POLICY_LN2 0.69314718055994530942
#define HAK_POLICY_LN10 2.30258509299404568402

typedef union {
  double d;
  uint64_t u;
} hak_policy_bits_t;

double hak_policy_sqrt(double x) {
  if (!(x > 0)) return 0;
  hak_policy_bits_t b = {.d = x};
  b.u = (b.u >> 1) + ((uint64_t)1023 << 51); /* halves the exponent: within 2x */
  double r = b.d;
  for (int i = 0; i < 6; i++) r = 0.5 * (r + x / r); /* Newton: doubles the digits */
  return r;
}

/* ln x = e ln 2 + ln m, m in [1, 2); ln m = 2 atanh(t), t = (m-1)/(m+1) <= 1/3. */
double hak_policy_ln(double x) {
  if (!(x > 0)) return -1e308;
  hak_policy_bits_t b = {.d = x};
  int e = (int)((b.u >> 52) & 0x7ff) - 1023;
  b.u = (b.u & ~((uint64_t)0x7ff << 52)) | ((uint64_t)1023 << 52);
  double t = (b.d - 1) / (b.d + 1), t2 = t * t, term = t, sum = 0;
  for (int k = 1; k < 40; k += 2) {
    sum += term / k;
    term *= t2;
  }
  return e * HAK_POLICY_LN2 + 2 * sum;
}

/* exp x = 2^k exp r, |r| <= ln 2 / 2: a short Taylor series, then the exponent. */
double hak_policy_exp(double x) {
  if (x > 700) x = 700;
  if (x < -700) return 0;
  int k = (int)(x / HAK_POLICY_LN2 + (x < 0 ? -0.5 : 0.5));
  double r = x - k * HAK_POLICY_LN2, term = 1, sum = 1;
  for (int i = 1; i < 18; i++) {
    term *= r / i;
    sum += term;
  }
  hak_policy_bits_t b = {.u = (uint64_t)(k + 1023) << 52};
  return sum * b.d;
}

/* ---- Scores and ratings -------------------------------------------------------------- */

double hak_policy_epoch_score(const hak_policy_epoch_t* epoch, uint64_t rss_weight) {
  double wall = epoch->wall_ns > 0 ? (double)epoch->wall_ns : 1.0;
  double cost = (double)epoch->os_ns + (double)epoch->faults * HAK_POLICY_FAULT_NS;
  return 1e6 * cost / wall + (double)rss_weight * (double)epoch->held_bytes / (1024.0 * 1024.0);
}

double hak_policy_elo_expected(double ra, double rb) {
  return 1.0 / (1.0 + hak_policy_exp((rb - ra) * HAK_POLICY_LN10 / 400.0));
}

/* b's expectation is 1 - a's and its score 1 - score_a: what a gains, b loses. */
void hak_policy_elo_update(double* ra, double* rb, double score_a, double k) {
  double delta = k * (score_a - hak_policy_elo_expected(*ra, *rb));
  *ra += delta;
  *rb -= delta;
}

double hak_policy_outcome(double score_a, double score_b) {
  double a = score_a < 0 ? -score_a : score_a, b = score_b < 0 ? -score_b : score_b;
  double diff = score_a > score_b ? score_a - score_b : score_b - score_a;
  if (diff * 1000 <= HAK_POLICY_TIE_PERMILLE * (a > b ? a : b)) return 0.5;
  return score_a < score_b ? 1.0 : 0.0;
}

/* ---- The learner --------------------------------------------------------------------- */

uint64_t hak_policy_rng_next(uint64_t* state) { /* xorshift64* */
  uint64_t x = *state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *state = x;
  return x * 0x2545F4914F6CDD1Dull;
}

void hak_policy_learner_init(hak_policy_learner_t* l, uint64_t seed) {
  *l = (hak_policy_learner_t){0};
  l->rng = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull; /* never 0 for small seeds */
  if (l->rng == 0) l->rng = 1;
  for (int i = 0; i < HAK_POLICY_ARMS; i++) {
    l->elo[i] = HAK_POLICY_ELO_START;
    l->order[i] = (uint8_t)i;
  }
  for (int i = HAK_POLICY_ARMS - 1; i > 0; i--) { /* Fisher-Yates */
    int j = (int)(hak_policy_rng_next(&l->rng) % (uint64_t)(i + 1));
    uint8_t t = l->order[i];
    l->order[i] = l->order[j];
    l->order[j] = t;
  }
  l->leader = l->order[0];
}

/* An arm rated more than HAK_POLICY_ELO_MARGIN below the leader is out of the running:
 * UCB1 alone would still pull a clearly worse arm every few dozen epochs (its bonus grows
 * with ln N), and on a workload where the worse arms cost half as much again, those
 * pulls alone lose several percent. Out of the running, it is played only when the
 * learned epochs reach a power of two from HAK_POLICY_RECHECK_FIRST on (the one pulled
 * least), so that a workload whose best setting changes is still noticed: a win there
 * lifts its rating back into the running. */
static bool hak_policy_in_running(const hak_policy_learner_t* l, int arm) {
  return l->elo[arm] >= l->elo[l->leader] - HAK_POLICY_ELO_MARGIN;
}

static int hak_policy_recheck(const hak_policy_learner_t* l) {
  uint64_t e = l->epochs;
  if (e < HAK_POLICY_RECHECK_FIRST || (e & (e - 1)) != 0) return -1;
  int pick = -1;
  for (int k = 0; k < HAK_POLICY_ARMS; k++) {
    int i = l->order[k];
    if (hak_policy_in_running(l, i)) continue;
    if (pick < 0 || l->pulls[i] < l->pulls[pick]) pick = i;
  }
  return pick;
}

/* UCB1 among the arms in the running: every arm once (in the seed's order), then the
 * best mean reward plus sqrt(2 ln N / n), so an arm tried rarely gets tried again now
 * and then; the arms out of the running at their rechecks. Ties go to the arm earlier
 * in the seed's order. */
int hak_policy_ucb_select(hak_policy_learner_t* l) {
  uint64_t total = 0;
  for (int k = 0; k < HAK_POLICY_ARMS; k++) {
    int i = l->order[k];
    if (l->pulls[i] == 0) return i;
    total += l->pulls[i];
  }
  int recheck = hak_policy_recheck(l);
  if (recheck >= 0) return recheck;
  double ln_total = hak_policy_ln((double)total);
  int best = l->leader;
  double best_value = -1;
  for (int k = 0; k < HAK_POLICY_ARMS; k++) {
    int i = l->order[k];
    if (!hak_policy_in_running(l, i)) continue;
    double n = (double)l->pulls[i];
    double value = l->reward_sum[i] / n + hak_policy_sqrt(2 * ln_total / n);
    if (value > best_value) {
      best_value = value;
      best = i;
    }
  }
  return best;
}

static void hak_policy_update_leader(hak_policy_learner_t* l) {
  int leader = l->leader;
  for (int k = 0; k < HAK_POLICY_ARMS; k++) {
    int i = l->order[k];
    if (l->elo[i] > l->elo[leader]) leader = i;
  }
  if (leader != l->leader) {
    l->leader = leader;
    l->leader_since = l->epochs;
  }
}

/* The epoch plays one game against the latest epoch of every other arm tried so far:
 * ELO moves by each result, and the arm's reward is its mean result (0.5 with no
 * opponent yet). */
double hak_policy_learn(hak_policy_learner_t* l, int arm, double score) {
  double results = 0;
  int games = 0;
  for (int b = 0; b < HAK_POLICY_ARMS; b++) {
    if (b == arm || l->pulls[b] == 0) continue;
    double s = hak_policy_outcome(score, l->last_score[b]);
    hak_policy_elo_update(&l->elo[arm], &l->elo[b], s, HAK_POLICY_ELO_K);
    results += s;
    games++;
  }
  double reward = games > 0 ? results / games : 0.5;
  l->pulls[arm]++;
  l->reward_sum[arm] += reward;
  l->last_score[arm] = score;
  l->epochs++;
  hak_policy_update_leader(l);
  return reward;
}

/* ---- The hook into hakmem ----------------------------------------------------------- */

bool hak_policy_on; /* HAKMEM_POLICY, set once at start before any thread reads it */

typedef struct hak_policy_sample_s {
  uint64_t wall_ns, os_ns, faults;
} hak_policy_sample_t;

static struct {
  hak_lock_t lock;                /* try-lock: one thread runs an epoch's end, others skip */
  _Atomic uint64_t next_ms;       /* the first tick at or after this has work: a sample or the end */
  uint64_t epoch_end_ms;          /* ... the epoch's end */
  uint64_t sample_ms;             /* ... the next sample of the held bytes */
  uint64_t held_sum, held_samples;
  hak_policy_learner_t learner;
  hak_policy_setting_t caps;
  int arm;                        /* the arm in force */
  hak_policy_sample_t start;      /* the epoch's start */
  hak_stats_t scratch;            /* for the cache and region readers (under the lock) */
} hak_policy_state = {.lock = HAK_LOCK_INIT, .next_ms = UINT64_MAX};

static uint64_t hak_policy_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static hak_policy_sample_t hak_policy_sample(void) {
  hak_policy_sample_t s = {hak_policy_now_ns(), hak_os_nanos_total(), 0};
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) == 0) s.faults = (uint64_t)ru.ru_minflt + (uint64_t)ru.ru_majflt;
  return s;
}

/* Bytes resident by the knobs' doing: blocks in the whale ring and BigCaches, free
 * region units not yet purged. A proxy for the RSS the arm costs, read from hakmem's own
 * books (VmRSS also moves with the program's live data, phase by phase, which would
 * drown the arm's share). */
static uint64_t hak_policy_held_bytes(void) {
  hak_stats_t* s = &hak_policy_state.scratch;
  hak_cache_stats_read(s);
  hak_region_stats_read(s);
  return s->whale.cached_bytes + s->bigcache.cached_bytes + s->region_dirty_bytes;
}

/* The options are read at each use, without locks, by other threads, as plain loads
 * (hak_cache.c, hak_purge.c, ...): an aligned word store is seen whole, old or new, and
 * a reader that sees the old limit once does no harm. A racy update by design, so not
 * instrumented (HAK_NO_SANITIZE; TSan instruments atomic builtins even there, so the
 * stores are volatile, one instruction each). */
#define hak_policy_store(field, value) (*(volatile size_t*)&(field) = (value))

HAK_NO_SANITIZE static void hak_policy_apply(const hak_policy_setting_t* s) {
  hak_policy_store(hak_options.whale_slots, s->whale_slots);
  hak_policy_store(hak_options.whale_bytes, s->whale_bytes);
  hak_policy_store(hak_options.bigcache_slots, s->bigcache_slots);
  hak_policy_store(hak_options.bigcache_bytes, s->bigcache_bytes);
  hak_policy_store(hak_options.purge_delay_ms, s->purge_delay_ms);
  hak_policy_store(hak_options.purge_batch_bytes, s->purge_batch_bytes);
}

/* The held bytes are sampled HAK_POLICY_HELD_SAMPLES times an epoch (on ticks) and
 * averaged: one reading at its end would see a burst's memory or not by chance. */
static void hak_policy_sample_held(void) {
  hak_policy_state.held_sum += hak_policy_held_bytes();
  hak_policy_state.held_samples++;
}

static uint64_t hak_policy_sample_step_ms(void) {
  uint64_t step = hak_options.policy_epoch_ms / HAK_POLICY_HELD_SAMPLES;
  return step > 0 ? step : 1;
}

static void hak_policy_schedule(uint64_t now_ms) {
  hak_policy_state.sample_ms = now_ms + hak_policy_sample_step_ms();
  uint64_t next = hak_policy_state.sample_ms < hak_policy_state.epoch_end_ms ? hak_policy_state.sample_ms
                                                                               : hak_policy_state.epoch_end_ms;
  atomic_store_explicit(&hak_policy_state.next_ms, next, memory_order_relaxed);
}

/* ---- HAKMEM_POLICY_LOG: one line per epoch on stderr, without stdio ------------------ */

typedef struct hak_policy_line_s {
  char buf[256];
  size_t n;
} hak_policy_line_t;

static void hak_policy_put(hak_policy_line_t* line, const char* s) {
  while (*s != '\0' && line->n < sizeof(line->buf) - 1) line->buf[line->n++] = *s++;
}

static void hak_policy_put_u64(hak_policy_line_t* line, uint64_t v) {
  char digits[24];
  int n = hak_u64_digits(v, digits);
  while (n > 0 && line->n < sizeof(line->buf) - 1) line->buf[line->n++] = digits[--n];
}

static void hak_policy_put_field(hak_policy_line_t* line, const char* name, uint64_t v) {
  hak_policy_put(line, name);
  hak_policy_put_u64(line, v);
}

static void hak_policy_log(int arm, double score, double reward, uint64_t held) {
  const hak_policy_learner_t* l = &hak_policy_state.learner;
  hak_policy_line_t line = {.n = 0};
  hak_policy_put_field(&line, "hakmem: policy: epoch=", l->epochs);
  hak_policy_put_field(&line, " arm=", (uint64_t)arm);
  hak_policy_put_field(&line, " score=", (uint64_t)(score + 0.5));
  hak_policy_put_field(&line, " reward_permille=", (uint64_t)(reward * 1000 + 0.5));
  hak_policy_put_field(&line, " held_kib=", held >> 10);
  hak_policy_put_field(&line, " leader=", (uint64_t)l->leader);
  hak_policy_put_field(&line, " leader_since=", l->leader_since);
  hak_policy_put(&line, " elo=");
  for (int i = 0; i < HAK_POLICY_ARMS; i++) {
    if (i > 0) hak_policy_put(&line, ",");
    hak_policy_put_u64(&line, (uint64_t)(l->elo[i] > 0 ? l->elo[i] + 0.5 : 0));
  }
  hak_policy_put(&line, "\n");
  for (size_t off = 0; off < line.n;) {
    ssize_t w = write(2, line.buf + off, line.n - off);
    if (w <= 0) break;
    off += (size_t)w;
  }
}

/* ---- Epochs ------------------------------------------------------------------------ */

static void hak_policy_start_epoch(int arm, uint64_t now_ms) {
  hak_policy_state.arm = arm;
  hak_policy_setting_t s = hak_policy_resolve(&hak_policy_state.caps, arm);
  hak_policy_apply(&s);
  hak_policy_state.start = hak_policy_sample();
  hak_policy_state.held_sum = hak_policy_state.held_samples = 0;
  hak_policy_state.epoch_end_ms = now_ms + hak_options.policy_epoch_ms;
  hak_policy_schedule(now_ms);
}

static void hak_policy_end_epoch(uint64_t now_ms) {
  hak_policy_sample_t end = hak_policy_sample();
  const hak_policy_sample_t* start = &hak_policy_state.start;
  hak_policy_sample_held();
  hak_policy_epoch_t epoch = {end.wall_ns - start->wall_ns, end.os_ns - start->os_ns, end.faults - start->faults,
                              hak_policy_state.held_sum / hak_policy_state.held_samples};
  double score = hak_policy_epoch_score(&epoch, hak_options.policy_rss_weight);
  int arm = hak_policy_state.arm;
  double reward = hak_policy_learn(&hak_policy_state.learner, arm, score);
  if (hak_options.policy_log) hak_policy_log(arm, score, reward, epoch.held_bytes);
  hak_policy_start_epoch(hak_policy_ucb_select(&hak_policy_state.learner), now_ms);
}

/* At start (hak_process_init, after the options): the options in force become the caps,
 * and the first arm of the seed's order is played. */
void hak_policy_init(void) {
  if (!hak_options.policy) return;
  hak_policy_state.caps = (hak_policy_setting_t){hak_options.whale_slots,    hak_options.whale_bytes,
                                                 hak_options.bigcache_slots, hak_options.bigcache_bytes,
                                                 hak_options.purge_delay_ms, hak_options.purge_batch_bytes};
  hak_policy_learner_init(&hak_policy_state.learner, hak_options.policy_seed);
  hak_policy_start_epoch(hak_policy_ucb_select(&hak_policy_state.learner), hak_purge_now_ms());
  hak_policy_on = true;
}

/* From hak_purge_tick (slow paths) when the policy is on: a load and a compare until
 * a sample or the epoch's end is due; then one thread does it, the others (try-lock
 * taken) go on. */
void hak_policy_tick(uint64_t now_ms) {
  if (now_ms < atomic_load_explicit(&hak_policy_state.next_ms, memory_order_relaxed)) return;
  if (!hak_trylock(&hak_policy_state.lock)) return;
  if (now_ms >= hak_policy_state.epoch_end_ms) {
    hak_policy_end_epoch(now_ms);
  } else if (now_ms >= hak_policy_state.sample_ms) {
    hak_policy_sample_held();
    hak_policy_schedule(now_ms);
  }
  hak_unlock(&hak_policy_state.lock);
}

/* Held across fork like the other global locks: a child whose fork caught another
 * thread at an epoch's end would otherwise never run one again (the try-lock fails
 * forever) and hak_policy_read would wait forever. */
void hak_policy_fork_lock(void) {
  hak_lock(&hak_policy_state.lock);
}

void hak_policy_fork_unlock(void) {
  hak_unlock(&hak_policy_state.lock);
}

void hak_policy_read(hak_policy_status_t* out) {
  hak_lock(&hak_policy_state.lock);
  out->on = hak_policy_on;
  out->arm = hak_policy_state.arm;
  out->learner = hak_policy_state.learner;
  out->caps = hak_policy_state.caps;
  hak_unlock(&hak_policy_state.lock);
}
