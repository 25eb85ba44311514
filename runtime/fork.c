// SPDX-License-Identifier: MIT
/*
 * fork: before the child exists, every device-resident page comes home, so
 * the child (which inherits no userfaultfd registration and none of our
 * threads) sees all its data. The child starts with no devices; its runtime
 * starts afresh on its first call.
 */
#include "internal.h"

static bool held;

static void prepare(void)
{
	int err;

	held = rt_quiesce() == 0;
	if (!held)
		return;
	err = mig_home_everything(NULL);
	if (err)
		log_err("fork: device pages could not all come home (error %d); the child will "
			"see zeros there", err);
	reg_lock();
}

static void parent(void)
{
	if (!held)
		return;
	reg_unlock();
	rt_unquiesce();
}

static void child(void)
{
	if (!held)
		return;
	rt_reset_after_fork();
}

int fork_hooks_install(void)
{
	return -pthread_atfork(prepare, parent, child);
}
