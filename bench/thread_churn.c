/* SPDX-License-Identifier: MIT */
/* thread_churn - many short-lived threads, as in a server that starts a thread per
 * task: per-thread caches and heaps are set up and torn down all the time, and
 * blocks outlive the thread that allocated them (issue 8).
 *
 * --threads-total threads run in waves of --alive (a wave is started, then joined,
 * then the next one starts, so at most --alive are alive at once). Thread k:
 * 1. first frees the blocks thread k - alive (same slot, previous wave, now exited)
 *    handed to it, and the array they came in: cross-thread frees of a dead
 *    thread's memory;
 * 2. allocates --blocks blocks (80% 16..512 B, 18% 512 B..4 KiB, 2% 4..32 KiB), fills
 *    each one completely;
 * 3. checks and frees half of them itself (every other block), hands a quarter to
 *    the next thread of its slot (step 1) and the rest, less 4, to the main thread,
 *    which frees them right after the wave is joined; the last 4 it leaves behind:
 *    the main thread frees those at the end of the run (long-lived blocks of many
 *    dead threads; left_rss_kib is the RSS just before).
 *   --threads-total N  threads in all (default 2000)
 *   --alive A          threads per wave (default 8)
 *   --blocks B         blocks per thread (default 256; at least 16)
 *   --seed S
 * ops = allocations of blocks (each freed once; the hand-off arrays are not counted);
 * the time covers thread creation and joining. rss_kib of the RESULT line is taken
 * after everything is freed.
 * Self-check: every block carries its tag in its first 8 bytes and a byte derived
 * from the tag everywhere else; tag and last byte are checked before any free. The
 * checksum adds up what every thread and the main thread freed, so it does not depend
 * on how threads interleave.
 */
#include <pthread.h>

#include "bench_util.h"

#define LEFT_BEHIND 4

typedef struct slot_s {
  pthread_t thread;
  uint64_t index;   /* thread number, 0 .. threads-total - 1 */
  uint64_t blocks;  /* per thread */
  uint64_t seed;
  void** handoff;   /* in: from the previous thread of this slot; out: to the next one */
  uint64_t handoff_count;
  void** to_main;   /* the thread's blocks for the main thread: the rest, then the 4 left behind */
  uint64_t to_main_count;
  uint64_t checksum;
} slot_t;

static size_t churn_size(bench_rng_t* rng) {
  uint64_t r = bench_rng_next(rng);
  uint64_t pick = r % 100;
  r >>= 8;
  if (pick < 80) return 16 + (size_t)(r % 497);
  if (pick < 98) return 512 + (size_t)(r % (4096 - 511));
  return 4096 + (size_t)(r % ((32u << 10) - 4096 + 1));
}

/* A block of at least 16 B: tag and size in its first 12 bytes, the tag's byte after. */
static void* make_block(uint64_t tag, size_t size) {
  unsigned char* p = bench_malloc(size);
  uint32_t size32 = (uint32_t)size;
  memcpy(p, &tag, 8);
  memcpy(p + 8, &size32, 4);
  memset(p + 12, bench_byte(tag, 0), size - 12);
  return p;
}

/* Checks a block and returns its contribution to the checksum. */
static uint64_t check_block(const unsigned char* p) {
  uint64_t tag;
  uint32_t size;
  memcpy(&tag, p, 8);
  memcpy(&size, p + 8, 4);
  BENCH_CHECK(size >= 16 && size <= (32u << 10) && p[12] == bench_byte(tag, 0) && p[size - 1] == bench_byte(tag, 0),
              "block %llx corrupted (size field %llu)", (unsigned long long)tag, (unsigned long long)size);
  return bench_mix(tag, size);
}

static void* thread_run(void* arg) {
  slot_t* s = (slot_t*)arg;
  uint64_t sum = 0;
  for (uint64_t i = 0; i < s->handoff_count; i++) { /* 1: the previous thread's blocks */
    sum += check_block(s->handoff[i]);
    free(s->handoff[i]);
  }
  free(s->handoff);
  bench_rng_t rng = {(s->seed ^ (s->index * 0x9E3779B97F4A7C15ULL)) | 1};
  uint64_t n = s->blocks, handed = n / 4, nmain = n / 2 - n / 4, h = 0, m = 0;
  void** mine = bench_malloc(n * sizeof(void*));
  for (uint64_t i = 0; i < n; i++) mine[i] = make_block((s->index << 32) | i, churn_size(&rng));
  void** handoff = bench_malloc(handed * sizeof(void*));
  void** to_main = bench_malloc(nmain * sizeof(void*));
  for (uint64_t i = 0; i < n; i++) { /* 3: even blocks freed here, odd ones handed on */
    if (i % 2 == 0) {
      sum += check_block(mine[i]);
      free(mine[i]);
    } else if (h < handed) {
      handoff[h++] = mine[i];
    } else {
      to_main[m++] = mine[i];
    }
  }
  free(mine);
  s->handoff = handoff;
  s->handoff_count = handed;
  s->to_main = to_main;
  s->to_main_count = nmain;
  s->checksum = sum;
  return NULL;
}

int main(int argc, char** argv) {
  uint64_t total = bench_arg(argc, argv, "--threads-total", 2000);
  uint64_t alive = bench_arg(argc, argv, "--alive", 8);
  uint64_t blocks = bench_arg(argc, argv, "--blocks", 256);
  uint64_t seed = bench_arg(argc, argv, "--seed", 0x7C4EADULL);
  if (alive == 0) alive = 1;
  BENCH_CHECK(blocks >= 4 * LEFT_BEHIND, "--blocks must be at least %d", 4 * LEFT_BEHIND);
  slot_t* slots = calloc(alive, sizeof(slot_t));
  void** left = bench_malloc((total * LEFT_BEHIND + 1) * sizeof(void*));
  uint64_t nleft = 0, checksum = 0;

  uint64_t t0 = bench_now_ns();
  for (uint64_t first = 0; first < total; first += alive) {
    uint64_t wave = total - first < alive ? total - first : alive;
    for (uint64_t k = 0; k < wave; k++) {
      slot_t* s = &slots[k];
      s->index = first + k;
      s->blocks = blocks;
      s->seed = seed;
      BENCH_CHECK(pthread_create(&s->thread, NULL, thread_run, s) == 0, "pthread_create failed (thread %llu)",
                  (unsigned long long)(first + k));
    }
    for (uint64_t k = 0; k < wave; k++) {
      slot_t* s = &slots[k];
      BENCH_CHECK(pthread_join(s->thread, NULL) == 0, "pthread_join failed");
      checksum += s->checksum;
      uint64_t now = s->to_main_count - LEFT_BEHIND;
      for (uint64_t i = 0; i < now; i++) {
        checksum += check_block(s->to_main[i]);
        free(s->to_main[i]);
      }
      for (uint64_t i = now; i < s->to_main_count; i++) left[nleft++] = s->to_main[i];
      free(s->to_main);
      s->to_main = NULL;
    }
  }
  for (uint64_t k = 0; k < alive; k++) { /* the last wave's hand-offs have no next thread */
    for (uint64_t i = 0; i < slots[k].handoff_count; i++) {
      checksum += check_block(slots[k].handoff[i]);
      free(slots[k].handoff[i]);
    }
    free(slots[k].handoff);
  }
  uint64_t left_rss = bench_status_kib("VmRSS");
  for (uint64_t i = 0; i < nleft; i++) {
    checksum += check_block(left[i]);
    free(left[i]);
  }
  uint64_t ns = bench_now_ns() - t0;
  BENCH_CHECK(nleft == total * LEFT_BEHIND, "%llu blocks left behind, expected %llu", (unsigned long long)nleft,
              (unsigned long long)(total * LEFT_BEHIND));
  free(left);
  free(slots);
  char extra[96];
  snprintf(extra, sizeof(extra), "threads=%llu left_behind=%llu left_rss_kib=%llu", (unsigned long long)total,
           (unsigned long long)nleft, (unsigned long long)left_rss);
  bench_report_extra("thread_churn", total * blocks, ns, checksum, extra);
  return 0;
}
