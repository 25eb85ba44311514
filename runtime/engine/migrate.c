// SPDX-License-Identifier: MIT
/*
 * Placing pages on a device, in batches, in four steps per batch, as
 * migrate_vma does:
 *   collect   under reg.lock, pick the pages that can move, give each a
 *             device slot and claim it (faults on it now park);
 *   copy      outside the lock, through the device's DMA queue;
 *   commit    under reg.lock, the page state and every mirror follow the
 *             data, page by page, dropping pages that were discarded or
 *             unmapped while in flight;
 *   finalize  claims end and parked faults are kicked.
 * Holes are allowed: a page that cannot move stays where it is, intact.
 *
 * Host to device takes a page out of the CPU's page table atomically with
 * UFFDIO_MOVE when the device memory is movable and the mapping writable;
 * otherwise ("the copy path") the page is write-protected, copied, and then
 * zapped, and a CPU write during the copy aborts that page's migration.
 * mig_range() is the entry point for both directions; home.c brings pages
 * back. The pages of a private file mapping that the CPU copied on write are
 * anonymous memory to the kernel's migrate_vma; here they become it first
 * (replace_copied, kernel/replace.c), and the file's own pages are holes.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "engine.h"

/* What one migration call learned about pages along the way. */
struct mig_state {
	struct addr_set failed;  /* failed for good: never retried by this call */
	struct addr_set cowed;   /* copy-on-write broken once so they could move */
};

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
 * reg.lock held. A claimed page after its batch: still ours to commit, or
 * gone (unmapped: its slot goes back) or discarded (its claim ends too).
 */
static bool still_ours(struct hmm_device_core *c, const struct bpage *p, struct range **ret_r)
{
	struct range *r = reg_lookup(p->addr);
	uint64_t *w = r ? range_word(r, p->addr) : NULL;

	if (!w || (*w & PW_UNMAPPED)) {
		dev_free_slots(c, p->slot, 1, true);
		return false;
	}
	if (*w & PW_DISCARD) {
		dev_free_slots(c, p->slot, 1, true);
		pages_release(r, p->addr, 1);
		return false;
	}
	*ret_r = r;
	return true;
}

/* reg.lock held: commit the pages that made it, in runs. */
static void commit_to_device(struct batch *b, bool writable)
{
	for (size_t i = 0; i < b->n;) {
		struct range *r;
		size_t k = 1;

		if (!bpage_done(&b->p[i]) || !still_ours(b->c, &b->p[i], &r)) {
			i++;
			continue;
		}
		while (i + k < b->n && bpage_done(&b->p[i + k]) &&
		       b->p[i + k].addr == b->p[i].addr + k * PAGE_SIZE &&
		       b->p[i + k].slot == b->p[i].slot + k && b->p[i + k].addr < r->end &&
		       !(*range_word(r, b->p[i + k].addr) & (PW_DISCARD | PW_UNMAPPED)))
			k++;
		pages_commit_to_device(b->c, r, b->p[i].addr, k, b->p[i].slot, writable);
		i += k;
	}
}

/*
 * A duplicate whose copy on c is as good as a fresh one: c keeps clean
 * copies (a page that came home and was not written since), and this is
 * one. The eviction then writes nothing (batch pages marked clean).
 */
static bool clean_on(struct hmm_device_core *c, uint64_t w)
{
	return dev_keep_clean(c) && (w & PW_DUP) && pw_aux(w) == dev_loc(c);
}

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

		if (!w || pw_on(*w, c) || addr_set_has(&st->failed, p))
			continue;
		if (*w & PW_PIN_HOST) {
			res->enoent = true;
			continue;
		}
		if (*w & PW_EXCL)
			err = excl_revoke(p, w);
		else if ((*w & PW_DUP) && !clean_on(c, *w))
			err = dup_collapse(p, w);
		if (err)
			goto out;
		if (pw_loc(*w)) {
			elsewhere = true;
			continue;
		}
	}
	if (elsewhere)
		goto out;
	/* Claim runs of host pages, each with a run of slots; clean copies keep theirs. */
	for (uintptr_t p = a; p < b;) {
		uint64_t *w = reg_word(p, NULL);
		uintptr_t q = p;
		uint64_t first;
		size_t want, got;

		if (w && clean_on(c, *w) && !(*w & PW_PIN_HOST) && !addr_set_has(&st->failed, p)) {
			bt->p[bt->n++] = (struct bpage){ .addr = p, .slot = page_claim_clean(c, p, w),
							 .status = BP_DONE, .clean = true };
			p += PAGE_SIZE;
			continue;
		}
		while (q < b && (w = reg_word(q, NULL)) && !pw_loc(*w) &&
		       !(*w & (PW_PIN_HOST | PW_DUP)) && !addr_set_has(&st->failed, q))
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

			page_claim(reg_word(addr, NULL));
			bt->p[bt->n++] = (struct bpage){ .addr = addr, .slot = first + i,
							 .status = BP_PENDING };
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

/* Which claimed pages the CPU never populated: those copy as zeros, untouched. */
static void note_presence(struct batch *bt)
{
	uint64_t *pm = meta_alloc(bt->n * sizeof(*pm));

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
}

/* The copy path failed for these pages: their protection comes off, their claim ends. */
static void unprotect_failed(struct batch *bt, bool locked)
{
	for (size_t i = 0; i < bt->n; i++) {
		if (bt->p[i].status != -EIO)
			continue;
		uffd_protect(bt->p[i].addr, PAGE_SIZE, false, true);
		if (!locked)
			reg_lock();
		batch_release_page(bt->c, &bt->p[i], true);
		if (!locked)
			reg_unlock();
		bt->p[i].status = BP_PENDING;
	}
}

/* Zap the copied pages from the CPU's page table; the REMOVE events they raise are ours. */
static void zap_copied(struct batch *bt)
{
	batch_build_runs(bt, bpage_done, false);
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
}

static bool needs_copy(const struct bpage *p)
{
	return !p->clean;
}

/*
 * The copy path: write-protect, copy through the queue, zap. Pages of bt
 * are claimed. copy_start queues the copy (false: no page is left to copy);
 * copy_finish waits for it, and on return every page of bt is committed or
 * released. In between, the caller may prepare the next batch: the device
 * copies one batch while the CPU's side of the next is done.
 */
static bool copy_start(struct batch *bt, struct dma_job *job, struct mig_state *st,
		       struct mig_result *res)
{
	/* Isolate: a CPU write from now on faults, and aborts that page. */
	if (!batch_protect(bt, &st->failed, res))
		return false;
	note_presence(bt);
	batch_build_runs(bt, needs_copy, true);
	*job = (struct dma_job){ .op = DMA_COPY_IN, .runs = bt->runs, .nruns = bt->nruns };
	dmaq_submit(&bt->c->q, job);
	return true;
}

/*
 * The device's store is full (ENOSPC: a storage tier's file system): as
 * when its slots run out, the pages stay on the host. Said when it fills
 * up, not per page or per call, and at most once a minute: under a host
 * limit a store that is nearly full fills up again whenever pages leave it.
 */
static void note_full(struct hmm_device_core *c, bool full)
{
	static struct log_ratelimit rl = { .interval_ns = 60 * 1000000000ull };

	if (!full) {
		if (atomic_load_explicit(&c->full, memory_order_relaxed))
			atomic_store(&c->full, false);
		return;
	}
	if (!atomic_exchange(&c->full, true) && log_ratelimit_ok(&rl))
		log_warn("%s: no space left on its backing store; pages stay on the host",
			 c->dev->name);
}

static void copy_finish(struct batch *bt, struct dma_job *job, bool writable,
			struct mig_state *st, struct mig_result *res)
{
	struct hmm_device_core *c = bt->c;
	bool any_zap = false, nospace = false;

	dmaq_wait(&c->q, job);
	batch_scatter_status(bt);
	for (size_t i = 0; i < bt->n && !nospace; i++)
		nospace = bt->p[i].status == -ENOSPC;

	/* Commit step one: pages the CPU wrote, or whose copy failed, stay. */
	reg_lock();
	for (size_t i = 0; i < bt->n; i++) {
		struct bpage *p = &bt->p[i];
		struct range *r = reg_lookup(p->addr);
		uint64_t *w = r ? range_word(r, p->addr) : NULL;

		if (!w || (*w & (PW_UNMAPPED | PW_DISCARD | PW_ABORT))) {
			batch_release_page(c, p, true);
			p->status = BP_PENDING;
			continue;
		}
		if (p->status) {
			/* Pages after the one that hit ENOSPC were not tried: full too. */
			if (p->status == -ENOSPC || (nospace && p->status == BP_PENDING))
				res->enospc = true;
			else
				res->eio = true;
			STAT_ADD(migrations_failed, 1);
			addr_set_add(&st->failed, p->addr);
			p->status = -EIO; /* still claimed: its protection comes off below */
			continue;
		}
		page_mark_zapping(w);
		any_zap = true;
	}
	reg_unlock();
	if (nospace || any_zap)
		note_full(c, nospace);
	unprotect_failed(bt, false);
	if (!any_zap)
		return;
	zap_copied(bt);
	reg_lock();
	unprotect_failed(bt, true);
	commit_to_device(bt, writable);
	reg_unlock();
}

static void copy_to_device(struct batch *bt, bool writable, struct mig_state *st,
			   struct mig_result *res)
{
	struct dma_job job;

	if (copy_start(bt, &job, st, res))
		copy_finish(bt, &job, writable, st, res);
}

/*
 * UFFDIO_MOVE refuses (-EBUSY) a page that is not exclusively ours: shared
 * with a child after fork (even one that has exited), or pinned for DMA by
 * someone (O_DIRECT, RDMA). Breaking copy-on-write once tells them apart: a
 * write fault makes an unpinned page exclusive again; a pinned page refuses
 * a second time, and must not move at all (its pin would keep writing into
 * the old page).
 */
static void break_cow(const struct addr_set *pages, size_t from)
{
	for (size_t i = from; i < pages->n; i++)
		sys_madvise((void *)pages->v[i], PAGE_SIZE, MADV_POPULATE_WRITE);
}

/* reg.lock held: after a move, what each page that did not move needs. */
static bool sort_unmoved(struct batch *bt, struct mig_state *st, struct mig_result *res,
			 size_t *ret_ncopy)
{
	bool again = false;
	size_t ncopy = 0;

	for (size_t i = 0; i < bt->n; i++) {
		struct bpage *p = &bt->p[i];

		if (bpage_done(p))
			continue;
		if (p->status == -EINVAL) {
			bt->p[ncopy++] = *p; /* a mapping a page cannot move out of: copy */
			continue;
		}
		if (p->status == -EBUSY && !addr_set_has(&st->cowed, p->addr)) {
			addr_set_add(&st->cowed, p->addr);
			again = true;
		} else if (p->status == BP_PENDING || p->status == -EAGAIN) {
			again = true; /* not attempted, or an event was pending: next round */
		} else {
			if (p->status == -EBUSY) {
				res->enoent = true; /* pinned: a hole in the migration */
			} else if (p->status != -ENOENT) {
				res->eio = true;
				STAT_ADD(migrations_failed, 1);
			}
			addr_set_add(&st->failed, p->addr);
		}
		batch_release_page(bt->c, p, false);
	}
	*ret_ncopy = ncopy;
	return again;
}

/* Pages of a mapping with these flags can move into c's memory (else: the copy path). */
static bool moves_into(struct hmm_device_core *c, unsigned vflags)
{
	return dev_movable(c) && (vflags & VMA_WRITE) && !(vflags & VMA_EXEC);
}

/* A batch for memory pages move into (moves_into); those that refuse are copied. */
static int batch_to_private(struct hmm_device_core *c, uintptr_t a, uintptr_t b, unsigned vflags,
			    struct batch *bt, struct mig_state *st, struct mig_result *res)
{
	bool writable = vflags & VMA_WRITE;
	int err = collect_for_device(bt, a, b, true, st, res);
	size_t ncopy, cowed_before = st->cowed.n;
	bool again;

	if (err || !bt->n)
		return err;
	batch_build_runs(bt, NULL, false);
	batch_run(c, bt, DMA_MOVE_IN);
	reg_lock();
	commit_to_device(bt, writable);
	again = sort_unmoved(bt, st, res, &ncopy);
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
				addr_set_add(&st->failed, bt->p[i].addr);
				batch_release_page(c, &bt->p[i], false);
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
	batch_build_runs(bt, NULL, false);
	for (unsigned i = 0; i < bt->nruns; i++) {
		bt->runs[i].d.status = c->dev->ops->place(c->dev, (void *)bt->runs[i].addr,
							   bt->runs[i].d.npages, true);
		bt->runs[i].d.done = bt->runs[i].d.status ? 0 : bt->runs[i].d.npages;
	}
	batch_scatter_status(bt);
	reg_lock();
	commit_to_device(bt, vflags & VMA_WRITE);
	for (size_t i = 0; i < bt->n; i++) {
		if (!bpage_done(&bt->p[i])) {
			res->eio = true;
			addr_set_add(&st->failed, bt->p[i].addr);
			batch_release_page(c, &bt->p[i], false);
		}
	}
	reg_unlock();
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

/*
 * A piece that goes to dst by the copy path alone: two batches in turn,
 * the next one collected and queued before the last one is finished.
 */
static int pipeline_to_device(struct hmm_device_core *dst, const struct piece *pc,
			      struct mig_state *st, struct mig_result *res)
{
	size_t max = opt.dma_batch;
	struct batch bt[2] = { 0 };
	struct dma_job job[2];
	bool queued[2] = { false, false };
	unsigned cur = 0;
	int err = batch_init(&bt[0], dst, max);

	if (!err)
		err = batch_init(&bt[1], dst, max);
	for (uintptr_t a = pc->start; !err && a < pc->end;) {
		uintptr_t b = MIN(pc->end, a + max * PAGE_SIZE);

		err = collect_for_device(&bt[cur], a, b, false, st, res);
		if (!err && bt[cur].n)
			queued[cur] = copy_start(&bt[cur], &job[cur], st, res);
		cur ^= 1;
		if (queued[cur]) {
			copy_finish(&bt[cur], &job[cur], pc->flags & VMA_WRITE, st, res);
			queued[cur] = false;
		}
		if (err == -EAGAIN) {
			err = 0;
			continue;
		}
		if (res->enomem || res->enospc)
			break; /* the rest would not fit either */
		a = b;
	}
	cur ^= 1;
	if (queued[cur])
		copy_finish(&bt[cur], &job[cur], pc->flags & VMA_WRITE, st, res);
	batch_fini(&bt[0], max);
	batch_fini(&bt[1], max);
	return err;
}

/* The VMAs of [start, end); -EINVAL for a hole or an unreadable one. */
static int walk_pieces(uintptr_t start, uintptr_t end, struct pieces *ps)
{
	int err;

	ps->n = 0;
	err = vma_walk(start, end, collect_piece, ps);
	for (size_t i = 0; !err && i < ps->n; i++)
		if (ps->v[i].hole || !(ps->v[i].flags & VMA_READ))
			err = -EINVAL;
	return err;
}

static int for_each_batch(struct hmm_device_core *dst, const struct piece *pc,
			  struct mig_state *st, struct mig_result *res)
{
	size_t max = opt.dma_batch;
	struct home_set *hs = NULL;
	struct batch bt = { 0 };
	int err = 0;

	if (dst && !dev_coherent(dst) && !moves_into(dst, pc->flags))
		return pipeline_to_device(dst, pc, st, res);
	if (dst) {
		err = batch_init(&bt, dst, max);
	} else if (!(hs = home_set_new(max))) {
		return -ENOMEM;
	}
	for (uintptr_t a = pc->start; !err && a < pc->end;) {
		uintptr_t b = MIN(pc->end, a + max * PAGE_SIZE);

		if (!dst)
			err = home_batch(a, b, NULL, pc->flags, hs, res);
		else if (dev_coherent(dst))
			err = batch_to_coherent(dst, a, b, pc->flags, &bt, st, res);
		else
			err = batch_to_private(dst, a, b, pc->flags, &bt, st, res);
		if (err == -EAGAIN) {
			err = 0;
			continue;
		}
		if (res->enomem || res->enospc)
			break;
		a = b;
	}
	if (dst)
		batch_fini(&bt, max);
	else
		home_set_free(hs, max);
	return err;
}

/* Pages of [start, end) on dst afterwards; for the host, memory not managed counts. */
static size_t count_placed(uintptr_t start, uintptr_t end, struct hmm_device_core *dst)
{
	size_t n = 0;

	reg_lock();
	for (uintptr_t a = start; a < end; a += PAGE_SIZE) {
		uint64_t *w = reg_word(a, NULL);

		if (dst ? w && pw_on(*w, dst) : !w || !pw_loc(*w))
			n++;
	}
	reg_unlock();
	return n;
}

/* Private anonymous memory is adopted on the spot, armed when pages are to leave. */
static int adopt_pieces(struct pieces *ps, struct hmm_device_core *dst)
{
	int err = 0;

	handler_barrier();
	for (size_t i = 0; i < ps->n && !err; i++) {
		struct piece *pc = &ps->v[i];
		bool locked = false;

		if (!vma_private_anon(&(struct vma){ .flags = pc->flags }))
			continue;
		if (reg_foreign(pc->start, pc->end)) {
			pc->flags |= VMA_SHARED; /* not ours to move: a device's, or the runtime's */
			continue;
		}
		/* UFFDIO_MOVE refuses mlock'ed memory by itself; other paths ask. */
		if (dst && !moves_into(dst, pc->flags))
			err = vma_locked(pc->start, pc->end, &locked);
		if (locked) {
			pc->flags |= VMA_SHARED; /* not ours to move: mlock'ed */
			continue;
		}
		reg_lock();
		if (!err)
			err = dst ? reg_add(pc->start, pc->end, NULL) : reg_add_lazy(pc->start, pc->end);
		reg_unlock();
	}
	return err;
}

int mig_range(uintptr_t start, uintptr_t end, struct hmm_device_core *dst, struct mig_result *res)
{
	struct pieces ps = { 0 };
	struct mig_state st = { 0 };
	int err;

	memset(res, 0, sizeof(*res));
	err = walk_pieces(start, end, &ps);
	if (!err && dst) {
		bool replaced = false;

		for (size_t i = 0; i < ps.n; i++)
			replaced |= mig_replace_copied(ps.v[i].start, ps.v[i].end, ps.v[i].flags);
		if (replaced)
			err = walk_pieces(start, end, &ps);
	}
	if (!err)
		err = adopt_pieces(&ps, dst);
	for (size_t i = 0; i < ps.n && !err; i++) {
		struct piece *pc = &ps.v[i];

		if (!vma_private_anon(&(struct vma){ .flags = pc->flags })) {
			if (dst)
				res->enoent = true;
			continue;
		}
		err = for_each_batch(dst, pc, &st, res);
	}
	if (!err)
		res->placed = count_placed(start, end, dst);
	meta_free(ps.v, ps.cap * sizeof(*ps.v));
	addr_set_free(&st.failed);
	addr_set_free(&st.cowed);
	return err;
}
