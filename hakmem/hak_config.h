/* SPDX-License-Identifier: MIT */
/* hak_config.h - compile-time switches of hakmem and everything derived from them.
 *
 * A variant is chosen by two numbered levels, set once on the compiler command line
 * (see hakmem/variants.bzl):
 *   HAK_STATS     0 = no counters (release), 1 = per-class and per-path counters
 *   HAK_HARDENED  0 = trust the caller (release)
 *                 1 = checked frees: double free, invalid free, realloc and
 *                     malloc_usable_size of pointers not handed out, sized delete;
 *                     a block's live bit checked clear when it is handed out
 *                 2 = 1 + heap integrity: free-list links encoded per location with a
 *                     process secret and checked on every decode, small blocks zeroed
 *                     on free and checked still zero when handed out again (write
 *                     after free); fresh blocks handed out in a random order; a
 *                     canary after every pool block's requested bytes and the request
 *                     size recorded, checked on free, realloc and malloc_usable_size
 *                     (overflow), exact sized delete; malloc(0) a unique pointer to
 *                     memory that faults; a failed mmap, munmap or purge for another
 *                     reason than ENOMEM is fatal
 *                 (the public hardened variant is the highest level)
 * Every feature below derives from them with a no-op twin, so hot code carries no
 * #if clutter and the release build compiles checks and counters to nothing.
 */
#ifndef HAK_CONFIG_H
#define HAK_CONFIG_H

#if __SIZEOF_POINTER__ != 8
#error "hakmem needs a 64-bit target: its region and segment geometry assume 64-bit addresses"
#endif

/* Thread identity: the thread-pointer register on x86_64 and aarch64, else (or forced,
 * for the test of that path) the address of a thread-local variable (hak_internal.h). */
#ifndef HAK_TID_FALLBACK
#if defined(__x86_64__) || defined(__aarch64__)
#define HAK_TID_FALLBACK 0
#else
#define HAK_TID_FALLBACK 1
#endif
#endif

#ifndef HAK_STATS
#define HAK_STATS 0
#endif
#ifndef HAK_HARDENED
#define HAK_HARDENED 0
#endif
/* Features of the hardened levels. */
#define HAK_HARDEN_FREE_CHECKS (HAK_HARDENED >= 1)
#define HAK_HARDEN_INTEGRITY (HAK_HARDENED >= 2)
/* Level 2 zeroes freed blocks up to this size and checks them on reuse: a freed small
 * block is what a use after free most often writes into, and zeroing it costs
 * little; larger blocks would cost a memset of up to a MiB per free. */
#define HAK_HARDEN_ZERO_MAX ((size_t)4096)
/* Level 2 serves a request of n bytes (any size) from a slot of at least n + 5: byte n
 * is 0 (a runaway string stops there), then canary bytes, then the request size in
 * the slot's last 4 bytes, encoded with the process secret. */
#define HAK_HARDEN_CANARY HAK_HARDEN_INTEGRITY
#define HAK_CANARY_ROOM ((size_t)(HAK_HARDEN_CANARY ? 5 : 0))
/* Level 2: freed big blocks and whales wait in their caches (BigCache, whale ring)
 * PROT_NONE, so a read or write after free faults at once; two mprotect calls per
 * cached block, pages kept. Blocks above HAK_MEDIUM_BLOCK_MAX (one per L2.5 page
 * otherwise) are big blocks then, and each cache's newest entry is held from reuse. */
#define HAK_HARDEN_LARGE_QUARANTINE HAK_HARDEN_INTEGRITY
/* Level 2: a freed block of up to HAK_HARDEN_ZERO_MAX waits among the freeing thread's
 * last HAK_QUARANTINE_SLOTS freed blocks, and a random one of them is freed for real
 * in its place: a block is not reused right after its free (a use after free does not
 * land in the next allocation of its class), and not in free order. */
#define HAK_HARDEN_QUARANTINE HAK_HARDEN_INTEGRITY
#define HAK_QUARANTINE_SLOTS 64

/* The remote cache (hak_heap.c): a thread keeps pool blocks of other threads' pages
 * that it frees, for its own next allocations of their class, instead of sending each
 * back to its page. Not in the hardened variant, whose freed blocks wait in its
 * quarantine and must not come back in LIFO order. */
#define HAK_REMOTE_CACHE (!HAK_HARDENED)
#define HAK_REMOTE_CACHE_CLASS_MAX 32 /* blocks kept per class */
#define HAK_REMOTE_CACHE_BACKOFF 4096 /* remote frees not kept after it proved useless */
#define HAK_REMOTE_CACHE_MISSES 256   /* slow paths it could not serve before it is flushed */
#define HAK_REMOTE_CACHE_IDLE_MS 10   /* an owner this long without a slow path is idle */

/* HAK_SMALL_LIMITS 1 shrinks caches and batch sizes so that short fuzz and test runs
 * reach eviction, page and segment release, and reuse. Never for production. */
#ifndef HAK_SMALL_LIMITS
#define HAK_SMALL_LIMITS 0
#endif

/* HAK_TEST_CAS_FAIL_EVERY N (tests only, the cas_fail internal variant): every Nth
 * attempt of each thread at a compare-and-swap of the remote-free hand-off (a page's
 * xthread_free, a heap's delayed list) fails as a weak CAS may spuriously, so that the
 * retry paths run in every test instead of under rare contention. 0: never. */
#ifndef HAK_TEST_CAS_FAIL_EVERY
#define HAK_TEST_CAS_FAIL_EVERY 0
#endif

/* HAK_TEST_HOOKS 1 (tests only, the cas_fail internal variant): named points inside
 * race windows call a function a test sets (HAK_TEST_HOOK), so that the test runs
 * another thread's step exactly there, every run, instead of under rare contention. */
#ifndef HAK_TEST_HOOKS
#define HAK_TEST_HOOKS 0
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

/* The region hands out memory in units of 4 MiB, aligned to 4 MiB; every unit in use
 * starts with a header, so free() finds a block's metadata by masking the pointer. A
 * unit holding pools is a *segment*: slice 0 is its header, slices 1..63 form pages. */
#define HAK_SEGMENT_SHIFT 22                       /* 4 MiB: the region's unit */
#define HAK_SEGMENT_SIZE ((size_t)1 << HAK_SEGMENT_SHIFT)
#define HAK_SEGMENT_MASK (HAK_SEGMENT_SIZE - 1)
#define HAK_SLICE_SHIFT 16                         /* 64 KiB */
#define HAK_SLICE_SIZE ((size_t)1 << HAK_SLICE_SHIFT)
#define HAK_SEGMENT_SLICES (HAK_SEGMENT_SIZE / HAK_SLICE_SIZE) /* 64; slice 0 is the header */

/* Pages are spans of slices: small pages 1 slice, medium pages 8 slices; L2.5 blocks
 * above 128 KiB and big blocks (above the pools, up to 63 slices) get a page of their
 * own, sized to whole slices. */
#define HAK_SMALL_PAGE_BLOCK_MAX ((size_t)8 * 1024) /* blocks up to here: 1-slice pages */
#define HAK_MEDIUM_PAGE_SLICES 8      /* the most a medium page spans */
#define HAK_MEDIUM_PAGE_MIN_BLOCKS 4  /* a class's first medium page holds at least this many */
#define HAK_MEDIUM_PAGE_GROW_MAX 3    /* each further page doubles, up to 8 times the first */
#define HAK_MEDIUM_BLOCK_MAX ((size_t)128 * 1024)  /* blocks up to here: 8-slice pages */
/* Hardened level 2: guard pages in every pool and big segment. The last slice is
 * PROT_NONE and never part of a span, so an overflow off a segment's end faults before
 * it reaches the next segment's header (owner, page descriptors, live bits); so is the
 * header slice's last OS page, between the metadata and the first page's blocks. */
#define HAK_HARDEN_GUARDS HAK_HARDEN_INTEGRITY
/* Each guarded segment splits its memory into four mappings (VMAs). Beyond this many
 * guarded segments at once (32 GiB, 32,768 mappings: half of Linux's default
 * vm.max_map_count), new segments go unguarded, so that the mappings hakmem and the
 * program still need are not refused. */
#define HAK_GUARDED_SEGMENTS_MAX 8192
#define HAK_SEGMENT_GUARD_SLICES (HAK_HARDEN_GUARDS ? 1 : 0)
#define HAK_SEGMENT_DATA_END (HAK_SEGMENT_SLICES - HAK_SEGMENT_GUARD_SLICES) /* spans: slices 1 .. this - 1 */
#define HAK_BIG_MAX ((HAK_SEGMENT_DATA_END - 1) * HAK_SLICE_SIZE) /* 4032 KiB (3968 with guards); above: whales */
/* A whale that needs less than this of its last unit purges what a segment left there
 * (hak_whale_trim_tail). */
#define HAK_WHALE_TAIL_COLD ((size_t)1 << 20)

/* Chunks of address space the region reserves: 64 units, the first of which holds the
 * chunk's own descriptor. Runs longer than a chunk can hold get a mapping of their own. */
#define HAK_CHUNK_SHIFT 28                         /* 256 MiB */
#define HAK_CHUNK_SIZE ((size_t)1 << HAK_CHUNK_SHIFT)
#define HAK_CHUNK_UNITS (HAK_CHUNK_SIZE >> HAK_SEGMENT_SHIFT) /* 64 */
#define HAK_CHUNK_RUN_MAX (HAK_CHUNK_UNITS - 1)

/* The hardened variant's ownership map (hak_segment.c): one bit per unit of the widest
 * user address space a 64-bit Linux hands out, 57 bits (x86_64 with five-level paging,
 * riscv64 Sv57; aarch64 gives at most 52, usually 48). Two levels: a fixed top-level
 * array of pointers to leaf bitmaps, mapped on first use. A leaf holds 2^20 bits
 * (128 KiB, 4 TiB of address space); the top level 2^15 pointers (256 KiB of zero
 * pages, touched only where leaves exist). */
#define HAK_ADDRESS_BITS 57
#define HAK_SEGMENT_MAP_LEAF_SHIFT 20 /* units per leaf, log2 */
#define HAK_SEGMENT_MAP_UNITS ((uintptr_t)1 << (HAK_ADDRESS_BITS - HAK_SEGMENT_SHIFT))
#define HAK_SEGMENT_MAP_LEAF_UNITS ((uintptr_t)1 << HAK_SEGMENT_MAP_LEAF_SHIFT)
#define HAK_SEGMENT_MAP_LEAF_BYTES (HAK_SEGMENT_MAP_LEAF_UNITS / 8)
#define HAK_SEGMENT_MAP_LEAVES (HAK_SEGMENT_MAP_UNITS >> HAK_SEGMENT_MAP_LEAF_SHIFT)

/* Alignment of user data inside segments (valloc, huge block offsets); the real page
 * size comes from the OS layer at run time and may be larger (hak_os_page_size). */
#define HAK_OS_PAGE_SIZE ((size_t)4096)

/* Size classes: 16-byte steps up to 256 B, then 8 classes per doubling, so internal
 * waste stays under 12.5% above 128 B. */
#define HAK_ALIGNMENT 16                           /* minimum alignment of every block */
#define HAK_TINY_MAX 1024                          /* tiny pool: direct-table fast path */
#define HAK_TINY_DIRECT_COUNT (HAK_TINY_MAX / 16 + 1)
#define HAK_TINY_CLASS_COUNT 32
#define HAK_MID_MAX ((size_t)64 * 1024)            /* mid pools: up to here */
#define HAK_POOL_MAX ((size_t)1024 * 1024)         /* L2.5 pool: up to here; above: huge */
#define HAK_POOL_ALIGN_MAX HAK_SLICE_SIZE          /* pools serve alignments up to here */
#define HAK_CLASS_COUNT 112                        /* classes 0..111 cover 16 B .. 1 MiB */
#define HAK_CLASS_HUGE HAK_CLASS_COUNT             /* pseudo-class for stats */

#define HAK_RETIRE_CREDIT_MAX 4                    /* an empty page is kept for up to 2 << 4 fresh pages */
#define HAK_ADOPT_MAX 4                            /* abandoned segments adopted per slow path */
/* Abandoned segments waiting (not adopted) from which a heap adopts before it carves a
 * page from free spans of its own: so many means exited threads left memory nobody is
 * taking over, and fresh pages would only grow the footprint (bench/retain_stress: peak
 * RSS 0.80-0.89x, bench/thread_churn 0.89x). Below it, a heap with room of its own adopts
 * nothing: a short-lived thread would only abandon what it took again, and abandoned
 * free spans may be purged already while its own are resident (at 4, stress_t2's and
 * abandon's peak RSS grew 5%; adopting whenever any segment waits, stress_t2's by 10-40%). */
#define HAK_ADOPT_BACKLOG 8
#define HAK_BIGCACHE_SLOTS_MAX 16                  /* per heap (HAKMEM_BIGCACHE_SLOTS) */

#if HAK_SMALL_LIMITS
#define HAK_PAGE_EXTEND_BYTES 256
#define HAK_PAGE_EXTEND_MIN_BLOCKS 1
#define HAK_RETAIN_EMPTY_PAGE 0
#else
/* Free-list extension is bounded so a fresh page touches one OS page at a time, but
 * carves at least 4 blocks: with one block per extension, every allocation from a
 * fresh page of a class above 4 KiB would take the slow path (linking 4 blocks writes
 * 4 words, one per OS page). */
#define HAK_PAGE_EXTEND_BYTES 4096
#define HAK_PAGE_EXTEND_MIN_BLOCKS 4
/* A heap keeps the last page of a class for a few slow-path calls even when it
 * empties, so one block bouncing between malloc and free does not give a page back
 * and take it again each time. */
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
#ifndef HAK_UBSAN /* -DHAK_UBSAN=1 from the ubsan config: no feature macro tells */
#define HAK_UBSAN 0
#endif

/* For the few functions that read other threads' metadata on purpose without their
 * locks (the usage walk, hak_segment_usage): a racy snapshot by design, not a bug the
 * sanitizers should report; they may also read headers of units just taken and not yet
 * unpoisoned. Never on the allocation paths. */
#if HAK_ASAN || HAK_TSAN
#define HAK_NO_SANITIZE __attribute__((no_sanitize("address", "thread"), noinline))
#else
#define HAK_NO_SANITIZE
#endif

#endif /* HAK_CONFIG_H */
