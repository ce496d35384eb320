/* SPDX-License-Identifier: MIT */
/* threads - allocation across threads, as in a server.
 *
 * --mode xfree: objects are allocated in one thread and freed in another. Threads form
 *   a ring: thread t allocates messages (16 B .. 1 KiB, one in ten up to 8 KiB), writes
 *   them and passes them to thread t+1 through a bounded lock-free queue; the receiver
 *   checks each message, keeps it in a backlog of 128 (a request being served) and
 *   frees the oldest. So every block is freed by a thread that did not allocate it.
 *   --objs N     messages per thread (default 2,000,000)
 * --mode churn: each thread alone replaces random entries of its own table of 4096
 *   blocks (16 B .. 4 KiB, most below 256 B), checking each block before freeing it.
 *   --steps N    replacements per thread (default 5,000,000)
 * --threads T  threads (default 2); the result is named threads_<mode>_t<T>.
 * ops = allocations over all threads (each freed once).
 * The checksum sums what every thread received or freed, so it does not depend on
 * how the threads interleave.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "bench_util.h"

#define QUEUE_CAP 1024 /* power of two */
#define BACKLOG 128

typedef struct queue_s {
  _Atomic uint64_t head; /* next slot to write (producer) */
  char pad1[56];
  _Atomic uint64_t tail; /* next slot to read (consumer) */
  char pad2[56];
  void* slot[QUEUE_CAP];
} queue_t;

typedef struct worker_s {
  pthread_t thread;
  uint32_t index, nthreads;
  uint64_t count; /* messages or steps */
  queue_t* out;   /* to the next thread */
  queue_t* in;    /* from the previous one */
  uint64_t checksum;
} worker_t;

static int queue_full(queue_t* q) {
  return atomic_load_explicit(&q->head, memory_order_relaxed) -
             atomic_load_explicit(&q->tail, memory_order_acquire) == QUEUE_CAP;
}

static int queue_push(queue_t* q, void* p) {
  uint64_t head = atomic_load_explicit(&q->head, memory_order_relaxed);
  if (head - atomic_load_explicit(&q->tail, memory_order_acquire) == QUEUE_CAP) return 0;
  q->slot[head % QUEUE_CAP] = p;
  atomic_store_explicit(&q->head, head + 1, memory_order_release);
  return 1;
}

static void* queue_pop(queue_t* q) {
  uint64_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
  if (tail == atomic_load_explicit(&q->head, memory_order_acquire)) return NULL;
  void* p = q->slot[tail % QUEUE_CAP];
  atomic_store_explicit(&q->tail, tail + 1, memory_order_release);
  return p;
}

static size_t message_size(bench_rng_t* rng) {
  uint64_t r = bench_rng_next(rng);
  if (r % 10 == 0) return 1024 + (size_t)((r >> 8) % 7169);
  return 16 + (size_t)((r >> 8) % 1009);
}

/* A message (at least 16 B): tag and size in its first 12 bytes, the tag pattern in
 * its last byte. */
static void* make_message(uint64_t tag, size_t size) {
  unsigned char* p = bench_malloc(size);
  uint32_t size32 = (uint32_t)size;
  memcpy(p, &tag, 8);
  memcpy(p + 8, &size32, 4);
  p[size - 1] = bench_byte(tag, size - 1);
  return p;
}

static uint64_t check_message(const unsigned char* p) {
  uint64_t tag;
  uint32_t size;
  memcpy(&tag, p, 8);
  memcpy(&size, p + 8, 4);
  BENCH_CHECK(size >= 16 && size <= 8192 && p[size - 1] == bench_byte(tag, size - 1),
              "message %llx corrupted (size field %llu)", (unsigned long long)tag, (unsigned long long)size);
  return bench_mix(tag, size);
}

static void* xfree_run(void* arg) {
  worker_t* w = (worker_t*)arg;
  bench_rng_t rng = {0x7F4A7C159E3779B9ULL + w->index * 0x1000193ULL};
  void* backlog[BACKLOG] = {0};
  uint64_t produced = 0, received = 0, sum = 0;
  while (produced < w->count || received < w->count) {
    int progress = 0;
    for (int k = 0; k < 64 && produced < w->count; k++) {
      if (queue_full(w->out)) break; /* only this thread pushes: room now means room below */
      uint64_t tag = ((uint64_t)w->index << 40) | produced;
      BENCH_CHECK(queue_push(w->out, make_message(tag, message_size(&rng))), "queue overflow");
      produced++;
      progress = 1;
    }
    void* m;
    while (received < w->count && (m = queue_pop(w->in)) != NULL) {
      sum += check_message(m);
      void** slot = &backlog[received % BACKLOG];
      free(*slot);
      *slot = m;
      received++;
      progress = 1;
    }
    if (!progress) sched_yield();
  }
  for (int i = 0; i < BACKLOG; i++) free(backlog[i]);
  w->checksum = sum;
  return NULL;
}

static void* churn_run(void* arg) {
  worker_t* w = (worker_t*)arg;
  bench_rng_t rng = {0x2545F4914F6CDD1DULL + w->index * 0x1000193ULL};
  enum { SLOTS = 4096 };
  unsigned char** table = calloc(SLOTS, sizeof(*table));
  uint64_t sum = 0;
  for (uint64_t i = 0; i < w->count; i++) {
    uint64_t r = bench_rng_next(&rng);
    size_t slot = r % SLOTS;
    if (table[slot] != NULL) {
      sum += check_message(table[slot]);
      free(table[slot]);
    }
    size_t size = (r >> 16) % 5 != 0 ? 16 + (size_t)((r >> 24) % 241) : 256 + (size_t)((r >> 24) % 3841);
    table[slot] = make_message(((uint64_t)w->index << 40) | i, size);
  }
  for (size_t s = 0; s < SLOTS; s++) {
    if (table[s] == NULL) continue;
    sum += check_message(table[s]);
    free(table[s]);
  }
  free(table);
  w->checksum = sum;
  return NULL;
}

int main(int argc, char** argv) {
  const char* mode = "xfree";
  for (int i = 1; i + 1 < argc; i++)
    if (strcmp(argv[i], "--mode") == 0) mode = argv[i + 1];
  int xfree = strcmp(mode, "xfree") == 0;
  if (!xfree && strcmp(mode, "churn") != 0) {
    fprintf(stderr, "threads: unknown --mode %s (xfree or churn)\n", mode);
    return 2;
  }
  uint32_t n = (uint32_t)bench_arg(argc, argv, "--threads", 2);
  if (n == 0) n = 1;
  uint64_t count = xfree ? bench_arg(argc, argv, "--objs", 2000000) : bench_arg(argc, argv, "--steps", 5000000);
  worker_t* workers = calloc(n, sizeof(worker_t));
  queue_t* queues = NULL;
  if (xfree) {
    queues = aligned_alloc(64, n * sizeof(queue_t));
    BENCH_CHECK(queues != NULL, "no memory for queues");
    memset(queues, 0, n * sizeof(queue_t));
  }
  for (uint32_t t = 0; t < n; t++) {
    workers[t].index = t;
    workers[t].nthreads = n;
    workers[t].count = count;
    if (xfree) {
      workers[t].out = &queues[t];
      workers[t].in = &queues[(t + n - 1) % n];
    }
  }
  uint64_t t0 = bench_now_ns();
  for (uint32_t t = 0; t < n; t++)
    BENCH_CHECK(pthread_create(&workers[t].thread, NULL, xfree ? xfree_run : churn_run, &workers[t]) == 0,
                "pthread_create failed");
  uint64_t checksum = 0;
  for (uint32_t t = 0; t < n; t++) {
    pthread_join(workers[t].thread, NULL);
    checksum += workers[t].checksum;
  }
  uint64_t ns = bench_now_ns() - t0;
  free(queues);
  free(workers);
  char name[64];
  snprintf(name, sizeof(name), "threads_%s_t%u", mode, n);
  bench_report(name, count * n, ns, checksum);
  return 0;
}
