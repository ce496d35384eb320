/* SPDX-License-Identifier: MIT */
/* misuse.c - a fuzz harness that injects heap misuse into the hardened variant and
 * requires it to be caught, with hakmem's diagnostic (or, in the sanitizer builds the
 * fuzz engines use, the sanitizer's report), and never to corrupt memory silently.
 *
 * Each input runs in a child process (the expected outcome is a stop), forked from a
 * small server process rather than from the engine (fork_server.h). The child runs
 * a stream of ordinary operations over 64 slots (malloc, free, realloc; sizes from a
 * few bytes to 3 MiB, each block filled with a pattern of its own), injects one misuse
 * chosen by the input, runs what makes hakmem look at it (the free of an overflowed
 * block, the reuse of a slot written after its free), then the rest of the stream,
 * checks every live block's pattern and exits 0. The parent requires:
 *   - a stop by SIGABRT whose stderr names the misuse ("hakmem: fatal: <fault>" for
 *     the kinds below, or a sanitizer's "ERROR: ...Sanitizer");
 *   - never exit code 3 (a live block's pattern changed: silent corruption) nor any
 *     other death (a SIGSEGV with no diagnostic, say).
 * Input: byte 0 picks the misuse, bytes 1..4 its parameters, then 3 bytes per
 * operation; the misuse comes after the first half of the operations.
 *
 * Misuse kinds, all caught deterministically at hardened level 2:
 *   double free; overflow of 1..64 bytes past the request (small, big or whale block);
 *   write after free into a small block (caught when its slot is handed out again, so
 *   the quarantine is flushed and the class allocated until it is); a freed small
 *   block's free-list link overwritten; free of an interior, misaligned or stack
 *   pointer; read or write of a freed big block or whale (in the caches, PROT_NONE),
 *   128 KiB and up, maybe after an allocation of the same size;
 *   realloc and malloc_usable_size of a freed pointer.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fork_server.h"
#include "hakmem.h"

/* Under ASan and TSan hakmem leaves SIGSEGV to the sanitizer, and a fuzz engine may
 * have told the sanitizer not to handle it (AFL++ does); under UBSan it installs no
 * handler: a fault in a freed large block is then a plain SIGSEGV. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define MISUSE_SANITIZED 1
#endif
#if __has_feature(address_sanitizer)
#define MISUSE_ASAN 1
#endif
#endif
#if !defined(MISUSE_ASAN) && defined(__SANITIZE_ADDRESS__)
#define MISUSE_ASAN 1
#endif
#if !defined(MISUSE_SANITIZED) && (defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || \
                                    (defined(HAK_UBSAN) && HAK_UBSAN))
#define MISUSE_SANITIZED 1
#endif
#ifndef MISUSE_SANITIZED
#define MISUSE_SANITIZED 0
#endif
#ifndef MISUSE_ASAN
#define MISUSE_ASAN 0
#endif

#define SLOTS 64
#define KiB ((size_t)1024)
#define MiB (KiB * 1024)
#define EXIT_CLEAN 0
#define EXIT_CORRUPT 3

typedef struct slot_s {
  uint8_t* p;
  size_t size;
  uint8_t tag;
} slot_t;

typedef struct reader_s {
  const uint8_t* data;
  size_t size, pos;
} reader_t;

static uint8_t next_byte(reader_t* r) {
  return r->pos < r->size ? r->data[r->pos++] : 0;
}

static slot_t g_slots[SLOTS];

static uint8_t pattern(uint8_t tag, size_t i) {
  return (uint8_t)(tag * 31u + i * 7u + (i >> 8));
}

/* The bytes of a block that carry its pattern: the first and last 64, and between
 * them one byte every 4 KiB up to 64 KiB, or 16 bytes spread evenly over a larger
 * block (all of a small block). A byte per page of every big block made page faults
 * a third of each input's time; what hakmem could do to a live big block (purge or
 * reuse a span of it, write a header into it) reaches more than a 16th of it. */
static size_t next_marked(size_t i, size_t size) {
  if (i < 64 || i + 64 >= size) return i + 1;
  size_t step = size <= 64 * KiB ? 4096 : (size / 16 + 4095) & ~(size_t)4095;
  return i + step < size - 64 ? i + step : size - 64;
}

static void fill(uint8_t* p, size_t size, uint8_t tag) {
  for (size_t i = 0; i < size; i = next_marked(i, size)) p[i] = pattern(tag, i);
}

static int intact(const uint8_t* p, size_t size, uint8_t tag) {
  for (size_t i = 0; i < size; i = next_marked(i, size)) {
    if (p[i] != pattern(tag, i)) return 0;
  }
  return 1;
}

/* Sizes: mostly small, some mid and L2.5, a few big blocks and whales. */
static size_t size_of(uint8_t a, uint8_t b) {
  switch (b >> 5) {
    case 0: case 1: case 2: return 1 + a;                              /* tiny */
    case 3: case 4: return 256 + (size_t)a * 15;                       /* up to ~4 KiB */
    case 5: return 4 * KiB + (size_t)a * 250;                           /* mid */
    case 6: return 64 * KiB + (size_t)a * 3000;                         /* L2.5 */
    default: return (b & 1) ? MiB + (size_t)a * 4 * KiB + 7 : 2 * MiB + (size_t)a * 4 * KiB; /* big, whale */
  }
}

static void check_and_free(slot_t* s) {
  if (s->p == NULL) return;
  if (!intact(s->p, s->size, s->tag)) _exit(EXIT_CORRUPT);
  hak_free(s->p);
  s->p = NULL;
}

static void put(slot_t* s, size_t size, uint8_t tag) {
  check_and_free(s);
  s->p = hak_malloc(size);
  if (s->p == NULL) _exit(EXIT_CLEAN); /* out of memory is not what this harness checks */
  s->size = size;
  s->tag = tag;
  fill(s->p, size, tag);
}

static void run_op(uint8_t op, uint8_t a, uint8_t b) {
  slot_t* s = &g_slots[op % SLOTS];
  switch ((op >> 6) % 3) {
    case 0:
      put(s, size_of(a, b), (uint8_t)(a ^ b));
      break;
    case 1:
      check_and_free(s);
      break;
    default: {
      if (s->p == NULL) break;
      if (!intact(s->p, s->size, s->tag)) _exit(EXIT_CORRUPT);
      size_t size = size_of(a, b);
      uint8_t* q = hak_realloc(s->p, size);
      if (q == NULL) _exit(EXIT_CLEAN);
      size_t kept = size < s->size ? size : s->size;
      for (size_t i = 0; i < kept && i < 64; i++) { /* the bytes fill() wrote that must move */
        if (q[i] != pattern(s->tag, i)) _exit(EXIT_CORRUPT);
      }
      s->p = q;
      s->size = size;
      fill(q, size, s->tag);
      break;
    }
  }
}

enum {
  MISUSE_DOUBLE_FREE,
  MISUSE_OVERFLOW,
  MISUSE_WRITE_AFTER_FREE,
  MISUSE_LINK_OVERWRITE,
  MISUSE_INVALID_FREE,
  MISUSE_LARGE_USE_AFTER_FREE,
  MISUSE_REALLOC_FREED,
  MISUSE_USABLE_SIZE_FREED,
  MISUSE_KINDS
};

/* What the stop must name (any of them), besides a sanitizer's report. */
static const char* const g_expected[MISUSE_KINDS][3] = {
    [MISUSE_DOUBLE_FREE] = {"double free", NULL, NULL},
    [MISUSE_OVERFLOW] = {"heap buffer overflow", NULL, NULL},
    [MISUSE_WRITE_AFTER_FREE] = {"write after free", NULL, NULL},
    [MISUSE_LINK_OVERWRITE] = {"corrupted free list", "write after free", "block handed out while still in use"},
    [MISUSE_INVALID_FREE] = {"free of a pointer hakmem does not own", NULL, NULL},
    [MISUSE_LARGE_USE_AFTER_FREE] = {"use after free", NULL, NULL},
    [MISUSE_REALLOC_FREED] = {"realloc of a pointer hakmem does not own or already freed", NULL, NULL},
    [MISUSE_USABLE_SIZE_FREED] = {"malloc_usable_size of a pointer hakmem does not own", NULL, NULL},
};

/* Allocates blocks of `size` until the freed block `p` is handed out again (its checks
 * run then), or 65536 blocks or 64 MiB were taken (other pages of the class may have
 * free blocks to hand out first); keeps them live meanwhile. */
#define REUSE_BLOCKS 65536
static void reuse_until(const void* p, size_t size) {
  static void* taken[REUSE_BLOCKS];
  size_t n = 0;
  while (n < REUSE_BLOCKS && n * size < 64 * MiB) {
    void* q = hak_malloc(size);
    if (q == NULL) break;
    taken[n++] = q;
    if (q == p) break;
  }
  while (n > 0) hak_free(taken[--n]);
}

static void inject(int kind, uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  slot_t* s = &g_slots[a % SLOTS];
  switch (kind) {
    case MISUSE_DOUBLE_FREE: {
      if (s->p == NULL) put(s, size_of(b, c), d);
      uint8_t* p = s->p;
      check_and_free(s);
      /* Maybe another free in between; never an allocation, which could hand p out
       * again (a free of the new owner's block is no double free to any allocator). */
      if (d & 1) check_and_free(&g_slots[(a + 1 + b % (SLOTS - 1)) % SLOTS]);
      hak_free(p);
      break;
    }
    case MISUSE_OVERFLOW: {
      if (s->p == NULL) put(s, size_of(b, c), d);
      /* Bytes written past the request, from its end on: up to 64 (the canary's span);
       * past a big block or whale only the 5 bytes always kept (a longer run may reach
       * a neighbour in the BigCache, PROT_NONE, and fault there first). */
      size_t run = 1 + d % (s->size > MiB ? 5 : 64);
      for (size_t i = 0; i < run; i++) s->p[s->size + i] ^= (uint8_t)(c | 1);
      hak_free(s->p); /* the canary is checked here */
      s->p = NULL;
      break;
    }
    case MISUSE_WRITE_AFTER_FREE: {
      size_t size = 16 + (size_t)b * 15; /* up to 3.8 KiB: zeroed when freed */
      uint8_t* p = hak_malloc(size);
      uint8_t* keep = hak_malloc(size); /* keeps the page in use */
      if (p == NULL || keep == NULL) _exit(EXIT_CLEAN);
      memset(p, c, size);
      hak_free(p);
      size_t at = 8 + (size_t)d * 16 % (size - 8); /* past the link word */
      p[at] ^= (uint8_t)(c | 1);
      hak_quarantine_flush();
      reuse_until(p, size);
      hak_free(keep);
      break;
    }
    case MISUSE_LINK_OVERWRITE: {
      size_t size = 16 + (size_t)b * 15;
      uint8_t* p = hak_malloc(size);
      uint8_t* keep = hak_malloc(size);
      if (p == NULL || keep == NULL) _exit(EXIT_CLEAN);
      hak_free(p);
      hak_quarantine_flush(); /* on its page's free list: its first word is a link now */
      uint64_t forged = 0x0101010101010101ull * c ^ ((uint64_t)d << 12);
      memcpy(p, &forged, sizeof forged);
      reuse_until(p, size);
      reuse_until(p, size); /* the block after it too, where the forged link leads */
      hak_free(keep);
      break;
    }
    case MISUSE_INVALID_FREE: {
      if (s->p == NULL || s->size < 64) put(s, 64 + size_of(b, c), d);
      char on_stack[32];
      switch (d % 3) {
        case 0: hak_free(s->p + 16 * (1 + b % 3)); break; /* interior */
        case 1: hak_free(s->p + 1 + b % 15); break;       /* misaligned */
        default: hak_free(on_stack + (c % 16)); break;    /* not heap memory */
      }
      break;
    }
    case MISUSE_LARGE_USE_AFTER_FREE: {
      size_t size = b % 3 == 0   ? 2 * MiB + (size_t)c * 4 * KiB      /* big */
                    : b % 3 == 1 ? 5 * MiB + (size_t)c * 16 * KiB     /* whale */
                                 : 128 * KiB + (size_t)c * 3500;      /* L2.5 sizes: big blocks here */
      volatile uint8_t* p = hak_malloc(size);
      if (p == NULL) _exit(EXIT_CLEAN);
      p[0] = 1;
      hak_free((void*)p);
      /* Maybe a block of the same size first: it must land elsewhere (the caches hold
       * their newest entry), so the old pointer still faults. */
      if ((b >> 2) & 1) (void)hak_malloc(size);
      size_t at = (size_t)d * 4099 % size;
      if ((b >> 3) & 1) p[at] = c; /* a write, else a read */
      else if (p[at] == 0x5a) _exit(EXIT_CLEAN - 0);
      break;
    }
    case MISUSE_REALLOC_FREED: {
      if (s->p == NULL) put(s, size_of(b, c), d);
      uint8_t* p = s->p;
      check_and_free(s);
      (void)hak_realloc(p, size_of(c, d));
      break;
    }
    default: { /* MISUSE_USABLE_SIZE_FREED */
      if (s->p == NULL) put(s, size_of(b, c), d);
      uint8_t* p = s->p;
      check_and_free(s);
      if (hak_usable_size(p) == 0x5a5a) _exit(EXIT_CLEAN);
      break;
    }
  }
}

/* The sanitizers' hook that libFuzzer sets to save the input when a report ends the
 * process: in the child such a report is the expected outcome, not a crash to save. */
extern void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

static void child(const uint8_t* data, size_t size) {
  if (__sanitizer_set_death_callback != NULL) __sanitizer_set_death_callback(NULL);
  struct rlimit none = {0, 0};
  setrlimit(RLIMIT_CORE, &none); /* aborts are expected: no core files */
  signal(SIGABRT, SIG_DFL);      /* a fuzz engine's handler would turn the stop into an exit */
  reader_t r = {data, size, 0};
  int kind = next_byte(&r) % MISUSE_KINDS;
  uint8_t a = next_byte(&r), b = next_byte(&r), c = next_byte(&r), d = next_byte(&r);
  size_t ops = (size - r.pos) / 3, half = ops / 2;
  for (size_t i = 0; i < ops; i++) {
    if (i == half) inject(kind, a, b, c, d);
    uint8_t op = next_byte(&r), x = next_byte(&r), y = next_byte(&r);
    run_op(op, x, y);
  }
  if (ops == 0) inject(kind, a, b, c, d);
  for (size_t i = 0; i < SLOTS; i++) check_and_free(&g_slots[i]);
  _exit(EXIT_CLEAN);
}

static void verdict(const char* what, int kind, const char* err) {
  fprintf(stderr, "misuse harness: misuse %d: %s\n--- the child's stderr ---\n%s\n", kind, what, err);
  abort();
}

/* Runs before hakmem's constructor reads its options (constructors with a priority run
 * before those without). The small-limits variant's purge delay is 1 ms, and on a busy
 * machine more than that can pass between a free and the injected access: eviction and
 * purging then happen by the clock instead of by the input. Until evicted large blocks
 * stayed PROT_NONE, such an access read purged memory and was "not caught" (CI's AFL++
 * run saw it once); it is caught now, but an hour's delay still keeps every input's
 * path (which cache, evicted or not) a function of the input alone, not of the
 * machine's speed. An explicit HAKMEM_PURGE_DELAY_MS in the environment still wins. */
__attribute__((constructor(101))) static void misuse_long_purge_delay(void) {
  setenv("HAKMEM_PURGE_DELAY_MS", "3600s", 0);
}

#if MISUSE_ASAN
/* Most children end in a sanitizer's report, expected here; symbolising its stack
 * starts llvm-symbolizer in every such child, about 50 ms, ten times the rest of an
 * input (AFL++ sets symbolize=0 itself). The harness's own failures are aborts with
 * the verdict's message; ASAN_OPTIONS=symbolize=1 brings their symbols back. */
const char* __asan_default_options(void);
const char* __asan_default_options(void) {
  return "symbolize=0";
}
#endif

/* The engine's process forks the server before it grows (fork_server.h). */
int LLVMFuzzerInitialize(int* argc, char*** argv);
int LLVMFuzzerInitialize(int* argc, char*** argv) {
  (void)argc;
  (void)argv;
  hak_fork_server_start(child);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  int kind = data[0] % MISUSE_KINDS;
  fflush(NULL);
  static char err[16384];
  int status = 0;
  if (hak_fork_server_run(child, data, size, err, sizeof err, &status) != 0) {
    /* No status to judge by (out of processes or memory): say so once, since every
     * input that follows may go untested the same way. */
    static bool warned;
    if (!warned) fprintf(stderr, "misuse harness: no child process could run an input (fork failed); skipping\n");
    warned = true;
    return 0;
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == EXIT_CORRUPT) verdict("a live block changed: silent corruption", kind, err);
  if (strstr(err, "ERROR: AddressSanitizer") != NULL || strstr(err, "ERROR: ThreadSanitizer") != NULL ||
      strstr(err, "ERROR: UndefinedBehaviorSanitizer: SEGV") != NULL) {
    return 0; /* caught by the sanitizer first (its poisoning sees the access; it exits) */
  }
  if (WIFEXITED(status)) verdict("not caught (the child ran to its end)", kind, err);
  if (MISUSE_SANITIZED && kind == MISUSE_LARGE_USE_AFTER_FREE && WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV) {
    return 0;
  }
  if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT) verdict("died without a diagnostic", kind, err);
  const char* line = strstr(err, "hakmem: fatal: ");
  if (line == NULL) verdict("stopped, but not by hakmem's report", kind, err);
  for (int i = 0; i < 3 && g_expected[kind][i] != NULL; i++) {
    if (strncmp(line + 15, g_expected[kind][i], strlen(g_expected[kind][i])) == 0) return 0;
  }
  verdict("caught as another fault than expected", kind, err);
  return 0;
}
