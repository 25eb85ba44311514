// SPDX-License-Identifier: MIT
/*
 * fork: before the child exists, every device-resident page comes home, so
 * the child (which inherits no userfaultfd registration and none of our
 * threads) sees all its data. The fork() wrapper (intercept.c) does the bulk
 * of that while other threads still run; the prepare handler here finishes
 * it with the runtime quiesced.
 *
 * The prepare handler runs before jemalloc's, which takes every arena lock.
 * A thread that holds one of those may be inside madvise on managed memory,
 * blocked in the kernel until the fault thread reads the REMOVE event; so the
 * fault thread is paused (it keeps reading, processes nothing) rather than
 * stopped, and reg.lock is held across the fork so that the child's registry
 * is whole. The child starts with no devices; its runtime starts afresh.
 */
#include "api.h"

static bool held;

static void prepare(void)
{
	int err;

	held = rt_quiesce() == 0;
	if (!held)
		return;
	rt_self.meta_only++;
	err = mig_home_everything(NULL);
	if (err)
		log_err("fork: device pages could not all come home (error %d); the child will "
			"see zeros there", err);
	handler_pause();
	for (int i = 0; i < MAX_DEVICES; i++)
		if (dev_table[i])
			dmaq_drain(&dev_table[i]->q);
	reg_lock();
}

static void parent(void)
{
	if (!held)
		return;
	handler_resume();
	reg_unlock();
	rt_self.meta_only--;
	rt_unquiesce();
}

static void child(void)
{
	if (!held)
		return;
	rt_self.meta_only--;
	rt_reset_after_fork();
}

int fork_hooks_install(void)
{
	return -pthread_atfork(prepare, parent, child);
}
