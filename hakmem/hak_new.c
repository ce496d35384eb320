/* SPDX-License-Identifier: MIT */
/* hak_new.c - C++'s replaceable operator new and operator delete, in the replacing
 * libraries (HAK_OVERRIDE), so that C++ programs reach hakmem directly instead of
 * through libstdc++'s forwarding (which loses the size and alignment that sized and
 * aligned delete pass).
 *
 * Written in C under their mangled names (LP64: size_t is `m`), so the libraries need
 * no libstdc++: what C++ needs of it at run time, the new_handler and the bad_alloc
 * exception, is reached through weak references, present exactly when the program is
 * C++ (libstdc++ loaded). Built with -fexceptions: a new_handler, and bad_alloc, may
 * throw through these frames.
 *
 * Throwing new: on failure, calls the installed new_handler and tries again, else
 * throws std::bad_alloc (as the standard asks). Nothrow new: returns NULL on failure
 * and never throws; unlike the standard's wording it does not call the new_handler
 * (in C the exception a handler may throw could not be caught here). Aligned new takes
 * any power-of-two alignment. Delete ignores the size and alignment in the release and
 * stats variants; the hardened one checks them against the block and stops the process
 * on a mismatch. */
#include <stddef.h>

#include "hak_alloc.h"

#if HAK_OVERRIDE

typedef void (*hak_new_handler_t)(void);
/* libstdc++: std::get_new_handler(), std::__throw_bad_alloc(). */
extern hak_new_handler_t _ZSt15get_new_handlerv(void) __attribute__((weak));
extern void _ZSt17__throw_bad_allocv(void) __attribute__((weak, noreturn));

/* A failed throwing new: gives the new_handler its chance (true: try again), else
 * throws std::bad_alloc. */
HAK_COLD static bool hak_new_failed(void) {
  hak_new_handler_t handler = _ZSt15get_new_handlerv != NULL ? _ZSt15get_new_handlerv() : NULL;
  if (handler != NULL) {
    handler();
    return true;
  }
  if (_ZSt17__throw_bad_allocv != NULL) _ZSt17__throw_bad_allocv();
  hak_fault_message("operator new: out of memory, and no C++ runtime to throw std::bad_alloc");
}

static void* hak_new(size_t size) {
  void* p;
  while ((p = hak_malloc_inline(size)) == NULL && hak_new_failed()) {
  }
  return p;
}

static void* hak_new_aligned(size_t size, size_t align) {
  void* p;
  while ((p = hak_memalign_inline(align, size)) == NULL && hak_new_failed()) {
  }
  return p;
}

/* Sized and aligned delete: the hardened variant checks what the caller says against
 * the block (a size above its usable size, or in another size class of the pools; a
 * pointer off the alignment), the others just free it. */
#if HAK_HARDEN_FREE_CHECKS
/* size SIZE_MAX: not given; align 0: not given. */
static void hak_delete_check(void* p, size_t size, size_t align) {
  hak_hardening_check_owned(p, HAK_FAULT_INVALID_FREE);
  size_t usable = hak_usable_size_inline(p);
  hak_segment_t* segment = hak_segment_of(p);
  bool pool = segment->kind == HAK_SEGMENT_POOL;
  int cls = pool ? hak_segment_page_of(segment, p)->class_index : HAK_FAULT_CLASS_HUGE;
  if (align != 0 && (uintptr_t)p % align != 0) hak_fault_in_class(HAK_FAULT_SIZED_DELETE, p, cls);
  if (size == SIZE_MAX) return;
  if (size > usable) hak_fault_in_class(HAK_FAULT_SIZED_DELETE, p, cls);
  /* Level 2 knows the size new was asked for: sized delete must pass exactly that. */
  if (HAK_HARDEN_CANARY && size != usable) hak_fault_in_class(HAK_FAULT_SIZED_DELETE, p, cls);
  /* A pool block of plain new sits in the class of its size (aligned new may have
   * picked a larger class that meets the alignment). */
  if (pool && align <= HAK_ALIGNMENT && hak_size_class(size + HAK_CANARY_ROOM) != (size_t)cls) {
    hak_fault_in_class(HAK_FAULT_SIZED_DELETE, p, cls);
  }
}
#endif

static void hak_delete_sized(void* p, size_t size, size_t align) {
#if HAK_HARDEN_FREE_CHECKS
  if (p != NULL) hak_delete_check(p, size, align);
#else
  (void)size;
  (void)align;
#endif
  hak_free_inline(p);
}

#define HAK_NEW_EXPORT HAK_EXPORT __attribute__((used))

/* new */
HAK_NEW_EXPORT void* _Znwm(size_t size) { return hak_new(size); }
HAK_NEW_EXPORT void* _Znam(size_t size) { return hak_new(size); }
HAK_NEW_EXPORT void* _ZnwmRKSt9nothrow_t(size_t size, const void* tag) { (void)tag; return hak_malloc_inline(size); }
HAK_NEW_EXPORT void* _ZnamRKSt9nothrow_t(size_t size, const void* tag) { (void)tag; return hak_malloc_inline(size); }
HAK_NEW_EXPORT void* _ZnwmSt11align_val_t(size_t size, size_t align) { return hak_new_aligned(size, align); }
HAK_NEW_EXPORT void* _ZnamSt11align_val_t(size_t size, size_t align) { return hak_new_aligned(size, align); }
HAK_NEW_EXPORT void* _ZnwmSt11align_val_tRKSt9nothrow_t(size_t size, size_t align, const void* tag) {
  (void)tag;
  return hak_memalign_inline(align, size);
}
HAK_NEW_EXPORT void* _ZnamSt11align_val_tRKSt9nothrow_t(size_t size, size_t align, const void* tag) {
  (void)tag;
  return hak_memalign_inline(align, size);
}

/* delete */
HAK_NEW_EXPORT void _ZdlPv(void* p) { hak_free_inline(p); }
HAK_NEW_EXPORT void _ZdaPv(void* p) { hak_free_inline(p); }
HAK_NEW_EXPORT void _ZdlPvRKSt9nothrow_t(void* p, const void* tag) { (void)tag; hak_free_inline(p); }
HAK_NEW_EXPORT void _ZdaPvRKSt9nothrow_t(void* p, const void* tag) { (void)tag; hak_free_inline(p); }
HAK_NEW_EXPORT void _ZdlPvm(void* p, size_t size) { hak_delete_sized(p, size, 0); }
HAK_NEW_EXPORT void _ZdaPvm(void* p, size_t size) { hak_delete_sized(p, size, 0); }
HAK_NEW_EXPORT void _ZdlPvSt11align_val_t(void* p, size_t align) { hak_delete_sized(p, SIZE_MAX, align); }
HAK_NEW_EXPORT void _ZdaPvSt11align_val_t(void* p, size_t align) { hak_delete_sized(p, SIZE_MAX, align); }
HAK_NEW_EXPORT void _ZdlPvmSt11align_val_t(void* p, size_t size, size_t align) { hak_delete_sized(p, size, align); }
HAK_NEW_EXPORT void _ZdaPvmSt11align_val_t(void* p, size_t size, size_t align) { hak_delete_sized(p, size, align); }
HAK_NEW_EXPORT void _ZdlPvSt11align_val_tRKSt9nothrow_t(void* p, size_t align, const void* tag) {
  (void)tag;
  hak_delete_sized(p, SIZE_MAX, align);
}
HAK_NEW_EXPORT void _ZdaPvSt11align_val_tRKSt9nothrow_t(void* p, size_t align, const void* tag) {
  (void)tag;
  hak_delete_sized(p, SIZE_MAX, align);
}

#endif
