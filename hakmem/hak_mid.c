/* hak_mid.c - the mid pools: size classes above the tiny pool, up to 64 KiB.
 *
 * Classes from 16 on are 8 per doubling (the tiny pool's 288..1024 B classes and the
 * mid classes 1152 B .. 64 KiB alike); hak_mid_class_of (hak_internal.h, inline for the
 * fast path) maps a size to its class, this file maps a class back to its block size.
 * Mid blocks up to 8 KiB come from 64 KiB pages; larger ones from 512 KiB pages, so
 * every page holds at least eight blocks. */
#include "hak_internal.h"

size_t hak_class_block_size(size_t class_index) {
  if (class_index < 16) return (class_index + 1) * 16;
  size_t doubling = (class_index - 16) / 8; /* 0 for 257..512 B */
  size_t step = (class_index - 16) % 8 + 1; /* 1..8 */
  size_t base = (size_t)256 << doubling;
  return base + step * (base / 8);
}
