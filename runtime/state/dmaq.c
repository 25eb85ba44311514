// SPDX-License-Identifier: MIT
/*
 * A device's DMA queue: a FIFO of jobs, each a batch of runs, executed in
 * order by the device's engine thread so that the submitter can collect the
 * next batch while this one is in flight. A run moves pages between host
 * addresses and device slots: with UFFDIO_MOVE when the device's memory is
 * movable anonymous memory (zero copy), otherwise through the backend's
 * dma op, and into host addresses always with UFFDIO_COPY (which installs the
 * page and wakes the threads waiting for it in one step).
 *
 * The engine thread holds no runtime lock while a job runs. It may read host
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

static long copy_op(uintptr_t dst, uintptr_t src, size_t len, uint64_t mode)
{
	return uffd_copy(dst, (const void *)src, len, mode);
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
			n = retry_eagain(uffd_move, run->addr, slot, len,
					 UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES |
					 (job->dontwake ? UFFDIO_MOVE_MODE_DONTWAKE : 0));
		finish_run(run, n);
	}
}

static void run_copy_in(struct dmaq *q, struct dma_job *job)
{
	struct hmm_device *dev = q->core->dev;
	bool nospace = false;

	for (unsigned i = 0; i < job->nruns; i++) {
		struct dma_run *run = &job->runs[i];

		/* d.host is the page itself, or NULL for one never populated (zeros) */
		run->d.dir = HMM_DMA_TO_DEVICE;
		run->d.status = 0;
		run->d.done = 0;
		/* A full store would only fail every run after the first again. */
		if (nospace) {
			run->d.status = -ENOSPC;
			continue;
		}
		dev->ops->dma(dev, &run->d, 1);
		nospace = run->d.status == -ENOSPC;
	}
}

static void run_copy_out(struct dmaq *q, struct dma_job *job)
{
	struct hmm_device_core *c = q->core;
	struct hmm_device *dev = c->dev;
	uint64_t mode = job->dontwake ? UFFDIO_COPY_MODE_DONTWAKE : 0;

	for (unsigned i = 0; i < job->nruns; i++) {
		struct dma_run *run = &job->runs[i];
		size_t done = 0;
		long n = 0;

		if (dev_host_mapped(c)) {
			if (inject_fire(INJ_DMA_TO_HOST))
				n = -EIO;
			else
				n = retry_eagain(copy_op, run->addr,
						 (uintptr_t)dev_slot_addr(c, run->d.slot),
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
			n = retry_eagain(copy_op, run->addr + done * PAGE_SIZE, (uintptr_t)q->bounce,
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

static void execute(struct dmaq *q, struct dma_job *job)
{
	switch (job->op) {
	case DMA_MOVE_IN:
	case DMA_MOVE_OUT:
		run_move(q, job);
		break;
	case DMA_COPY_IN:
		run_copy_in(q, job);
		break;
	case DMA_COPY_OUT:
		run_copy_out(q, job);
		break;
	}
}

static void *engine(void *arg)
{
	struct dmaq *q = arg;

	q_lock(q);
	for (;;) {
		struct dma_job *job;
		bool completes;

		while (!q->head && !q->stop)
			pthread_cond_wait(&q->work, &q->lock);
		if (!q->head)
			break;
		job = q->head;
		q->head = job->next;
		if (!q->head)
			q->tail = NULL;
		q_unlock(q);

		/* A completion owns its job from here: it may free or resubmit it. */
		completes = job->complete != NULL;
		execute(q, job);
		if (completes)
			job->complete(job);

		q_lock(q);
		if (!completes)
			job->done = true;
		q->queued--;
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
	q->bounce = sys_mmap(NULL, PMD_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			     -1, 0);
	if (q->bounce == MAP_FAILED)
		return -ENOMEM;
	sys_madvise(q->bounce, PMD_SIZE, MADV_DONTFORK);
	err = thread_spawn(&q->thread, engine, q, true);
	if (err) {
		sys_munmap(q->bounce, PMD_SIZE);
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
	sys_munmap(q->bounce, PMD_SIZE);
	q->started = false;
}

void dmaq_submit(struct dmaq *q, struct dma_job *job)
{
	job->next = NULL;
	job->done = false;
	q_lock(q);
	if (q->tail)
		q->tail->next = job;
	else
		q->head = job;
	q->tail = job;
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

void dmaq_drain(struct dmaq *q)
{
	if (!q->started)
		return;
	q_lock(q);
	while (q->queued)
		pthread_cond_wait(&q->done, &q->lock);
	q_unlock(q);
}
