// SPDX-License-Identifier: MIT
/*
 * Private file mappings, as the kernel's migrate_file_private expects: the
 * pages the CPU wrote are anonymous copies, which the kernel migrates like
 * any anonymous page, while the file's own pages stay (holes in the
 * migration). uhmm manages anonymous memory only, so a run of such copies
 * is replaced by managed anonymous memory with the same bytes, atomically
 * for the program's threads (kernel/replace.c: the old pages held in a
 * pipe, one mremap over them, the new pages claimed until filled), and
 * then migrates as the rest. The file's pages keep reading the file.
 */
#include <errno.h>
#include <string.h>

#include "engine.h"

#define FILL_PAGES 64ul

/* reg.lock held: claims on [s, e) end, unfilled (those pages read as zero). */
static void release_claims(uintptr_t s, uintptr_t e)
{
	for (uintptr_t a = s; a < e; a += PAGE_SIZE) {
		struct range *r;
		uint64_t *w = reg_word(a, &r);

		if (w && (*w & PW_BUSY))
			pages_release(r, a, 1);
	}
}

/*
 * The old bytes of [a, a + n pages) go in where the pages are still claimed,
 * and the claims end: a fault parked there runs on. A page unmapped since
 * is gone; one discarded since reads as zero, as it would have.
 */
static void fill_claimed(uintptr_t a, size_t n, const char *bytes)
{
	size_t i = 0;

	reg_lock();
	while (i < n) {
		uintptr_t p = a + i * PAGE_SIZE;
		struct range *r;
		uint64_t *w = reg_word(p, &r);
		size_t k = 1;
		long done;

		if (!w || !(*w & PW_BUSY) || (*w & PW_DISCARD)) {
			if (w && (*w & PW_BUSY))
				pages_release(r, p, 1);
			i++;
			continue;
		}
		while (i + k < n && p + k * PAGE_SIZE < r->end &&
		       (*range_word(r, p + k * PAGE_SIZE) & (PW_BUSY | PW_DISCARD)) == PW_BUSY)
			k++;
		done = uffd_copy(p, bytes + i * PAGE_SIZE, k * PAGE_SIZE, 0);
		if (done == -EAGAIN) {
			/* A mapping change is pending: its event needs reg.lock. */
			reg_unlock();
			nap();
			reg_lock();
			continue;
		}
		if (done < 0)
			log_err("cannot fill 0x%lx replacing its file mapping: %ld; it reads as zeros",
				(unsigned long)p, done);
		else
			k = (size_t)done / PAGE_SIZE;
		pages_release(r, p, k);
		i += k;
	}
	reg_unlock();
}

/*
 * [s, e) of a private file mapping holds anonymous copies only: put managed
 * anonymous memory with the same bytes in its place, atomically for the
 * program's threads (replace.c). Returns the bytes replaced from s, or -errno
 * with nothing changed.
 */
static long replace_copies(uintptr_t s, uintptr_t e, unsigned vflags, char *bounce)
{
	struct replace rp;
	uintptr_t end;
	int err = replace_begin(&rp, s, e - s, vflags);

	if (err)
		return err;
	end = s + rp.len;
	err = uffd_register((uintptr_t)rp.stage, rp.len,
			    UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP);
	if (!err) {
		/* Claimed before they exist: the faults after the mremap park. */
		reg_lock();
		err = reg_add_ahead(s, end);
		for (uintptr_t a = s; !err && a < end; a += PAGE_SIZE)
			page_claim(reg_word(a, NULL));
		reg_unlock();
	}
	if (!err)
		err = replace_commit(&rp);
	if (err) {
		reg_lock();
		release_claims(s, end);
		reg_mark_unmapped(s, end);
		reg_unlock();
		replace_end(&rp);
		return err;
	}
	for (uintptr_t a = s; a < end; a += FILL_PAGES * PAGE_SIZE) {
		size_t n = MIN(FILL_PAGES, (end - a) / PAGE_SIZE);

		err = replace_read(&rp, bounce, n * PAGE_SIZE);
		if (err) {
			log_err("lost the contents of 0x%lx replacing its file mapping: %d",
				(unsigned long)a, err);
			memset(bounce, 0, n * PAGE_SIZE);
		}
		fill_claimed(a, n, bounce);
	}
	reg_lock();
	reg_arm(s, end);
	reg_unlock();
	replace_end(&rp);
	return (long)rp.len;
}

struct copies {
	unsigned vflags;
	char *bounce;
	bool replaced;
};

static int replace_run(uintptr_t s, uintptr_t e, void *arg)
{
	struct copies *cp = arg;

	while (s < e) {
		long n = replace_copies(s, e, cp->vflags, cp->bounce);

		if (n < 0)
			return 0; /* a hole in the migration, as the file's own pages are */
		cp->replaced = true;
		s += (uintptr_t)n;
	}
	return 0;
}


/*
 * A private file mapping: the pages the CPU copied on write become managed
 * anonymous memory, as the kernel migrates them; the file's own pages stay,
 * holes in the migration. Returns whether anything was replaced.
 */
bool mig_replace_copied(uintptr_t start, uintptr_t end, unsigned vflags)
{
	struct copies cp = { .vflags = vflags };
	bool locked = false;

	/* Private file mappings only; a shared one's pages are the file's. */
	if (!(vflags & VMA_FILE) || (vflags & (VMA_SHARED | VMA_HUGETLB)))
		return false;
	if (!reg.registered || !uffd.kernel_faults || reg_foreign(start, end) ||
	    vma_locked(start, end, &locked) || locked)
		return false;
	cp.bounce = meta_alloc(FILL_PAGES * PAGE_SIZE);
	if (!cp.bounce)
		return false;
	replace_copied_runs(start, end, replace_run, &cp);
	meta_free(cp.bounce, FILL_PAGES * PAGE_SIZE);
	return cp.replaced;
}

