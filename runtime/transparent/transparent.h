/* SPDX-License-Identifier: MIT */
/*
 * Layer 5, transparent mode: what makes an unmodified program's memory
 * managed under LD_PRELOAD. The malloc family served from jemalloc arenas
 * over memory we reserve (heap.c, malloc.c), and the libc calls that change
 * the CPU's mappings, seen before the kernel sees them (intercept.c). The
 * runtime's lifetime in such a process (start, restart in a child of fork,
 * the summary at exit) is the API layer's (api/preload.c).
 */
#ifndef UHMM_TRANSPARENT_H
#define UHMM_TRANSPARENT_H

#include "engine.h"

/* ---- heap.c, malloc.c: the managed heap ------------------------------------ */

bool heap_managed(void);            /* malloc serves managed memory (decides once) */
int heap_init(void);
bool heap_app_owns_slow(const void *p);
extern uintptr_t heap_app_first_start, heap_app_first_len;
static inline bool heap_app_owns(const void *p)
{
	return (uintptr_t)p - heap_app_first_start < heap_app_first_len || heap_app_owns_slow(p);
}
/*
 * jemalloc's own malloc and free, for bound application threads: their fast
 * paths (thread cache, no flags to decode) cost half of mallocx/dallocx.
 * NULL until heap_init() found them.
 */
extern void *(*heap_je_malloc)(size_t size);
extern void (*heap_je_free)(void *p);
bool heap_meta_owns(const void *p);
int heap_meta_flags(void);          /* mallocx flags of the unmanaged pool */
/* A thread's first managed allocation: an arena of its own, and a restart if due. */
void heap_bind_thread(void);
extern _Atomic unsigned heap_generation;
static inline bool heap_thread_bound(void)
{
	return rt_self.bound == atomic_load_explicit(&heap_generation, memory_order_relaxed);
}
/*
 * From now on the program's allocations come from memory provide() gives
 * (a device's shared virtual memory), regions of at least reserve bytes,
 * not managed. Threads move to the new arenas at their next allocation;
 * what was allocated before stays where it is.
 */
int heap_serve_from(void *(*provide)(size_t len, void *arg), void *arg, size_t reserve);
/* The region of such memory holding p, or -ENOENT; all of them (up to max). */
int heap_shared_region(const void *p, uintptr_t *ret_start, size_t *ret_len);
unsigned heap_shared_regions(uintptr_t *starts, size_t *lens, unsigned max);
void heap_fork_child(void);
int heap_extent(const void *p, uintptr_t *ret_start, size_t *ret_len);
/* Program memory (align: a power of two), even when asked for from runtime context. */
void *heap_program_memalign(size_t align, size_t size);
/*
 * A child of fork starts without the runtime; it starts it again on its
 * first managed allocation or mapping. api/preload.c says how, and when.
 */
void heap_set_restart(void (*start)(void));
void heap_request_restart(void);
void heap_restart_if_requested(void);

/* ---- cl_layer.c: ordinary pointers in OpenCL kernels ----------------------- */

#if UHMM_HAVE_OPENCL_LAYER
/* Under uhmm: become an ocl-icd layer before the program's first OpenCL call. */
void cl_layer_register(void);
#else
static inline void cl_layer_register(void)
{
}
#endif

/* ---- intercept.c: CPU-side mapping changes we must see first -------------- */

int icpt_munmap(void *addr, size_t len);   /* munmap, whichever munmap others see */

#endif /* UHMM_TRANSPARENT_H */
