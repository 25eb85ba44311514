// SPDX-License-Identifier: MIT
/*
 * Advice (cudaMemAdvise and AMD's SVM attributes are the models) and the
 * prefetch queue. Preferred location and accessed-by apply to intervals of
 * a range (attr.c), so they hold for pages that come into being later;
 * pin-to-host and read-mostly are bits of each page's word. What each one
 * makes happen, and where:
 *   PREFERRED_LOCATION  a device fault round migrates the pages to the
 *                       device before mapping them (access.c); NULL: host.
 *   ACCESSED_BY         the device keeps a mapping wherever the pages move
 *                       (pages_map_accessed_by); what is resident is mapped
 *                       now, without faulting anything in.
 *   READ_MOSTLY         a device read fault duplicates the page (dup.c); a
 *                       CPU write collapses the copies; unsetting collapses
 *                       them now.
 *   PIN_HOST            migrations skip the pages; those already out come
 *                       home now.
 *   PREFETCH            queued: one worker thread runs prefetches in order;
 *                       hmm_sync waits for them.
 * Advice is about placement only: it never changes what a page contains.
 */
#include <errno.h>

#include "engine.h"

struct prefetch {
	struct prefetch *next;
	uintptr_t start, end;
	struct hmm_device_core *dst;   /* NULL: host */
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t work, idle;
	struct prefetch *head, *tail;
	struct prefetch *running;
	pthread_t thread;
	bool started, stop;
} pf = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.work = PTHREAD_COND_INITIALIZER,
	.idle = PTHREAD_COND_INITIALIZER,
};

/* pf.lock held: forget the queue (stop, fork child); waiters wake. */
static void drop_queue(void)
{
	while (pf.head) {
		struct prefetch *j = pf.head;

		pf.head = j->next;
		meta_free(j, sizeof(*j));
	}
	pf.tail = NULL;
	pthread_cond_broadcast(&pf.idle);
}

/*
 * The worker holds the gate while a job runs, like an API call, so fork,
 * hmm_fini and device close never see a prefetch in flight. It takes the
 * gate before it takes a job, and only when no quiesce is waiting: a job
 * is never held by a worker that waits for the gate (a device close would
 * wait for that job), and a quiesce never waits behind new prefetches.
 */
static void *worker(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&pf.lock);
	for (;;) {
		struct prefetch *job;
		struct mig_result res;

		while (!pf.head && !pf.stop)
			pthread_cond_wait(&pf.work, &pf.lock);
		if (pf.stop)
			break;
		pthread_mutex_unlock(&pf.lock);
		if (!rt_try_hold()) {
			nap(); /* a quiesce in progress, or a stopped runtime */
			pthread_mutex_lock(&pf.lock);
			continue;
		}
		pthread_mutex_lock(&pf.lock);
		job = pf.head;
		if (job) {
			pf.head = job->next;
			if (!pf.head)
				pf.tail = NULL;
		}
		pf.running = job;
		pthread_mutex_unlock(&pf.lock);

		/* Advice: a page that cannot move stays where it was (and is counted). */
		if (job)
			mig_range(job->start, job->end, job->dst, &res);
		rt_leave();

		pthread_mutex_lock(&pf.lock);
		pf.running = NULL;
		meta_free(job, sizeof(*job));
		pthread_cond_broadcast(&pf.idle);
	}
	drop_queue();
	pthread_mutex_unlock(&pf.lock);
	return NULL;
}

static int queue_prefetch(uintptr_t start, uintptr_t end, struct hmm_device_core *dst)
{
	struct prefetch *job = meta_alloc(sizeof(*job));
	int err = 0;

	if (!job)
		return -ENOMEM;
	job->start = start;
	job->end = end;
	job->dst = dst;
	pthread_mutex_lock(&pf.lock);
	if (!pf.started) {
		pf.stop = false;
		/* Not internal: its faults are served like an application thread's. */
		err = thread_spawn(&pf.thread, worker, NULL, false);
		pf.started = !err;
	}
	if (!err) {
		if (pf.tail)
			pf.tail->next = job;
		else
			pf.head = job;
		pf.tail = job;
		pthread_cond_signal(&pf.work);
	}
	pthread_mutex_unlock(&pf.lock);
	if (err)
		meta_free(job, sizeof(*job));
	return err;
}

static bool pending_for(const struct hmm_device_core *c)
{
	if (pf.running && (!c || pf.running->dst == c))
		return true;
	for (struct prefetch *j = pf.head; j; j = j->next)
		if (!c || j->dst == c)
			return true;
	return false;
}

/*
 * Without holding the gate: the worker needs it to finish what we wait for,
 * and a fork waiting for the gate would make the worker wait for the fork.
 * c is only compared, never followed: it may close meanwhile.
 */
void policy_wait(const struct hmm_device_core *c)
{
	pthread_mutex_lock(&pf.lock);
	while (pending_for(c))
		pthread_cond_wait(&pf.idle, &pf.lock);
	pthread_mutex_unlock(&pf.lock);
}

/* A device going away: its queued prefetches go too. */
void policy_forget_device(struct hmm_device_core *c)
{
	pthread_mutex_lock(&pf.lock);
	for (struct prefetch **p = &pf.head; *p;) {
		struct prefetch *j = *p;

		if (j->dst == c) {
			*p = j->next;
			meta_free(j, sizeof(*j));
			continue;
		}
		p = &j->next;
	}
	pf.tail = NULL;
	for (struct prefetch *j = pf.head; j; j = j->next)
		pf.tail = j;
	while (pf.running && pf.running->dst == c)
		pthread_cond_wait(&pf.idle, &pf.lock);
	pthread_mutex_unlock(&pf.lock);
}

void policy_stop(void)
{
	pthread_mutex_lock(&pf.lock);
	if (!pf.started) {
		pthread_mutex_unlock(&pf.lock);
		return;
	}
	pf.stop = true;
	pthread_cond_broadcast(&pf.work);
	pthread_mutex_unlock(&pf.lock);
	pthread_join(pf.thread, NULL);
	pf.started = false;
}

void policy_fork_child(void)
{
	pthread_mutex_init(&pf.lock, NULL);
	pthread_cond_init(&pf.work, NULL);
	pthread_cond_init(&pf.idle, NULL);
	pf.head = pf.tail = pf.running = NULL; /* the parent's queue stays the parent's */
	pf.started = false;
	pf.stop = false;
}

/* Per-page advice bits: set, then clear. */
struct advice_bits {
	uint64_t set, clear;
};

static int set_advice(struct range *r, uintptr_t s, uintptr_t e, void *arg)
{
	const struct advice_bits *bits = arg;

	for (uintptr_t a = s; a < e; a += PAGE_SIZE)
		page_set_advice(range_word(r, a), bits->set, bits->clear);
	return 0;
}

static int change_attrs(struct range *r, uintptr_t s, uintptr_t e, void *arg)
{
	return attr_apply(r, s, e, arg);
}

static int collapse_dups(uintptr_t start, uintptr_t end)
{
	for (int tries = 0;; tries++) {
		bool again = false;

		reg_lock();
		for (uintptr_t a = start; a < end; a += PAGE_SIZE) {
			uint64_t *w = reg_word(a, NULL);

			if (w && (*w & PW_DUP) && dup_collapse(a, w) == -EAGAIN)
				again = true;
		}
		reg_unlock();
		if (!again)
			return 0;
		if (tries > 10000)
			return -EBUSY;
	}
}

static int adopt(const struct vma *v, uintptr_t s, uintptr_t e, void *arg)
{
	int err = 0;

	(void)arg;
	if (!v)
		return -EINVAL;
	if (vma_private_anon(v) && !reg_foreign(s, e)) {
		reg_lock();
		err = reg_add(s, e, NULL);
		reg_unlock();
	}
	return err;
}

/* What each advice changes: interval attributes, or per-page bits. */
static bool advice_change(int advice, struct hmm_device_core *c, struct attr_change *ch,
			  struct advice_bits *bits)
{
	switch (advice) {
	case HMM_ADVISE_PREFERRED_LOCATION:
		ch->set_preferred = true;
		ch->preferred = c ? c->index : PREF_HOST;
		return true;
	case HMM_ADVISE_UNSET_PREFERRED_LOCATION:
		ch->set_preferred = true;
		ch->preferred = PREF_NONE;
		return true;
	case HMM_ADVISE_ACCESSED_BY:
		ch->accessed_by_set = 1u << c->index;
		return true;
	case HMM_ADVISE_UNSET_ACCESSED_BY:
		ch->accessed_by_clear = 1u << c->index;
		return true;
	case HMM_ADVISE_READ_MOSTLY:
		bits->set = PW_READ_MOSTLY;
		return true;
	case HMM_ADVISE_UNSET_READ_MOSTLY:
		bits->clear = PW_READ_MOSTLY;
		return true;
	case HMM_ADVISE_PIN_HOST:
		bits->set = PW_PIN_HOST;
		return true;
	case HMM_ADVISE_UNPIN_HOST:
		bits->clear = PW_PIN_HOST;
		return true;
	}
	return false;
}

int policy_advise(uintptr_t start, uintptr_t end, int advice, struct hmm_device_core *c)
{
	struct attr_change ch = { 0 };
	struct advice_bits bits = { 0 };
	struct mig_result res;
	int err;

	handler_barrier();
	err = vma_walk(start, end, adopt, NULL);
	if (err)
		return err;
	if (advice == HMM_ADVISE_PREFETCH)
		return queue_prefetch(start, end, c);
	if (!advice_change(advice, c, &ch, &bits))
		return -EINVAL;
	reg_lock();
	if (bits.set || bits.clear)
		err = reg_for_each(start, end, set_advice, &bits);
	else
		err = reg_for_each(start, end, change_attrs, &ch);
	reg_unlock();
	if (err)
		return err;
	switch (advice) {
	case HMM_ADVISE_ACCESSED_BY:
		/* Map what is already resident, without faulting anything in. */
		acc_fault_round(c, start, end, false, true);
		break;
	case HMM_ADVISE_UNSET_READ_MOSTLY:
		err = collapse_dups(start, end);
		break;
	case HMM_ADVISE_PIN_HOST:
		/* New migrations skip the pages now; those already out come home. */
		err = mig_home(start, end, NULL, &res);
		if (!err && res.eio)
			err = -EIO;
		break;
	}
	return err;
}
