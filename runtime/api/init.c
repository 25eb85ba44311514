// SPDX-License-Identifier: MIT
/*
 * Lifetime. The runtime starts on the first call that needs it (or from
 * hmm_init): userfaultfd, the fault thread, the registry's registrations,
 * the devices of UHMM_DEVICES, the live stats region, the agent. Every API
 * call holds it open through the gate (base/gate.c), so fork and hmm_fini
 * see no call in flight.
 */
#include <errno.h>
#include <unistd.h>

#include "api.h"

static struct {
	pthread_mutex_t lock;       /* serializes start and stop */
	bool options_loaded;
	bool hooks;
} rt = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
};

/* rt.lock held. */
static int start(void)
{
	int err;

	if (!rt.options_loaded) {
		opt_load();
		if (inject_configure(opt.fault))
			log_warn("UHMM_FAULT=%s: unknown injection point", opt.fault);
		rt.options_loaded = true;
		stats_keep_stderr();
	}
	if (sysconf(_SC_PAGESIZE) != (long)PAGE_SIZE)
		return -EOPNOTSUPP;
	err = uffd_open();
	if (err)
		return err;
	err = handler_start();
	if (err) {
		uffd_close();
		return err;
	}
	reg_lock();
	reg_catch_up();
	reg_register_all();
	reg_unlock();
	if (!rt.hooks) {
		err = fork_hooks_install();
		if (err) {
			handler_stop();
			uffd_close();
			return err;
		}
		rt.hooks = true;
	}
	rt_set_active(true);
	devices_open_env();
	err = stats_region_open();
	if (err)
		log_warn("no stats region for uhmm-stat: %d", err);
	err = agent_start();
	if (err)
		log_warn("cannot start the agent thread (%d): no host limit, chaos or live stats", err);
	return 0;
}

int rt_enter(void)
{
	for (;;) {
		int err = 0;

		if (rt_hold())
			return 0;
		pthread_mutex_lock(&rt.lock);
		/* What starting allocates (a backend's device struct...) is the runtime's own. */
		rt_self.meta_only++;
		if (!rt_active())
			err = start();
		rt_self.meta_only--;
		pthread_mutex_unlock(&rt.lock);
		if (err)
			return err;
		/* Started (by us or another thread): hold it, unless hmm_fini got there first. */
	}
}

/* The child of fork: every layer forgets the parent's threads, devices and registrations. */
void rt_reset_after_fork(void)
{
	lock_fork_child();
	reg_fork_child();
	heap_fork_child();
	agent_fork_child();
	stats_fork_child();
	preload_fork_child();
	dev_fork_child();
	handler_fork_child();
	holding_fork_child();
	policy_fork_child();
	thread_fork_child();
	uffd_forget();
	vma_reset();
	pagemap_reset();
	wtrack_reset_after_fork();
	pthread_mutex_init(&rt.lock, NULL);
	rt_gate_fork_child();
}

int hmm_init(void)
{
	int err = rt_enter();

	if (!err)
		rt_leave();
	return err;
}

void hmm_fini(void)
{
	/* The agent holds the runtime each round: it leaves before quiescing. */
	if (!rt_active() || rt_self.depth)
		return;
	agent_stop();
	if (rt_quiesce())
		return;
	devices_close_all();
	policy_stop();
	holding_release();
	handler_stop();
	reg_lock();
	reg_forget_registration();
	reg_unlock();
	/* Closing the descriptor unregisters every range. */
	uffd_close();
	pthread_mutex_lock(&rt.lock);
	rt_set_active(false);
	pthread_mutex_unlock(&rt.lock);
	rt_unquiesce();
}
