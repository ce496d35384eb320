/* hak_config.h - compile-time switches of hakmem and everything derived from them.
 *
 * A variant is chosen by two numbered levels, set once on the compiler command line
 * (see hakmem/variants.bzl):
 *   HAK_STATS     0 = no counters (release), 1 = per-class and per-path counters
 *   HAK_HARDENED  0 = trust the caller (release), 1 = detect double/invalid free
 * Every feature below derives from them with a no-op twin, so hot code carries no
 * #if clutter and the release build compiles checks and counters to nothing.
 */
#ifndef HAK_CONFIG_H
#define HAK_CONFIG_H

#ifndef HAK_STATS
#define HAK_STATS 0
#endif
#ifndef HAK_HARDENED
#define HAK_HARDENED 0
#endif
/* HAK_SMALL_LIMITS 1 shrinks caches and batch sizes so that short fuzz and test runs
 * reach eviction, page and segment release, and reuse. Never for production. */
#ifndef HAK_SMALL_LIMITS
#define HAK_SMALL_LIMITS 0
#endif

#if HAK_STATS && HAK_HARDENED
#define HAK_VARIANT_NAME "stats+hardened"
#elif HAK_STATS
#define HAK_VARIANT_NAME "stats"
#elif HAK_HARDENED
#define HAK_VARIANT_NAME "hardened"
#else
#define HAK_VARIANT_NAME "release"
#endif

/* ---- Geometry ------------------------------------------------------------ */

/* Segments are the unit obtained from the OS layer; aligned to their size so that
 * free() finds a block's metadata by masking the pointer. */
#define HAK_SEGMENT_SHIFT 22                       /* 4 MiB */
#define HAK_SEGMENT_SIZE ((size_t)1 << HAK_SEGMENT_SHIFT)
#define HAK_SEGMENT_MASK (HAK_SEGMENT_SIZE - 1)
#define HAK_SEGMENT_PAGES_MAX 64

#define HAK_SMALL_PAGE_SHIFT 16                    /* 64 KiB pages, 64 per segment */
#define HAK_MEDIUM_PAGE_SHIFT 19                   /* 512 KiB pages, 8 per segment */
#define HAK_HUGE_PAGE_SHIFT 62                     /* one page spans the whole mapping */

#define HAK_OS_PAGE_SIZE ((size_t)4096)            /* unit of alignment inside segments */

/* Size classes: 16-byte steps up to 256 B, then 8 classes per doubling, so internal
 * waste stays under 12.5% above 128 B. */
#define HAK_ALIGNMENT 16                           /* minimum alignment of every block */
#define HAK_TINY_MAX 1024                          /* tiny pool: direct-table fast path */
#define HAK_TINY_DIRECT_COUNT (HAK_TINY_MAX / 16 + 1)
#define HAK_TINY_CLASS_COUNT 32
#define HAK_SMALL_PAGE_BLOCK_MAX 8192              /* larger classes use medium pages */
#define HAK_MID_MAX ((size_t)64 * 1024)            /* above: one mapping per block */
#define HAK_CLASS_COUNT 80                         /* classes 0..79 cover 16 B .. 64 KiB */
#define HAK_CLASS_HUGE HAK_CLASS_COUNT             /* pseudo-class for stats */

#if HAK_SMALL_LIMITS
#define HAK_PAGE_EXTEND_BYTES 256
#define HAK_SEGMENT_CACHE_MAX 1
#define HAK_RETAIN_EMPTY_PAGE 0
#else
/* Free-list extension is bounded so a fresh page touches one OS page at a time. */
#define HAK_PAGE_EXTEND_BYTES 4096
/* Empty segments kept for reuse before returning them to the OS. */
#define HAK_SEGMENT_CACHE_MAX 4
/* A heap keeps the last page of a class even when it empties, so one block bouncing
 * between malloc and free does not give a page back and take it again each time. */
#define HAK_RETAIN_EMPTY_PAGE 1
#endif

/* ---- Compiler helpers ---------------------------------------------------- */

#define hak_likely(x) __builtin_expect(!!(x), 1)
#define hak_unlikely(x) __builtin_expect(!!(x), 0)
#define HAK_NOINLINE __attribute__((noinline))
#define HAK_INLINE static inline __attribute__((always_inline))
#define HAK_EXPORT __attribute__((visibility("default")))
#define HAK_COLD __attribute__((cold))

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define HAK_TSAN 1
#endif
#if __has_feature(address_sanitizer)
#define HAK_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define HAK_TSAN 1
#endif
#if defined(__SANITIZE_ADDRESS__)
#define HAK_ASAN 1
#endif
#ifndef HAK_TSAN
#define HAK_TSAN 0
#endif
#ifndef HAK_ASAN
#define HAK_ASAN 0
#endif

#endif /* HAK_CONFIG_H */
