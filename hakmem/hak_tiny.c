/* SPDX-License-Identifier: MIT */
/* hak_tiny.c - the tiny pool's size classes: every size up to 1 KiB.
 *
 * Classes 0..15 are 16 B apart (16 .. 256 B); classes 16..31 are 8 per doubling
 * (288 .. 512 B by 32, 576 .. 1024 B by 64), keeping internal waste under 12.5%
 * above 128 B. The allocation fast path indexes the heap's direct page table with
 * (size + 15) / 16; this table says which class each of those 65 slots belongs to. */
#include "hak_internal.h"

const uint8_t hak_tiny_class_of_direct[HAK_TINY_DIRECT_COUNT] = {
    /* slot 0 is malloc(0): served by the smallest class */
    0,
    /* 16..256 B: one class per 16 B */
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
    /* 272..512 B: one class per 32 B (two slots each) */
    16, 16, 17, 17, 18, 18, 19, 19, 20, 20, 21, 21, 22, 22, 23, 23,
    /* 528..1024 B: one class per 64 B (four slots each) */
    24, 24, 24, 24, 25, 25, 25, 25, 26, 26, 26, 26, 27, 27, 27, 27,
    28, 28, 28, 28, 29, 29, 29, 29, 30, 30, 30, 30, 31, 31, 31, 31,
};
