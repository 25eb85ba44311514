// SPDX-License-Identifier: MIT
/*
 * C++'s allocation operators, defined here so that they land where malloc
 * does. jemalloc, which the heap links, exports its own operator new and
 * delete; a C++ library that comes into the process after it (PoCL's LLVM,
 * a Python extension) would otherwise bind to jemalloc's operator new and
 * hand the memory to our free, which does not know it (and crashes glibc
 * when the heap is glibc's). With these, every allocation of the process
 * goes through one malloc family, whichever mode it is in.
 *
 * The names are the Itanium C++ ABI's; align_val_t is a size_t. A throwing
 * operator new keeps C++'s contract: it calls the new handler until memory
 * comes or there is none, then throws std::bad_alloc (through libstdc++,
 * which every program that calls it has loaded).
 */
#include <dlfcn.h>
#include <stdlib.h>

#include "transparent.h"

/* Under a sanitizer, the sanitizer owns malloc and these operators too. */
#ifndef UHMM_SANITIZED

typedef void (*new_handler)(void);

/* No memory: run the program's new handler, or throw std::bad_alloc. */
static void out_of_memory(void)
{
	new_handler (*get_handler)(void) =
		(new_handler (*)(void))dlsym(RTLD_DEFAULT, "_ZSt15get_new_handlerv");
	void (*throw_bad_alloc)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "_ZSt17__throw_bad_allocv");
	new_handler handler = get_handler ? get_handler() : NULL;

	if (handler) {
		handler();
		return;
	}
	if (throw_bad_alloc)
		throw_bad_alloc(); /* does not return */
	abort();
}

static void *try_alloc(size_t size, size_t align)
{
	void *p = NULL;

	if (!align)
		return malloc(size ? size : 1);
	if (align < sizeof(void *))
		align = sizeof(void *);
	return posix_memalign(&p, align, size ? size : 1) ? NULL : p;
}

static void *alloc_or_throw(size_t size, size_t align)
{
	for (;;) {
		void *p = try_alloc(size, align);

		if (likely(p))
			return p;
		out_of_memory();
	}
}

UHMM_INTERPOSE void *_Znwm(size_t size)
{
	return alloc_or_throw(size, 0);
}

UHMM_INTERPOSE void *_Znam(size_t size)
{
	return alloc_or_throw(size, 0);
}

UHMM_INTERPOSE void *_ZnwmRKSt9nothrow_t(size_t size, const void *nothrow)
{
	(void)nothrow;
	return try_alloc(size, 0);
}

UHMM_INTERPOSE void *_ZnamRKSt9nothrow_t(size_t size, const void *nothrow)
{
	(void)nothrow;
	return try_alloc(size, 0);
}

UHMM_INTERPOSE void *_ZnwmSt11align_val_t(size_t size, size_t align)
{
	return alloc_or_throw(size, align);
}

UHMM_INTERPOSE void *_ZnamSt11align_val_t(size_t size, size_t align)
{
	return alloc_or_throw(size, align);
}

UHMM_INTERPOSE void *_ZnwmSt11align_val_tRKSt9nothrow_t(size_t size, size_t align,
							 const void *nothrow)
{
	(void)nothrow;
	return try_alloc(size, align);
}

UHMM_INTERPOSE void *_ZnamSt11align_val_tRKSt9nothrow_t(size_t size, size_t align,
							 const void *nothrow)
{
	(void)nothrow;
	return try_alloc(size, align);
}

/* Every delete is free: sizes and alignments are the allocator's to know. */
UHMM_INTERPOSE void _ZdlPv(void *p)
{
	free(p);
}

UHMM_INTERPOSE void _ZdaPv(void *p)
{
	free(p);
}

UHMM_INTERPOSE void _ZdlPvRKSt9nothrow_t(void *p, const void *nothrow)
{
	(void)nothrow;
	free(p);
}

UHMM_INTERPOSE void _ZdaPvRKSt9nothrow_t(void *p, const void *nothrow)
{
	(void)nothrow;
	free(p);
}

UHMM_INTERPOSE void _ZdlPvm(void *p, size_t size)
{
	(void)size;
	free(p);
}

UHMM_INTERPOSE void _ZdaPvm(void *p, size_t size)
{
	(void)size;
	free(p);
}

UHMM_INTERPOSE void _ZdlPvSt11align_val_t(void *p, size_t align)
{
	(void)align;
	free(p);
}

UHMM_INTERPOSE void _ZdaPvSt11align_val_t(void *p, size_t align)
{
	(void)align;
	free(p);
}

UHMM_INTERPOSE void _ZdlPvSt11align_val_tRKSt9nothrow_t(void *p, size_t align, const void *nothrow)
{
	(void)align, (void)nothrow;
	free(p);
}

UHMM_INTERPOSE void _ZdaPvSt11align_val_tRKSt9nothrow_t(void *p, size_t align, const void *nothrow)
{
	(void)align, (void)nothrow;
	free(p);
}

UHMM_INTERPOSE void _ZdlPvmSt11align_val_t(void *p, size_t size, size_t align)
{
	(void)size, (void)align;
	free(p);
}

UHMM_INTERPOSE void _ZdaPvmSt11align_val_t(void *p, size_t size, size_t align)
{
	(void)size, (void)align;
	free(p);
}

#endif /* UHMM_SANITIZED */
