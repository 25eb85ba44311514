// SPDX-License-Identifier: MIT
/*
 * A device's DMA queue: a FIFO of jobs, each a batch of runs, executed in
 * order by the device's engine thread so that the submitter can collect the
 * next batch while this one is in flight; copies queued behind each other
 * go to the backend together (gathering, below). A run moves pages between host
 * addresses and device slots: with UFFDIO_MOVE when the device's memory is
 * movable anonymous memory (zero copy), otherwise through the backend's
 * dma op, and into host addresses always with UFFDIO_COPY (which installs the
 * page and wakes the threads waiting for it in one step).
 *
 * The engine thread holds no runtime lock while a job runs, but reg.lock
 * around each install into host memory (install, below). It may read host
 * pages that a migration owns; if one of them vanished (the application
 * discarded it), the fault thread serves it a zero page instead of parking it.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "state.h"

/* mmap_changing: an event is pending until the fault thread reads it. */
static long retry_eagain(long (*op)(uintptr_t, uintptr_t, size_t, uint64_t), uintptr_t dst,
			 uintptr_t src, size_t len, uint64_t mode)
{
	size_t done = 0;

	for (int tries = 0; done < len; tries++) {
		long n = op(dst + done, src + done, len - done, mode);

		if (n > 0) {
			done += (size_t)n;
			continue;
		}
		if (n != -EAGAIN || tries > 10000)
			return done ? (long)done : n;
		nanosleep(&(struct timespec){ .tv_nsec = 20000 }, NULL);
	}
	return (long)done;
}

/* reg.lock held: was the page emptied (madvise, munmap) while it was claimed? */
static bool discarded(uintptr_t addr)
{
	uint64_t *w = reg_word(addr, NULL);

	return w && (*w & PW_DISCARD);
}

/*
 * Pages going home race the program emptying them. The kernel empties a
 * range (madvise, munmap) once the fault thread has read its event, and a
 * page installed after that would keep the copy's data where the program
 * now reads zeros. The fault thread reads and applies events under
 * reg.lock (handler.c), so pages go in under it too, and one already marked
 * discarded stays out: it reads as zero, and its owner's commit releases
 * it. A page emptied after it went in is emptied by the kernel itself.
 * Returns the bytes from dst dealt with (installed, or left out as
 * discarded), or -errno if none were.
 */
static long install(uintptr_t dst, uintptr_t src, size_t len, uint64_t mode, bool move)
{
	size_t npages = len / PAGE_SIZE, done = 0;
	unsigned tries = 0;
	long err = 0;

	reg_lock();
	while (done < npages) {
		uintptr_t at = dst + done * PAGE_SIZE, from = src + done * PAGE_SIZE;
		size_t k = 0;
		long n;

		while (done + k < npages && !discarded(at + k * PAGE_SIZE))
			k++;
		if (!k) {
			done++;
			continue;
		}
		n = move ? uffd_move(at, from, k * PAGE_SIZE, mode)
			 : uffd_copy(at, (const void *)from, k * PAGE_SIZE, mode);
		if (n > 0) {
			done += (size_t)n / PAGE_SIZE;
			continue;
		}
		if (n != -EAGAIN || ++tries > 10000) {
			err = n;
			break;
		}
		/* An event is pending: the fault thread needs reg.lock to read it. */
		reg_unlock();
		nanosleep(&(struct timespec){ .tv_nsec = 20000 }, NULL);
		reg_lock();
	}
	reg_unlock();
	return done ? (long)(done * PAGE_SIZE) : err;
}

static long copy_home(uintptr_t dst, uintptr_t src, size_t len, uint64_t mode)
{
	return install(dst, src, len, mode, false);
}

static void finish_run(struct dma_run *run, long n)
{
	size_t pages = n > 0 ? (size_t)n / PAGE_SIZE : 0;

	run->d.done = (uint32_t)pages;
	run->d.status = pages == run->d.npages ? 0 : (n < 0 ? (int32_t)n : -EAGAIN);
}

static void run_move(struct dmaq *q, struct dma_job *job)
{
	struct hmm_device_core *c = q->core;
	bool in = job->op == DMA_MOVE_IN;

	for (unsigned i = 0; i < job->nruns; i++) {
		struct dma_run *run = &job->runs[i];
		uintptr_t slot = (uintptr_t)dev_slot_addr(c, run->d.slot);
		size_t len = (size_t)run->d.npages * PAGE_SIZE;
		long n;

		if (inject_fire(in ? INJ_DMA_TO_DEVICE : INJ_DMA_TO_HOST)) {
			finish_run(run, -EIO);
			continue;
		}
		/* Moving a page out of the CPU's way wakes nobody; moving it home may. */
		if (in)
			n = retry_eagain(uffd_move, slot, run->addr, len,
					 UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES | UFFDIO_MOVE_MODE_DONTWAKE);
		else
			n = install(run->addr, slot, len,
				    UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES |
					    (job->dontwake ? UFFDIO_MOVE_MODE_DONTWAKE : 0),
				    true);
		finish_run(run, n);
	}
}

static uint64_t copy_mode(const struct dma_job *job)
{
	return (job->dontwake ? UFFDIO_COPY_MODE_DONTWAKE : 0) | (job->wp ? UFFDIO_COPY_MODE_WP : 0);
}

static void run_copy_out(struct dmaq *q, struct dma_job *job)
{
	struct hmm_device_core *c = q->core;
	struct hmm_device *dev = c->dev;
	uint64_t mode = copy_mode(job);

	for (unsigned i = 0; i < job->nruns; i++) {
		struct dma_run *run = &job->runs[i];
		size_t done = 0;
		long n = 0;

		if (dev_host_mapped(c)) {
			if (inject_fire(INJ_DMA_TO_HOST))
				n = -EIO;
			else
				n = copy_home(run->addr, (uintptr_t)dev_slot_addr(c, run->d.slot),
					      (size_t)run->d.npages * PAGE_SIZE, mode);
			finish_run(run, n);
			continue;
		}
		/* Through the bounce buffer, a huge page's worth at a time. */
		while (done < run->d.npages) {
			struct hmm_dma_desc d = {
				.dir = HMM_DMA_TO_HOST,
				.npages = (uint32_t)MIN(run->d.npages - done, PMD_PAGES),
				.slot = run->d.slot + done,
				.host = q->bounce,
			};

			dev->ops->dma(dev, &d, 1);
			if (d.status || d.done != d.npages) {
				n = d.status ? d.status : -EIO;
				break;
			}
			n = copy_home(run->addr + done * PAGE_SIZE, (uintptr_t)q->bounce,
				      (size_t)d.npages * PAGE_SIZE, mode);
			if (n < (long)(d.npages * PAGE_SIZE)) {
				if (n > 0)
					done += (size_t)n / PAGE_SIZE;
				n = n < 0 ? n : -EIO;
				break;
			}
			done += d.npages;
			n = 0;
		}
		run->d.done = (uint32_t)done;
		run->d.status = done == run->d.npages ? 0 : (int32_t)(n ? n : -EIO);
	}
}

static void q_lock(struct dmaq *q)
{
	lock_acquired(LOCK_DMAQ);
	pthread_mutex_lock(&q->lock);
}

static void q_unlock(struct dmaq *q)
{
	pthread_mutex_unlock(&q->lock);
	lock_released(LOCK_DMAQ);
}

/*
 * Gathering: jobs queued behind each other go to the backend as one dma
 * call, so that a backend with a queue of its own (an io_uring, a NIC)
 * has them all in flight at once: the isolated faults of many threads,
 * each its own job, are served in parallel instead of one at a time, and
 * an eviction's batches overlap. Copies into the device gather freely;
 * copies home only those whose pages fit the bounce buffer together (the
 * small runs of faults), and only where the backend must be asked at all.
 */
#define GATHER_JOBS 64

static unsigned job_pages(const struct dma_job *job)
{
	unsigned n = 0;

	for (unsigned i = 0; i < job->nruns; i++)
		n += job->runs[i].d.npages;
	return n;
}

/* Could job join a group that starts with first and holds pages and runs already? */
static bool gathers(struct dmaq *q, const struct dma_job *first, const struct dma_job *job,
		    unsigned pages, unsigned runs)
{
	if (job->op != first->op || job->dontwake != first->dontwake || job->urgent != first->urgent ||
	    job->wp != first->wp ||
	    runs + job->nruns > GATHER_DESCS)
		return false;
	if (job->op == DMA_COPY_IN)
		return true;
	return job->op == DMA_COPY_OUT && !dev_host_mapped(q->core) &&
	       pages + job_pages(job) <= BOUNCE_PAGES;
}

/* q->lock held: the head job and those that gather with it, taken off the queue. */
static unsigned take_group(struct dmaq *q, struct dma_job **group)
{
	unsigned n = 0, pages = 0, runs = 0;

	do {
		struct dma_job *job = q->head;

		pages += job_pages(job);
		runs += job->nruns;
		group[n++] = job;
		q->head = job->next;
		if (q->urgent_tail == job)
			q->urgent_tail = NULL;
	} while (q->head && n < GATHER_JOBS && gathers(q, group[0], q->head, pages, runs));
	if (!q->head)
		q->tail = NULL;
	return n;
}

/* Back to their runs: the results of descs[0..k), the last k runs before (j, i). */
static void scatter_results(struct dmaq *q, struct dma_job **group, unsigned j, unsigned i,
			    unsigned k)
{
	while (k) {
		while (!i) /* a job may have no runs (its pages needed no copy) */
			i = group[--j]->nruns;
		group[j]->runs[--i].d = q->descs[--k];
	}
}

/* Copies into the device: the group's runs in one dma call (per GATHER_DESCS). */
static void group_copy_in(struct dmaq *q, struct dma_job **group, unsigned n)
{
	struct hmm_device *dev = q->core->dev;
	unsigned k = 0;

	for (unsigned j = 0; j < n; j++)
		for (unsigned i = 0; i < group[j]->nruns; i++) {
			/* d.host is the page itself, or NULL for one never populated (zeros) */
			q->descs[k] = group[j]->runs[i].d;
			q->descs[k].dir = HMM_DMA_TO_DEVICE;
			q->descs[k].status = 0;
			q->descs[k].done = 0;
			if (++k < GATHER_DESCS)
				continue;
			dev->ops->dma(dev, q->descs, k);
			scatter_results(q, group, j, i + 1, k);
			k = 0;
		}
	if (k) {
		dev->ops->dma(dev, q->descs, k);
		scatter_results(q, group, n, 0, k);
	}
}

/*
 * Copies home: every run read into its own part of the bounce buffer in
 * one dma call, then job by job installed (UFFDIO_COPY) as far as it was
 * read and completed, so that the first waiter runs while the rest are
 * still being installed.
 */
static void group_copy_out(struct dmaq *q, struct dma_job **group, unsigned n,
			   const bool *completes)
{
	struct hmm_device *dev = q->core->dev;
	uint64_t mode = copy_mode(group[0]);
	size_t off = 0;
	unsigned k = 0;

	for (unsigned j = 0; j < n; j++)
		for (unsigned i = 0; i < group[j]->nruns; i++) {
			struct dma_run *run = &group[j]->runs[i];

			q->descs[k++] = (struct hmm_dma_desc){
				.dir = HMM_DMA_TO_HOST,
				.npages = run->d.npages,
				.slot = run->d.slot,
				.host = (char *)q->bounce + off,
			};
			off += (size_t)run->d.npages * PAGE_SIZE;
		}
	dev->ops->dma(dev, q->descs, k);
	k = 0;
	for (unsigned j = 0; j < n; j++) {
		for (unsigned i = 0; i < group[j]->nruns; i++) {
			struct dma_run *run = &group[j]->runs[i];
			struct hmm_dma_desc *d = &q->descs[k++];
			long copied = 0;

			if (d->done)
				copied = copy_home(run->addr, (uintptr_t)d->host,
						   (size_t)d->done * PAGE_SIZE, mode);
			run->d.done = copied > 0 ? (uint32_t)((size_t)copied / PAGE_SIZE) : 0;
			run->d.status = run->d.done == run->d.npages ? 0
					: d->status		   ? d->status
					: copied < 0		   ? (int32_t)copied
								   : -EIO;
		}
		if (completes[j])
			group[j]->complete(group[j]);
	}
}

/*
 * A group of one job unless copies gather (take_group); each job's
 * completion, if it has one, runs once its copies are done.
 */
static void execute_group(struct dmaq *q, struct dma_job **group, unsigned n,
			  const bool *completes)
{
	switch (group[0]->op) {
	case DMA_MOVE_IN:
	case DMA_MOVE_OUT:
		run_move(q, group[0]);
		break;
	case DMA_COPY_IN:
		group_copy_in(q, group, n);
		break;
	case DMA_COPY_OUT:
		if (gathers(q, group[0], group[0], 0, 0)) {
			group_copy_out(q, group, n, completes);
			return;
		}
		run_copy_out(q, group[0]); /* a long run: a huge page at a time */
		break;
	}
	for (unsigned i = 0; i < n; i++)
		if (completes[i])
			group[i]->complete(group[i]);
}

static void *engine(void *arg)
{
	struct dmaq *q = arg;

	q_lock(q);
	for (;;) {
		struct dma_job *group[GATHER_JOBS];
		bool completes[GATHER_JOBS], urgent[GATHER_JOBS];
		unsigned n;

		while (!q->head && !q->stop)
			pthread_cond_wait(&q->work, &q->lock);
		if (!q->head)
			break;
		n = take_group(q, group);
		q_unlock(q);

		/* A completion owns its job from here: it may free or resubmit it. */
		for (unsigned i = 0; i < n; i++) {
			completes[i] = group[i]->complete != NULL;
			urgent[i] = group[i]->urgent;
		}
		execute_group(q, group, n, completes);

		q_lock(q);
		for (unsigned i = 0; i < n; i++) {
			if (urgent[i])
				atomic_fetch_sub(&q->urgent, 1);
			if (!completes[i])
				group[i]->done = true;
		}
		q->queued -= n;
		pthread_cond_broadcast(&q->done);
	}
	q_unlock(q);
	return NULL;
}

int dmaq_start(struct dmaq *q, struct hmm_device_core *core)
{
	int err;

	memset(q, 0, sizeof(*q));
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->work, NULL);
	pthread_cond_init(&q->done, NULL);
	q->core = core;
	q->bounce = sys_mmap(NULL, BOUNCE_PAGES * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			     -1, 0);
	if (q->bounce == MAP_FAILED)
		return -ENOMEM;
	q->descs = meta_alloc(GATHER_DESCS * sizeof(*q->descs));
	if (!q->descs) {
		sys_munmap(q->bounce, BOUNCE_PAGES * PAGE_SIZE);
		return -ENOMEM;
	}
	sys_madvise(q->bounce, BOUNCE_PAGES * PAGE_SIZE, MADV_DONTFORK);
	err = thread_spawn(&q->thread, engine, q, true);
	if (err) {
		sys_munmap(q->bounce, BOUNCE_PAGES * PAGE_SIZE);
		meta_free(q->descs, GATHER_DESCS * sizeof(*q->descs));
		return err;
	}
	q->started = true;
	return 0;
}

void dmaq_stop(struct dmaq *q)
{
	if (!q->started)
		return;
	q_lock(q);
	q->stop = true;
	pthread_cond_broadcast(&q->work);
	q_unlock(q);
	pthread_join(q->thread, NULL);
	sys_munmap(q->bounce, BOUNCE_PAGES * PAGE_SIZE);
	meta_free(q->descs, GATHER_DESCS * sizeof(*q->descs));
	q->started = false;
}

/*
 * Jobs run in the order they were queued, but for urgent ones (a CPU
 * fault waits): those go ahead of the bulk jobs queued (an eviction's,
 * a migration's), behind the urgent ones already there, as the block
 * layer lets synchronous reads pass queued writeback. No job depends on
 * one queued before it: each owns its pages and slots.
 */
void dmaq_submit(struct dmaq *q, struct dma_job *job)
{
	struct dma_job **link;

	job->done = false;
	q_lock(q);
	link = !job->urgent ? (q->tail ? &q->tail->next : &q->head)
			    : (q->urgent_tail ? &q->urgent_tail->next : &q->head);
	job->next = *link;
	*link = job;
	if (!job->next)
		q->tail = job;
	if (job->urgent) {
		q->urgent_tail = job;
		atomic_fetch_add(&q->urgent, 1);
	}
	q->queued++;
	pthread_cond_signal(&q->work);
	q_unlock(q);
}

void dmaq_wait(struct dmaq *q, struct dma_job *job)
{
	q_lock(q);
	while (!job->done)
		pthread_cond_wait(&q->done, &q->lock);
	q_unlock(q);
}

bool dmaq_urgent_idle(struct dmaq *q)
{
	return !atomic_load_explicit(&q->urgent, memory_order_relaxed);
}

void dmaq_drain(struct dmaq *q)
{
	if (!q->started)
		return;
	q_lock(q);
	while (q->queued)
		pthread_cond_wait(&q->done, &q->lock);
	q_unlock(q);
}
