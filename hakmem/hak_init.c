/* SPDX-License-Identifier: MIT */
/* hak_init.c - process set-up, thread-exit and fork hooks.
 *
 * Initialisation must not recurse into malloc: nothing here uses dlsym or stdio. The
 * core (secret, options, OS layer) is made ready by whichever comes first, the first
 * malloc or the library's constructor. The hooks (the thread-exit key, the fork
 * handlers) are registered by the constructor only, never from inside malloc: glibc
 * may call malloc while holding a lock that registering a hook takes (a program whose
 * constructor registers many atfork handlers before its first malloc: glibc grows its
 * handler list with malloc under its atfork lock), and their own allocations
 * (pthread_setspecific for keys past the first 32) then find a working allocator. */
#include <pthread.h>
#include <sys/auxv.h>
#include <time.h>

#include "hak_internal.h"

uintptr_t hak_process_secret;

static _Atomic bool hak_core_ready;
static hak_lock_t hak_init_lock = HAK_LOCK_INIT;
static _Atomic bool hak_hooks_claimed;
static _Atomic bool hak_thread_key_ready;
static pthread_key_t hak_thread_key;

static void hak_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield" ::: "memory");
#else
  atomic_signal_fence(memory_order_seq_cst);
#endif
}

bool hak_trylock(hak_lock_t* lock) {
  uint32_t free_state = 0;
  return atomic_compare_exchange_strong_explicit(&lock->state, &free_state, 1, memory_order_acquire,
                                                 memory_order_relaxed);
}

/* Spin a little (critical sections are short), then mark the lock contended and sleep
 * until the holder's unlock wakes one sleeper (the classic three-state futex mutex). */
void hak_lock(hak_lock_t* lock) {
  if (hak_likely(hak_trylock(lock))) return;
  for (int i = 0; i < HAK_LOCK_SPINS; i++) {
    hak_cpu_relax();
    if (atomic_load_explicit(&lock->state, memory_order_relaxed) == 0 && hak_trylock(lock)) return;
  }
  while (atomic_exchange_explicit(&lock->state, 2, memory_order_acquire) != 0) hak_os_wait(&lock->state, 2);
}

/* Waits for a flag another thread holds for a few stores (spinning, then yielding:
 * its holder may have been preempted, and on two cores a spinner would keep it off). */
void hak_wait_flag_clear(_Atomic uint8_t* flag) {
  for (int i = 0; atomic_load_explicit(flag, memory_order_seq_cst) != 0; i++) {
    if (i < HAK_LOCK_SPINS) hak_cpu_relax();
    else hak_os_yield();
  }
}

void hak_unlock(hak_lock_t* lock) {
  if (atomic_exchange_explicit(&lock->state, 0, memory_order_release) == 2) hak_os_wake_one(&lock->state);
}

/* Per-process secret for cookies: the kernel's AT_RANDOM bytes, mixed with addresses
 * and time so that a missing auxv entry still gives something unpredictable. */
static uintptr_t hak_init_secret(void) {
  uintptr_t secret = (uintptr_t)&hak_process_secret ^ (uintptr_t)&secret;
  const uint8_t* random = (const uint8_t*)getauxval(AT_RANDOM);
  if (random != NULL) {
    for (int i = 0; i < 8; i++) secret = (secret << 8 | secret >> 56) ^ random[i];
  }
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  secret ^= (uintptr_t)ts.tv_nsec * 0x9E3779B97F4A7C15u;
  return secret | 1;
}

static void hak_thread_key_destructor(void* value) {
  hak_heap_thread_done((hak_heap_t*)value);
}

/* Fork: hold every global lock across fork() so the child never inherits one that a
 * vanished thread was holding. The forking thread's heap carries on in the child (after
 * hak_heap_fork_child repairs hand-offs cut short); the other threads' heaps stay as
 * they were (their memory is simply never reused there). */
static void hak_fork_prepare(void) {
  hak_lock(&hak_init_lock); /* a thread mid-initialisation would leave it taken */
  hak_policy_fork_lock();
  hak_heap_fork_lock();
  hak_segment_fork_lock();
  hak_cache_fork_lock();
  hak_region_fork_lock();
}

static void hak_fork_release(void) {
  hak_region_fork_unlock();
  hak_cache_fork_unlock();
  hak_segment_fork_unlock();
  hak_heap_fork_unlock();
  hak_policy_fork_unlock();
  hak_unlock(&hak_init_lock);
}

static void hak_fork_child(void) {
  hak_fork_release();
  hak_segment_fork_child();
  hak_heap_fork_child();
}

static void hak_process_register_hooks(void) {
  bool expected = false;
  if (!atomic_compare_exchange_strong(&hak_hooks_claimed, &expected, true)) return;
  if (pthread_key_create(&hak_thread_key, hak_thread_key_destructor) == 0) {
    atomic_store_explicit(&hak_thread_key_ready, true, memory_order_release);
    hak_heap_t* heap = hak_heap_get();
    if (heap != &hak_heap_empty) pthread_setspecific(hak_thread_key, heap);
  }
  pthread_atfork(hak_fork_prepare, hak_fork_release, hak_fork_child);
}

void hak_process_init(void) {
  if (hak_likely(atomic_load_explicit(&hak_core_ready, memory_order_acquire))) return;
  hak_lock(&hak_init_lock);
  if (!atomic_load_explicit(&hak_core_ready, memory_order_relaxed)) {
    hak_process_secret = hak_init_secret();
    hak_options_init();
    hak_os_init();
    hak_policy_init();
    hak_hardening_install_fault_handler();
#if HAK_STATS
    hak_latency_clock_start();
#endif
    atomic_store_explicit(&hak_core_ready, true, memory_order_release);
  }
  hak_unlock(&hak_init_lock);
}

void hak_thread_register(hak_heap_t* heap) {
  if (atomic_load_explicit(&hak_thread_key_ready, memory_order_acquire)) pthread_setspecific(hak_thread_key, heap);
}

/* Runs before main (or when the shared library loads) so that threads the program
 * starts later never race to initialise; registers the hooks (and the heap of a
 * thread that allocated before it ran). A thread other than this one that got a heap
 * before (a thread started by another library's constructor) is not known to the
 * thread-exit key: its heap is not given back when it exits. */
__attribute__((constructor)) static void hak_init_at_load(void) {
  hak_process_init();
  hak_options_stats_scope();
  hak_process_register_hooks();
}

__attribute__((destructor)) static void hak_fini_at_exit(void) {
  hak_stats_atexit();
}
