// SPDX-License-Identifier: MIT
/*
 * Batches: the pages one step of a migration has claimed, each with the
 * device slot it moves to or from, and the runs (consecutive in address
 * and slot) that a DMA queue moves with one descriptor each. Shared by the
 * migrations to a device (migrate.c), home (home.c) and duplication (dup.c).
 */
#include <errno.h>
#include <string.h>

#include "engine.h"

int batch_init(struct batch *b, struct hmm_device_core *c, size_t max)
{
	memset(b, 0, sizeof(*b));
	b->c = c;
	b->p = meta_alloc(max * sizeof(*b->p));
	b->runs = meta_alloc(max * sizeof(*b->runs));
	if (!b->p || !b->runs)
		return -ENOMEM;
	return 0;
}

void batch_fini(struct batch *b, size_t max)
{
	meta_free(b->p, max * sizeof(*b->p));
	meta_free(b->runs, max * sizeof(*b->runs));
}

void batch_build_runs(struct batch *b, bool (*keep)(const struct bpage *p), bool by_presence)
{
	b->nruns = 0;
	for (size_t i = 0; i < b->n; i++) {
		struct bpage *p = &b->p[i];
		struct dma_run *last = b->nruns ? &b->runs[b->nruns - 1] : NULL;

		if (keep && !keep(p))
			continue;
		if (last && last->addr + last->d.npages * PAGE_SIZE == p->addr &&
		    last->d.slot + last->d.npages == p->slot &&
		    (!by_presence || (last->d.host != NULL) == p->present)) {
			last->d.npages++;
			continue;
		}
		b->runs[b->nruns++] = (struct dma_run){
			.addr = p->addr,
			.d = { .npages = 1, .slot = p->slot, .host = p->present ? (void *)p->addr : NULL },
		};
	}
}

/* Each run's result to its pages: done ones, the one that failed, the rest. */
void batch_scatter_status(struct batch *b)
{
	size_t i = 0;

	for (unsigned r = 0; r < b->nruns; r++) {
		struct dma_run *run = &b->runs[r];

		while (i < b->n && b->p[i].addr != run->addr)
			i++;
		for (uint32_t k = 0; k < run->d.npages && i < b->n; k++, i++) {
			if (k < run->d.done)
				b->p[i].status = BP_DONE;
			else if (k == run->d.done)
				b->p[i].status = run->d.status ? run->d.status : -EIO;
			else
				b->p[i].status = BP_PENDING;
		}
	}
}

void batch_run(struct hmm_device_core *c, struct batch *b, enum dma_op op)
{
	/* Pages coming home wake their waiters after the commit (batch_wake). */
	struct dma_job job = { .op = op, .runs = b->runs, .nruns = b->nruns,
			       .dontwake = op == DMA_MOVE_OUT || op == DMA_COPY_OUT };

	if (!b->nruns)
		return;
	dmaq_submit(&c->q, &job);
	dmaq_wait(&c->q, &job);
	batch_scatter_status(b);
}

/* Threads that faulted on pages of the batch's runs go on: the pages are committed. */
void batch_wake(const struct batch *b)
{
	for (unsigned r = 0; r < b->nruns; r++)
		uffd_wake(b->runs[r].addr, (size_t)b->runs[r].d.npages * PAGE_SIZE);
}

bool addr_set_has(const struct addr_set *s, uintptr_t addr)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->v[i] == addr)
			return true;
	return false;
}

/* Out of memory only forgets: the set is what a call learned, not what it must do. */
void addr_set_add(struct addr_set *s, uintptr_t addr)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 64;
		uintptr_t *v = meta_realloc(s->v, s->cap * sizeof(*v), cap * sizeof(*v));

		if (!v)
			return;
		s->v = v;
		s->cap = cap;
	}
	s->v[s->n++] = addr;
}

void addr_set_free(struct addr_set *s)
{
	meta_free(s->v, s->cap * sizeof(*s->v));
	*s = (struct addr_set){ 0 };
}

void batch_release_page(struct hmm_device_core *c, const struct bpage *p, bool slot_stale)
{
	struct range *r = reg_lookup(p->addr);

	dev_free_slots(c, p->slot, 1, slot_stale);
	if (r && !(*range_word(r, p->addr) & PW_UNMAPPED))
		pages_release(r, p->addr, 1);
}

bool batch_protect(struct batch *bt, struct addr_set *failed, struct mig_result *res)
{
	bool dropped = false;
	size_t k = 0;

	batch_build_runs(bt, NULL, false);
	for (unsigned i = 0; i < bt->nruns; i++) {
		struct dma_run *run = &bt->runs[i];
		uintptr_t end = run->addr + run->d.npages * PAGE_SIZE;
		int err;

		while ((err = uffd_protect(run->addr, end - run->addr, true, false)) == -EAGAIN)
			nap();
		if (!err)
			continue;
		/* Gone (unmapped under us) is not a failure: those pages just stay out. */
		if (err != -ENOENT) {
			log_warn_ratelimited("cannot write-protect 0x%lx for migration: %d",
					     (unsigned long)run->addr, err);
			res->eio = true;
		}
		reg_lock();
		for (size_t p = 0; p < bt->n; p++) {
			if (bt->p[p].addr >= run->addr && bt->p[p].addr < end) {
				addr_set_add(failed, bt->p[p].addr);
				batch_release_page(bt->c, &bt->p[p], false);
				bt->p[p].status = BP_DROPPED;
			}
		}
		reg_unlock();
		dropped = true;
	}
	if (!dropped)
		return bt->n > 0;
	for (size_t p = 0; p < bt->n; p++)
		if (bt->p[p].status != BP_DROPPED)
			bt->p[k++] = bt->p[p];
	bt->n = k;
	batch_build_runs(bt, NULL, false);
	return k > 0;
}
