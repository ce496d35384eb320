/* SPDX-License-Identifier: MIT */
/* rss_over_time - a long-running service's allocation pattern, compressed: how RSS
 * follows the load up and, more to the point, back down (issue 8).
 *
 * --cycles cycles of
 * 1. growth: the working set is built up by allocating blocks of mixed sizes
 *    (80% 16..512 B, 18.5% 512 B..32 KiB, 1.4% 64 KiB..1 MiB, 0.1% 2..8 MiB), each
 *    filled sparsely (first and last byte and one byte per 4 KiB page). The number of
 *    blocks follows a fixed load pattern: --blocks times 1, 0.55, 0.8, 0.35, 0.9, 0.5,
 *    0.7, 0.4 (repeating), so peaks differ from cycle to cycle;
 * 2. release: the working set is checked and freed in random order, except 1 in 16
 *    blocks of up to 32 KiB, which stay as a long-lived residue (sessions, caches) and
 *    are freed --residue-cycles cycles later (at the end of that cycle's release), so
 *    the survivors are scattered over the heap the allocator would like to give back.
 * Each step of either phase (one allocation, or one block visited in the release) also
 * replaces --trickle blocks of 16..1024 B in a ring of 256: short-lived allocations.
 * RSS (resident pages of /proc/self/statm times the page size) is sampled at step 0,
 * every N steps, N chosen so that there are at most --samples of these, and at the
 * end of the last cycle (the residue of the last cycles still alive): at most 64. The RESULT line carries them in KiB as
 * samples=kib0,kib1,... (samples_every=N steps), final_rss_kib (the last sample) and
 * residue_kib (live residue then); its rss_kib is taken after the residue is freed too.
 *   --cycles C          cycles (default 8)
 *   --blocks B          blocks of the fullest cycle (default 6,000: about 100 MiB)
 *   --residue-cycles R  cycles a residue block lives (default 3)
 *   --trickle T         short-lived allocations per step (default 4)
 *   --samples S         RSS samples between start and end (default 48, at most 62)
 *   --seed S
 * ops = allocations (working set and trickle; each freed once).
 * Self-check: the sparse pattern of every working-set block is checked before it is
 * freed; the first and last byte of every trickle block.
 */
#include <fcntl.h>
#include <unistd.h>

#include "bench_util.h"

#define MAX_SAMPLES 64
#define TRICKLE_RING 256

static const double kLoad[8] = {1.0, 0.55, 0.8, 0.35, 0.9, 0.5, 0.7, 0.4};

typedef struct block_s {
  unsigned char* p;
  size_t size;
  uint64_t tag;
  uint64_t dies; /* cycle at whose release a residue block is freed */
} block_t;

static size_t service_size(bench_rng_t* rng) {
  uint64_t r = bench_rng_next(rng);
  uint64_t pick = r % 1000;
  r >>= 10;
  if (pick < 800) return 16 + (size_t)(r % 497);
  if (pick < 985) return 512 + (size_t)(r % ((32u << 10) - 511));
  if (pick < 999) return ((size_t)64 << 10) + (size_t)(r % ((1u << 20) - (64u << 10) + 1));
  return ((size_t)2 << 20) + (size_t)(r % ((6u << 20) + 1));
}

typedef struct state_s {
  bench_rng_t rng;
  unsigned char* trickle[TRICKLE_RING];
  uint64_t trickle_n, trickle_per_step;
  uint64_t step, every, checksum, ops;
  uint64_t samples[MAX_SAMPLES];
  int nsamples, max_samples;
} state_t;

static void trickle_step(state_t* s) {
  for (uint64_t k = 0; k < s->trickle_per_step; k++, s->trickle_n++) {
    unsigned char** slot = &s->trickle[s->trickle_n % TRICKLE_RING];
    if (*slot != NULL) {
      uint64_t old = s->trickle_n - TRICKLE_RING;
      size_t size = 16 + (size_t)(bench_mix(0, old) % 1009);
      BENCH_CHECK((*slot)[0] == bench_byte(old, 0) && (*slot)[size - 1] == bench_byte(old, size - 1),
                  "trickle block %llu corrupted", (unsigned long long)old);
      free(*slot);
    }
    size_t size = 16 + (size_t)(bench_mix(0, s->trickle_n) % 1009);
    unsigned char* p = bench_malloc(size);
    p[0] = bench_byte(s->trickle_n, 0);
    p[size - 1] = bench_byte(s->trickle_n, size - 1);
    *slot = p;
    s->ops++;
  }
}

static void sample(state_t* s) {
  if (s->nsamples < s->max_samples) s->samples[s->nsamples++] = bench_statm_rss_kib();
}

/* One step of either phase: the trickle, then a sample when one is due. */
static void step_done(state_t* s) {
  trickle_step(s);
  if (++s->step % s->every == 0) sample(s);
}

static void free_block(state_t* s, block_t* b) {
  if (!bench_check_sparse(b->p, b->size, b->tag))
    BENCH_FAIL("block %llx (%zu B) corrupted", (unsigned long long)b->tag, b->size);
  s->checksum = bench_mix(s->checksum, b->tag ^ b->size);
  free(b->p);
  b->p = NULL;
}

int main(int argc, char** argv) {
  uint64_t cycles = bench_arg(argc, argv, "--cycles", 8);
  uint64_t blocks = bench_arg(argc, argv, "--blocks", 6000);
  uint64_t residue_cycles = bench_arg(argc, argv, "--residue-cycles", 3);
  uint64_t want = bench_arg(argc, argv, "--samples", 48);
  static state_t s; /* static: no large stack frame, zeroed */
  s.rng.state = bench_arg(argc, argv, "--seed", 0x5E4F1CEULL) | 1;
  s.trickle_per_step = bench_arg(argc, argv, "--trickle", 4);
  if (want < 2) want = 2;
  if (want > MAX_SAMPLES - 2) want = MAX_SAMPLES - 2; /* room for the samples at the start and end */

  uint64_t* per_cycle = calloc(cycles + 1, sizeof(uint64_t));
  uint64_t total_steps = 0, max_blocks = 0;
  for (uint64_t c = 0; c < cycles; c++) {
    per_cycle[c] = (uint64_t)(blocks * kLoad[c % 8]);
    if (per_cycle[c] == 0) per_cycle[c] = 1;
    total_steps += 2 * per_cycle[c]; /* each block: allocated once, visited once in the release */
    if (per_cycle[c] > max_blocks) max_blocks = per_cycle[c];
  }
  s.every = (total_steps + want - 1) / want;
  if (s.every == 0) s.every = 1;
  s.max_samples = MAX_SAMPLES;
  block_t* ws = calloc(max_blocks, sizeof(block_t));
  /* residue: about 1 in 16 of each cycle's blocks, alive for residue_cycles cycles
   * (room for twice that; past it, a block picked for the residue is freed) */
  uint64_t residue_cap = (max_blocks / 8 + 1) * (residue_cycles + 1), nresidue = 0, residue_bytes = 0;
  block_t* residue = calloc(residue_cap, sizeof(block_t));
  uint64_t* order = calloc(max_blocks, sizeof(uint64_t));
  BENCH_CHECK(per_cycle && ws && residue && order, "no memory for the workload's tables");

  uint64_t t0 = bench_now_ns();
  sample(&s);
  for (uint64_t c = 0; c < cycles; c++) {
    uint64_t n = per_cycle[c];
    for (uint64_t i = 0; i < n; i++) { /* growth */
      block_t* b = &ws[i];
      b->size = service_size(&s.rng);
      b->tag = (c << 32) | i;
      b->p = bench_malloc(b->size);
      bench_fill_sparse(b->p, b->size, b->tag);
      s.ops++;
      step_done(&s);
    }
    for (uint64_t i = 0; i < n; i++) order[i] = i;
    for (uint64_t i = n; i > 1; i--) { /* Fisher-Yates: the order of the release */
      uint64_t j = bench_rng_next(&s.rng) % i;
      uint64_t t = order[i - 1];
      order[i - 1] = order[j];
      order[j] = t;
    }
    for (uint64_t k = 0; k < n; k++) { /* release */
      block_t* b = &ws[order[k]];
      if (b->size <= (32u << 10) && bench_rng_next(&s.rng) % 16 == 0 && nresidue < residue_cap) {
        b->dies = c + residue_cycles;
        residue[nresidue++] = *b;
        residue_bytes += b->size;
        b->p = NULL;
      } else {
        free_block(&s, b);
      }
      step_done(&s);
    }
    for (uint64_t r = 0; r < nresidue;) { /* residue whose time has come */
      if (residue[r].dies <= c) {
        residue_bytes -= residue[r].size;
        free_block(&s, &residue[r]);
        residue[r] = residue[--nresidue];
      } else {
        r++;
      }
    }
  }
  uint64_t final_rss = bench_statm_rss_kib();
  if (s.step % s.every != 0 && s.nsamples < MAX_SAMPLES) s.samples[s.nsamples++] = final_rss; /* the end */
  uint64_t final_residue = residue_bytes;
  for (uint64_t r = 0; r < nresidue; r++) free_block(&s, &residue[r]);
  for (uint64_t k = 0; k < TRICKLE_RING; k++) free(s.trickle[k]);
  uint64_t ns = bench_now_ns() - t0;
  free(per_cycle);
  free(ws);
  free(residue);
  free(order);

  char extra[32 + MAX_SAMPLES * 12 + 128];
  int len = snprintf(extra, sizeof(extra), "final_rss_kib=%llu residue_kib=%llu samples_every=%llu samples=",
                     (unsigned long long)final_rss, (unsigned long long)(final_residue >> 10),
                     (unsigned long long)s.every);
  for (int i = 0; i < s.nsamples && len < (int)sizeof(extra) - 24; i++)
    len += snprintf(extra + len, sizeof(extra) - len, "%s%llu", i ? "," : "", (unsigned long long)s.samples[i]);
  bench_report_extra("rss_over_time", s.ops, ns, s.checksum, extra);
  return 0;
}
