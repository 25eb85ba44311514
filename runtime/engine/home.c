// SPDX-License-Identifier: MIT
/*
 * Bringing pages home from devices, in batches per device, as a migration
 * in the other direction (migrate.c): claim the device pages, make the
 * device stop touching them, move or copy them into the CPU's page table
 * (which wakes any thread waiting on them), commit. The fault thread brings
 * single pages home itself (fault.c); this is hmm_migrate(..., NULL),
 * hmm_device_release, fork, close, mlock and pin-to-host.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "engine.h"

struct home_set {
	struct batch per_dev[MAX_DEVICES];
};

struct home_set *home_set_new(size_t max)
{
	struct home_set *hs = meta_alloc(sizeof(*hs));

	for (int d = 0; hs && d < MAX_DEVICES; d++) {
		if (batch_init(&hs->per_dev[d], NULL, max)) {
			home_set_free(hs, max);
			return NULL;
		}
	}
	return hs;
}

void home_set_free(struct home_set *hs, size_t max)
{
	if (!hs)
		return;
	for (int d = 0; d < MAX_DEVICES; d++)
		batch_fini(&hs->per_dev[d], max);
	meta_free(hs, sizeof(*hs));
}

/*
 * Empty one CPU page: a SIGBUS marker left by a failed fault must go before
 * the page can be refilled. The REMOVE event this raises is ours.
 */
static void zap_page(uintptr_t addr)
{
	handler_own_zap(addr, addr + PAGE_SIZE, true);
	sys_madvise((void *)addr, PAGE_SIZE, MADV_DONTNEED);
	handler_barrier();
	handler_own_zap(addr, addr + PAGE_SIZE, false);
}

struct addr_list {
	uintptr_t *v;
	size_t n, cap;
};

/*
 * reg.lock held. Commit the pages of bt that came home; end the claim on
 * the others, which stay on the device, intact. A page emptied while it
 * came home was not installed, or was emptied by the kernel after it was
 * (see install in dmaq.c): it reads as zero, and its claim ends with
 * nothing to keep.
 */
static void home_commit(struct batch *bt, bool stale, bool writable, struct mig_result *res)
{
	struct hmm_device_core *c = bt->c;

	for (size_t i = 0; i < bt->n;) {
		struct bpage *p = &bt->p[i];
		struct range *r = reg_lookup(p->addr);
		uint64_t *w = r ? range_word(r, p->addr) : NULL;
		size_t k = 1;

		if (p->status == BP_RETRY_COPY) {
			i++;
			continue;
		}
		if (!w || (*w & PW_UNMAPPED)) {
			page_unmapped_in_flight(c, p->slot, !bpage_done(p) || stale);
			i++;
			continue;
		}
		if (!bpage_done(p) || (*w & PW_DISCARD)) {
			if (!bpage_done(p) && p->status != BP_PENDING) {
				res->eio = true;
				STAT_ADD(migrations_failed, 1);
			}
			pages_release(r, p->addr, 1); /* failed, or discarded in flight */
			i++;
			continue;
		}
		while (i + k < bt->n && bpage_done(&bt->p[i + k]) &&
		       bt->p[i + k].addr == p->addr + k * PAGE_SIZE && bt->p[i + k].addr < r->end &&
		       !(*range_word(r, bt->p[i + k].addr) & (PW_UNMAPPED | PW_DISCARD)))
			k++;
		pages_commit_to_host(c, r, p->addr, k, stale, writable);
		i += k;
	}
}

/* Coherent memory: the pages are where the CPU maps them; the backend lets go. */
static void home_coherent(struct batch *bt, bool writable, struct mig_result *res)
{
	struct hmm_device_core *c = bt->c;

	for (unsigned i = 0; i < bt->nruns; i++) {
		int e = c->dev->ops->place(c->dev, (void *)bt->runs[i].addr, bt->runs[i].d.npages,
					   false);

		bt->runs[i].d.status = e;
		bt->runs[i].d.done = e ? 0 : bt->runs[i].d.npages;
	}
	batch_scatter_status(bt);
	reg_lock();
	home_commit(bt, false, writable, res);
	reg_unlock();
}

static void home_device(struct batch *bt, bool writable, struct mig_result *res)
{
	struct hmm_device_core *c = bt->c;
	size_t k = 0;

	batch_build_runs(bt, NULL, false);
	if (dev_coherent(c)) {
		home_coherent(bt, writable, res);
		return;
	}
	/* The device stops touching these pages before they leave it. */
	mirror_lock(&c->mirror);
	for (unsigned i = 0; i < bt->nruns; i++) {
		uintptr_t s = bt->runs[i].addr, e = s + bt->runs[i].d.npages * PAGE_SIZE;

		mirror_invalidate(&c->mirror, s, e);
		mirror_wait_unpinned(&c->mirror, s, e);
	}
	mirror_unlock(&c->mirror);
	if (dev_movable(c) && writable) {
		batch_run(c, bt, DMA_MOVE_OUT);
		for (size_t i = 0; i < bt->n; i++)
			if (bt->p[i].status == -EINVAL)
				bt->p[i].status = BP_RETRY_COPY;
		reg_lock();
		home_commit(bt, false, writable, res);
		reg_unlock();
		batch_wake(bt);
		for (size_t i = 0; i < bt->n; i++)
			if (bt->p[i].status == BP_RETRY_COPY)
				bt->p[k++] = bt->p[i];
		bt->n = k;
		if (!k)
			return;
		batch_build_runs(bt, NULL, false);
	}
	/* A mapping a page cannot be moved into (read-only, mlock'ed): copy. */
	batch_run(c, bt, DMA_COPY_OUT);
	reg_lock();
	home_commit(bt, true, false, res);
	reg_unlock();
	batch_wake(bt);
}

int home_batch(uintptr_t a, uintptr_t b, struct hmm_device_core *only, unsigned vflags,
	       struct home_set *hs, struct mig_result *res)
{
	uintptr_t poisoned[64];
	size_t npoisoned = 0;

	reg_lock();
	reg_wait_quiet(a, b, false);
	if (unshare_pages(a, b, only)) {
		reg_unlock();
		nap();
		return -EAGAIN;
	}
	for (int d = 0; d < MAX_DEVICES; d++)
		hs->per_dev[d].n = 0;
	for (uintptr_t p = a; p < b; p += PAGE_SIZE) {
		uint64_t *w = reg_word(p, NULL);
		struct batch *bt;
		unsigned loc;

		if (!w || !(loc = pw_loc(*w)) || (only && !pw_on(*w, only)))
			continue;
		if ((*w & PW_POISONED) && npoisoned < ARRAY_SIZE(poisoned))
			poisoned[npoisoned++] = p;
		page_claim(w);
		bt = &hs->per_dev[loc - 1];
		bt->c = dev_by_loc(loc);
		bt->p[bt->n++] = (struct bpage){ .addr = p, .slot = pw_slot(*w), .status = BP_PENDING };
	}
	reg_unlock();
	for (size_t i = 0; i < npoisoned; i++)
		zap_page(poisoned[i]);
	for (int d = 0; d < MAX_DEVICES; d++)
		if (hs->per_dev[d].n)
			home_device(&hs->per_dev[d], vflags & VMA_WRITE, res);
	return 0;
}

struct home_args {
	struct addr_list todo;      /* start, end pairs */
};

static int add_span(struct addr_list *l, uintptr_t s, uintptr_t e)
{
	if (l->n + 2 > l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 32;
		uintptr_t *v = meta_realloc(l->v, l->cap * sizeof(*v), cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = s;
	l->v[l->n++] = e;
	return 0;
}

/*
 * Only the part of [s, e) where pages may be off host needs work; finding
 * that part also narrows the range's hint, so that a range whose pages are
 * all home again costs nothing to the next fork.
 */
static int home_piece(struct range *r, uintptr_t s, uintptr_t e, void *arg)
{
	struct home_args *ha = arg;
	uintptr_t lo = MAX(s, r->off_lo), hi = MIN(e, r->off_hi), first = 0, last = 0;

	for (uintptr_t a = lo; a < hi; a += PAGE_SIZE) {
		if (pw_off_host(*range_word(r, a))) {
			if (!first)
				first = a;
			last = a + PAGE_SIZE;
		}
	}
	if (lo <= r->off_lo && hi >= r->off_hi) {
		r->off_lo = first;
		r->off_hi = last;
	}
	if (!first)
		return 0;
	return add_span(&ha->todo, first, last);
}

int mig_home(uintptr_t start, uintptr_t end, struct hmm_device_core *c, struct mig_result *res)
{
	struct home_args ha = { 0 };
	struct home_set *hs = NULL;
	int err = 0;

	memset(res, 0, sizeof(*res));
	reg_lock();
	err = reg_for_each(start, end, home_piece, &ha);
	reg_unlock();
	/* Most calls find everything home: they allocate nothing. */
	if (!err && ha.todo.n && !(hs = home_set_new(opt.dma_batch)))
		err = -ENOMEM;
	for (size_t i = 0; !err && i < ha.todo.n; i += 2) {
		uintptr_t s = ha.todo.v[i], e = ha.todo.v[i + 1];

		for (uintptr_t a = s; !err && a < e;) {
			uintptr_t b = MIN(e, a + opt.dma_batch * PAGE_SIZE);
			unsigned flags = VMA_READ | VMA_WRITE;
			struct vma v;

			/* Moving a page home needs the mapping's protection. */
			if (!vma_query(a, &v)) {
				flags = v.flags;
				b = MIN(b, v.end);
			}
			err = home_batch(a, b, c, flags, hs, res);
			if (err == -EAGAIN) {
				err = 0;
				continue;
			}
			a = b;
		}
	}
	home_set_free(hs, opt.dma_batch);
	meta_free(ha.todo.v, ha.todo.cap * sizeof(*ha.todo.v));
	return err;
}

/*
 * Every span some device was advised ACCESSED_BY comes home: a device that
 * reads host memory in place (an OpenCL device served in system mode) is
 * about to reach it through pointers the runtime never sees. Spans that are
 * home cost a look.
 */
int mig_home_accessed_by(struct mig_result *res)
{
	struct addr_list spans = { 0 };
	int err = 0;

	memset(res, 0, sizeof(*res));
	reg_lock();
	for (size_t i = 0; !err && i < reg.n; i++) {
		const struct range *r = reg.v[i];

		for (unsigned j = 0; !err && j < r->nattrs; j++)
			if (r->attrs[j].accessed_by)
				err = add_span(&spans, r->attrs[j].start, r->attrs[j].end);
	}
	reg_unlock();
	for (size_t i = 0; !err && i < spans.n; i += 2) {
		struct mig_result one;

		err = mig_home(spans.v[i], spans.v[i + 1], NULL, &one);
		res->eio |= one.eio;
	}
	meta_free(spans.v, spans.cap * sizeof(*spans.v));
	return err;
}

int mig_home_everything(struct hmm_device_core *c)
{
	struct mig_result res = { 0 };
	int err = mig_home(0, UINTPTR_MAX & ~(PAGE_SIZE - 1), c, &res);

	if (!err && res.eio)
		err = -EIO;
	return err;
}
