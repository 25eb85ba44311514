// SPDX-License-Identifier: MIT
/*
 * What the CPU's page table and our registry say about each page, without
 * faulting anything in: hmm_device_snapshot (the byte values of the kernel's
 * test_hmm, so its tests port directly) and hmm_residency.
 */
#include <errno.h>
#include <string.h>

#include "engine.h"

#define VF_HOLE 0x80      /* per-page VMA flags byte: no usable mapping */
#define VF_GIANT 0x40     /* part of a 1 GiB mapping */

struct walk {
	uintptr_t start;
	uint8_t *vf;
};

static int note_vma(const struct vma *v, uintptr_t s, uintptr_t e, void *arg)
{
	struct walk *wk = arg;
	uint8_t f = VF_HOLE;

	if (v) {
		f = (uint8_t)(v->flags & 0x3f);
		if (v->page_size >= (1ull << 30))
			f |= VF_GIANT;
	}
	memset(wk->vf + ((s - wk->start) >> PAGE_SHIFT), f, (e - s) >> PAGE_SHIFT);
	return 0;
}

/* What the CPU's page table says about a range: VMA flags and pagemap entries. */
struct view {
	uint8_t *vf;
	uint64_t *pm;
	size_t npages;
};

static void view_free(struct view *v)
{
	meta_free(v->vf, v->npages);
	meta_free(v->pm, v->npages * sizeof(*v->pm));
}

static int view_load(struct view *v, uintptr_t start, size_t npages)
{
	struct walk wk = { start, NULL };
	int err;

	v->npages = npages;
	v->vf = meta_alloc(npages);
	v->pm = meta_alloc(npages * sizeof(*v->pm));
	if (!v->vf || !v->pm) {
		view_free(v);
		return -ENOMEM;
	}
	wk.vf = v->vf;
	err = vma_walk(start, start + npages * PAGE_SIZE, note_vma, &wk);
	if (!err)
		err = pagemap_read(start, npages, v->pm);
	if (err)
		view_free(v);
	return err;
}

/* Whether the CPU maps a present host page writable, as its PTE would say. */
static bool pte_writable(uint8_t vf, uint64_t pm)
{
	if (!(vf & VMA_WRITE) || (pm & PM_UFFD_WP))
		return false;
	if (vf & VMA_SHARED)
		return true;
	/* private: writable once copied-on-write into an anonymous page of ours */
	return (pm & PM_EXCLUSIVE) && !(pm & PM_FILE_OR_SHARED);
}

static uint8_t perm(bool writable)
{
	return writable ? HMM_SNAP_WRITE : HMM_SNAP_READ;
}

int snap_take(struct hmm_device_core *c, uintptr_t start, size_t npages, uint8_t *out)
{
	uint8_t *cats = meta_alloc(npages);
	struct view v;
	uint8_t *vf;
	uint64_t *pm;
	int err = cats ? view_load(&v, start, npages) : -ENOMEM;

	if (err) {
		meta_free(cats, npages);
		return err;
	}
	vf = v.vf;
	pm = v.pm;
	if (pagemap_categories(start, npages, cats))
		memset(cats, 0, npages);
	reg_lock();
	for (size_t i = 0; i < npages; i++) {
		uintptr_t a = start + i * PAGE_SIZE;
		uint64_t *w = reg_word(a, NULL);
		bool vma_writable = vf[i] & VMA_WRITE;
		uint8_t b;

		if ((vf[i] & VF_HOLE) || !(vf[i] & VMA_READ)) {
			out[i] = HMM_SNAP_ERROR;
			continue;
		}
		if (w && pw_loc(*w)) {
			struct hmm_device_core *d = dev_by_loc(pw_loc(*w));

			if (d == c)
				b = (dev_coherent(d) ? HMM_SNAP_DEV_COHERENT : HMM_SNAP_DEV_PRIVATE) |
				    perm(vma_writable);
			else
				b = dev_coherent(d) ? HMM_SNAP_DEV_COHERENT_REMOTE | perm(vma_writable)
						    : HMM_SNAP_NONE;
			out[i] = b;
			continue;
		}
		if (w && (*w & PW_EXCL)) {
			out[i] = perm(vma_writable); /* system memory, held for a device */
			continue;
		}
		if (!(pm[i] & PM_PRESENT)) {
			out[i] = HMM_SNAP_NONE;
			continue;
		}
		if (cats[i] & PAGE_IS_PFNZERO) {
			out[i] = HMM_SNAP_ZERO | HMM_SNAP_READ;
			continue;
		}
		b = perm(pte_writable(vf[i], pm[i]));
		if (cats[i] & PAGE_IS_HUGE)
			b |= (vf[i] & VF_GIANT) ? HMM_SNAP_GIANT : HMM_SNAP_HUGE;
		out[i] = b;
	}
	reg_unlock();
	view_free(&v);
	meta_free(cats, npages);
	return 0;
}

int snap_residency(uintptr_t start, size_t npages, int *out)
{
	struct view v;
	int err = view_load(&v, start, npages);

	if (err)
		return err;
	reg_lock();
	for (size_t i = 0; i < npages; i++) {
		uint64_t *w = reg_word(start + i * PAGE_SIZE, NULL);

		if (v.vf[i] & VF_HOLE)
			out[i] = HMM_LOC_UNMAPPED;
		else if (w && pw_loc(*w))
			out[i] = (int)pw_loc(*w) - 1;
		else if ((v.pm[i] & (PM_PRESENT | PM_SWAP)) || (w && (*w & PW_EXCL)))
			out[i] = HMM_LOC_HOST;
		else
			out[i] = HMM_LOC_NONE;
	}
	reg_unlock();
	view_free(&v);
	return 0;
}
