/* SPDX-License-Identifier: MIT */
/* hak_hardening.c - misuse detection of the hardened variant, and the fault report
 * every variant uses. A fault stops the process with a message naming the fault and
 * the address; the message is written with write(2), never stdio or malloc.
 *
 * Hardened free checks, in order: the pointer lies in a segment of ours (ownership
 * map), the segment's cookie is intact, the pointer is the start of a block of a page
 * in use, and the block's live bit is set (clearing it atomically, so two racing frees
 * of one block cannot both pass). */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hak_alloc.h"
#include "hak_internal.h"

static const char* hak_fault_name(hak_fault_t fault) {
  switch (fault) {
    case HAK_FAULT_DOUBLE_FREE: return "double free";
    case HAK_FAULT_INVALID_FREE: return "free of a pointer hakmem does not own";
    case HAK_FAULT_INVALID_REALLOC: return "realloc of a pointer hakmem does not own or already freed";
    case HAK_FAULT_INVALID_USABLE_SIZE: return "malloc_usable_size of a pointer hakmem does not own";
    case HAK_FAULT_SIZED_DELETE: return "sized or aligned delete with a size or alignment the block does not have";
    case HAK_FAULT_CORRUPT_FREE_LIST: return "corrupted free list (a freed block was overwritten)";
    case HAK_FAULT_WRITE_AFTER_FREE: return "write after free";
    case HAK_FAULT_HANDED_OUT_TWICE: return "block handed out while still in use (corrupted free list)";
    case HAK_FAULT_OVERFLOW: return "heap buffer overflow (the canary after the requested bytes was overwritten)";
    case HAK_FAULT_USE_AFTER_FREE: return "use after free (a freed block was read or written)";
    case HAK_FAULT_ZERO_SIZE_ACCESS: return "read or write of a zero-size block";
    case HAK_FAULT_GUARD_PAGE: return "heap buffer overflow into a guard page";
  }
  return "unknown fault";
}

static void hak_fault_write(const char* s) {
  size_t n = 0;
  while (s[n] != '\0') n++;
  while (n > 0) {
    ssize_t w = write(2, s, n);
    if (w <= 0) return;
    s += w;
    n -= (size_t)w;
  }
}

/* "<prefix><fault> at address 0x... (size class N, <variant>)". */
static void hak_fault_line(const char* prefix, hak_fault_t fault, const void* p, int size_class) {
  char hex[2 + 16 + 1];
  uintptr_t v = (uintptr_t)p;
  hex[0] = '0';
  hex[1] = 'x';
  for (int i = 0; i < 16; i++) hex[2 + i] = "0123456789abcdef"[(v >> (60 - 4 * i)) & 0xf];
  hex[18] = '\0';
  hak_fault_write(prefix);
  hak_fault_write(hak_fault_name(fault));
  hak_fault_write(" at address ");
  hak_fault_write(hex);
  if (size_class >= HAK_CLASS_COUNT) size_class = HAK_FAULT_CLASS_HUGE; /* big blocks and whales */
  if (size_class >= 0) {
    char digits[4] = {(char)('0' + size_class / 100 % 10), (char)('0' + size_class / 10 % 10),
                      (char)('0' + size_class % 10), '\0'};
    const char* d = digits;
    while (d[0] == '0' && d[1] != '\0') d++;
    hak_fault_write(" (size class ");
    hak_fault_write(d);
    hak_fault_write(", " HAK_VARIANT_NAME ")\n");
  } else if (size_class == HAK_FAULT_CLASS_HUGE) {
    hak_fault_write(" (huge block, " HAK_VARIANT_NAME ")\n");
  } else {
    hak_fault_write(" (" HAK_VARIANT_NAME ")\n");
  }
}

void hak_fault_in_class(hak_fault_t fault, const void* p, int size_class) {
  hak_fault_line("hakmem: fatal: ", fault, p, size_class);
  abort();
}

void hak_fault_message(const char* message) {
  hak_fault_write("hakmem: fatal: ");
  hak_fault_write(message);
  hak_fault_write(" (" HAK_VARIANT_NAME ")\n");
  abort();
}

/* ---- Faults in memory kept inaccessible (level 2) -----------------------------------
 * malloc(0)'s slots and freed big blocks and whales in the caches are PROT_NONE: a
 * read or write there raises SIGSEGV. If the process has no SIGSEGV handler of its own
 * when hakmem starts, a handler names the fault: it finds the segment around the
 * address (the nearest segment start at or below it in the ownership map; a whale
 * spans many units) and reads only its header, which stays read-write. A fault it
 * does not recognise goes on as if no handler were there: SA_RESETHAND has restored
 * the default action, and returning repeats the access. Not under ASan or TSan,
 * whose own handlers report such faults, nor under UBSan, whose static runtime
 * breaks sigaction. */
#if HAK_HARDEN_INTEGRITY && !HAK_ASAN && !HAK_TSAN && !HAK_UBSAN
#define HAK_FAULT_LOOKBACK_UNITS 4096 /* 16 GiB: whales longer than that go unnamed */

static hak_segment_t* hak_fault_segment_around(const uint8_t* addr) {
  uintptr_t unit = (uintptr_t)addr & ~(uintptr_t)HAK_SEGMENT_MASK;
  for (uintptr_t back = 0; back < HAK_FAULT_LOOKBACK_UNITS && (back << HAK_SEGMENT_SHIFT) <= unit; back++) {
    hak_segment_t* segment = (hak_segment_t*)(unit - (back << HAK_SEGMENT_SHIFT));
    if (!hak_segment_map_contains((uint8_t*)segment + 1)) continue; /* (it maps p - 1's unit) */
    if (segment->cookie != ((uintptr_t)segment ^ hak_process_secret)) return NULL;
    if (back == 0 || segment->kind == HAK_SEGMENT_HUGE) return segment;
    return NULL; /* a one-unit segment below: addr is not in it */
  }
  return NULL;
}

static void hak_fault_on_segv(int sig, siginfo_t* info, void* context) {
  (void)sig;
  (void)context;
  const uint8_t* addr = (const uint8_t*)info->si_addr;
  if (info->si_code != SEGV_ACCERR) return;
  hak_segment_t* segment = hak_fault_segment_around(addr);
  if (segment == NULL) {
    /* a freed whale, or a big segment with freed blocks, gone back to the region closed */
    if (hak_region_fault_is_freed(addr)) hak_fault_in_class(HAK_FAULT_USE_AFTER_FREE, addr, HAK_FAULT_CLASS_HUGE);
    return;
  }
  const uint8_t* base = (const uint8_t*)segment;
  switch (segment->kind) {
    case HAK_SEGMENT_ZERO:
      if (addr >= base + HAK_SLICE_SIZE) hak_fault(HAK_FAULT_ZERO_SIZE_ACCESS, addr);
      break;
    case HAK_SEGMENT_HUGE:
      if (addr >= segment->whale_block && addr < base + segment->mapping_size && segment->pages[0].used == 0) {
        hak_fault_in_class(HAK_FAULT_USE_AFTER_FREE, addr, HAK_FAULT_CLASS_HUGE);
      }
      break;
    case HAK_SEGMENT_BIG: {
      if (hak_segment_is_guard(segment, addr)) hak_fault(HAK_FAULT_GUARD_PAGE, addr);
      if (addr < base + HAK_SLICE_SIZE) break;
      const hak_page_t* page = hak_segment_page_of(segment, addr);
      uint64_t slice = (uint64_t)1 << (((uintptr_t)addr - (uintptr_t)base) >> HAK_SLICE_SHIFT);
      bool closed = (atomic_load_explicit(&segment->noaccess_slices, memory_order_relaxed) & slice) != 0;
      if (closed || (page->in_use && page->used == 0)) {
        hak_fault_in_class(HAK_FAULT_USE_AFTER_FREE, addr, HAK_FAULT_CLASS_HUGE);
      }
      break;
    }
    case HAK_SEGMENT_POOL:
      if (hak_segment_is_guard(segment, addr)) hak_fault(HAK_FAULT_GUARD_PAGE, addr);
      break;
    default:
      break;
  }
}

void hak_hardening_install_fault_handler(void) {
  struct sigaction old;
  if (sigaction(SIGSEGV, NULL, &old) != 0) return;
  if ((old.sa_flags & SA_SIGINFO) || old.sa_handler != SIG_DFL) return; /* the program's own */
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_sigaction = hak_fault_on_segv;
  action.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_NODEFER;
  sigemptyset(&action.sa_mask);
  sigaction(SIGSEGV, &action, NULL);
}
#else
void hak_hardening_install_fault_handler(void) {}
#endif

#if HAK_HARDEN_FREE_CHECKS

/* A segment given back (an empty pool segment to the region, a huge block to the
 * region or the OS when it leaves the caches) no longer answers for its blocks. Remembering the last
 * released segments lets the second free of a block in one be named a double free. */
#define HAK_RELEASED_RING 64
static _Atomic(uintptr_t) hak_released_segments[HAK_RELEASED_RING];
static _Atomic size_t hak_released_next;

void hak_hardening_on_segment_release(const hak_segment_t* segment) {
  size_t i = atomic_fetch_add_explicit(&hak_released_next, 1, memory_order_relaxed);
  atomic_store_explicit(&hak_released_segments[i % HAK_RELEASED_RING], (uintptr_t)segment, memory_order_relaxed);
}

static bool hak_hardening_recently_released(const void* p) {
  uintptr_t segment = (uintptr_t)hak_segment_of(p);
  for (size_t i = 0; i < HAK_RELEASED_RING; i++) {
    if (atomic_load_explicit(&hak_released_segments[i], memory_order_relaxed) == segment) return true;
  }
  return false;
}

#define HAK_NOT_A_BLOCK (-1)
#define HAK_BLOCK_OF_RELEASED_PAGE (-2)
#define HAK_ZERO_BLOCK (-3) /* hak_hardening_find_block: a pointer of the zero segment */

/* Whether p starts a block of a page that went back to its segment (all its blocks
 * were freed: p was freed before). Its slices now belong to a free span, perhaps merged
 * with others; the descriptor at the page's first slice still holds its last layout,
 * so look back for the nearest such head whose blocks p could start. */
static const hak_page_t* hak_hardening_was_block(hak_segment_t* segment, const void* p) {
  size_t slice = (size_t)((const uint8_t*)p - (const uint8_t*)segment) >> HAK_SLICE_SHIFT;
  size_t head = slice - segment->slice_offset[slice];
  for (size_t i = slice + 1; i-- > head;) {
    const hak_page_t* old = &segment->pages[i];
    if (old->slice_index != i || old->block_size == 0) continue;
    size_t in_page = (size_t)((const uint8_t*)p - hak_page_area(old));
    return in_page < ((size_t)old->slice_count << HAK_SLICE_SHIFT) && in_page % old->block_size == 0 ? old : NULL;
  }
  return NULL;
}

/* Index of the block p starts; HAK_NOT_A_BLOCK when p is no block start at all, and
 * HAK_BLOCK_OF_RELEASED_PAGE when p starts a block of a page that went back to its
 * segment. Division is fine here: this is the hardened variant. */
static long hak_hardening_block_index(hak_segment_t* segment, const void* p) {
  size_t offset = (size_t)((const uint8_t*)p - (const uint8_t*)segment);
  if (offset < HAK_SLICE_SIZE) return HAK_NOT_A_BLOCK; /* the header slice */
  hak_page_t* page = hak_segment_page_of(segment, p);
  if (!page->in_use) return hak_hardening_was_block(segment, p) != NULL ? HAK_BLOCK_OF_RELEASED_PAGE : HAK_NOT_A_BLOCK;
  if (page->block_size == 0) return HAK_NOT_A_BLOCK;
  /* within one segment: 32-bit division, cheaper than 64 */
  uint32_t in_page = (uint32_t)((const uint8_t*)p - hak_page_area(page));
  if (in_page % page->block_size != 0) return HAK_NOT_A_BLOCK;
  uint32_t index = in_page / page->block_size;
  return index < page->reserved ? (long)index : HAK_NOT_A_BLOCK;
}

/* The fault for a pointer that is not live: a double free if it was ours once. */
static hak_fault_t hak_hardening_not_live_fault(hak_fault_t fault_if_not, bool was_ours) {
  if (fault_if_not == HAK_FAULT_INVALID_FREE && was_ours) return HAK_FAULT_DOUBLE_FREE;
  return fault_if_not;
}

static _Atomic(uint64_t)* hak_hardening_live_word(hak_segment_t* segment, const hak_page_t* page, size_t index) {
  return &segment->live[page->slice_index][index / 64];
}

/* A block is about to leave its page's free list, before its link is read: its live
 * bit must be clear, else the list leads to a block in use (corrupted). */
void hak_hardening_on_alloc(hak_page_t* page, void* block) {
  hak_segment_t* segment = hak_segment_of(block);
  size_t index = (uint32_t)((const uint8_t*)block - hak_page_area(page)) / page->block_size;
  uint64_t bit = (uint64_t)1 << (index % 64);
  uint64_t old = atomic_fetch_or_explicit(hak_hardening_live_word(segment, page, index), bit, memory_order_relaxed);
  if (old & bit) hak_fault_in_class(HAK_FAULT_HANDED_OUT_TWICE, block, page->class_index);
}

#if HAK_HARDEN_CANARY
/* The canary of a pool block of n requested bytes in a slot of B: byte n is 0, the
 * next bytes up to B-5 (at most HAK_CANARY_SPAN of them) hold a byte of the secret
 * (never 0), bytes B-4 .. B-1 hold n encoded with the block's key, so an overflow that
 * reaches the size is caught too. An overflow runs on from byte n, so the first bytes
 * past it are what it must cross: a large slack (up to 128 KiB in the L2.5 classes) is
 * neither filled nor checked beyond them. */
#define HAK_CANARY_SPAN ((size_t)64)
static uint8_t hak_canary_byte(void) {
  return (uint8_t)((hak_process_secret >> 24) | 1);
}

static uint32_t hak_canary_size_key(const void* block) {
  return (uint32_t)(hak_block_key((const hak_block_t*)block) >> 21);
}

/* The slot a block's canary ends with: a pool or big block's page slot, or a whale's
 * page-rounded block (segment->block_bytes). */
static size_t hak_canary_slot(const void* block, int* size_class) {
  hak_segment_t* segment = hak_segment_of(block);
  if (segment->kind == HAK_SEGMENT_HUGE) {
    *size_class = HAK_FAULT_CLASS_HUGE;
    return segment->block_bytes;
  }
  const hak_page_t* page = hak_segment_page_of(segment, block);
  *size_class = page->class_index;
  return page->block_size;
}

void* hak_hardening_canary_set(void* block, size_t size) {
  if (block == NULL) return NULL;
  int size_class;
  size_t end = hak_canary_slot(block, &size_class) - sizeof(uint32_t);
  uint8_t* b = (uint8_t*)block;
  b[size] = 0;
  size_t span = end - size - 1 < HAK_CANARY_SPAN ? end - size - 1 : HAK_CANARY_SPAN;
  memset(b + size + 1, hak_canary_byte(), span);
  uint32_t record = (uint32_t)size ^ hak_canary_size_key(block);
  memcpy(b + end, &record, sizeof(record));
  return block;
}

/* The size recorded for a block in a slot of `slot` bytes; faults if its canary does
 * not hold. The record keeps 32 bits of the size: a large block's upper bits come
 * from the slot, which is less than 4 GiB longer than the request. */
static size_t hak_canary_check(const void* block, size_t slot, int size_class) {
  const uint8_t* b = (const uint8_t*)block;
  size_t end = slot - sizeof(uint32_t);
  uint32_t record;
  memcpy(&record, b + end, sizeof(record));
  size_t size = (uint32_t)(record ^ hak_canary_size_key(block));
  size_t high = end & ~(size_t)UINT32_MAX;
  size |= high;
  if (size > end && high != 0) size -= (size_t)1 << 32;
  if (size >= end) hak_fault_in_class(HAK_FAULT_OVERFLOW, block, size_class);
  uint8_t canary = hak_canary_byte();
  uint64_t canary8 = canary * 0x0101010101010101ull, diff = b[size];
  size_t span = end - size - 1 < HAK_CANARY_SPAN ? end - size - 1 : HAK_CANARY_SPAN;
  const uint8_t* c = b + size + 1;
  size_t i = 0;
  for (; i + 8 <= span; i += 8) { /* eight bytes per compare */
    uint64_t w;
    memcpy(&w, c + i, sizeof(w));
    diff |= w ^ canary8;
  }
  for (; i < span; i++) diff |= (uint64_t)(c[i] ^ canary);
  bool intact = diff == 0;
  if (!intact) {
    /* HAKMEM_CANARY_REPORT=1: report and go on (the size record held, so the block can
     * still be freed or resized; the caller's memory past it is the caller's concern). */
    if (!hak_options.canary_report_only) hak_fault_in_class(HAK_FAULT_OVERFLOW, block, size_class);
    hak_fault_line("hakmem: error: ", HAK_FAULT_OVERFLOW, block, size_class);
  }
  return size;
}

size_t hak_hardening_requested_size(const void* block) {
  int size_class;
  size_t slot = hak_canary_slot(block, &size_class);
  return hak_canary_check(block, slot, size_class);
}
#define hak_hardening_check_canary(page, block) ((void)hak_canary_check((block), (page)->block_size, (page)->class_index))
#define hak_hardening_check_whale_canary(block) ((void)hak_hardening_requested_size(block))
#else
#define hak_hardening_check_canary(page, block) ((void)(page), (void)(block))
#define hak_hardening_check_whale_canary(block) ((void)(block))
#endif

#if HAK_HARDEN_INTEGRITY
/* ---- malloc(0): a unique pointer into memory that faults when read or written ----
 * One segment (4 MiB, its own mapping): slice 0 the header, read-write; slices 1-63
 * PROT_NONE, cut into 16-byte slots, one live bit each (the header's live bits, one
 * per slot: 63 * 4096 of them). Slots are claimed lock-free from a cursor that moves
 * on, so a freed address comes back only after every other one; when all are live,
 * malloc(0) falls back to a pool block of 0 usable bytes (its canary catches writes). */
#define HAK_ZERO_SLOT 16
#define HAK_ZERO_SLOTS ((HAK_SEGMENT_SLICES - 1) * (HAK_SLICE_SIZE / HAK_ZERO_SLOT))
_Static_assert(HAK_ZERO_SLOTS <= HAK_SEGMENT_SLICES * HAK_SEGMENT_SLICES * 64, "one live bit per zero slot");

static _Atomic(hak_segment_t*) hak_zero_segment;
static _Atomic uint64_t hak_zero_cursor;

static hak_segment_t* hak_zero_segment_get(void) {
  hak_segment_t* segment = atomic_load_explicit(&hak_zero_segment, memory_order_acquire);
  if (segment != NULL) return segment;
  hak_process_init(); /* the secret, for the cookie: malloc(0) may be a process's first call */
  uint8_t* raw = hak_os_map_aligned(HAK_SEGMENT_SIZE, HAK_SEGMENT_SIZE, 0, HAK_OS_MAP_NORESERVE | HAK_OS_MAP_NOACCESS,
                                    HAK_OS_USER_META);
  if (raw == NULL) return NULL;
  if (!hak_os_map_fixed(raw, HAK_SLICE_SIZE, HAK_OS_USER_META)) { /* the header, read-write */
    hak_os_unmap(raw, HAK_SEGMENT_SIZE, HAK_OS_USER_META);
    return NULL;
  }
  segment = (hak_segment_t*)raw;
  segment->kind = HAK_SEGMENT_ZERO;
  segment->cookie = (uintptr_t)segment ^ hak_process_secret;
  hak_segment_map_set(segment, true);
  hak_segment_t* expected = NULL;
  if (!atomic_compare_exchange_strong_explicit(&hak_zero_segment, &expected, segment, memory_order_acq_rel,
                                               memory_order_acquire)) {
    hak_segment_map_set(segment, false);
    hak_os_unmap(raw, HAK_SEGMENT_SIZE, HAK_OS_USER_META); /* another thread's won */
    return expected;
  }
  return segment;
}

static _Atomic(uint64_t)* hak_zero_live_word(hak_segment_t* segment, size_t slot) {
  return &segment->live[0][0] + slot / 64;
}

void* hak_hardening_zero_alloc(void) {
  hak_segment_t* segment = hak_zero_segment_get();
  if (segment == NULL) return NULL;
  for (int tries = 0; tries < 64; tries++) {
    size_t slot = (size_t)(atomic_fetch_add_explicit(&hak_zero_cursor, 1, memory_order_relaxed) % HAK_ZERO_SLOTS);
    uint64_t bit = (uint64_t)1 << (slot % 64);
    if (!(atomic_fetch_or_explicit(hak_zero_live_word(segment, slot), bit, memory_order_relaxed) & bit)) {
      return (uint8_t*)segment + HAK_SLICE_SIZE + slot * HAK_ZERO_SLOT;
    }
  }
  return NULL;
}

/* The slot p names in the zero segment; faults unless it is one handed out. With
 * `release`, its live bit is cleared in the same atomic step (a second free loses). */
static void hak_zero_check(hak_segment_t* segment, const void* p, hak_fault_t fault_if_not, bool release) {
  size_t offset = (size_t)((const uint8_t*)p - (const uint8_t*)segment);
  if (offset < HAK_SLICE_SIZE || (offset - HAK_SLICE_SIZE) % HAK_ZERO_SLOT != 0) hak_fault(fault_if_not, p);
  size_t slot = (offset - HAK_SLICE_SIZE) / HAK_ZERO_SLOT;
  uint64_t bit = (uint64_t)1 << (slot % 64);
  uint64_t was = release ? atomic_fetch_and_explicit(hak_zero_live_word(segment, slot), ~bit, memory_order_relaxed)
                         : atomic_load_explicit(hak_zero_live_word(segment, slot), memory_order_relaxed);
  if (!(was & bit)) hak_fault(hak_hardening_not_live_fault(fault_if_not, true), p);
}
#endif

/* Faults unless p is a block of ours: a whale's block (returns HAK_NOT_A_BLOCK) or a
 * block of a page in use (returns its index and the page). Its live bit is the
 * caller's to check. */
static long hak_hardening_find_block(const void* p, hak_fault_t fault_if_not, hak_page_t** page_out) {
  hak_segment_t* segment = hak_segment_of(p);
  if (!hak_segment_map_contains(p) || segment->cookie != ((uintptr_t)segment ^ hak_process_secret)) {
    hak_fault(hak_hardening_not_live_fault(fault_if_not, hak_hardening_recently_released(p)), p);
  }
  if (segment->kind == HAK_SEGMENT_HUGE) {
    if (p != segment->whale_block) hak_fault_in_class(fault_if_not, p, HAK_FAULT_CLASS_HUGE);
    return HAK_NOT_A_BLOCK;
  }
#if HAK_HARDEN_INTEGRITY
  if (segment->kind == HAK_SEGMENT_ZERO) return HAK_ZERO_BLOCK;
#endif
  long index = hak_hardening_block_index(segment, p);
  if (index == HAK_NOT_A_BLOCK) hak_fault(fault_if_not, p);
  if (index == HAK_BLOCK_OF_RELEASED_PAGE) {
    hak_fault_in_class(hak_hardening_not_live_fault(fault_if_not, true), p,
                       hak_hardening_was_block(segment, p)->class_index);
  }
  *page_out = hak_segment_page_of(segment, p);
  return index;
}

/* Faults unless p is a block hakmem handed out and has not taken back. */
void hak_hardening_check_owned(const void* p, hak_fault_t fault_if_not) {
  hak_page_t* page;
  long index = hak_hardening_find_block(p, fault_if_not, &page);
  if (index == HAK_NOT_A_BLOCK) { /* a whale's block: live while its free word says so */
    hak_segment_t* segment = hak_segment_of(p);
    if (atomic_load_explicit(&segment->pages[0].xthread_free, memory_order_relaxed) != HAK_DELAYED_NEVER) {
      hak_fault_in_class(hak_hardening_not_live_fault(fault_if_not, true), p, HAK_FAULT_CLASS_HUGE);
    }
    hak_hardening_check_whale_canary(p);
    return;
  }
#if HAK_HARDEN_INTEGRITY
  if (index == HAK_ZERO_BLOCK) {
    hak_zero_check(hak_segment_of(p), p, fault_if_not, false);
    return;
  }
#endif
  uint64_t bits = atomic_load_explicit(hak_hardening_live_word(hak_segment_of(p), page, (size_t)index),
                                       memory_order_relaxed);
  if (((bits >> (index % 64)) & 1) == 0) {
    hak_fault_in_class(hak_hardening_not_live_fault(fault_if_not, true), p, page->class_index);
  }
  hak_hardening_check_canary(page, p); /* a pool or big block */
}

#if HAK_HARDEN_INTEGRITY
/* Zeroes a block (a multiple of 16 bytes, 16-byte aligned): small ones with 16-byte
 * stores (for a memset the compiler would emit `rep stos`, whose start-up cost is
 * most of the time for a few dozen bytes), from 256 bytes on with libc's memset, whose
 * wider vector stores win there (tiny_pairs, 16..1024 B: about 12% faster). */
typedef uint64_t hak_hardening_v16 __attribute__((vector_size(16)));
#if defined(__clang__)
#define HAK_NO_MEMSET_IDIOM
#else
#define HAK_NO_MEMSET_IDIOM __attribute__((optimize("no-tree-loop-distribute-patterns")))
#endif
HAK_NO_MEMSET_IDIOM static void hak_hardening_zero(void* p, size_t bytes) {
  if (bytes >= 256) {
    memset(p, 0, bytes);
    return;
  }
  hak_hardening_v16* v = (hak_hardening_v16*)p;
  for (size_t i = 0; i < bytes / sizeof(*v); i++) v[i] = (hak_hardening_v16){0, 0};
}
#endif

#if HAK_HARDEN_QUARANTINE
static void* hak_hardening_quarantine(void* p, size_t block_size);
#endif

/* Validates a free and marks the block free; the check-and-clear is one atomic step.
 * Level 2 then zeroes a small block, so hak_hardening_on_handout can tell a write
 * after free when the slot is handed out again, and puts it in the quarantine.
 * Returns the block to free now: p, one the quarantine lets go, or NULL. */
void* hak_hardening_on_free(void* p) {
  hak_page_t* page;
  long index = hak_hardening_find_block(p, HAK_FAULT_INVALID_FREE, &page);
  hak_segment_t* segment = hak_segment_of(p);
#if HAK_HARDEN_INTEGRITY
  if (index == HAK_ZERO_BLOCK) {
    hak_zero_check(segment, p, HAK_FAULT_INVALID_FREE, true);
    return NULL; /* nothing more to do */
  }
#endif
  if (index == HAK_NOT_A_BLOCK) {
    /* A huge page's thread-free word reads HAK_DELAYED_NEVER while the block is live;
     * swapping it out makes a racing second free of the same block lose. */
    uintptr_t was = atomic_exchange(&segment->pages[0].xthread_free, 0);
    if (was != HAK_DELAYED_NEVER) hak_fault_in_class(HAK_FAULT_DOUBLE_FREE, p, HAK_FAULT_CLASS_HUGE);
    hak_hardening_check_whale_canary(p);
    return p;
  }
  uint64_t bit = (uint64_t)1 << (index % 64);
  uint64_t old = atomic_fetch_and_explicit(hak_hardening_live_word(segment, page, (size_t)index), ~bit,
                                           memory_order_relaxed);
  if ((old & bit) == 0) hak_fault_in_class(HAK_FAULT_DOUBLE_FREE, p, page->class_index);
  hak_hardening_check_canary(page, p); /* a pool or big block */
#if HAK_HARDEN_INTEGRITY
  if (segment->kind == HAK_SEGMENT_POOL && page->block_size <= HAK_HARDEN_ZERO_MAX) {
    hak_hardening_zero(p, page->block_size);
    return hak_hardening_quarantine(p, page->block_size);
  }
#endif
  return p;
}

#if HAK_HARDEN_INTEGRITY
/* A block off the free list, about to be handed out: a small one must still be all
 * zero past its link, as its free (or carving) left it, else it was written after
 * free. The encoded link is cleared so that no key material reaches the caller. */
static const uint8_t hak_hardening_zeros[HAK_HARDEN_ZERO_MAX];

void hak_hardening_on_handout(const hak_page_t* page, void* block) {
  size_t bsize = page->block_size;
  if (bsize <= HAK_HARDEN_ZERO_MAX &&
      memcmp((const uint8_t*)block + sizeof(hak_block_t), hak_hardening_zeros, bsize - sizeof(hak_block_t)) != 0) {
    hak_fault_in_class(HAK_FAULT_WRITE_AFTER_FREE, block, page->class_index); /* libc's vector memcmp */
  }
  ((hak_block_t*)block)->next = NULL;
}

/* `next`, read from `block` on a list of `page` (its free list or its remote frees),
 * must be NULL or a block of that page carved before: anything else means the link
 * was overwritten after the block was freed. */
void hak_hardening_check_link(const hak_page_t* page, const hak_block_t* block, const hak_block_t* next) {
  if (next == NULL) return;
  uintptr_t offset = (uintptr_t)next - (uintptr_t)hak_page_area(page);
  uint32_t bsize = page->block_size;
  if (offset >= (uintptr_t)page->capacity * bsize || (uint32_t)offset % bsize != 0) {
    hak_fault_in_class(HAK_FAULT_CORRUPT_FREE_LIST, block, page->class_index);
  }
}

/* `next`, read from `block` on a heap's delayed list (blocks of any of its pages),
 * must be NULL or a freed block of a page of ours. */
void hak_hardening_check_delayed_link(const hak_block_t* block, const hak_block_t* next) {
  if (next == NULL) return;
  hak_segment_t* segment = hak_segment_of(next);
  if (!hak_segment_map_contains(next) || segment->cookie != ((uintptr_t)segment ^ hak_process_secret) ||
      segment->kind != HAK_SEGMENT_POOL || hak_hardening_block_index(segment, next) < 0) {
    hak_fault(HAK_FAULT_CORRUPT_FREE_LIST, block);
  }
  hak_page_t* page = hak_segment_page_of(segment, next);
  hak_hardening_check_link(page, block, next); /* carved: within the page's capacity */
}

/* Fresh blocks of a page are handed out in a random order (level 2), so neighbours in
 * time are not neighbours in memory: an overflow or a use after free cannot count on
 * which block lies next to its target. Links `count` blocks from `first` in a random
 * permutation (Fisher-Yates, a per-thread xorshift seeded from the process secret),
 * the last one to `tail`; returns the new head. count is at most
 * HAK_PAGE_EXTEND_BYTES / HAK_ALIGNMENT (hak_page_extend carves that much at once). */
static __thread uint64_t hak_hardening_rng __attribute__((tls_model("initial-exec")));

static uint64_t hak_hardening_random(void) {
  uint64_t x = hak_hardening_rng;
  if (x == 0) x = (hak_process_secret ^ (uintptr_t)&hak_hardening_rng) | 1;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  hak_hardening_rng = x;
  return x;
}

hak_block_t* hak_hardening_link_shuffled(uint8_t* first, size_t count, size_t block_size, hak_block_t* tail) {
  uint16_t order[HAK_PAGE_EXTEND_BYTES / HAK_ALIGNMENT];
  for (size_t i = 0; i < count; i++) order[i] = (uint16_t)i;
  for (size_t i = count - 1; i > 0; i--) {
    size_t j = (size_t)(hak_hardening_random() % (i + 1));
    uint16_t t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  hak_block_t* next = tail;
  for (size_t i = count; i-- > 0;) {
    hak_block_t* block = (hak_block_t*)(first + (size_t)order[i] * block_size);
    hak_block_set_next(block, next);
    next = block;
  }
  return next;
}

#if HAK_HARDEN_QUARANTINE
/* The quarantine of small blocks (pool blocks hak_hardening_on_free zeroed): per heap,
 * so no lock; a block freed by a thread without a heap is freed at once. The block
 * waits zeroed and, under ASan, poisoned; a write into it is caught when its slot is
 * handed out after it leaves, a second free at once (its live bit is clear already).
 * Returns the block to free now (one that was waiting), or NULL. */
static void* hak_hardening_quarantine(void* p, size_t block_size) {
  hak_heap_t* heap = hak_heap_get();
  if (heap == &hak_heap_empty) return p;
  hak_asan_poison(p, block_size);
  if (heap->quarantine_count < HAK_QUARANTINE_SLOTS) {
    heap->quarantine[heap->quarantine_count] = p;
    __atomic_store_n(&heap->quarantine_count, heap->quarantine_count + 1, __ATOMIC_RELAXED);
    __atomic_store_n(&heap->quarantine_bytes, heap->quarantine_bytes + block_size, __ATOMIC_RELAXED);
    return NULL;
  }
  size_t i = (size_t)(hak_hardening_random() % HAK_QUARANTINE_SLOTS);
  void* out = heap->quarantine[i];
  heap->quarantine[i] = p;
  size_t out_size = hak_segment_page_of(hak_segment_of(out), out)->block_size;
  __atomic_store_n(&heap->quarantine_bytes, heap->quarantine_bytes + block_size - out_size, __ATOMIC_RELAXED);
  return out;
}

/* Oldest slot first: until the quarantine first fills, the last block freed ends at
 * the head of its page's free list, as without a quarantine. */
void hak_hardening_quarantine_flush(hak_heap_t* heap) {
  uint32_t count = heap->quarantine_count;
  __atomic_store_n(&heap->quarantine_count, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&heap->quarantine_bytes, 0, __ATOMIC_RELAXED);
  for (uint32_t i = 0; i < count; i++) hak_free_checked(heap->quarantine[i]);
}
#endif

/* Blocks carved from memory that held data before are zeroed, as freed ones are, so
 * that hak_hardening_on_alloc finds every small block zero. */
void hak_hardening_zero_fresh(const hak_page_t* page, void* first, size_t bytes) {
  if (page->is_zero || page->block_size > HAK_HARDEN_ZERO_MAX) return;
  hak_asan_unpoison(first, bytes);
  memset(first, 0, bytes);
  hak_asan_poison(first, bytes);
}
#endif

#endif /* HAK_HARDEN_FREE_CHECKS */
