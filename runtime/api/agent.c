// SPDX-License-Identifier: MIT
/*
 * The agent: one runtime thread for periodic work. It publishes the stats
 * region, lets the registry catch up with the heap, enforces the host-memory
 * limit (pager.c) and, when asked, makes chaos (chaos.c). Each round holds
 * the runtime like an API call does, so fork and hmm_fini never see it in
 * the middle of a migration.
 */
#include <errno.h>
#include <time.h>

#include "api.h"

#define PUBLISH_MS 100
#define PAGER_MS 5

static struct {
	pthread_t thread;
	bool running;
	bool stop;
	pthread_mutex_t lock;
	pthread_cond_t wake;
} ag = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
};

struct timer {
	uint64_t period_ns, next_ns;
};

static bool due(struct timer *t, uint64_t now)
{
	if (!t->period_ns || now < t->next_ns)
		return false;
	t->next_ns = now + t->period_ns;
	return true;
}

static uint64_t earliest(const struct timer *t, size_t n)
{
	uint64_t e = UINT64_MAX;

	for (size_t i = 0; i < n; i++)
		if (t[i].period_ns)
			e = MIN(e, t[i].next_ns);
	return e;
}

/*
 * A fault waits for room under the host limit. Signalled without ag.lock (the
 * fault thread takes no lock of ours): a wake that comes between the agent's
 * look at the pager and its wait is lost, and costs one PAGER_MS.
 */
static void wake(void)
{
	pthread_cond_signal(&ag.wake);
}

static void *agent_main(void *arg)
{
	struct timer t[3] = {
		{ PUBLISH_MS * 1000000ull, 0 },
		{ opt.host_limit ? PAGER_MS * 1000000ull : 0, 0 },
		{ opt.chaos_ms * 1000000ull, 0 },
	};
	(void)arg;
	pthread_mutex_lock(&ag.lock);
	while (!ag.stop) {
		uint64_t next = earliest(t, ARRAY_SIZE(t)), now = now_ns();
		bool urgent = pager_take_urgent();

		if (now < next && !urgent) {
			struct timespec ts = { (time_t)(next / 1000000000ull),
					       (long)(next % 1000000000ull) };

			pthread_cond_timedwait(&ag.wake, &ag.lock, &ts);
			continue;
		}
		pthread_mutex_unlock(&ag.lock);
		pager_agent_phase(AGENT_AT_GATE);
		if (rt_hold()) {
			pager_agent_phase(AGENT_ROUND);
			reg_lock();
			reg_catch_up();
			reg_unlock();
			if (due(&t[1], now) || urgent)
				pager_tick(urgent);
			if (due(&t[2], now))
				chaos_tick();
			if (due(&t[0], now))
				stats_publish();
			rt_leave();
		}
		pager_agent_phase(AGENT_IDLE);
		pthread_mutex_lock(&ag.lock);
	}
	pthread_mutex_unlock(&ag.lock);
	return NULL;
}

int agent_start(void)
{
	pthread_condattr_t ca;
	int err;

	if (ag.running)
		return 0;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&ag.wake, &ca);
	pthread_condattr_destroy(&ca);
	ag.stop = false;
	err = thread_spawn(&ag.thread, agent_main, NULL, true);
	if (!err) {
		ag.running = true;
		pager_set_wake(wake);
	}
	return err;
}

void agent_stop(void)
{
	if (!ag.running)
		return;
	pager_set_wake(NULL);
	pthread_mutex_lock(&ag.lock);
	ag.stop = true;
	pthread_cond_signal(&ag.wake);
	pthread_mutex_unlock(&ag.lock);
	pthread_join(ag.thread, NULL);
	ag.running = false;
}

void agent_fork_child(void)
{
	pthread_mutex_init(&ag.lock, NULL);
	ag.running = false;
	pager_fork_child();
}
