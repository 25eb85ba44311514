// SPDX-License-Identifier: MIT
/*
 * Read-only duplicates (READ_MOSTLY advice, cudaMemAdviseSetReadMostly): a
 * device that reads such a page gets a copy in its own memory while the
 * host keeps its copy, write-protected, so that a CPU write collapses the
 * two before it lands. The copy is a one-way copy-path migration that ends
 * in DUP rather than DEVICE (pagestate.c).
 */
#include <errno.h>

#include "engine.h"

int dup_make(struct hmm_device_core *c, uintptr_t start, uintptr_t end)
{
	struct addr_set failed = { 0 };
	struct mig_result res = { 0 };
	size_t max = (end - start) / PAGE_SIZE;
	struct batch bt;
	int err = batch_init(&bt, c, max);

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
		page_claim(w);
		bt.p[bt.n++] = (struct bpage){ .addr = p, .slot = slot, .status = BP_PENDING,
					       .present = true };
	}
	reg_unlock();
	/* The host copy is write-protected first: a CPU write now voids the copy. */
	if (!bt.n || !batch_protect(&bt, &failed, &res))
		goto out;
	batch_build_runs(&bt, NULL, false);
	batch_run(c, &bt, DMA_COPY_IN);
	reg_lock();
	for (size_t i = 0; i < bt.n; i++) {
		struct bpage *p = &bt.p[i];
		struct range *r = reg_lookup(p->addr);
		uint64_t *w = r ? range_word(r, p->addr) : NULL;

		if (!w || (*w & PW_UNMAPPED)) {
			dev_free_slots(c, p->slot, 1, true);
			continue;
		}
		if (!bpage_done(p) || (*w & (PW_ABORT | PW_DISCARD))) {
			/* The CPU wrote (its fault lifted the protection already), or the copy failed. */
			if (!(*w & PW_ABORT))
				uffd_protect(p->addr, PAGE_SIZE, false, true);
			batch_release_page(c, p, true);
			continue;
		}
		page_commit_dup(c, r, p->addr, p->slot);
	}
	reg_unlock();
out:
	addr_set_free(&failed);
	batch_fini(&bt, max);
	return err;
}

int dup_collapse(uintptr_t addr, uint64_t *w)
{
	page_collapse_dup(addr, w);
	return uffd_protect(addr, PAGE_SIZE, false, true);
}
