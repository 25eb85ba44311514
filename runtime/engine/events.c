// SPDX-License-Identifier: MIT
/*
 * The CPU's mapping of managed memory changed behind the runtime's back or
 * in front of it: userfaultfd's UNMAP, REMOVE and REMAP events, on the
 * fault thread. Device copies of emptied pages are dropped (the memory reads
 * as zero now); page states follow a moved mapping to its new address.
 */
#include "engine.h"

/*
 * The CPU mapping of [start, end) was unmapped, or emptied by madvise: device
 * copies are dropped (the memory reads as zero now). A page a migration owns
 * keeps its slot until the owner commits and finds the page gone (a hole) or
 * discarded (PW_DISCARD); the owner frees what its own job allocated.
 */
void event_discard(uintptr_t start, uintptr_t end, bool unmapped)
{
	for (size_t i = 0; i < reg.n; i++) {
		struct range *r = reg.v[i];

		if (r->end <= start)
			continue;
		if (r->start >= end)
			break;
		for (uintptr_t p = MAX(start, r->start); p < MIN(end, r->end); p += PAGE_SIZE) {
			uint64_t *w = range_word(r, p);

			if (*w & PW_UNMAPPED)
				continue;
			if (*w & PW_BUSY)
				page_mark_discarded(w);
			else
				page_drop(p, w);
		}
	}
	if (unmapped)
		reg_mark_unmapped(start, end);
}

/* mremap moved [from, from + len) to "to": the page states move with it. */
void event_remapped(uintptr_t from, uintptr_t to, size_t len)
{
	size_t npages = len / PAGE_SIZE;
	struct attr *attrs = NULL;
	unsigned nattrs = 0;
	uint64_t *words;
	struct vma v;

	if (!reg_overlaps(from, from + len))
		return;
	words = meta_alloc(npages * sizeof(*words));
	if (!words) {
		log_err("out of memory tracking mremap of 0x%lx; its device pages are lost",
			(unsigned long)from);
		event_discard(from, from + len, true);
		return;
	}
	for (size_t i = 0; i < npages; i++) {
		struct range *r;
		uint64_t *w = reg_word(from + i * PAGE_SIZE, &r);

		words[i] = PW_UNMAPPED;
		if (!w)
			continue;
		if (!attrs && r->nattrs)
			attr_copy_out(r, from, from + len, &attrs, &nattrs);
		/* Only a raw mremap(2) races a migration: the wrapper fences. */
		if (*w & PW_BUSY)
			log_err("mremap of 0x%lx raced a migration; that page now reads as zero",
				(unsigned long)(from + i * PAGE_SIZE));
		words[i] = page_move_out(w);
	}
	/* MREMAP_DONTUNMAP leaves the old range mapped, registered and empty. */
	if (vma_query(from, &v))
		reg_mark_unmapped(from, from + len);
	for (unsigned i = 0; i < nattrs; i++) {
		attrs[i].start = attrs[i].start - from + to;
		attrs[i].end = attrs[i].end - from + to;
	}
	for (size_t i = 0; i < npages;) {
		size_t n = 0;

		while (i + n < npages && words[i + n] != PW_UNMAPPED)
			n++;
		if (n && reg_insert_words(to + i * PAGE_SIZE, words + i, n, attrs, nattrs))
			log_err("out of memory tracking mremap to 0x%lx; its device pages are lost",
				(unsigned long)(to + i * PAGE_SIZE));
		i += n ? n : 1;
	}
	/*
	 * A raw mremap(2) returns once its events are read, not applied: the
	 * program may have unmapped "to" already (its UNMAP event, behind this
	 * one, finds nothing registered). Words no page there adopted give
	 * their device memory back; one holding a slot is unique, so a page
	 * that adopted it holds the same word.
	 */
	for (size_t i = 0; i < npages; i++) {
		uintptr_t a = to + i * PAGE_SIZE;
		uint64_t *w;

		if (words[i] == PW_UNMAPPED || !pw_off_host(words[i]))
			continue;
		w = reg_word(a, NULL);
		if (!w || *w != words[i])
			page_drop_moved(a, words[i]);
	}
	meta_free(attrs, nattrs * sizeof(*attrs));
	meta_free(words, npages * sizeof(*words));
}
