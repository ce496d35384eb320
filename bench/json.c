/* SPDX-License-Identifier: MIT */
/* json - parse-tree-like structures, as a JSON parser builds and a program drops them.
 *
 * Each document is a tree of 1k..10k nodes built in parse order (depth first): node
 * structs (56 B), keys and string values (mostly a few bytes, some up to 256 B), and
 * child vectors that grow by realloc as members are appended (16 B, 32 B, ... usually
 * below 256 B). So most requests are 16..256 B, skewed to the small end. A document is
 * walked (checking every string and number it holds) and then freed whole; the last
 * --live documents stay alive meanwhile, so frees come in large bursts of old memory.
 *   --docs N     documents (default 3000)
 *   --live L     documents alive at once (default 4)
 *   --seed S     (default fixed)
 * ops = allocation calls (malloc and realloc); each block is freed once.
 * Self-check: every node carries a magic number and its string bytes are derived from
 * its id; the walk verifies them all (exit 1 on a mismatch). The checksum mixes the
 * tree's contents and shape, so it is the same under every allocator.
 */
#include "bench_util.h"

enum { J_NULL, J_NUM, J_STR, J_ARR, J_OBJ };

#define JNODE_MAGIC 0x4A534F4Eu
#define J_MAX_DEPTH 32

typedef struct jnode_s {
  uint32_t magic; /* JNODE_MAGIC ^ low bits of id */
  uint8_t type;
  uint8_t pad[3];
  uint32_t nchild, cap;
  uint32_t key_len, str_len;
  uint64_t id;
  char* key; /* member name when the parent is an object */
  char* str; /* string value */
  struct jnode_s** child;
} jnode_t;

static uint64_t g_allocs;

static char* make_string(uint64_t id, uint32_t len, uint64_t salt) {
  char* s = bench_malloc(len + 1);
  g_allocs++;
  for (uint32_t i = 0; i < len; i++) s[i] = (char)('a' + (id * 31 + salt + i * 7) % 26);
  s[len] = '\0';
  return s;
}

static int check_string(const char* s, uint64_t id, uint32_t len, uint64_t salt) {
  for (uint32_t i = 0; i < len; i++)
    if (s[i] != (char)('a' + (id * 31 + salt + i * 7) % 26)) return 0;
  return s[len] == '\0';
}

/* String lengths as in real documents: mostly short, a long tail up to 255. */
static uint32_t string_len(bench_rng_t* rng) {
  uint64_t r = bench_rng_next(rng);
  uint32_t bucket = (uint32_t)(r % 10);
  r >>= 8;
  if (bucket < 6) return 1 + (uint32_t)(r % 8);
  if (bucket < 9) return 8 + (uint32_t)(r % 32);
  return 40 + (uint32_t)(r % 216);
}

static jnode_t* new_node(uint64_t id, uint8_t type) {
  jnode_t* n = bench_malloc(sizeof(jnode_t));
  g_allocs++;
  memset(n, 0, sizeof(*n));
  n->magic = JNODE_MAGIC ^ (uint32_t)id;
  n->type = type;
  n->id = id;
  return n;
}

static void append_child(jnode_t* parent, jnode_t* child) {
  if (parent->nchild == parent->cap) {
    parent->cap = parent->cap == 0 ? 2 : parent->cap * 2;
    parent->child = bench_realloc(parent->child, parent->cap * sizeof(jnode_t*));
    g_allocs++;
  }
  parent->child[parent->nchild++] = child;
}

/* Builds one document of `target` nodes in parse order. */
static jnode_t* build_doc(bench_rng_t* rng, uint64_t* next_id, uint32_t target) {
  jnode_t* stack[J_MAX_DEPTH];
  int depth = 0;
  jnode_t* root = new_node((*next_id)++, J_OBJ);
  stack[depth++] = root;
  for (uint32_t made = 1; made < target;) {
    jnode_t* top = stack[depth - 1];
    uint64_t r = bench_rng_next(rng);
    if (depth > 1 && top->nchild > 0 && r % 6 == 0) { /* close the container */
      depth--;
      continue;
    }
    r >>= 8;
    uint32_t pick = (uint32_t)(r % 100);
    uint8_t type = pick < 15 ? (pick < 8 ? J_ARR : J_OBJ) : pick < 55 ? J_NUM : pick < 92 ? J_STR : J_NULL;
    if ((type == J_ARR || type == J_OBJ) && depth == J_MAX_DEPTH) type = J_NUM;
    uint64_t id = (*next_id)++;
    jnode_t* n = new_node(id, type);
    made++;
    if (top->type == J_OBJ) {
      n->key_len = 2 + (uint32_t)((r >> 8) % 15);
      n->key = make_string(id, n->key_len, 1);
    }
    if (type == J_NUM) n->pad[0] = (uint8_t)id; /* the number is derived from the id */
    if (type == J_STR) {
      n->str_len = string_len(rng);
      n->str = make_string(id, n->str_len, 2);
    }
    append_child(top, n);
    if (type == J_ARR || type == J_OBJ) stack[depth++] = n;
  }
  return root;
}

/* Walks a document, verifying every node; returns the checksum of its contents. */
static uint64_t walk(const jnode_t* n, uint64_t h, uint32_t depth) {
  BENCH_CHECK(n->magic == (JNODE_MAGIC ^ (uint32_t)n->id), "node %llu: bad magic %08x", (unsigned long long)n->id,
              n->magic);
  h = bench_mix(h, n->id * 8 + n->type);
  if (n->key != NULL) {
    BENCH_CHECK(check_string(n->key, n->id, n->key_len, 1), "node %llu: key corrupted", (unsigned long long)n->id);
    h = bench_mix(h, n->key_len);
  }
  if (n->type == J_NUM) BENCH_CHECK(n->pad[0] == (uint8_t)n->id, "node %llu: number corrupted", (unsigned long long)n->id);
  if (n->type == J_STR) {
    BENCH_CHECK(check_string(n->str, n->id, n->str_len, 2), "node %llu: string corrupted", (unsigned long long)n->id);
    h = bench_mix(h, n->str_len);
  }
  for (uint32_t i = 0; i < n->nchild; i++) h = walk(n->child[i], h, depth + 1);
  return bench_mix(h, n->nchild);
}

static uint64_t free_doc(jnode_t* n) {
  uint64_t count = 1;
  for (uint32_t i = 0; i < n->nchild; i++) count += free_doc(n->child[i]);
  free(n->child);
  free(n->key);
  free(n->str);
  n->magic = 0;
  free(n);
  return count;
}

int main(int argc, char** argv) {
  uint64_t docs = bench_arg(argc, argv, "--docs", 3000);
  uint64_t live = bench_arg(argc, argv, "--live", 4);
  bench_rng_t rng = {bench_arg(argc, argv, "--seed", 0x5EEDF00DULL) | 1};
  if (live == 0) live = 1;
  jnode_t** ring = calloc(live, sizeof(jnode_t*));
  uint32_t* sizes = calloc(live, sizeof(uint32_t));
  uint64_t next_id = 1, checksum = 0, nodes_freed = 0, nodes_made = 0;

  uint64_t t0 = bench_now_ns();
  for (uint64_t d = 0; d < docs; d++) {
    uint64_t slot = d % live;
    if (ring[slot] != NULL) {
      uint64_t n = free_doc(ring[slot]);
      BENCH_CHECK(n == sizes[slot], "document freed %llu nodes, built %u", (unsigned long long)n, sizes[slot]);
      nodes_freed += n;
    }
    uint32_t target = 1000 + (uint32_t)(bench_rng_next(&rng) % 9001);
    ring[slot] = build_doc(&rng, &next_id, target);
    sizes[slot] = target;
    nodes_made += target;
    checksum = walk(ring[slot], checksum, 0);
  }
  for (uint64_t s = 0; s < live; s++) {
    if (ring[s] != NULL) nodes_freed += free_doc(ring[s]);
  }
  uint64_t ns = bench_now_ns() - t0;
  BENCH_CHECK(nodes_freed == nodes_made, "freed %llu nodes of %llu", (unsigned long long)nodes_freed,
              (unsigned long long)nodes_made);
  free(ring);
  free(sizes);
  bench_report("json", g_allocs, ns, checksum);
  return 0;
}
