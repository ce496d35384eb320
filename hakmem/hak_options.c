/* SPDX-License-Identifier: MIT */
/* hak_options.c - every HAKMEM_* environment variable, read once at process start.
 *
 * Reading must not allocate (this runs inside the first malloc): the environment is
 * walked through `environ`, values are parsed by hand, and a warning is written with
 * write(2). A value that does not parse or lies outside its range, and a HAKMEM_* name
 * nobody knows, each get one line on stderr; the option then keeps its default.
 * docs/OPTIONS.md lists every option; keep the two in step. */
#include <fcntl.h>
#include <unistd.h>

#include "hak_internal.h"

extern char** environ;

#define KiB ((size_t)1024)
#define MiB (KiB * 1024)
#define GiB (MiB * 1024)

/* HAK_SMALL_LIMITS: tiny caches and batches, so short fuzz and test runs reach
 * eviction, purge, cancel-on-reuse and chunk unmapping. */
#if HAK_SMALL_LIMITS
#define HAK_DEF_BIGCACHE_SLOTS 1
#define HAK_DEF_BIGCACHE_BYTES (4 * MiB)
#define HAK_DEF_WHALE_SLOTS 2
#define HAK_DEF_WHALE_BYTES (32 * MiB)
#define HAK_DEF_PURGE_DELAY_MS 1
#define HAK_DEF_PURGE_DELAY_MAX_MS 8 /* on, so that the fuzzers reach it */
#define HAK_DEF_PURGE_BATCH_BYTES (64 * KiB)
#define HAK_DEF_PURGE_BATCH_RANGES 4
#define HAK_DEF_REGION_KEEP 0
#define HAK_DEF_REGION_DIRTY (8 * MiB)
#define HAK_DEF_REMOTE_CACHE (4 * KiB)
#else
#define HAK_DEF_BIGCACHE_SLOTS 4
#define HAK_DEF_BIGCACHE_BYTES (16 * MiB)
#define HAK_DEF_WHALE_SLOTS 8
#define HAK_DEF_WHALE_BYTES (64 * MiB)
/* One second: a program whose big blocks come back every few hundred milliseconds
 * (buffers regrown each request, where first touches cost 5-15 us a page on virtual
 * machines) reuses them resident; a shorter delay purges them in the middle of such a
 * cycle, and the refaults slow the cycle past the delay again (bench/realloc: 10 rounds
 * 3.5 s at 100 ms, 0.55 s at 1 s, peak RSS 181 -> 137 MiB). Freed memory beyond the
 * region's dirty budget is purged at once whatever the delay (jemalloc keeps dirty
 * pages 10 s by default). */
#define HAK_DEF_PURGE_DELAY_MS 1000
/* Purge regret off by default: it halves the page faults of big blocks that come back
 * within the delay, but doubles the mean RSS of a service idling between bursts
 * (bench/policy.py bursts); HAKMEM_PURGE_DELAY_MAX_MS turns it on (docs/OPTIONS.md). */
#define HAK_DEF_PURGE_DELAY_MAX_MS 0
#define HAK_DEF_PURGE_BATCH_BYTES (4 * MiB)
#define HAK_DEF_PURGE_BATCH_RANGES 256
#define HAK_DEF_REGION_KEEP (1 * GiB)
#define HAK_DEF_REGION_DIRTY (16 * MiB)
/* Enough for a thread that frees about as much of other threads' memory as it
 * allocates (a worker replacing blocks its predecessors made) to serve its allocations
 * from it; what a thread that only frees strands there is bounded by it. */
#define HAK_DEF_REMOTE_CACHE (256 * KiB)
#endif

hak_options_t hak_options = {
    .bigcache_slots = HAK_DEF_BIGCACHE_SLOTS,
    .bigcache_bytes = HAK_DEF_BIGCACHE_BYTES,
    .whale_slots = HAK_DEF_WHALE_SLOTS,
    .whale_bytes = HAK_DEF_WHALE_BYTES,
    .whale_waste_pct = 25,
    .purge_delay_ms = HAK_DEF_PURGE_DELAY_MS,
    .purge_delay_max_ms = HAK_DEF_PURGE_DELAY_MAX_MS,
    .purge_mode = HAK_PURGE_DONTNEED,
    .purge_batch_bytes = HAK_DEF_PURGE_BATCH_BYTES,
    .purge_batch_ranges = HAK_DEF_PURGE_BATCH_RANGES,
    .purge_min_bytes = 64 * KiB,
    .region_keep_bytes = HAK_DEF_REGION_KEEP,
    .region_dirty_bytes = HAK_DEF_REGION_DIRTY,
    .remote_cache_bytes = HAK_DEF_REMOTE_CACHE,
    .thp_mode = HAK_THP_LEAN,
    .stats_report = HAK_STATS_OFF,
    .stats_file = "",
    .stats_children = true,
    .canary_report_only = false,
    .large_quarantine = true,
    .policy = false,
    .policy_seed = 1,
    .policy_epoch_ms = 200,
    .policy_rss_weight = 1000,
    .policy_log = false,
};

typedef enum hak_option_kind_e {
  HAK_OPT_COUNT,   /* a plain number */
  HAK_OPT_BYTES,   /* a number with an optional k, m or g suffix (powers of 1024) */
  HAK_OPT_MILLIS,  /* milliseconds, optionally with an "ms" or "s" suffix */
  HAK_OPT_BOOL,    /* 1, yes, true, on / 0, no, false, off (any case) */
  HAK_OPT_MADVISE, /* dontneed or free */
  HAK_OPT_THP,     /* lean, whales or system */
  HAK_OPT_STATS,   /* a boolean (text report or none), text or json */
  HAK_OPT_PATH,    /* a file name, at most HAK_STATS_FILE_MAX - 1 bytes */
} hak_option_kind_t;

typedef struct hak_option_s {
  const char* name; /* after the HAKMEM_ prefix */
  hak_option_kind_t kind;
  size_t min, max;
  void* target;     /* size_t, or bool / hak_purge_mode_t / hak_thp_mode_t / hak_stats_mode_t /
                       char[HAK_STATS_FILE_MAX] for those kinds */
} hak_option_t;

static const hak_option_t hak_option_table[] = {
    {"BIGCACHE_SLOTS", HAK_OPT_COUNT, 0, HAK_BIGCACHE_SLOTS_MAX, &hak_options.bigcache_slots},
    {"BIGCACHE_BYTES", HAK_OPT_BYTES, 0, (size_t)1 << 40, &hak_options.bigcache_bytes},
    {"WHALE_SLOTS", HAK_OPT_COUNT, 0, 64, &hak_options.whale_slots},
    {"WHALE_BYTES", HAK_OPT_BYTES, 0, (size_t)1 << 40, &hak_options.whale_bytes},
    {"WHALE_WASTE_PCT", HAK_OPT_COUNT, 0, 100, &hak_options.whale_waste_pct},
    {"PURGE_DELAY_MS", HAK_OPT_MILLIS, 0, 3600 * 1000, &hak_options.purge_delay_ms},
    {"PURGE_DELAY_MAX_MS", HAK_OPT_MILLIS, 0, 3600 * 1000, &hak_options.purge_delay_max_ms},
    {"MADVISE", HAK_OPT_MADVISE, 0, 1, &hak_options.purge_mode},
    {"PURGE_BATCH_BYTES", HAK_OPT_BYTES, 0, (size_t)1 << 40, &hak_options.purge_batch_bytes},
    {"PURGE_BATCH_RANGES", HAK_OPT_COUNT, 1, 65536, &hak_options.purge_batch_ranges},
    {"PURGE_MIN_BYTES", HAK_OPT_BYTES, 4 * KiB, HAK_SEGMENT_SIZE, &hak_options.purge_min_bytes},
    {"REGION_KEEP", HAK_OPT_BYTES, 0, (size_t)1 << 46, &hak_options.region_keep_bytes},
    {"REGION_DIRTY", HAK_OPT_BYTES, 0, (size_t)1 << 46, &hak_options.region_dirty_bytes},
    {"REMOTE_CACHE", HAK_OPT_BYTES, 0, (size_t)64 << 20, &hak_options.remote_cache_bytes},
    {"STATS", HAK_OPT_STATS, 0, 2, &hak_options.stats_report},
    {"STATS_FILE", HAK_OPT_PATH, 0, 0, hak_options.stats_file},
    {"STATS_CHILDREN", HAK_OPT_BOOL, 0, 1, &hak_options.stats_children},
    {"CANARY_REPORT", HAK_OPT_BOOL, 0, 1, &hak_options.canary_report_only},
    {"LARGE_QUARANTINE", HAK_OPT_BOOL, 0, 1, &hak_options.large_quarantine},
    {"THP", HAK_OPT_THP, 0, 2, &hak_options.thp_mode},
    {"POLICY", HAK_OPT_BOOL, 0, 1, &hak_options.policy},
    {"POLICY_SEED", HAK_OPT_COUNT, 0, 4294967295u, &hak_options.policy_seed},
    {"POLICY_EPOCH_MS", HAK_OPT_MILLIS, 10, 60 * 1000, &hak_options.policy_epoch_ms},
    {"POLICY_RSS_WEIGHT", HAK_OPT_COUNT, 0, 1000000, &hak_options.policy_rss_weight},
    {"POLICY_LOG", HAK_OPT_BOOL, 0, 1, &hak_options.policy_log},
};
#define HAK_OPTION_COUNT (sizeof(hak_option_table) / sizeof(hak_option_table[0]))

static const char* const hak_thp_mode_names[] = {"lean", "whales", "system"};
static const char* const hak_stats_mode_names[] = {"0", "text", "json"};

/* ---- Warnings, without stdio ------------------------------------------------------- */

static void hak_options_write(const char* s, size_t n) {
  while (n > 0) {
    ssize_t w = write(2, s, n);
    if (w <= 0) return;
    s += w;
    n -= (size_t)w;
  }
}

static size_t hak_options_strlen(const char* s) {
  size_t n = 0;
  while (s[n] != '\0') n++;
  return n;
}

static void hak_options_say(const char* s) {
  hak_options_write(s, hak_options_strlen(s));
}

static void hak_options_say_u64(uint64_t v) {
  char digits[24];
  int n = 0;
  do {
    digits[sizeof(digits) - 1 - n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  hak_options_write(digits + sizeof(digits) - n, (size_t)n);
}

/* "hakmem: warning: HAKMEM_X=value: <why>; keeping <default>\n" */
static void hak_options_warn_value(const char* entry, size_t entry_len, const hak_option_t* opt, const char* why) {
  hak_options_say("hakmem: warning: ");
  hak_options_write(entry, entry_len);
  hak_options_say(": ");
  hak_options_say(why);
  if (opt->kind == HAK_OPT_MADVISE) {
    hak_options_say(" (dontneed or free); keeping ");
    hak_options_say(hak_options.purge_mode == HAK_PURGE_FREE ? "free" : "dontneed");
  } else if (opt->kind == HAK_OPT_THP) {
    hak_options_say(" (lean, whales or system); keeping ");
    hak_options_say(hak_thp_mode_names[hak_options.thp_mode]);
  } else if (opt->kind == HAK_OPT_BOOL) {
    hak_options_say(" (1, yes, true, on or 0, no, false, off); keeping ");
    hak_options_say(*(bool*)opt->target ? "1" : "0");
  } else if (opt->kind == HAK_OPT_STATS) {
    hak_options_say(" (a boolean, text or json); keeping ");
    hak_options_say(hak_stats_mode_names[hak_options.stats_report]);
  } else if (opt->kind == HAK_OPT_PATH) {
    hak_options_say(" (at most 255 bytes); keeping ");
    hak_options_say(hak_options.stats_file[0] != '\0' ? hak_options.stats_file : "stderr");
  } else {
    hak_options_say(" (range ");
    hak_options_say_u64(opt->min);
    hak_options_say(" .. ");
    hak_options_say_u64(opt->max);
    hak_options_say("); keeping ");
    hak_options_say_u64(*(size_t*)opt->target);
  }
  hak_options_say("\n");
}

static void hak_options_warn_unknown(const char* entry, size_t name_len) {
  hak_options_say("hakmem: warning: unknown option ");
  hak_options_write(entry, name_len);
  hak_options_say(" ignored (docs/OPTIONS.md lists the HAKMEM_* variables)\n");
}

/* ---- Parsing ------------------------------------------------------------------------ */

static char hak_options_lower(char c) {
  return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool hak_options_equal(const char* a, const char* b) {
  while (*a != '\0' && hak_options_lower(*a) == *b) {
    a++;
    b++;
  }
  return *a == '\0' && *b == '\0';
}

/* 1 for 1, yes, true, on; 0 for 0, no, false, off (any case); -1 for anything else. */
static int hak_options_boolean(const char* value) {
  static const char* const truths[] = {"1", "yes", "true", "on"};
  static const char* const falsehoods[] = {"0", "no", "false", "off"};
  for (size_t i = 0; i < sizeof(truths) / sizeof(truths[0]); i++) {
    if (hak_options_equal(value, truths[i])) return 1;
    if (hak_options_equal(value, falsehoods[i])) return 0;
  }
  return -1;
}

/* Digits, then an optional unit: returns false on anything else or on overflow. */
static bool hak_options_parse_number(const char* s, hak_option_kind_t kind, size_t* out) {
  if (*s < '0' || *s > '9') return false;
  size_t v = 0;
  for (; *s >= '0' && *s <= '9'; s++) {
    if (v > (SIZE_MAX - 9) / 10) return false;
    v = v * 10 + (size_t)(*s - '0');
  }
  size_t scale = 1;
  if (kind == HAK_OPT_BYTES) {
    char c = hak_options_lower(*s);
    if (c == 'k' || c == 'm' || c == 'g') {
      scale = c == 'k' ? KiB : c == 'm' ? MiB : GiB;
      s++;
      if (hak_options_lower(*s) == 'i') s++;
    }
    if (hak_options_lower(*s) == 'b') s++;
  } else if (kind == HAK_OPT_MILLIS) {
    if (hak_options_equal(s, "ms")) s += 2;
    else if (hak_options_equal(s, "s")) s += 1, scale = 1000;
  }
  if (*s != '\0') return false;
  if (v > SIZE_MAX / scale) return false;
  *out = v * scale;
  return true;
}

static void hak_options_apply(const hak_option_t* opt, const char* entry, size_t entry_len, const char* value) {
  if (opt->kind == HAK_OPT_MADVISE) {
    if (hak_options_equal(value, "dontneed")) hak_options.purge_mode = HAK_PURGE_DONTNEED;
    else if (hak_options_equal(value, "free")) hak_options.purge_mode = HAK_PURGE_FREE;
    else hak_options_warn_value(entry, entry_len, opt, "not a madvise mode");
    return;
  }
  if (opt->kind == HAK_OPT_THP) {
    for (int m = HAK_THP_LEAN; m <= HAK_THP_SYSTEM; m++) {
      if (hak_options_equal(value, hak_thp_mode_names[m])) {
        hak_options.thp_mode = (hak_thp_mode_t)m;
        return;
      }
    }
    hak_options_warn_value(entry, entry_len, opt, "not a huge-page mode");
    return;
  }
  if (opt->kind == HAK_OPT_BOOL || opt->kind == HAK_OPT_STATS) {
    int truth = hak_options_boolean(value);
    if (opt->kind == HAK_OPT_STATS) {
      if (hak_options_equal(value, "text")) truth = 1;
      if (hak_options_equal(value, "json")) truth = 2;
      if (truth >= 0) *(hak_stats_mode_t*)opt->target = (hak_stats_mode_t)truth;
      else hak_options_warn_value(entry, entry_len, opt, "not a report mode");
      return;
    }
    if (truth >= 0) *(bool*)opt->target = truth == 1;
    else hak_options_warn_value(entry, entry_len, opt, "not a boolean");
    return;
  }
  if (opt->kind == HAK_OPT_PATH) {
    size_t len = hak_options_strlen(value);
    if (len >= HAK_STATS_FILE_MAX) {
      hak_options_warn_value(entry, entry_len, opt, "too long");
      return;
    }
    for (size_t i = 0; i <= len; i++) ((char*)opt->target)[i] = value[i];
    return;
  }
  size_t v;
  if (!hak_options_parse_number(value, opt->kind, &v)) {
    hak_options_warn_value(entry, entry_len, opt, "not a number");
    return;
  }
  if (v < opt->min || v > opt->max) {
    hak_options_warn_value(entry, entry_len, opt, "out of range");
    return;
  }
  *(size_t*)opt->target = v;
}

static bool hak_options_name_is(const char* name, size_t len, const char* want) {
  for (size_t i = 0; i < len; i++) {
    if (want[i] == '\0' || want[i] != name[i]) return false;
  }
  return want[len] == '\0';
}

static void hak_options_read_entry(const char* entry) {
  static const char prefix[] = "HAKMEM_";
  for (size_t i = 0; i < sizeof(prefix) - 1; i++) {
    if (entry[i] != prefix[i]) return;
  }
  const char* name = entry + sizeof(prefix) - 1;
  size_t name_len = 0;
  while (name[name_len] != '\0' && name[name_len] != '=') name_len++;
  const char* value = name[name_len] == '=' ? name + name_len + 1 : name + name_len;
  for (size_t i = 0; i < HAK_OPTION_COUNT; i++) {
    if (hak_options_name_is(name, name_len, hak_option_table[i].name)) {
      hak_options_apply(&hak_option_table[i], entry, hak_options_strlen(entry), value);
      return;
    }
  }
  hak_options_warn_unknown(entry, sizeof(prefix) - 1 + name_len);
}

/* Before libc has set `environ` (a sanitizer runtime or a preinit function that
 * allocates), the process's environment is still in /proc/self/environ: NUL-separated
 * entries, streamed in pieces; only HAKMEM_* entries (cut at 255 bytes) are kept. */
static void hak_options_read_proc_environ(void) {
  int fd = open("/proc/self/environ", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  char buf[4096], entry[256];
  size_t len = 0;
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) {
    for (ssize_t i = 0; i < n; i++) {
      if (buf[i] != '\0') {
        if (len < sizeof(entry) - 1) entry[len++] = buf[i];
        continue;
      }
      entry[len] = '\0';
      hak_options_read_entry(entry);
      len = 0;
    }
  }
  close(fd);
}

/* HAKMEM_STATS_CHILDREN=0 (stats variant): this process reports, its forked children
 * (another pid, hak_stats.c checks) and the programs it execs do not. For the latter,
 * HAKMEM_STATS's value in this process's own environment becomes "0", in place (no
 * allocation), so exec'd children inherit the report turned off. Called from the
 * library's constructor, when libc has set `environ` (the options may have been read
 * before, from /proc/self/environ: under a sanitizer runtime that allocates first).
 * Only strings above the environ array are written (the initial environment on the
 * stack, or strings setenv made): a string a program handed to putenv from read-only
 * data is left alone. */
void hak_options_stats_scope(void) {
#if HAK_STATS
  static const char name[] = "HAKMEM_STATS=";
  if (hak_options.stats_report == HAK_STATS_OFF || hak_options.stats_children || environ == NULL) return;
  for (char** e = environ; *e != NULL; e++) {
    size_t i = 0;
    while (name[i] != '\0' && (*e)[i] == name[i]) i++;
    if (name[i] != '\0' || (uintptr_t)*e < (uintptr_t)environ) continue;
    char* value = *e + i;
    if (value[0] != '\0') {
      if (value[1] != '\0') value[1] = '\0';
      value[0] = '0';
    }
  }
#endif
}

void hak_options_init(void) {
  if (environ == NULL) {
    hak_options_read_proc_environ();
  } else {
    for (char** e = environ; *e != NULL; e++) hak_options_read_entry(*e);
  }
  hak_options.stats_pid = (int)getpid();
}
