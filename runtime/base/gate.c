// SPDX-License-Identifier: MIT
/*
 * The gate: every API call, interposed libc call and agent round holds the
 * runtime open (the read side of one lock); fork, hmm_fini and device close
 * take the write side, so they see no call in flight. Nested holds (a call
 * from inside a call) take the lock once: rt_self.depth counts them.
 * Starting the runtime is the API layer's business (api/init.c); the gate
 * only knows whether it is open.
 */
#include <errno.h>

#include "base.h"

static struct {
	_Atomic bool active;
	pthread_rwlock_t quiesce;
} gate = {
	/* Writers first: fork must not starve behind a stream of API calls. */
	.quiesce = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP,
};

bool rt_active(void)
{
	return atomic_load_explicit(&gate.active, memory_order_acquire);
}

bool rt_hold(void)
{
	if (rt_self.depth) {
		rt_self.depth++;
		return true;
	}
	if (!rt_active())
		return false;
	lock_acquired(LOCK_GATE);
	pthread_rwlock_rdlock(&gate.quiesce);
	if (rt_active()) {
		rt_self.depth = 1;
		return true;
	}
	pthread_rwlock_unlock(&gate.quiesce); /* hmm_fini got there first */
	lock_released(LOCK_GATE);
	return false;
}

/*
 * rt_hold for runtime threads that must not queue behind a quiesce: false
 * at once while one is waiting or in progress (or the runtime is stopped).
 */
bool rt_try_hold(void)
{
	if (rt_self.depth) {
		rt_self.depth++;
		return true;
	}
	if (!rt_active() || pthread_rwlock_tryrdlock(&gate.quiesce))
		return false;
	lock_acquired(LOCK_GATE);
	if (rt_active()) {
		rt_self.depth = 1;
		return true;
	}
	pthread_rwlock_unlock(&gate.quiesce);
	lock_released(LOCK_GATE);
	return false;
}

void rt_leave(void)
{
	rt_assert(rt_self.depth > 0);
	if (--rt_self.depth == 0) {
		pthread_rwlock_unlock(&gate.quiesce);
		lock_released(LOCK_GATE);
	}
}

int rt_quiesce(void)
{
	if (!rt_active() || rt_self.depth)
		return -EBUSY;
	lock_acquired(LOCK_GATE);
	pthread_rwlock_wrlock(&gate.quiesce);
	if (!rt_active()) {
		pthread_rwlock_unlock(&gate.quiesce);
		lock_released(LOCK_GATE);
		return -EBUSY;
	}
	return 0;
}

void rt_unquiesce(void)
{
	pthread_rwlock_unlock(&gate.quiesce);
	lock_released(LOCK_GATE);
}

void rt_set_active(bool on)
{
	atomic_store_explicit(&gate.active, on, memory_order_release);
}

/* The child of fork starts closed, with no hold in flight. */
void rt_gate_fork_child(void)
{
	pthread_rwlock_t fresh = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;

	gate.quiesce = fresh;
	atomic_store(&gate.active, false);
	rt_self.depth = 0;
}
