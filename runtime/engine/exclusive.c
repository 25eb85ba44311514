// SPDX-License-Identifier: MIT
/*
 * Device-exclusive access (hmm_device_exclusive, the kernel's
 * make_device_exclusive): the page leaves the CPU's page table for the
 * holding area (state/holding.c), so any CPU access faults and revokes the
 * device's access, as the kernel's device-exclusive entries make it do.
 * The page moves there with UFFDIO_MOVE (6.8); before it, as a migration's
 * copy path does, it is write-protected, copied, and zapped.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "engine.h"

int excl_revoke(uintptr_t addr, uint64_t *w)
{
	struct hmm_device_core *d = dev_by_loc(pw_aux(*w));
	uintptr_t src = (uintptr_t)holding_addr(pw_slot(*w));
	bool stale = false;
	long n;

	/* The device lets go first; one still using the page makes us wait. */
	if (d) {
		mirror_lock(&d->mirror);
		if (mirror_pinned(&d->mirror, addr, addr + PAGE_SIZE)) {
			mirror_unlock(&d->mirror);
			return -EBUSY;
		}
		mirror_invalidate(&d->mirror, addr, addr + PAGE_SIZE);
		mirror_unlock(&d->mirror);
	}
	n = uffd.can_move ? uffd_move(addr, src, PAGE_SIZE, 0) : -EINVAL;
	if (n == -EINVAL) {
		n = uffd_copy(addr, (void *)src, PAGE_SIZE, 0);
		stale = true;
	}
	if (n == -EAGAIN)
		return -EAGAIN;
	if (n < 0 && n != -ENOENT) {
		log_err("cannot end exclusive access to 0x%lx: %ld", (unsigned long)addr, n);
		return (int)n;
	}
	page_end_exclusive(w, stale);
	return 0;
}

int unshare_pages(uintptr_t a, uintptr_t b, struct hmm_device_core *only)
{
	for (uintptr_t p = a; p < b; p += PAGE_SIZE) {
		uint64_t *w = reg_word(p, NULL);
		int err;

		if (!w || !(*w & (PW_EXCL | PW_DUP)))
			continue;
		if (only && pw_aux(*w) != dev_loc(only))
			continue;
		err = (*w & PW_EXCL) ? excl_revoke(p, w) : dup_collapse(p, w);
		if (err == -EBUSY || err == -EAGAIN)
			return -EAGAIN;
	}
	return 0;
}

static int adopt_piece(const struct vma *v, uintptr_t s, uintptr_t e, void *arg)
{
	int err;

	(void)arg;
	if (!v || !vma_private_anon(v))
		return -EINVAL;
	reg_lock();
	err = reg_add(s, e, NULL);  /* arms a lazy range too */
	reg_unlock();
	return err;
}

/*
 * reg.lock held: may page p go to c now? 0: take it; 1: c holds it already
 * (its mirror entry now says atomic); -EAGAIN: raced, another round.
 */
static int check_page(struct hmm_device_core *c, uintptr_t p, const uint64_t *w)
{
	if (w && (*w & PW_UNMAPPED))
		return -ENOENT;
	if (!w || (*w & PW_BUSY) || (pw_loc(*w) && !acc_local(c, *w, true)) ||
	    ((*w & (PW_EXCL | PW_DUP)) && pw_aux(*w) != dev_loc(c)))
		return -EAGAIN;
	if (acc_local(c, *w, true)) {
		/* already out of the CPU's reach: held by this device */
		mirror_lock(&c->mirror);
		mirror_set(&c->mirror, p, mirror_get(&c->mirror, p) | MIR_ATOMIC);
		mirror_unlock(&c->mirror);
		return 1;
	}
	return (*w & PW_DUP) ? -EAGAIN : 0; /* c's read-only copy: a write fault first */
}

/* reg.lock held: move the pages of [start, end) into the slots; -EAGAIN: raced. */
static int move_pages(struct hmm_device_core *c, uintptr_t start, uintptr_t end,
		      uint64_t *slots, size_t *used)
{
	for (uintptr_t p = start; p < end; p += PAGE_SIZE) {
		struct range *r;
		uint64_t *w = reg_word(p, &r);
		int ok = check_page(c, p, w);
		long n;

		if (ok < 0)
			return ok;
		if (ok)
			continue;
		n = uffd_move((uintptr_t)holding_addr(slots[*used]), p, PAGE_SIZE,
			      UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES | UFFDIO_MOVE_MODE_DONTWAKE);
		if (n < 0)
			return n == -EAGAIN ? -EAGAIN : (n == -EINVAL ? -EPERM : (int)n);
		page_grant_exclusive(c, r, p, slots[(*used)++]);
	}
	return 0;
}

/* A page the copy path claimed, the slot its copy went to, and how it fares. */
struct taken {
	uintptr_t addr;
	uint64_t slot;
	int err;        /* 0, or why it stays the CPU's */
	bool claimed;   /* the claim lasts */
};

/* Claim the pages of [start, end) that c does not hold yet; -EAGAIN: raced. */
static int claim_pages(struct hmm_device_core *c, uintptr_t start, uintptr_t end,
		       const uint64_t *slots, struct taken *t, size_t *ret_n)
{
	size_t n = 0;
	int err = 0;

	reg_lock();
	for (uintptr_t p = start; p < end && !err; p += PAGE_SIZE) {
		uint64_t *w = reg_word(p, NULL);
		int ok = check_page(c, p, w);

		if (ok < 0)
			err = ok;
		else if (!ok) {
			page_claim(w);
			t[n] = (struct taken){ .addr = p, .slot = slots[n], .claimed = true };
			n++;
		}
	}
	if (err) {
		for (size_t i = 0; i < n; i++)
			pages_release(reg_lookup(t[i].addr), t[i].addr, 1);
		n = 0;
	}
	reg_unlock();
	*ret_n = n;
	return err;
}

/* Each run of claimed pages write-protected, or zapped: what failed stays. */
static void for_runs(struct taken *t, size_t n, int (*fn)(uintptr_t s, size_t len))
{
	for (size_t i = 0, j; i < n; i = j) {
		int err;

		j = i + 1;
		if (t[i].err)
			continue;
		while (j < n && t[j].addr == t[j - 1].addr + PAGE_SIZE && !t[j].err)
			j++;
		err = fn(t[i].addr, (j - i) * PAGE_SIZE);
		for (size_t k = i; err && k < j; k++)
			t[k].err = err;
	}
}

static int protect_run(uintptr_t s, size_t len)
{
	int err;

	while ((err = uffd_protect(s, len, true, false)) == -EAGAIN)
		nap();
	return err;
}

/* The REMOVE events this zap raises are ours, not a discard by the application. */
static int zap_run(uintptr_t s, size_t len)
{
	int err;

	handler_own_zap(s, s + len, true);
	err = sys_madvise((void *)s, len, MADV_DONTNEED);
	if (!err)
		handler_barrier();
	handler_own_zap(s, s + len, false);
	return err;
}

/*
 * reg.lock held: the claim of t ends here unless it goes on to be zapped
 * (to_zap) or granted. A page the CPU wrote, discarded or unmapped meanwhile
 * stays the CPU's, intact; one whose zap failed gets its protection back off.
 */
static void settle(struct hmm_device_core *c, struct taken *t, bool to_zap)
{
	struct range *r;
	uint64_t *w = reg_word(t->addr, &r);

	if (!t->claimed)
		return;
	if (!w || (*w & PW_UNMAPPED)) {
		t->err = -ENOENT;    /* the unmap ended the claim */
		t->claimed = false;
		return;
	}
	if (!t->err && (*w & (PW_ABORT | PW_DISCARD)))
		t->err = -EAGAIN;
	if (t->err) {
		if (!(*w & (PW_ABORT | PW_DISCARD)))
			uffd_protect(t->addr, PAGE_SIZE, false, true);
		pages_release(r, t->addr, 1);
		t->claimed = false;
	} else if (to_zap) {
		page_mark_zapping(w);
	} else {
		pages_release(r, t->addr, 1);
		page_grant_exclusive(c, r, t->addr, t->slot);
		t->claimed = false;
	}
}

/*
 * Without UFFDIO_MOVE: claim, write-protect, copy into the holding area, zap.
 * A CPU write before the zap aborts its page (another round); an access after
 * it waits for the claim to end, and then revokes the device's access. The
 * copy faults as a runtime thread: a page discarded under it reads as zeros
 * instead of waiting for a claim that this very thread holds.
 */
static int copy_pages(struct hmm_device_core *c, uintptr_t start, uintptr_t end,
		      uint64_t *slots, size_t *used)
{
	size_t npages = (end - start) / PAGE_SIZE, n, granted = 0;
	struct taken *t = meta_alloc(npages * sizeof(*t));
	int err;

	if (!t)
		return -ENOMEM;
	err = claim_pages(c, start, end, slots + *used, t, &n);
	if (err || !n)
		goto out;
	for_runs(t, n, protect_run);
	thread_enter_internal();
	for (size_t i = 0; i < n; i++)
		if (!t[i].err)
			memcpy(holding_addr(t[i].slot), (void *)t[i].addr, PAGE_SIZE);
	thread_leave_internal();
	reg_lock();
	for (size_t i = 0; i < n; i++)
		settle(c, &t[i], true);
	reg_unlock();
	for_runs(t, n, zap_run);
	reg_lock();
	for (size_t i = 0; i < n; i++) {
		settle(c, &t[i], false);
		if (t[i].err) {
			err = err ? err : t[i].err == -ENOENT ? -ENOENT : -EAGAIN;
			continue;
		}
		/* Granted slots go to the front: the rest stay for another round. */
		slots[*used + i] = slots[*used + granted];
		slots[*used + granted++] = t[i].slot;
	}
	reg_unlock();
	*used += granted;
out:
	meta_free(t, npages * sizeof(*t));
	return err;
}

int excl_grant(struct hmm_device_core *c, uintptr_t start, uintptr_t end, struct hmm_access *ret)
{
	size_t npages = (end - start) / PAGE_SIZE;
	uint64_t *slots = meta_alloc(npages * sizeof(*slots));
	uint64_t deadline = now_ns() + (uint64_t)opt.retry_ms * 1000000;
	size_t nslots = 0, used = 0;
	uint64_t faults = 0;
	int err;

	if (!slots)
		return -ENOMEM;
	err = holding_reserve();
	if (!err) {
		handler_barrier();
		err = vma_walk(start, end, adopt_piece, NULL);
	}
	while (!err) {
		/*
		 * A free slot for every page, before reg.lock (emptying stale slots
		 * may raise events). Granted slots are their pages' now: a page the
		 * CPU took back since gave its slot back, and needs a new one.
		 */
		memmove(slots, slots + used, (nslots - used) * sizeof(*slots));
		nslots -= used;
		used = 0;
		while (!err && nslots < npages)
			if (!(err = holding_alloc(&slots[nslots])))
				nslots++;
		if (err)
			break;
		/* Exclusive access is to system memory: pages in coherent memory (or
		 * private to another device) come home first. */
		for (int i = 0; i < MAX_DEVICES; i++) {
			struct hmm_device_core *d = dev_table[i];
			struct mig_result res;

			if (d && (d != c || dev_coherent(d)))
				mig_home(start, end, d, &res);
		}
		if (acc_first_unmapped(c, start, end, MIR_READ | MIR_WRITE) < end) {
			err = acc_fault_round(c, start, end, true, false);
			if (err)
				break;
			faults++;
		}
		if (uffd.can_move) {
			reg_lock();
			err = move_pages(c, start, end, slots, &used);
			reg_unlock();
		} else {
			err = copy_pages(c, start, end, slots, &used);
		}
		if (err != -EAGAIN)
			break;
		if (now_ns() >= deadline) {
			err = -EBUSY;
			break;
		}
		err = 0;
		nap();
	}
	if (!err) {
		ret->pages = npages;
		ret->faults = faults;
	}
	/* Unused slots are clean after moves; the copy path may have written them. */
	for (size_t i = used; i < nslots; i++)
		holding_free(slots[i], !uffd.can_move);
	meta_free(slots, npages * sizeof(*slots));
	return err;
}
