/* SPDX-License-Identifier: MIT */
/* policy_phases - two workloads for the adaptive policy's evidence (bench/policy.py):
 * the best fixed setting of the large-block caches and the purge delay should differ
 * between them.
 *
 * --mode whales: a working cycle of 8 large blocks (6, 10, ..., 34 MiB), each
 *   allocated, written on every 4 KiB page, checked and freed, with --gap small
 *   allocations (16 B .. 2 KiB, in a ring of 4,096 live blocks) after each. Memory kept
 *   resident across the gap (a cached whale, region units not yet purged) saves up to
 *   8,704 page faults per block; purging it during the gap saves little RSS (one block).
 * --mode bursts: a service that is mostly quiet: each round, a burst of --burst-mib of
 *   1..8 MiB blocks, all live at once (written on every page, checked, then freed),
 *   followed by a quiet phase of
 *   --quiet small allocations (16 B .. 2 KiB, in a ring of 4,096 live blocks). What a
 *   long purge delay or big caches keep resident after the burst is RSS paid for the
 *   whole quiet phase and saves little (one burst per round).
 * Both sample RSS (resident pages of /proc/self/statm) every 1/64 of the run and
 * report their mean as mean_rss_kib (KiB), besides the usual RESULT fields.
 *   --rounds N      (default: whales 2000, bursts 40)
 *   --expect-ms T   the run's expected length, for the sampling step (default 4000)
 *   --gap G         whales: small allocations after each large block (default 1,000,000)
 *   --burst-mib M   bursts: MiB allocated per burst (default 64)
 *   --quiet Q       bursts: small allocations per quiet phase (default 20,000,000)
 * ops = allocations (each freed once). Self-check: every page's byte of every large
 * block, the first and last byte of every small one.
 */
#include <fcntl.h>
#include <unistd.h>

#include "bench_util.h"

#define RING 4096

typedef struct run_s {
  uint64_t ops, checksum, rss_sum, rss_samples;
  uint64_t next_sample_ns, sample_every_ns;
} run_t;

/* RSS samples at fixed times, so the mean weighs each phase by how long it lasts. */
static void maybe_sample(run_t* r) {
  uint64_t now = bench_now_ns();
  if (now < r->next_sample_ns) return;
  r->rss_sum += bench_statm_rss_kib();
  r->rss_samples++;
  r->next_sample_ns = now + r->sample_every_ns;
}

static void use_large(run_t* r, size_t size, uint64_t tag) {
  unsigned char* p = bench_malloc(size);
  for (size_t off = 0; off < size; off += 4096) p[off] = (unsigned char)(tag + off / 4096);
  for (size_t off = 0; off < size; off += 4096) {
    if (p[off] != (unsigned char)(tag + off / 4096)) BENCH_FAIL("block of %zu B lost its byte at %zu", size, off);
  }
  r->checksum = bench_mix(r->checksum, size + p[size - 1]);
  free(p);
  r->ops++;
  maybe_sample(r);
}

/* Small allocations in a ring of RING live blocks: the quiet work between large uses. */
static void small_work(run_t* r, bench_rng_t* rng, unsigned char** ring, size_t* sizes, uint64_t steps) {
  for (uint64_t q = 0; q < steps; q++) {
    size_t slot = (size_t)(bench_rng_next(rng) % RING);
    if (ring[slot] != NULL) {
      if (ring[slot][0] != (unsigned char)sizes[slot] || ring[slot][sizes[slot] - 1] != (unsigned char)slot)
        BENCH_FAIL("small block in slot %zu lost its bytes", slot);
      r->checksum = bench_mix(r->checksum, sizes[slot]);
      free(ring[slot]);
    }
    sizes[slot] = 16 + (size_t)(bench_rng_next(rng) % 2033);
    ring[slot] = bench_malloc(sizes[slot]);
    ring[slot][0] = (unsigned char)sizes[slot];
    ring[slot][sizes[slot] - 1] = (unsigned char)slot;
    r->ops++;
    if ((q & 4095) == 0) maybe_sample(r);
  }
}

static void free_ring(unsigned char** ring) {
  for (size_t s = 0; s < RING; s++) free(ring[s]);
}

static void run_whales(run_t* r, uint64_t rounds, uint64_t gap) {
  bench_rng_t rng = {0xa1e5};
  static unsigned char* ring[RING];
  static size_t sizes[RING];
  for (uint64_t i = 0; i < rounds; i++) {
    for (size_t k = 0; k < 8; k++) {
      use_large(r, (6 + 4 * k) << 20, i * 8 + k);
      small_work(r, &rng, ring, sizes, gap);
    }
  }
  free_ring(ring);
}

static void run_bursts(run_t* r, uint64_t rounds, uint64_t burst_mib, uint64_t quiet) {
  bench_rng_t rng = {0x5eed};
  static unsigned char* ring[RING];
  static size_t sizes[RING];
  unsigned char* burst[512];
  size_t burst_sizes[512];
  for (uint64_t i = 0; i < rounds; i++) {
    size_t n = 0;
    for (uint64_t mib = 0; mib < burst_mib && n < 512; n++) { /* all of it live at once */
      size_t m = 1 + (size_t)(bench_rng_next(&rng) % 8);
      burst_sizes[n] = m << 20;
      burst[n] = bench_malloc(burst_sizes[n]);
      for (size_t off = 0; off < burst_sizes[n]; off += 4096) burst[n][off] = (unsigned char)(i + n + off / 4096);
      mib += m;
      r->ops++;
    }
    maybe_sample(r);
    for (size_t b = 0; b < n; b++) {
      for (size_t off = 0; off < burst_sizes[b]; off += 4096) {
        if (burst[b][off] != (unsigned char)(i + b + off / 4096)) BENCH_FAIL("burst block %zu lost its byte", b);
      }
      r->checksum = bench_mix(r->checksum, burst_sizes[b]);
      free(burst[b]);
    }
    small_work(r, &rng, ring, sizes, quiet);
  }
  free_ring(ring);
}

int main(int argc, char** argv) {
  const char* mode = "whales";
  for (int i = 1; i + 1 < argc; i++) {
    if (strcmp(argv[i], "--mode") == 0) mode = argv[i + 1];
  }
  int whales = strcmp(mode, "whales") == 0;
  if (!whales && strcmp(mode, "bursts") != 0) BENCH_FAIL("--mode whales or bursts, not %s", mode);
  uint64_t rounds = bench_arg(argc, argv, "--rounds", whales ? 2000 : 40);
  uint64_t expect_ms = bench_arg(argc, argv, "--expect-ms", 4000); /* for the sampling step only */
  run_t r = {0, 0, 0, 0, 0, expect_ms * 1000000ull / 64};
  uint64_t t0 = bench_now_ns();
  r.next_sample_ns = t0;
  if (whales) run_whales(&r, rounds, bench_arg(argc, argv, "--gap", 1000000));
  else run_bursts(&r, rounds, bench_arg(argc, argv, "--burst-mib", 64), bench_arg(argc, argv, "--quiet", 20000000));
  uint64_t ns = bench_now_ns() - t0;
  char extra[96];
  snprintf(extra, sizeof extra, "mean_rss_kib=%llu rss_samples=%llu",
           (unsigned long long)(r.rss_samples ? r.rss_sum / r.rss_samples : 0), (unsigned long long)r.rss_samples);
  bench_report_extra(whales ? "policy_whales" : "policy_bursts", r.ops, ns, r.checksum, extra);
  return 0;
}
