// SPDX-License-Identifier: MIT
/*
 * Every call a program makes into the OpenCL driver runs as the runtime's
 * own work (rt_self.meta_only): what the driver allocates on the program's
 * thread (contexts, queues, commands, a program's build) comes from the
 * unmanaged pool, and threads it starts there stay on it. Driver memory
 * in the managed heap could be migrated into the very device whose queue
 * needs it to come back; in coarse mode it would sit in the device's SVM
 * memory, which changes hands at every launch.
 *
 * The loader calls the outermost layer's table, so each of its entries
 * becomes a wrapper: raise the flag, call the entry it replaced (ours or
 * the driver's), lower the flag. One wrapper serves any signature: every
 * OpenCL entry point takes and returns only integers and pointers, which
 * the x86-64 and AArch64 calling conventions pass the same way whatever
 * the prototype, so sixteen integer arguments (the longest entry takes
 * fourteen) forward any call, extra ones being ignored by the callee.
 */
#include <stdint.h>
#include <string.h>

#include "cl_layer.h"

#if !defined(UHMM_SANITIZED) && (defined(__x86_64__) || defined(__aarch64__))

#define SLOTS 160

_Static_assert(sizeof(struct _cl_icd_dispatch) <= SLOTS * sizeof(void *),
	       "more entries than wrappers");

typedef intptr_t (*any_entry)(intptr_t, intptr_t, intptr_t, intptr_t, intptr_t, intptr_t,
			      intptr_t, intptr_t, intptr_t, intptr_t, intptr_t, intptr_t,
			      intptr_t, intptr_t, intptr_t, intptr_t);

/* The entries the wrappers call: the table as it was before wrapping. */
static void *inner[SLOTS];

#define ARGS intptr_t a0, intptr_t a1, intptr_t a2, intptr_t a3, intptr_t a4, intptr_t a5, \
	intptr_t a6, intptr_t a7, intptr_t a8, intptr_t a9, intptr_t a10, intptr_t a11,     \
	intptr_t a12, intptr_t a13, intptr_t a14, intptr_t a15
#define PASS a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15

#define WRAPPER(i)                                                   \
	static intptr_t wrap##i(ARGS)                                \
	{                                                            \
		intptr_t r;                                          \
		rt_self.meta_only++;                                 \
		r = ((any_entry)inner[i])(PASS);                     \
		rt_self.meta_only--;                                 \
		return r;                                            \
	}
#define WRAP10(t) WRAPPER(t##0) WRAPPER(t##1) WRAPPER(t##2) WRAPPER(t##3) WRAPPER(t##4) \
	WRAPPER(t##5) WRAPPER(t##6) WRAPPER(t##7) WRAPPER(t##8) WRAPPER(t##9)
#define NAME10(t) wrap##t##0, wrap##t##1, wrap##t##2, wrap##t##3, wrap##t##4, wrap##t##5, \
	wrap##t##6, wrap##t##7, wrap##t##8, wrap##t##9,

WRAPPER(0) WRAPPER(1) WRAPPER(2) WRAPPER(3) WRAPPER(4)
WRAPPER(5) WRAPPER(6) WRAPPER(7) WRAPPER(8) WRAPPER(9)
WRAP10(1) WRAP10(2) WRAP10(3) WRAP10(4) WRAP10(5) WRAP10(6) WRAP10(7) WRAP10(8) WRAP10(9)
WRAP10(10) WRAP10(11) WRAP10(12) WRAP10(13) WRAP10(14) WRAP10(15)

static intptr_t (*const wrappers[SLOTS])(ARGS) = {
	wrap0, wrap1, wrap2, wrap3, wrap4, wrap5, wrap6, wrap7, wrap8, wrap9,
	NAME10(1) NAME10(2) NAME10(3) NAME10(4) NAME10(5) NAME10(6) NAME10(7) NAME10(8)
	NAME10(9) NAME10(10) NAME10(11) NAME10(12) NAME10(13) NAME10(14) NAME10(15)
};

static size_t table_entries = SLOTS;
static pthread_mutex_t extension_lock = PTHREAD_MUTEX_INITIALIZER;

void cl_wrap_table(struct _cl_icd_dispatch *table, size_t entries)
{
	void **slot = (void **)table;

	table_entries = MIN(entries, (size_t)SLOTS);
	memcpy(inner, table, table_entries * sizeof(void *));
	for (size_t i = 0; i < table_entries; i++)
		if (slot[i])
			slot[i] = (void *)wrappers[i];
}

/* The slots past the table's serve extension entries, first come first served. */
void *cl_wrap_extension(void *fn)
{
	void *ret = fn;

	pthread_mutex_lock(&extension_lock);
	for (size_t i = table_entries; i < SLOTS; i++) {
		if (!inner[i])
			inner[i] = fn;
		if (inner[i] == fn) {
			ret = (void *)wrappers[i];
			break;
		}
	}
	pthread_mutex_unlock(&extension_lock);
	if (ret == fn)
		log_debug("opencl: no wrapper left for an extension entry: the driver's allocations "
			  "in it may land in managed memory");
	return ret;
}

#else

void cl_wrap_table(struct _cl_icd_dispatch *table, size_t entries)
{
	(void)table, (void)entries; /* no wrappers: driver memory may be managed */
}

void *cl_wrap_extension(void *fn)
{
	return fn;
}

#endif
