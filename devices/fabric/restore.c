// SPDX-License-Identifier: MIT
/*
 * The restorer (fabric.h): after a node dies, or a write reached fewer
 * nodes than wanted, a background thread brings every page back to the
 * wanted number of copies on the live nodes. It reads a run of pages from a
 * good copy and writes it again to the stripe's replica set among the live
 * nodes, which then holds the copies. One stripe per turn of io_lock, so
 * the program's faults and evictions wait at most one stripe's transfers.
 * It also notices nodes whose control connection hung up while nothing was
 * being transferred, and tries dead nodes again every REJOIN_NS: a node
 * that answers (restarted, or back from a partition) lends us a new, empty
 * region, joins as it, and gets copies again. It never serves what its old
 * region held: every slot forgets it first.
 */
#include <errno.h>
#include <signal.h>
#include <time.h>

#include "fabric.h"

#define REJOIN_NS 2000000000ull

/* Pages from @slot (within one stripe) that need copies and share their current ones. */
static uint32_t needy_run(struct fabric_device *f, uint64_t slot, uint32_t max)
{
	uint16_t meta = f->slots[slot];
	uint8_t have = (uint8_t)(meta & f->alive);
	uint32_t n = 1;

	if ((meta & SLOT_ZERO) || !have ||
	    (unsigned)__builtin_popcount(have) >= fabric_wanted(f))
		return 0;
	while (n < max && f->slots[slot + n] == meta)
		n++;
	return n;
}

uint64_t fabric_degraded_pages(struct fabric_device *f)
{
	uint64_t n = 0;

	for (uint64_t s = 0; s < f->nslots; s++)
		n += needy_run(f, s, 1);
	return n;
}

static void restore_stripe(struct fabric_device *f, uint64_t first)
{
	uint64_t end = first + STRIPE_PAGES < f->nslots ? first + STRIPE_PAGES : f->nslots;

	fabric_apply_released(f);
	for (uint64_t slot = first; slot < end;) {
		uint32_t n = needy_run(f, slot, (uint32_t)(end - slot));
		struct hmm_dma_desc d = { .slot = slot, .host = f->restore_buf };

		if (!n) {
			slot++;
			continue;
		}
		d.npages = n;
		d.dir = HMM_DMA_TO_HOST;
		if (!fabric_run(f, &d, 1)) {
			d.dir = HMM_DMA_TO_DEVICE;
			if (!fabric_run(f, &d, 1))
				f->restored_pages += n;
		}
		slot += n;
	}
}

/* With io_lock held; dropped while connecting. */
static void try_rejoin(struct fabric_device *f, uint64_t *last_ns)
{
	uint64_t now = node_now_ns();

	if (f->alive == (uint8_t)((1u << f->nnodes) - 1) || now - *last_ns < REJOIN_NS)
		return;
	*last_ns = now;
	for (unsigned i = 0; i < f->nnodes && !f->stopping; i++) {
		struct fabric_node *n;
		uint16_t bit = (uint16_t)(1u << i);
		int err;

		if (f->alive & bit)
			continue;
		pthread_mutex_unlock(&f->io_lock);
		err = fabric_connect_node(f, i, true, &n);
		pthread_mutex_lock(&f->io_lock);
		if (err)
			continue;
		for (uint64_t s = 0; s < f->nslots; s++)
			f->slots[s] &= (uint16_t)~bit;
		/* The dead one stays allocated: its provider may still hold its ops. */
		f->nodes[i] = n;
		f->alive |= (uint8_t)bit;
		f->degraded = true;
		hmm_device_log(&f->dev, "memory node %s is back, empty: copies are restored onto it",
			       n->addr);
	}
}

static void *restorer_main(void *arg)
{
	struct fabric_device *f = arg;
	uint64_t last_rejoin = node_now_ns();
	sigset_t all;

	/* Signals are the program's. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, NULL);
	pthread_mutex_lock(&f->io_lock);
	while (!f->stopping) {
		struct timespec until;

		if (!f->degraded) {
			clock_gettime(CLOCK_REALTIME, &until);
			until.tv_sec += 1;
			pthread_cond_timedwait(&f->restore_wake, &f->io_lock, &until);
			if (!f->stopping)
				fabric_check_hangups(f);
			if (!f->stopping)
				try_rejoin(f, &last_rejoin);
			continue;
		}
		f->degraded = false;
		for (uint64_t s = 0; s < f->nslots && !f->stopping; s += STRIPE_PAGES) {
			restore_stripe(f, s);
			/* Let the program's transfers in between stripes. */
			pthread_mutex_unlock(&f->io_lock);
			pthread_mutex_lock(&f->io_lock);
		}
	}
	pthread_mutex_unlock(&f->io_lock);
	return NULL;
}

int fabric_restorer_start(struct fabric_device *f)
{
	pthread_cond_init(&f->restore_wake, NULL);
	return -pthread_create(&f->restorer, NULL, restorer_main, f);
}

void fabric_restorer_stop(struct fabric_device *f)
{
	pthread_mutex_lock(&f->io_lock);
	f->stopping = true;
	pthread_cond_signal(&f->restore_wake);
	pthread_mutex_unlock(&f->io_lock);
	pthread_join(f->restorer, NULL);
	pthread_cond_destroy(&f->restore_wake);
}
