/* SPDX-License-Identifier: MIT */
/* hak_mid.c - the mid and L2.5 pools: size classes above the tiny pool, up to 1 MiB,
 * and the page geometry of every class.
 *
 * Classes from 16 on are 8 per doubling (the tiny pool's 288..1024 B classes, the mid
 * classes 1152 B .. 64 KiB, the L2.5 classes 72 KiB .. 1 MiB alike); hak_mid_class_of
 * (hak_internal.h, inline for the fast path) maps a size to its class, this file maps a
 * class back to its block size and to the slices its pages span:
 *   blocks up to 8 KiB       1 slice (64 KiB): at least 8 blocks a page
 *   8 KiB .. 128 KiB         the fewest slices that hold 4 blocks (1 to 8), doubled for
 *                            for each further fresh page, up to 8 slices (512 KiB),
 *                            halved each time the class has no page left with room
 *                            (hak_heap.c keeps the count): a class with a block
 *                            or two alive does not hold half a MiB resident, a class in
 *                            heavy use still gets 4 .. 56 blocks a page
 *   128 KiB .. 1 MiB         one block, in the fewest slices that hold it: such a
 *                            block's memory goes back to the segment's free spans as
 *                            soon as it is freed, for any other size to reuse
 * Every page starts on a slice (64 KiB) boundary, so a block whose size is a multiple
 * of an alignment up to 64 KiB is aligned to it. */
#include "hak_internal.h"

size_t hak_class_block_size(size_t class_index) {
  if (class_index < 16) return (class_index + 1) * 16;
  size_t doubling = (class_index - 16) / 8; /* 0 for 257..512 B */
  size_t step = (class_index - 16) % 8 + 1; /* 1..8 */
  size_t base = (size_t)256 << doubling;
  return base + step * (base / 8);
}

size_t hak_class_page_slices(size_t class_index, unsigned grow) {
  size_t bsize = hak_class_block_size(class_index);
  if (bsize <= HAK_SMALL_PAGE_BLOCK_MAX) return 1;
  if (bsize <= HAK_MEDIUM_BLOCK_MAX) {
    size_t first = (HAK_MEDIUM_PAGE_MIN_BLOCKS * bsize + HAK_SLICE_SIZE - 1) / HAK_SLICE_SIZE;
    size_t slices = first << (grow < HAK_MEDIUM_PAGE_GROW_MAX ? grow : HAK_MEDIUM_PAGE_GROW_MAX);
    return slices < HAK_MEDIUM_PAGE_SLICES ? slices : HAK_MEDIUM_PAGE_SLICES;
  }
  return (bsize + HAK_SLICE_SIZE - 1) / HAK_SLICE_SIZE;
}
