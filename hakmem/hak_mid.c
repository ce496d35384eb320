/* hak_mid.c - the mid pools' size classes: 1 KiB < size <= 64 KiB.
 *
 * Same spacing as the tiny pool's upper classes (8 per doubling), served from pages of
 * the same segments: blocks up to 8 KiB from 64 KiB pages, larger ones from 512 KiB
 * pages so that every page holds at least eight blocks. */
#include "hak_internal.h"

size_t hak_mid_class_of(size_t size) {
  /* size in (2^b, 2^(b+1)] with b >= 10; eight classes of 2^(b-3) each. */
  size_t b = (size_t)(63 - __builtin_clzll((unsigned long long)(size - 1)));
  size_t step_shift = b - 3;
  size_t step = ((size - 1 - ((size_t)1 << b)) >> step_shift); /* 0..7 */
  return 16 + (b - 8) * 8 + step;
}
