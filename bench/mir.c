/* SPDX-License-Identifier: MIT */
/* mir - compiler-IR-like objects of 256 B .. 16 KiB with mixed lifetimes.
 *
 * Per function: a function object and 4..64 basic blocks (256 B .. 2 KiB each), each
 * with an instruction vector grown by realloc (doubling from 256 B up to 16 KiB) as
 * instructions are appended; three analysis passes that allocate short-lived tables
 * (512 B .. 16 KiB) and free them at the end of the pass; a module-wide pool of
 * long-lived objects (types, constants, symbols: 256 B .. 4 KiB) of which each function
 * replaces a few at random; and a quarter of finished functions kept in a ring of 64
 * ("inlining candidates") until evicted, the rest freed at once.
 *   --funcs N    functions (default 30000)
 *   --seed S
 * ops = allocation calls (malloc and realloc).
 * Self-check: instruction words are derived from (function, block, index) and checked
 * after growth and before freeing; every object carries a tag checked before free.
 */
#include "bench_util.h"

#define MODULE_SLOTS 1024
#define KEPT_FUNCS 64

typedef struct block_s {
  uint64_t tag;
  uint64_t* instrs;
  uint32_t ninstr, cap;
  size_t size; /* bytes of this block object */
} block_t;

typedef struct func_s {
  uint64_t tag;
  size_t size;
  uint32_t nblocks;
  block_t** blocks;
} func_t;

typedef struct obj_s {
  unsigned char* p;
  size_t size;
  uint64_t tag;
} obj_t;

static uint64_t g_allocs;

static void* alloc_tagged(size_t size, uint64_t tag) {
  unsigned char* p = bench_malloc(size);
  g_allocs++;
  bench_fill_sparse(p, size, tag);
  return p;
}

static void free_tagged(void* p, size_t size, uint64_t tag, const char* what) {
  BENCH_CHECK(bench_check_sparse(p, size, tag), "%s (tag %llu, %zu B) corrupted", what, (unsigned long long)tag, size);
  free(p);
}

/* Skewed towards the low end of [lo, hi]: a power of two, then jitter. */
static size_t skewed_size(bench_rng_t* rng, size_t lo, size_t hi) {
  uint64_t r = bench_rng_next(rng);
  unsigned doublings = 0;
  while ((lo << (doublings + 1)) <= hi) doublings++;
  size_t s = lo << (r % doublings); /* lo .. hi/2, equally likely per doubling */
  s += (r >> 8) % s;                /* jitter up to twice that */
  return s > hi ? hi : s;
}

static inline uint64_t instr_word(uint64_t func, uint32_t block, uint32_t i) {
  return (func << 32) ^ ((uint64_t)block << 20) ^ i ^ 0xA5A5A5A500000000ULL;
}

static block_t* build_block(bench_rng_t* rng, uint64_t fid, uint32_t b) {
  size_t size = 256 + (size_t)(bench_rng_next(rng) % 1793);
  uint64_t tag = fid * 131 + b;
  /* the block object: a header we use plus a tail standing in for phis, preds, ... */
  block_t* blk = alloc_tagged(size, tag);
  unsigned char tail0 = ((unsigned char*)blk)[size - 1];
  blk->tag = tag;
  blk->size = size;
  blk->instrs = NULL;
  blk->ninstr = 0;
  blk->cap = 0;
  uint32_t n = 8u << (bench_rng_next(rng) % 9); /* 8 .. 2048 instructions */
  n += (uint32_t)(bench_rng_next(rng) % n);
  if (n > 2048) n = 2048;
  for (uint32_t i = 0; i < n; i++) {
    if (blk->ninstr == blk->cap) {
      blk->cap = blk->cap == 0 ? 32 : blk->cap * 2; /* 256 B, 512 B, ... 16 KiB */
      blk->instrs = bench_realloc(blk->instrs, blk->cap * sizeof(uint64_t));
      g_allocs++;
      if (blk->ninstr > 0)
        BENCH_CHECK(blk->instrs[blk->ninstr - 1] == instr_word(fid, b, blk->ninstr - 1) &&
                        blk->instrs[0] == instr_word(fid, b, 0),
                    "realloc lost instructions of function %llu block %u", (unsigned long long)fid, b);
    }
    blk->instrs[blk->ninstr++] = instr_word(fid, b, i);
  }
  BENCH_CHECK(((unsigned char*)blk)[size - 1] == tail0, "block object of function %llu overwritten",
              (unsigned long long)fid);
  return blk;
}

static uint64_t free_block(block_t* blk, uint64_t fid, uint32_t b, uint64_t h) {
  for (uint32_t i = 0; i < blk->ninstr; i++)
    BENCH_CHECK(blk->instrs[i] == instr_word(fid, b, i), "instruction %u of function %llu block %u corrupted", i,
                (unsigned long long)fid, b);
  h = bench_mix(h, blk->ninstr);
  free(blk->instrs);
  size_t size = blk->size;
  uint64_t tag = blk->tag;
  BENCH_CHECK(tag == fid * 131 + b, "block header of function %llu corrupted", (unsigned long long)fid);
  /* restore the pattern under the header words before the tag check */
  unsigned char* p = (unsigned char*)blk;
  for (size_t off = 0; off < sizeof(block_t) && off < size; off += 4096) p[off] = bench_byte(tag, off);
  free_tagged(blk, size, tag, "block object");
  return h;
}

static void free_func(func_t* f, uint64_t* h) {
  uint64_t fid = f->tag;
  for (uint32_t b = 0; b < f->nblocks; b++) *h = free_block(f->blocks[b], fid, b, *h);
  free(f->blocks);
  size_t size = f->size;
  unsigned char* p = (unsigned char*)f;
  p[0] = bench_byte(fid, 0);
  free_tagged(f, size, fid, "function object");
}

/* One analysis pass: scratch tables of 512 B .. 16 KiB, freed at the end in reverse. */
static void analysis_pass(bench_rng_t* rng, uint32_t nblocks, uint64_t fid, uint64_t* h) {
  obj_t tmp[20];
  uint32_t n = 1 + nblocks / 4;
  for (uint32_t i = 0; i < n; i++) {
    tmp[i].size = skewed_size(rng, 512, 16384);
    tmp[i].tag = fid * 977 + i;
    tmp[i].p = alloc_tagged(tmp[i].size, tmp[i].tag);
  }
  for (uint32_t i = n; i-- > 0;) {
    *h = bench_mix(*h, tmp[i].size);
    free_tagged(tmp[i].p, tmp[i].size, tmp[i].tag, "analysis table");
  }
}

int main(int argc, char** argv) {
  uint64_t funcs = bench_arg(argc, argv, "--funcs", 30000);
  bench_rng_t rng = {bench_arg(argc, argv, "--seed", 0x1F2E3D4CULL) | 1};
  obj_t* module = calloc(MODULE_SLOTS, sizeof(obj_t));
  func_t* kept[KEPT_FUNCS] = {0};
  uint64_t h = 0, kept_next = 0;

  uint64_t t0 = bench_now_ns();
  for (uint32_t i = 0; i < MODULE_SLOTS; i++) {
    module[i].size = skewed_size(&rng, 256, 4096);
    module[i].tag = 0xC0DE0000ULL + i;
    module[i].p = alloc_tagged(module[i].size, module[i].tag);
  }
  for (uint64_t fid = 1; fid <= funcs; fid++) {
    uint64_t r = bench_rng_next(&rng);
    uint32_t nblocks = 4u << (r % 4); /* 4 .. 32, then jitter up to 64 */
    nblocks += (uint32_t)((r >> 8) % nblocks);
    size_t fsize = 256 + (size_t)((r >> 16) % 769);
    func_t* f = alloc_tagged(fsize, fid);
    f->tag = fid;
    f->size = fsize;
    f->nblocks = nblocks;
    f->blocks = bench_malloc(nblocks * sizeof(block_t*));
    g_allocs++;
    for (uint32_t b = 0; b < nblocks; b++) f->blocks[b] = build_block(&rng, fid, b);
    for (int pass = 0; pass < 3; pass++) analysis_pass(&rng, nblocks, fid, &h);
    for (int k = 0; k < 4; k++) { /* module-level objects replaced by this function */
      obj_t* o = &module[bench_rng_next(&rng) % MODULE_SLOTS];
      h = bench_mix(h, o->tag);
      free_tagged(o->p, o->size, o->tag, "module object");
      o->size = skewed_size(&rng, 256, 4096);
      o->tag = fid * 4 + (uint64_t)k + 0x100000000ULL;
      o->p = alloc_tagged(o->size, o->tag);
    }
    if ((r >> 40) % 4 == 0) { /* kept for a while, evicted oldest first */
      func_t** slot = &kept[kept_next++ % KEPT_FUNCS];
      if (*slot != NULL) free_func(*slot, &h);
      *slot = f;
    } else {
      free_func(f, &h);
    }
  }
  for (int i = 0; i < KEPT_FUNCS; i++)
    if (kept[i] != NULL) free_func(kept[i], &h);
  for (uint32_t i = 0; i < MODULE_SLOTS; i++) free_tagged(module[i].p, module[i].size, module[i].tag, "module object");
  uint64_t ns = bench_now_ns() - t0;
  free(module);
  bench_report("mir", g_allocs, ns, h);
  return 0;
}
