// SPDX-License-Identifier: MIT
/*
 * Advice (cudaMemAdvise and AMD's SVM attributes are the models) and the
 * prefetch queue. Preferred location and accessed-by apply to intervals of
 * a range; pin-to-host and read-mostly are bits of each page's word.
 * Prefetches run on one worker thread, in order; hmm_sync waits for them.
 */
#include <errno.h>
#include <signal.h>

#include "internal.h"

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

static void *worker(void *arg)
{
	sigset_t all;

	(void)arg;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	pthread_mutex_lock(&pf.lock);
	for (;;) {
		struct prefetch *job;
		struct mig_result res;

		while (!pf.head && !pf.stop)
			pthread_cond_wait(&pf.work, &pf.lock);
		if (!pf.head)
			break;
		job = pf.head;
		pf.head = job->next;
		if (!pf.head)
			pf.tail = NULL;
		pf.running = job;
		pthread_mutex_unlock(&pf.lock);

		/* Advice: a page that cannot move stays where it was (and is counted). */
		if (!rt_enter()) {
			mig_range(job->start, job->end, job->dst, &res);
			rt_leave();
		}

		pthread_mutex_lock(&pf.lock);
		pf.running = NULL;
		meta_free(job, sizeof(*job));
		pthread_cond_broadcast(&pf.idle);
	}
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
		err = -pthread_create(&pf.thread, NULL, worker, NULL);
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

static bool pending_for(struct hmm_device_core *c)
{
	if (pf.running && (!c || pf.running->dst == c))
		return true;
	for (struct prefetch *j = pf.head; j; j = j->next)
		if (!c || j->dst == c)
			return true;
	return false;
}

int policy_sync(struct hmm_device_core *c)
{
	pthread_mutex_lock(&pf.lock);
	while (pending_for(c))
		pthread_cond_wait(&pf.idle, &pf.lock);
	pthread_mutex_unlock(&pf.lock);
	for (int i = 0; i < MAX_DEVICES; i++)
		if (dev_table[i] && (!c || dev_table[i] == c))
			dmaq_drain(&dev_table[i]->q);
	return 0;
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

static int set_flags(struct range *r, uintptr_t s, uintptr_t e, void *arg)
{
	uint64_t *bits = arg;

	for (uintptr_t a = s; a < e; a += PAGE_SIZE) {
		uint64_t *w = &r->pages[range_index(r, a)];

		if (!(*w & PW_UNMAPPED))
			*w = (*w & ~bits[1]) | bits[0];
	}
	return 0;
}

struct attr_change {
	int set_preferred, preferred;
	uint32_t ab_set, ab_clear;
};

static int change_attrs(struct range *r, uintptr_t s, uintptr_t e, void *arg)
{
	struct attr_change *ch = arg;

	return attr_set(r, s, e, ch->set_preferred, ch->preferred, ch->ab_set, ch->ab_clear);
}

static int collapse_dups(uintptr_t start, uintptr_t end)
{
	for (int tries = 0;; tries++) {
		bool again = false;

		reg_lock();
		for (uintptr_t a = start; a < end; a += PAGE_SIZE) {
			uint64_t *w = reg_word(a, NULL);

			if (w && (*w & PW_DUP) && mig_collapse_dup(a, w) == -EAGAIN)
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
	if (vma_private_anon(v)) {
		reg_lock();
		err = reg_add(s, e, NULL);
		reg_unlock();
	}
	return err;
}

int policy_advise(uintptr_t start, uintptr_t end, int advice, struct hmm_device_core *c)
{
	struct attr_change ch = { 0 };
	uint64_t bits[2] = { 0, 0 };
	struct mig_result res;
	int err;

	handler_barrier();
	err = vma_walk(start, end, adopt, NULL);
	if (err)
		return err;
	switch (advice) {
	case HMM_ADVISE_PREFERRED_LOCATION:
		ch = (struct attr_change){ 1, c ? c->index : PREF_HOST, 0, 0 };
		break;
	case HMM_ADVISE_UNSET_PREFERRED_LOCATION:
		ch = (struct attr_change){ 1, PREF_NONE, 0, 0 };
		break;
	case HMM_ADVISE_ACCESSED_BY:
		ch.ab_set = 1u << c->index;
		break;
	case HMM_ADVISE_UNSET_ACCESSED_BY:
		ch.ab_clear = 1u << c->index;
		break;
	case HMM_ADVISE_READ_MOSTLY:
		bits[0] = PW_READ_MOSTLY;
		break;
	case HMM_ADVISE_UNSET_READ_MOSTLY:
		bits[1] = PW_READ_MOSTLY;
		break;
	case HMM_ADVISE_PIN_HOST:
		bits[0] = PW_PIN_HOST;
		break;
	case HMM_ADVISE_UNPIN_HOST:
		bits[1] = PW_PIN_HOST;
		break;
	case HMM_ADVISE_PREFETCH:
		return queue_prefetch(start, end, c);
	default:
		return -EINVAL;
	}
	reg_lock();
	if (bits[0] || bits[1])
		err = reg_for_each(start, end, set_flags, bits);
	else
		err = reg_for_each(start, end, change_attrs, &ch);
	reg_unlock();
	if (err)
		return err;
	switch (advice) {
	case HMM_ADVISE_ACCESSED_BY:
		acc_map_resident(c, start, end);
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
