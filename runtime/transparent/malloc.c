// SPDX-License-Identifier: MIT
/*
 * The malloc family, exported so that LD_PRELOAD puts every heap pointer in
 * managed memory (heap.c). The choice is made once, at the first call:
 *   managed  UHMM_HEAP=1, or libuhmm is in LD_PRELOAD (and UHMM_HEAP is not 0)
 *   glibc    otherwise: a program linked with -luhmm keeps glibc's malloc,
 *            reached through its __libc_* entry points
 * Before the choice can be made (the environment is not set up yet) and
 * while jemalloc itself is starting (it may call back into malloc), requests
 * are served from a static bootstrap pool whose blocks are never reused.
 *
 * free() and realloc() accept any pointer the process may hold: ours (by
 * address), the bootstrap pool's, and glibc's (from before we took over).
 * The runtime's own allocations, and libc's on its behalf, go to the
 * unmanaged pool (rt_self_internal()).
 */
#include <dlfcn.h>
#include <errno.h>
#include <jemalloc/jemalloc.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "transparent.h"

#ifdef UHMM_SANITIZED
/* Under a sanitizer, the sanitizer owns malloc; the transparent heap is off. */
bool heap_managed(void)
{
	return false;
}
#else

/* glibc's allocator, for the glibc mode and for pointers it handed out. */
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void *__libc_memalign(size_t align, size_t size);
extern void __libc_free(void *p);

enum { MODE_UNDECIDED, MODE_GLIBC, MODE_MANAGED };

static _Atomic int mode;
static pthread_mutex_t decide_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- bootstrap pool ----------------------------------------------------- */

#define BOOT_POOL_SIZE (1u << 20)
#define BOOT_HDR 16

static _Alignas(4096) char boot_pool[BOOT_POOL_SIZE];
static _Atomic size_t boot_used;

static bool boot_owns(const void *p)
{
	return (uintptr_t)p - (uintptr_t)boot_pool < BOOT_POOL_SIZE;
}

static size_t boot_size(const void *p)
{
	return *(const size_t *)((const char *)p - BOOT_HDR);
}

/* Zeroed (never-used static memory), never freed. */
static void *boot_alloc(size_t size, size_t align)
{
	size_t old = atomic_load(&boot_used), at, end;

	align = MAX(align, (size_t)BOOT_HDR);
	do {
		at = ALIGN_UP(old + BOOT_HDR, align);
		end = at + size;
		if (size > BOOT_POOL_SIZE || end > BOOT_POOL_SIZE)
			return __libc_memalign(align, size ? size : 1);
	} while (!atomic_compare_exchange_weak(&boot_used, &old, end));
	*(size_t *)(boot_pool + at - BOOT_HDR) = size;
	return boot_pool + at;
}

/* ---- the choice --------------------------------------------------------- */

extern char **__environ;

static bool want_managed(void)
{
	const char *heap = getenv("UHMM_HEAP"), *preload = getenv("LD_PRELOAD");

	if (heap && *heap)
		return strcmp(heap, "0") != 0;
	return preload && strstr(preload, "libuhmm");
}

/* Returns the mode; MODE_UNDECIDED means "use the bootstrap pool now". */
static int decide(void)
{
	int m = atomic_load_explicit(&mode, memory_order_acquire);

	if (m != MODE_UNDECIDED || rt_self.in_boot || !__environ)
		return m;
	pthread_mutex_lock(&decide_lock);
	m = atomic_load(&mode);
	if (m == MODE_UNDECIDED) {
		m = MODE_GLIBC;
		if (want_managed()) {
			int err;

			rt_self.in_boot = true;
			err = heap_init();
			rt_self.in_boot = false;
			if (!err)
				m = MODE_MANAGED;
			else
				log_err("cannot set up the managed heap (error %d): malloc stays glibc's",
					err);
		}
		atomic_store_explicit(&mode, m, memory_order_release);
	}
	pthread_mutex_unlock(&decide_lock);
	return m;
}

bool heap_managed(void)
{
	return decide() == MODE_MANAGED;
}

/* ---- allocation --------------------------------------------------------- */

static void *glibc_alloc(size_t size, size_t align, bool zero)
{
	if (align <= 16)
		return zero ? __libc_calloc(1, size) : __libc_malloc(size);
	void *p = __libc_memalign(align, size);

	if (p && zero)
		memset(p, 0, size);
	return p;
}

static int align_flag(size_t align)
{
	return align > 8 ? MALLOCX_ALIGN(align) : 0;
}

static void *jemalloc_alloc(size_t size, int flags)
{
	void *p;

	rt_self.in_alloc++;
	p = mallocx(size ? size : 1, flags);
	rt_self.in_alloc--;
	if (unlikely(!p))
		errno = ENOMEM;
	return p;
}

static int thread_flags(void)
{
	if (rt_self_internal())
		return heap_meta_flags();
	if (unlikely(!heap_thread_bound()))
		heap_bind_thread();
	return 0;
}

static void *alloc_slow(size_t size, size_t align, bool zero)
{
	switch (decide()) {
	case MODE_UNDECIDED:
		return boot_alloc(size, align);
	case MODE_GLIBC:
		return glibc_alloc(size, align, zero);
	}
	return jemalloc_alloc(size, thread_flags() | align_flag(align) | (zero ? MALLOCX_ZERO : 0));
}

/* The common case: a bound application thread. */
static inline bool fast(void)
{
	return likely(heap_thread_bound()) && !rt_self_internal();
}

UHMM_INTERPOSE void *malloc(size_t size)
{
	if (fast()) {
		void *p;

		if (unlikely(!heap_je_malloc))
			return jemalloc_alloc(size, 0);
		rt_self.in_alloc++;
		p = heap_je_malloc(size);
		rt_self.in_alloc--;
		return p; /* jemalloc sets errno */
	}
	return alloc_slow(size, 0, false);
}

UHMM_INTERPOSE void *calloc(size_t n, size_t size)
{
	size_t total;

	if (__builtin_mul_overflow(n, size, &total)) {
		errno = ENOMEM;
		return NULL;
	}
	if (fast())
		return jemalloc_alloc(total, MALLOCX_ZERO);
	return alloc_slow(total, 0, true);
}

static void *aligned(size_t align, size_t size)
{
	if (fast())
		return jemalloc_alloc(size, align_flag(align));
	return alloc_slow(size, align, false);
}

/*
 * Memory for the program, asked for from runtime context (a call into the
 * OpenCL driver, cl_wrap.c): out of the program's arenas all the same. Not
 * through aligned_alloc(): the compiler takes the malloc family for
 * builtins that read no state of ours, and drops the flag's stores around
 * them.
 */
void *heap_program_memalign(size_t align, size_t size)
{
	unsigned runtime_context = rt_self.meta_only;
	void *p;

	rt_self.meta_only = 0;
	p = aligned(align, size);
	rt_self.meta_only = runtime_context;
	return p;
}

/* glibc's memalign rounds an alignment up to a power of two. */
UHMM_INTERPOSE void *memalign(size_t align, size_t size)
{
	if (align > SIZE_MAX / 2) {
		errno = EINVAL;
		return NULL;
	}
	if (align & (align - 1))
		align = (size_t)1 << (64 - __builtin_clzl(align));
	return aligned(align, size);
}

UHMM_INTERPOSE void *aligned_alloc(size_t align, size_t size)
{
	return memalign(align, size);
}

UHMM_INTERPOSE int posix_memalign(void **ret, size_t align, size_t size)
{
	void *p;
	int saved = errno;

	if (align < sizeof(void *) || (align & (align - 1)))
		return EINVAL;
	p = aligned(align, size);
	if (!p)
		return ENOMEM;
	errno = saved;
	*ret = p;
	return 0;
}

UHMM_INTERPOSE void *valloc(size_t size)
{
	return aligned(PAGE_SIZE, size);
}

UHMM_INTERPOSE void *pvalloc(size_t size)
{
	if (size > SIZE_MAX - PAGE_SIZE) {
		errno = ENOMEM;
		return NULL;
	}
	return aligned(PAGE_SIZE, size ? ALIGN_UP(size, PAGE_SIZE) : PAGE_SIZE);
}

/* ---- release and resize ------------------------------------------------- */

static bool ours(const void *p)
{
	return heap_app_owns(p) || heap_meta_owns(p);
}

/* Everything but a bound thread freeing program memory. */
static __attribute__((noinline)) void free_slow(void *p)
{
	int saved = errno;

	if (ours(p)) {
		/* Runtime threads keep no cache of the program's memory. */
		int flags = (rt_self_internal() || heap_meta_owns(p)) ? MALLOCX_TCACHE_NONE : 0;

		rt_self.in_alloc++;
		dallocx(p, flags);
		rt_self.in_alloc--;
	} else if (p && !boot_owns(p)) {
		__libc_free(p);
	}
	errno = saved;
}

/*
 * Kept small: the common case is one jemalloc call. jemalloc's free leaves
 * errno alone (its purges go through our hooks, which keep it).
 */
UHMM_INTERPOSE void free(void *p)
{
	if (likely(fast() && heap_je_free && heap_app_owns(p))) {
		rt_self.in_alloc++;
		heap_je_free(p);
		rt_self.in_alloc--;
		return;
	}
	free_slow(p);
}

static size_t (*glibc_usable_size)(void *);

static size_t foreign_size(void *p)
{
	if (!glibc_usable_size)
		glibc_usable_size = (size_t (*)(void *))dlsym(RTLD_NEXT, "malloc_usable_size");
	return glibc_usable_size ? glibc_usable_size(p) : 0;
}

UHMM_INTERPOSE size_t malloc_usable_size(void *p)
{
	size_t n;

	if (!p)
		return 0;
	if (ours(p)) {
		rt_self.in_alloc++;
		n = sallocx(p, 0);
		rt_self.in_alloc--;
		return n;
	}
	if (boot_owns(p))
		return boot_size(p);
	return foreign_size(p);
}

UHMM_INTERPOSE void *realloc(void *p, size_t size)
{
	void *q;
	size_t old;

	if (!p)
		return malloc(size);
	if (!size) {
		free(p); /* as glibc does */
		return NULL;
	}
	if (ours(p)) {
		int flags = thread_flags();

		rt_self.in_alloc++;
		q = rallocx(p, size, flags);
		rt_self.in_alloc--;
		if (!q)
			errno = ENOMEM;
		return q;
	}
	if (!boot_owns(p) && decide() != MODE_MANAGED)
		return __libc_realloc(p, size);
	/* A block from before the heap was ours moves into it. */
	old = boot_owns(p) ? boot_size(p) : foreign_size(p);
	q = malloc(size);
	if (!q)
		return NULL;
	memcpy(q, p, MIN(old, size));
	free(p);
	return q;
}

UHMM_INTERPOSE void *reallocarray(void *p, size_t n, size_t size)
{
	size_t total;

	if (__builtin_mul_overflow(n, size, &total)) {
		errno = ENOMEM;
		return NULL;
	}
	return realloc(p, total);
}

#endif /* UHMM_SANITIZED */
