// SPDX-License-Identifier: MIT
/*
 * Migration in batches, in four steps per batch, as migrate_vma does:
 *   collect   under reg.lock, pick the pages that can move, give each a
 *             device slot and mark it PW_BUSY (faults on it now park);
 *   copy      outside the lock, through the device's DMA queue;
 *   commit    under reg.lock, the page state and every mirror follow the
 *             data, page by page, dropping pages that were discarded or
 *             unmapped while in flight;
 *   finalize  busy flags clear and parked faults are kicked.
 * Holes are allowed: a page that cannot move stays where it is, intact.
 *
 * Host to device takes a page out of the CPU's page table atomically with
 * UFFDIO_MOVE when the device memory is movable and the mapping writable;
 * otherwise ("the copy path") the page is write-protected, copied, and then
 * zapped, and a CPU write during the copy aborts that page's migration.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "internal.h"
#include "kernel-compat.h"

/* One page of a batch. */
struct bpage {
	uintptr_t addr;
	uint64_t slot;
	int status;          /* 0 moved, -errno failed, 1 not attempted */
	bool present;
};

struct batch {
	struct hmm_device_core *c;
	struct bpage *p;
	size_t n;
	struct dma_run *runs;
	unsigned nruns;
};

/* A set of page addresses. */
struct failset {
	uintptr_t *v;
	size_t n, cap;
};

/* What one migration call learned about pages along the way. */
struct mig_state {
	struct failset failed;   /* failed for good: never retried by this call */
	struct failset cowed;    /* copy-on-write broken once so they could move */
};

static bool in_set(const struct failset *f, uintptr_t addr)
{
	for (size_t i = 0; i < f->n; i++)
		if (f->v[i] == addr)
			return true;
	return false;
}

static void add_to_set(struct failset *f, uintptr_t addr)
{
	if (f->n == f->cap) {
		size_t cap = f->cap ? f->cap * 2 : 64;
		uintptr_t *v = meta_realloc(f->v, f->cap * sizeof(*v), cap * sizeof(*v));

		if (!v)
			return;
		f->v = v;
		f->cap = cap;
	}
	f->v[f->n++] = addr;
}

static void nap(void)
{
	nanosleep(&(struct timespec){ .tv_nsec = 50000 }, NULL);
}

static int batch_init(struct batch *b, struct hmm_device_core *c, size_t max)
{
	memset(b, 0, sizeof(*b));
	b->c = c;
	b->p = meta_alloc(max * sizeof(*b->p));
	b->runs = meta_alloc(max * sizeof(*b->runs));
	if (!b->p || !b->runs)
		return -ENOMEM;
	return 0;
}

static void batch_fini(struct batch *b, size_t max)
{
	meta_free(b->p, max * sizeof(*b->p));
	meta_free(b->runs, max * sizeof(*b->runs));
}

/* Runs of pages consecutive in address and slot, among those keep() accepts. */
static void build_runs(struct batch *b, bool (*keep)(const struct bpage *p), bool by_presence)
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

/* Copy each run's result back to its pages. */
static void scatter_status(struct batch *b)
{
	size_t i = 0;

	for (unsigned r = 0; r < b->nruns; r++) {
		struct dma_run *run = &b->runs[r];

		while (i < b->n && b->p[i].addr != run->addr)
			i++;
		for (uint32_t k = 0; k < run->d.npages && i < b->n; k++, i++) {
			if (k < run->d.done)
				b->p[i].status = 0;
			else if (k == run->d.done)
				b->p[i].status = run->d.status ? run->d.status : -EIO;
			else
				b->p[i].status = 1;
		}
	}
}

static void run_job(struct hmm_device_core *c, struct batch *b, enum dma_op op)
{
	struct dma_job job = { .op = op, .runs = b->runs, .nruns = b->nruns };

	if (!b->nruns)
		return;
	dmaq_submit(&c->q, &job);
	dmaq_wait(&c->q, &job);
	scatter_status(b);
}

/* Empty stale slots of a movable device so pages can be moved into them. */
static void clean_stale(struct hmm_device_core *c)
{
	uint64_t first;
	size_t n;

	while ((n = devmem_take_stale(&c->mem, PMD_PAGES, &first))) {
		sys_madvise(dev_slot_addr(c, first), n * PAGE_SIZE, MADV_DONTNEED);
		devmem_free(&c->mem, first, n, false);
	}
}

/*
 * reg.lock held. The page state of p after its batch: commit it to the
 * device, or undo the claim. Returns false when the page is gone or
 * discarded (its slot is freed here).
 */
static bool still_ours(struct hmm_device_core *c, const struct bpage *p, struct range **ret_r)
{
	struct range *r = reg_lookup(p->addr);
	uint64_t *w = r ? &r->pages[range_index(r, p->addr)] : NULL;

	if (!w || (*w & PW_UNMAPPED)) {
		free_slots(c, p->slot, 1, true);
		return false;
	}
	if (*w & PW_DISCARD) {
		free_slots(c, p->slot, 1, true);
		*w &= ~PW_DISCARD;
		run_unbusy(r, p->addr, 1);
		return false;
	}
	*ret_r = r;
	return true;
}

/* reg.lock held: commit the pages that keep() says made it, in runs. */
static void commit_to_device(struct batch *b, bool (*keep)(const struct bpage *p), bool writable)
{
	for (size_t i = 0; i < b->n;) {
		struct range *r;
		size_t k = 1;

		if (!keep(&b->p[i]) || !still_ours(b->c, &b->p[i], &r)) {
			i++;
			continue;
		}
		while (i + k < b->n && keep(&b->p[i + k]) && b->p[i + k].addr == b->p[i].addr + k * PAGE_SIZE &&
		       b->p[i + k].slot == b->p[i].slot + k && b->p[i + k].addr < r->end &&
		       !(r->pages[range_index(r, b->p[i + k].addr)] & (PW_DISCARD | PW_UNMAPPED)))
			k++;
		run_to_device(b->c, r, b->p[i].addr, k, b->p[i].slot, writable);
		i += k;
	}
}

/*
 * Write-protect the runs of bt; pages whose protection fails are released
 * (copying them unprotected could lose a concurrent write) and dropped from
 * bt. Returns whether anything is left.
 */
static bool protect_runs(struct batch *bt, struct mig_state *st, struct mig_result *res);

/* reg.lock held: give up on a page: free its slot, clear its claim. */
static void release_page(struct hmm_device_core *c, const struct bpage *p, bool stale)
{
	struct range *r = reg_lookup(p->addr);

	free_slots(c, p->slot, 1, stale);
	if (r && !(r->pages[range_index(r, p->addr)] & PW_UNMAPPED)) {
		r->pages[range_index(r, p->addr)] &= ~PW_DISCARD;
		run_unbusy(r, p->addr, 1);
	}
}

static bool moved(const struct bpage *p) { return p->status == 0; }
static bool copied_ok(const struct bpage *p) { return p->status == 0; }

/*
 * Collect: claim up to the batch size of host pages in [a, b) for c.
 * Returns -EAGAIN when the caller must retry (pages had to come home first,
 * or slots had to be emptied), 0 otherwise.
 */
static int collect_for_device(struct batch *bt, uintptr_t a, uintptr_t b, bool clean,
			      struct mig_state *st, struct mig_result *res)
{
	struct hmm_device_core *c = bt->c;
	bool elsewhere = false, need_clean = false;
	int err = 0;

	bt->n = 0;
	reg_lock();
	reg_wait_quiet(a, b, false);
	for (uintptr_t p = a; p < b; p += PAGE_SIZE) {
		uint64_t *w = reg_word(p, NULL);

		if (!w || pw_loc(*w) == (unsigned)c->index + 1 || in_set(&st->failed, p))
			continue;
		if (*w & PW_PIN_HOST) {
			res->enoent = true;
			continue;
		}
		if (*w & PW_EXCL)
			err = mig_revoke_exclusive(p, w);
		else if (*w & PW_DUP)
			err = mig_collapse_dup(p, w);
		if (err)
			goto out;
		if (pw_loc(*w)) {
			elsewhere = true;
			continue;
		}
	}
	if (elsewhere)
		goto out;
	/* Claim runs of host pages, each with a run of slots. */
	for (uintptr_t p = a; p < b;) {
		uint64_t *w = reg_word(p, NULL);
		uintptr_t q = p;
		uint64_t first;
		size_t want, got;

		while (q < b && (w = reg_word(q, NULL)) && !pw_loc(*w) && !(*w & PW_PIN_HOST) &&
		       !in_set(&st->failed, q))
			q += PAGE_SIZE;
		if (q == p) {
			p += PAGE_SIZE;
			continue;
		}
		want = (q - p) / PAGE_SIZE;
		got = devmem_alloc(&c->mem, want, (p % PMD_SIZE) ? 1 : PMD_PAGES, clean, &first);
		if (!got) {
			if (clean && c->mem.nstale)
				need_clean = true;
			else
				res->enomem = true;
			break;
		}
		for (size_t i = 0; i < got; i++) {
			uintptr_t addr = p + i * PAGE_SIZE;

			*reg_word(addr, NULL) |= PW_BUSY;
			bt->p[bt->n++] = (struct bpage){ .addr = addr, .slot = first + i, .status = 1 };
		}
		p += got * PAGE_SIZE;
	}
	if (!bt->n && need_clean) {
		reg_unlock();
		clean_stale(c);
		return -EAGAIN;
	}
out:
	reg_unlock();
	if (err == -EBUSY || err == -EAGAIN) {
		nap();
		return -EAGAIN;
	}
	if (!err && elsewhere) {
		struct mig_result sub = { 0 };

		/* Pages on another device come home first, then move across. */
		err = mig_home(a, b, NULL, &sub);
		res->eio |= sub.eio;
		return err ? err : -EAGAIN;
	}
	return err;
}

/*
 * The copy path: write-protect, copy through the queue, zap. Pages of bt
 * are claimed; on return every one of them is committed or released.
 */
static void copy_to_device(struct batch *bt, bool writable, struct mig_state *st,
			   struct mig_result *res)
{
	struct hmm_device_core *c = bt->c;
	uint64_t *pm;
	bool any_zap = false;

	/* Isolate: a CPU write from now on faults, and aborts that page. */
	if (!protect_runs(bt, st, res))
		return;
	/* Pages never populated copy as zeros without being touched. */
	pm = meta_alloc(bt->n * sizeof(*pm));
	for (size_t i = 0; i < bt->n; i++)
		bt->p[i].present = true;
	for (unsigned r = 0, i = 0; pm && r < bt->nruns; r++) {
		struct dma_run *run = &bt->runs[r];

		if (pagemap_read(run->addr, run->d.npages, pm + i)) {
			i += run->d.npages;
			continue;
		}
		for (uint32_t k = 0; k < run->d.npages; k++, i++)
			bt->p[i].present = pm[i] & PM_PRESENT;
	}
	meta_free(pm, bt->n * sizeof(*pm));
	build_runs(bt, NULL, true);
	run_job(c, bt, DMA_COPY_IN);

	/* Commit step one: pages the CPU wrote, or whose copy failed, stay. */
	reg_lock();
	for (size_t i = 0; i < bt->n; i++) {
		struct bpage *p = &bt->p[i];
		struct range *r = reg_lookup(p->addr);
		uint64_t *w = r ? &r->pages[range_index(r, p->addr)] : NULL;

		if (!w || (*w & (PW_UNMAPPED | PW_DISCARD | PW_ABORT))) {
			release_page(c, p, true);
			p->status = 1;
			continue;
		}
		if (p->status) {
			res->eio = true;
			STAT_ADD(migrations_failed, 1);
			add_to_set(&st->failed, p->addr);
			p->status = -EIO; /* still claimed: its protection comes off below */
			continue;
		}
		*w |= PW_ZAPPING;
		any_zap = true;
	}
	reg_unlock();
	for (size_t i = 0; i < bt->n; i++) {
		if (bt->p[i].status == -EIO) {
			uffd_protect(bt->p[i].addr, PAGE_SIZE, false, true);
			reg_lock();
			release_page(c, &bt->p[i], true);
			reg_unlock();
			bt->p[i].status = 1;
		}
	}
	if (!any_zap)
		return;
	/* Zap the copied pages; the REMOVE events they raise are ours. */
	build_runs(bt, copied_ok, false);
	for (unsigned i = 0; i < bt->nruns; i++) {
		uintptr_t s = bt->runs[i].addr, e = s + bt->runs[i].d.npages * PAGE_SIZE;

		handler_own_zap(s, e, true);
		if (sys_madvise((void *)s, e - s, MADV_DONTNEED)) {
			handler_own_zap(s, e, false);
			for (size_t k = 0; k < bt->n; k++)
				if (bt->p[k].addr >= s && bt->p[k].addr < e)
					bt->p[k].status = -EIO;
			continue;
		}
		handler_barrier();
		handler_own_zap(s, e, false);
	}
	reg_lock();
	for (size_t i = 0; i < bt->n; i++) {
		if (bt->p[i].status == -EIO) {
			uffd_protect(bt->p[i].addr, PAGE_SIZE, false, true);
			release_page(c, &bt->p[i], true);
			bt->p[i].status = 1;
		}
	}
	commit_to_device(bt, copied_ok, writable);
	reg_unlock();
}

static bool protect_runs(struct batch *bt, struct mig_state *st, struct mig_result *res)
{
	size_t k = 0;

	build_runs(bt, NULL, false);
	for (unsigned i = 0; i < bt->nruns; i++) {
		struct dma_run *run = &bt->runs[i];
		int err;

		while ((err = uffd_protect(run->addr, run->d.npages * PAGE_SIZE, true, false)) ==
		       -EAGAIN)
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
			if (bt->p[p].addr >= run->addr &&
			    bt->p[p].addr < run->addr + run->d.npages * PAGE_SIZE) {
				add_to_set(&st->failed, bt->p[p].addr);
				release_page(bt->c, &bt->p[p], false);
				bt->p[p].status = 3; /* dropped below */
			}
		}
		reg_unlock();
	}
	if (k == bt->n)
		return true;
	for (size_t p = 0; p < bt->n; p++)
		if (bt->p[p].status != 3)
			bt->p[k++] = bt->p[p];
	bt->n = k;
	build_runs(bt, NULL, false);
	return k > 0;
}

/*
 * UFFDIO_MOVE refuses (-EBUSY) a page that is not exclusively ours: shared
 * with a child after fork (even one that has exited), or pinned for DMA by
 * someone (O_DIRECT, RDMA). Breaking copy-on-write once tells them apart: a
 * write fault makes an unpinned page exclusive again; a pinned page refuses
 * a second time, and must not move at all (its pin would keep writing into
 * the old page).
 */
static void break_cow(const struct failset *pages, size_t from)
{
	for (size_t i = from; i < pages->n; i++)
		sys_madvise((void *)pages->v[i], PAGE_SIZE, MADV_POPULATE_WRITE);
}

static int batch_to_private(struct hmm_device_core *c, uintptr_t a, uintptr_t b, unsigned vflags,
			    struct batch *bt, struct mig_state *st, struct mig_result *res)
{
	bool writable = vflags & VMA_WRITE;
	bool move = dev_movable(c) && writable && !(vflags & VMA_EXEC);
	int err = collect_for_device(bt, a, b, move, st, res);
	bool again = false;
	size_t ncopy = 0, cowed_before = st->cowed.n;

	if (err || !bt->n)
		return err;
	if (!move) {
		copy_to_device(bt, writable, st, res);
		return 0;
	}
	build_runs(bt, NULL, false);
	run_job(c, bt, DMA_MOVE_IN);
	reg_lock();
	commit_to_device(bt, moved, writable);
	for (size_t i = 0; i < bt->n; i++) {
		struct bpage *p = &bt->p[i];

		if (p->status == 0)
			continue;
		if (p->status == -EINVAL) {
			bt->p[ncopy++] = *p; /* a mapping a page cannot move out of: copy */
			continue;
		}
		if (p->status == -EBUSY && !in_set(&st->cowed, p->addr)) {
			add_to_set(&st->cowed, p->addr);
			again = true;
		} else if (p->status == 1 || p->status == -EAGAIN) {
			again = true; /* not attempted, or an event was pending: next round */
		} else {
			if (p->status == -EBUSY) {
				res->enoent = true; /* pinned: a hole in the migration */
			} else if (p->status != -ENOENT) {
				res->eio = true;
				STAT_ADD(migrations_failed, 1);
			}
			add_to_set(&st->failed, p->addr);
		}
		release_page(c, p, false);
	}
	reg_unlock();
	break_cow(&st->cowed, cowed_before);
	/* Pages the move refused: the copy path, unless mlock'ed (the usual cause). */
	bt->n = ncopy;
	if (ncopy) {
		bool locked = false;

		vma_locked(a, b, &locked);
		if (locked) {
			res->enoent = true;
			reg_lock();
			for (size_t i = 0; i < ncopy; i++) {
				add_to_set(&st->failed, bt->p[i].addr);
				release_page(c, &bt->p[i], false);
			}
			reg_unlock();
		} else {
			copy_to_device(bt, writable, st, res);
		}
	}
	return again ? -EAGAIN : 0;
}

/* Coherent memory: the pages stay mapped where they are; placement is the backend's. */
static int batch_to_coherent(struct hmm_device_core *c, uintptr_t a, uintptr_t b, unsigned vflags,
			     struct batch *bt, struct mig_state *st, struct mig_result *res)
{
	int err = collect_for_device(bt, a, b, false, st, res);

	if (err || !bt->n)
		return err;
	build_runs(bt, NULL, false);
	for (unsigned i = 0; i < bt->nruns; i++) {
		bt->runs[i].d.status = c->dev->ops->place(c->dev, (void *)bt->runs[i].addr,
							   bt->runs[i].d.npages, true);
		bt->runs[i].d.done = bt->runs[i].d.status ? 0 : bt->runs[i].d.npages;
	}
	scatter_status(bt);
	reg_lock();
	commit_to_device(bt, moved, vflags & VMA_WRITE);
	for (size_t i = 0; i < bt->n; i++) {
		if (bt->p[i].status) {
			res->eio = true;
			add_to_set(&st->failed, bt->p[i].addr);
			release_page(c, &bt->p[i], false);
		}
	}
	reg_unlock();
	return 0;
}

/* ---- device to host ------------------------------------------------------ */

struct home_set {
	struct batch per_dev[MAX_DEVICES];
};

/*
 * Empty one CPU page: a SIGBUS marker left by a failed fault must go before
 * the page can be refilled, and a page discarded while it was coming home
 * must read as zero. The REMOVE event this raises is ours.
 */
static void zap_page(uintptr_t addr)
{
	handler_own_zap(addr, addr + PAGE_SIZE, true);
	sys_madvise((void *)addr, PAGE_SIZE, MADV_DONTNEED);
	handler_barrier();
	handler_own_zap(addr, addr + PAGE_SIZE, false);
}

#define HOME_RETRY_COPY 2   /* status: the move could not enter the mapping */

/*
 * reg.lock held. Commit the pages of bt that came home; undo the claim on
 * the others, which stay on the device, intact.
 */
struct addr_list {
	uintptr_t *v;
	size_t n, cap;
};

static void home_commit(struct batch *bt, bool stale, bool writable, struct mig_result *res,
			struct addr_list *rezap)
{
	struct hmm_device_core *c = bt->c;

	for (size_t i = 0; i < bt->n;) {
		struct bpage *p = &bt->p[i];
		struct range *r = reg_lookup(p->addr);
		uint64_t *w = r ? &r->pages[range_index(r, p->addr)] : NULL;
		size_t k = 1;

		if (p->status == HOME_RETRY_COPY) {
			i++;
			continue;
		}
		if (!w || (*w & PW_UNMAPPED)) {
			/* Unmapped in flight: whatever came home left with the mapping. */
			free_slots(c, p->slot, 1, p->status != 0 || stale);
			atomic_fetch_sub(&c->resident, 1);
			i++;
			continue;
		}
		if (p->status) {
			if (p->status != 1) {
				res->eio = true;
				STAT_ADD(migrations_failed, 1);
			}
			*w &= ~PW_BUSY;
			if (*w & PW_DISCARD) /* discarded in flight: nothing to keep */
				page_drop(p->addr, w);
			run_unbusy(r, p->addr, 1);
			i++;
			continue;
		}
		if ((*w & PW_DISCARD) && rezap->n < rezap->cap)
			rezap->v[rezap->n++] = p->addr; /* discarded in flight: it must read zero */
		while (i + k < bt->n && bt->p[i + k].status == 0 &&
		       bt->p[i + k].addr == p->addr + k * PAGE_SIZE && bt->p[i + k].addr < r->end &&
		       !(r->pages[range_index(r, bt->p[i + k].addr)] & (PW_UNMAPPED | PW_DISCARD)))
			k++;
		run_to_host(c, r, p->addr, k, stale, writable);
		i += k;
	}
}

/*
 * reg.lock held. Revoke exclusive access and collapse duplicates of devices
 * in scope, so that what remains is plain placement. -EAGAIN: try later.
 */
static int unshare_pages(uintptr_t a, uintptr_t b, struct hmm_device_core *only)
{
	for (uintptr_t p = a; p < b; p += PAGE_SIZE) {
		uint64_t *w = reg_word(p, NULL);
		int err;

		if (!w || !(*w & (PW_EXCL | PW_DUP)))
			continue;
		if (only && pw_aux(*w) != (unsigned)only->index + 1)
			continue;
		err = (*w & PW_EXCL) ? mig_revoke_exclusive(p, w) : mig_collapse_dup(p, w);
		if (err == -EBUSY || err == -EAGAIN)
			return -EAGAIN;
	}
	return 0;
}

static void home_device(struct batch *bt, bool writable, struct mig_result *res,
			struct addr_list *rezap)
{
	struct hmm_device_core *c = bt->c;
	size_t k = 0;

	build_runs(bt, NULL, false);
	if (dev_coherent(c)) {
		for (unsigned i = 0; i < bt->nruns; i++) {
			int e = c->dev->ops->place(c->dev, (void *)bt->runs[i].addr,
						   bt->runs[i].d.npages, false);

			bt->runs[i].d.status = e;
			bt->runs[i].d.done = e ? 0 : bt->runs[i].d.npages;
		}
		scatter_status(bt);
		reg_lock();
		home_commit(bt, false, writable, res, rezap);
		reg_unlock();
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
		run_job(c, bt, DMA_MOVE_OUT);
		for (size_t i = 0; i < bt->n; i++)
			if (bt->p[i].status == -EINVAL)
				bt->p[i].status = HOME_RETRY_COPY;
		reg_lock();
		home_commit(bt, false, writable, res, rezap);
		reg_unlock();
		for (size_t i = 0; i < bt->n; i++)
			if (bt->p[i].status == HOME_RETRY_COPY)
				bt->p[k++] = bt->p[i];
		bt->n = k;
		if (!k)
			return;
		build_runs(bt, NULL, false);
	}
	/* A mapping a page cannot be moved into (read-only, mlock'ed): copy. */
	run_job(c, bt, DMA_COPY_OUT);
	reg_lock();
	home_commit(bt, true, false, res, rezap);
	reg_unlock();
}

static int batch_home(uintptr_t a, uintptr_t b, struct hmm_device_core *only, unsigned vflags,
		      struct home_set *hs, struct mig_result *res)
{
	uintptr_t poisoned[64];
	size_t npoisoned = 0, max = (b - a) / PAGE_SIZE;
	struct addr_list rezap = { .cap = max };

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

		if (!w || !(loc = pw_loc(*w)) || (only && loc != (unsigned)only->index + 1))
			continue;
		if ((*w & PW_POISONED) && npoisoned < ARRAY_SIZE(poisoned))
			poisoned[npoisoned++] = p;
		*w |= PW_BUSY;
		bt = &hs->per_dev[loc - 1];
		bt->c = dev_by_loc(loc);
		bt->p[bt->n++] = (struct bpage){ .addr = p, .slot = pw_slot(*w), .status = 1 };
	}
	reg_unlock();
	for (size_t i = 0; i < npoisoned; i++)
		zap_page(poisoned[i]);
	rezap.v = meta_alloc(max * sizeof(*rezap.v));
	if (!rezap.v)
		rezap.cap = 0;
	for (int d = 0; d < MAX_DEVICES; d++)
		if (hs->per_dev[d].n)
			home_device(&hs->per_dev[d], vflags & VMA_WRITE, res, &rezap);
	for (size_t i = 0; i < rezap.n; i++)
		zap_page(rezap.v[i]);
	meta_free(rezap.v, max * sizeof(*rezap.v));
	return 0;
}

/* ---- whole ranges ------------------------------------------------------- */

struct piece {
	uintptr_t start, end;
	unsigned flags;
	bool hole;
};

struct pieces {
	struct piece *v;
	size_t n, cap;
};

static int collect_piece(const struct vma *v, uintptr_t s, uintptr_t e, void *arg)
{
	struct pieces *ps = arg;

	if (ps->n == ps->cap) {
		size_t cap = ps->cap ? ps->cap * 2 : 16;
		struct piece *nv = meta_realloc(ps->v, ps->cap * sizeof(*nv), cap * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		ps->v = nv;
		ps->cap = cap;
	}
	ps->v[ps->n++] = (struct piece){ s, e, v ? v->flags : 0, !v };
	return 0;
}

static int for_each_batch(struct hmm_device_core *dst, const struct piece *pc,
			  struct mig_state *st, struct mig_result *res)
{
	struct batch bt;
	struct home_set *hs = NULL;
	size_t max = opt.dma_batch;
	int err = 0;

	if (dst) {
		err = batch_init(&bt, dst, max);
	} else {
		hs = meta_alloc(sizeof(*hs));
		if (!hs)
			return -ENOMEM;
		for (int d = 0; d < MAX_DEVICES && !err; d++)
			err = batch_init(&hs->per_dev[d], NULL, max);
	}
	for (uintptr_t a = pc->start; !err && a < pc->end;) {
		uintptr_t b = MIN(pc->end, a + max * PAGE_SIZE);

		if (!dst)
			err = batch_home(a, b, NULL, pc->flags, hs, res);
		else if (dev_coherent(dst))
			err = batch_to_coherent(dst, a, b, pc->flags, &bt, st, res);
		else
			err = batch_to_private(dst, a, b, pc->flags, &bt, st, res);
		if (err == -EAGAIN) {
			err = 0;
			continue;
		}
		if (res->enomem)
			break;
		a = b;
	}
	if (dst) {
		batch_fini(&bt, max);
	} else {
		for (int d = 0; d < MAX_DEVICES; d++)
			batch_fini(&hs->per_dev[d], max);
		meta_free(hs, sizeof(*hs));
	}
	return err;
}

static size_t count_placed(uintptr_t start, uintptr_t end, struct hmm_device_core *dst)
{
	size_t n = 0;

	reg_lock();
	for (uintptr_t a = start; a < end; a += PAGE_SIZE) {
		uint64_t *w = reg_word(a, NULL);
		unsigned loc = w ? pw_loc(*w) : 0;

		if (dst ? loc == (unsigned)dst->index + 1 : !loc)
			n++;
	}
	reg_unlock();
	return n;
}

int mig_range(uintptr_t start, uintptr_t end, struct hmm_device_core *dst, struct mig_result *res)
{
	struct pieces ps = { 0 };
	struct mig_state st = { 0 };
	int err;

	memset(res, 0, sizeof(*res));
	err = vma_walk(start, end, collect_piece, &ps);
	for (size_t i = 0; !err && i < ps.n; i++)
		if (ps.v[i].hole || !(ps.v[i].flags & VMA_READ))
			err = -EINVAL;
	if (err)
		goto out;
	/* Private anonymous memory is adopted on the spot. */
	handler_barrier();
	for (size_t i = 0; i < ps.n && !err; i++) {
		struct piece *pc = &ps.v[i];
		bool locked = false;

		if (!vma_private_anon(&(struct vma){ .flags = pc->flags }))
			continue;
		/* UFFDIO_MOVE refuses mlock'ed memory by itself; other paths ask. */
		if (dst && !(dev_movable(dst) && (pc->flags & VMA_WRITE) && !(pc->flags & VMA_EXEC)))
			err = vma_locked(pc->start, pc->end, &locked);
		if (locked) {
			pc->flags |= VMA_SHARED; /* not ours to move: mlock'ed */
			continue;
		}
		/* Pages about to leave the host: their range is armed, whole. */
		reg_lock();
		if (!err)
			err = dst ? reg_add(pc->start, pc->end, NULL) : reg_add_lazy(pc->start, pc->end);
		reg_unlock();
	}
	for (size_t i = 0; i < ps.n && !err; i++) {
		struct piece *pc = &ps.v[i];

		if (!vma_private_anon(&(struct vma){ .flags = pc->flags })) {
			if (dst)
				res->enoent = true;
			continue;
		}
		err = for_each_batch(dst, pc, &st, res);
	}
	if (!err) {
		res->placed = count_placed(start, end, dst);
		/* Memory that is not managed is host memory. */
		if (!dst) {
			size_t managed = 0;

			reg_lock();
			for (uintptr_t a = start; a < end; a += PAGE_SIZE)
				managed += reg_word(a, NULL) != NULL;
			reg_unlock();
			res->placed += (end - start) / PAGE_SIZE - managed;
		}
	}
out:
	meta_free(ps.v, ps.cap * sizeof(*ps.v));
	meta_free(st.failed.v, st.failed.cap * sizeof(uintptr_t));
	meta_free(st.cowed.v, st.cowed.cap * sizeof(uintptr_t));
	return err;
}

struct home_args {
	struct hmm_device_core *only;
	struct mig_result *res;
	struct pieces todo;
};

static bool off_host(uint64_t w)
{
	return pw_loc(w) || (w & (PW_EXCL | PW_DUP));
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
		if (off_host(r->pages[range_index(r, a)])) {
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
	return collect_piece(&(struct vma){ .flags = 0 }, first, last, &ha->todo);
}

int mig_home(uintptr_t start, uintptr_t end, struct hmm_device_core *c, struct mig_result *res)
{
	struct home_args ha = { .only = c, .res = res };
	struct home_set *hs = meta_alloc(sizeof(*hs));
	int err = 0;

	memset(res, 0, sizeof(*res));
	if (!hs)
		return -ENOMEM;
	for (int d = 0; d < MAX_DEVICES && !err; d++)
		err = batch_init(&hs->per_dev[d], NULL, opt.dma_batch);
	reg_lock();
	if (!err)
		err = reg_for_each(start, end, home_piece, &ha);
	reg_unlock();
	for (size_t i = 0; !err && i < ha.todo.n; i++) {
		struct piece *pc = &ha.todo.v[i];
		struct vma v;

		for (uintptr_t a = pc->start; !err && a < pc->end;) {
			uintptr_t b = MIN(pc->end, a + opt.dma_batch * PAGE_SIZE);
			unsigned flags = VMA_READ | VMA_WRITE;

			/* Moving a page home needs the mapping's protection. */
			if (!vma_query(a, &v)) {
				flags = v.flags;
				b = MIN(b, v.end);
			}
			err = batch_home(a, b, c, flags, hs, res);
			if (err == -EAGAIN) {
				err = 0;
				continue;
			}
			a = b;
		}
	}
	for (int d = 0; d < MAX_DEVICES; d++)
		batch_fini(&hs->per_dev[d], opt.dma_batch);
	meta_free(hs, sizeof(*hs));
	meta_free(ha.todo.v, ha.todo.cap * sizeof(*ha.todo.v));
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

/*
 * A read-only duplicate of host pages on device c (READ_MOSTLY): the host
 * copy is write-protected first, so a CPU write collapses the copies.
 */
int mig_make_dup(struct hmm_device_core *c, uintptr_t start, uintptr_t end)
{
	struct mig_state st = { 0 };
	struct mig_result res = { 0 };
	struct batch bt;
	int err = batch_init(&bt, c, (end - start) / PAGE_SIZE);

	if (err)
		goto out;
	reg_lock();
	reg_arm(start, end);
	for (uintptr_t p = start; p < end; p += PAGE_SIZE) {
		uint64_t *w = reg_word(p, NULL);
		uint64_t slot;

		if (!w || pw_loc(*w) || (*w & (PW_BUSY | PW_EXCL | PW_DUP | PW_PIN_HOST)))
			continue;
		if (!devmem_alloc(&c->mem, 1, 1, false, &slot))
			break;
		*w |= PW_BUSY;
		bt.p[bt.n++] = (struct bpage){ .addr = p, .slot = slot, .status = 1, .present = true };
	}
	reg_unlock();
	if (!bt.n || !protect_runs(&bt, &st, &res))
		goto out;
	build_runs(&bt, NULL, false);
	run_job(c, &bt, DMA_COPY_IN);
	reg_lock();
	for (size_t i = 0; i < bt.n; i++) {
		struct bpage *p = &bt.p[i];
		struct range *r = reg_lookup(p->addr);
		uint64_t *w = r ? &r->pages[range_index(r, p->addr)] : NULL;

		if (!w || (*w & PW_UNMAPPED)) {
			free_slots(c, p->slot, 1, true);
			continue;
		}
		if (p->status || (*w & (PW_ABORT | PW_DISCARD))) {
			free_slots(c, p->slot, 1, true);
			*w &= ~PW_DISCARD;
			if (!(*w & PW_ABORT))
				uffd_protect(p->addr, PAGE_SIZE, false, true);
			run_unbusy(r, p->addr, 1);
			continue;
		}
		*w = pw_set_aux(*w | PW_DUP, (unsigned)c->index + 1, p->slot);
		range_note_offhost(r, p->addr, p->addr + PAGE_SIZE);
		run_unbusy(r, p->addr, 1);
		mirror_lock(&c->mirror);
		mirror_set(&c->mirror, p->addr, MIR_READ | MIR_LOCAL);
		mirror_unlock(&c->mirror);
	}
	reg_unlock();
out:
	meta_free(st.failed.v, st.failed.cap * sizeof(uintptr_t));
	batch_fini(&bt, (end - start) / PAGE_SIZE);
	return err;
}
