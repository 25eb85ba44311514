// SPDX-License-Identifier: MIT
/*
 * Device-exclusive access (hmm_device_exclusive, the kernel's
 * make_device_exclusive): the page leaves the CPU's page table for the
 * holding area (state/holding.c), so any CPU access faults and revokes the
 * device's access, as the kernel's device-exclusive entries make it do.
 * Moving the page needs UFFDIO_MOVE; api.c refuses without it.
 */
#include <errno.h>

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

/* reg.lock held: move the pages of [start, end) into the slots; -EAGAIN: raced. */
static int take_pages(struct hmm_device_core *c, uintptr_t start, uintptr_t end,
		      const uint64_t *slots, size_t *used)
{
	for (uintptr_t p = start; p < end; p += PAGE_SIZE) {
		struct range *r;
		uint64_t *w = reg_word(p, &r);
		long n;

		if (!w || (*w & PW_BUSY) || (pw_loc(*w) && !acc_local(c, *w, true)) ||
		    ((*w & (PW_EXCL | PW_DUP)) && pw_aux(*w) != dev_loc(c)))
			return -EAGAIN; /* raced: another round */
		if (acc_local(c, *w, true)) {
			/* already out of the CPU's reach: held by this device */
			mirror_lock(&c->mirror);
			mirror_set(&c->mirror, p, mirror_get(&c->mirror, p) | MIR_ATOMIC);
			mirror_unlock(&c->mirror);
			continue;
		}
		n = uffd_move((uintptr_t)holding_addr(slots[*used]), p, PAGE_SIZE,
			      UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES | UFFDIO_MOVE_MODE_DONTWAKE);
		if (n < 0)
			return n == -EAGAIN ? -EAGAIN : (n == -EINVAL ? -EPERM : (int)n);
		page_grant_exclusive(c, r, p, slots[(*used)++]);
	}
	return 0;
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
	/* Slots first: emptying them may raise events, never under reg.lock. */
	while (!err && nslots < npages)
		if (!(err = holding_alloc(&slots[nslots])))
			nslots++;
	while (!err) {
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
		reg_lock();
		err = take_pages(c, start, end, slots, &used);
		reg_unlock();
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
	for (size_t i = used; i < nslots; i++)
		holding_free(slots[i], false);
	meta_free(slots, npages * sizeof(*slots));
	return err;
}
