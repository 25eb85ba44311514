// SPDX-License-Identifier: MIT
/*
 * Lifetime. The runtime starts on the first call that needs it (or from
 * hmm_init): userfaultfd, the fault thread, the registry's registrations,
 * the devices of UHMM_DEVICES. Every API call holds it in read mode, so
 * fork and hmm_fini (write mode) see no call in flight.
 */
#include <errno.h>
#include <unistd.h>

#include "internal.h"

enum { RT_OFF, RT_ON };

/* Nested calls (a call from inside a call) lock once: rt_self.depth counts them. */
static struct {
	pthread_mutex_t lock;
	_Atomic int state;
	pthread_rwlock_t quiesce;
	bool options_loaded;
	bool hooks;
} rt = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.quiesce = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP,
};

__thread struct rt_thread rt_self;

static int start(void)
{
	int err;

	if (!rt.options_loaded) {
		opt_load();
		if (fault_configure(opt.fault))
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
	heap_sync_registry();
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
	atomic_store(&rt.state, RT_ON);
	dev_open_env();
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
	if (rt_self.depth++)
		return 0;
	for (;;) {
		if (atomic_load(&rt.state) != RT_ON) {
			int err;

			pthread_mutex_lock(&rt.lock);
			err = atomic_load(&rt.state) == RT_ON ? 0 : start();
			pthread_mutex_unlock(&rt.lock);
			if (err) {
				rt_self.depth--;
				return err;
			}
		}
		pthread_rwlock_rdlock(&rt.quiesce);
		if (atomic_load(&rt.state) == RT_ON)
			return 0;
		pthread_rwlock_unlock(&rt.quiesce); /* hmm_fini got there first */
	}
}

void rt_leave(void)
{
	if (--rt_self.depth == 0)
		pthread_rwlock_unlock(&rt.quiesce);
}

bool rt_active(void)
{
	return atomic_load_explicit(&rt.state, memory_order_acquire) == RT_ON;
}

bool rt_hold(void)
{
	if (!rt_active())
		return false;
	if (rt_self.depth++)
		return true;
	pthread_rwlock_rdlock(&rt.quiesce);
	if (rt_active())
		return true;
	pthread_rwlock_unlock(&rt.quiesce);
	rt_self.depth--;
	return false;
}

int rt_quiesce(void)
{
	if (!rt_active() || rt_self.depth)
		return -EBUSY;
	pthread_rwlock_wrlock(&rt.quiesce);
	if (!rt_active()) {
		pthread_rwlock_unlock(&rt.quiesce);
		return -EBUSY;
	}
	return 0;
}

void rt_unquiesce(void)
{
	pthread_rwlock_unlock(&rt.quiesce);
}

void rt_reset_after_fork(void)
{
	pthread_rwlock_t fresh = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;

	reg_fork_child();
	heap_fork_child();
	agent_fork_child();
	stats_fork_child();
	preload_fork_child();
	dev_fork_child();
	handler_fork_child();
	holding_fork_child();
	policy_fork_child();
	uffd_forget();
	vma_reset();
	rt.quiesce = fresh;
	pthread_mutex_init(&rt.lock, NULL);
	atomic_store(&rt.state, RT_OFF);
	rt_self.depth = 0;
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
	dev_close_all();
	policy_stop();
	holding_release();
	handler_stop();
	reg_lock();
	reg_forget_registration();
	reg_unlock();
	/* Closing the descriptor unregisters every range. */
	uffd_close();
	pthread_mutex_lock(&rt.lock);
	atomic_store(&rt.state, RT_OFF);
	pthread_mutex_unlock(&rt.lock);
	rt_unquiesce();
}
