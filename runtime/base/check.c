// SPDX-License-Identifier: MIT
/*
 * Debug checks (meson -Ddebug_checks=true; on in CI's ASan+UBSan build), in
 * the manner of mimalloc's mi_assert and the kernel's lockdep: invariants
 * that the code relies on are checked where they are relied on, and a
 * broken one stops the process at once, with where and what, rather than
 * corrupting a page quietly. Release builds compile the checks away.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "base.h"

#if UHMM_DEBUG_CHECKS

static const char *const lock_names[LOCK_NR] = {
	[LOCK_GATE] = "the gate",
	[LOCK_REG] = "reg.lock",
	[LOCK_MIRROR] = "a mirror lock",
	[LOCK_CPU_CHANGE] = "the mapping-change list lock",
	[LOCK_DMAQ] = "a DMA queue lock",
	[LOCK_DEVMEM] = "a device memory lock",
};

/* Straight to stderr: the process is in an unknown state. */
void rt_assert_fail(const char *what, const char *file, int line, const char *func)
{
	char buf[512];
	int n = snprintf(buf, sizeof(buf), "uhmm[%d]: debug check failed: %s (%s:%d, %s)\n",
			 (int)getpid(), what, file, line, func);

	if (n > 0 && write(STDERR_FILENO, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf)) < 0)
		n = 0;
	abort();
}

void lock_acquired(enum lock_class c)
{
	for (int k = c; k < LOCK_NR; k++) {
		if (!rt_self.locks[k])
			continue;
		char what[160];

		snprintf(what, sizeof(what), "lock order: taking %s while holding %s", lock_names[c],
			 lock_names[k]);
		rt_assert_fail(what, __FILE__, __LINE__, __func__);
	}
	rt_self.locks[c]++;
}

void lock_released(enum lock_class c)
{
	rt_assert(rt_self.locks[c] > 0);
	rt_self.locks[c]--;
}

bool lock_held(enum lock_class c)
{
	return rt_self.locks[c] > 0;
}

/* The child of fork: the locks the forking thread held are new locks now. */
void lock_fork_child(void)
{
	for (int k = 0; k < LOCK_NR; k++)
		rt_self.locks[k] = 0;
}

#endif /* UHMM_DEBUG_CHECKS */
