/* SPDX-License-Identifier: MIT */
/* Small C program compiled with gcc -O2 by the hakmem integration test (the compiler
 * itself runs under LD_PRELOAD of hakmem) and then run under LD_PRELOAD as well. Each
 * function prints one line; the test compares the output exactly. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Count of primes below n and their sum, with a malloc'ed sieve. */
static void primes(unsigned n) {
  unsigned char* composite = calloc(n, 1);
  if (composite == NULL) exit(2);
  unsigned count = 0;
  uint64_t sum = 0;
  for (unsigned i = 2; i < n; i++) {
    if (composite[i]) continue;
    count++;
    sum += i;
    for (uint64_t j = (uint64_t)i * i; j < n; j += i) composite[j] = 1;
  }
  free(composite);
  printf("primes below %u: %u, sum %llu\n", n, count, (unsigned long long)sum);
}

typedef struct node_s {
  struct node_s* next;
  uint32_t value;
} node_t;

static node_t* merge(node_t* a, node_t* b) {
  node_t head = {NULL, 0};
  node_t* tail = &head;
  while (a != NULL && b != NULL) {
    if (a->value <= b->value) { tail->next = a; a = a->next; }
    else { tail->next = b; b = b->next; }
    tail = tail->next;
  }
  tail->next = a != NULL ? a : b;
  return head.next;
}

static node_t* merge_sort(node_t* list) {
  if (list == NULL || list->next == NULL) return list;
  node_t* slow = list;
  node_t* fast = list->next;
  while (fast != NULL && fast->next != NULL) { slow = slow->next; fast = fast->next->next; }
  node_t* second = slow->next;
  slow->next = NULL;
  return merge(merge_sort(list), merge_sort(second));
}

/* Builds a linked list of pseudo-random values, sorts it, checks and frees it. */
static void list_sort(unsigned n) {
  node_t* list = NULL;
  uint32_t x = 12345;
  for (unsigned i = 0; i < n; i++) {
    node_t* nd = malloc(sizeof(*nd));
    if (nd == NULL) exit(2);
    x = x * 1103515245u + 12345u;
    nd->value = (x >> 8) % 1000000;
    nd->next = list;
    list = nd;
  }
  list = merge_sort(list);
  unsigned sorted = 1;
  uint64_t weighted = 0;
  unsigned i = 0;
  for (node_t* nd = list; nd != NULL; i++) {
    if (nd->next != NULL && nd->next->value < nd->value) sorted = 0;
    weighted += (uint64_t)nd->value * (i % 13);
    node_t* next = nd->next;
    free(nd);
    nd = next;
  }
  printf("list of %u sorted=%u weighted %llu\n", i, sorted, (unsigned long long)weighted);
}

/* Grows a string with realloc and hashes it (FNV-1a). */
static void string_build(unsigned n) {
  size_t cap = 1, len = 0;
  char* s = malloc(cap);
  if (s == NULL) exit(2);
  for (unsigned i = 0; i < n; i++) {
    char piece[32];
    int k = snprintf(piece, sizeof(piece), "%u;", i * i);
    if (len + (size_t)k + 1 > cap) {
      cap = cap * 3 / 2 + (size_t)k + 1;
      s = realloc(s, cap);
      if (s == NULL) exit(2);
    }
    memcpy(s + len, piece, (size_t)k);
    len += (size_t)k;
  }
  s[len] = '\0';
  uint64_t hash = 1469598103934665603ull;
  for (size_t i = 0; i < len; i++) { hash ^= (unsigned char)s[i]; hash *= 1099511628211ull; }
  free(s);
  printf("string of %zu bytes, fnv1a %016llx\n", len, (unsigned long long)hash);
}

typedef struct {
  char name[24];
  int score;
} entry_t;

static int by_score_then_name(const void* a, const void* b) {
  const entry_t* x = a;
  const entry_t* y = b;
  if (x->score != y->score) return x->score < y->score ? 1 : -1;
  return strcmp(x->name, y->name);
}

/* qsort of a heap array of structs; prints the top three. */
static void ranking(unsigned n) {
  entry_t* e = malloc(n * sizeof(*e));
  if (e == NULL) exit(2);
  for (unsigned i = 0; i < n; i++) {
    snprintf(e[i].name, sizeof(e[i].name), "player%05u", i);
    e[i].score = (int)((i * 7919u) % 1000u);
  }
  qsort(e, n, sizeof(*e), by_score_then_name);
  printf("top: %s=%d %s=%d %s=%d\n", e[0].name, e[0].score, e[1].name, e[1].score, e[2].name, e[2].score);
  free(e);
}

int main(void) {
  primes(2000000);
  list_sort(200000);
  string_build(100000);
  ranking(50000);
  return 0;
}
