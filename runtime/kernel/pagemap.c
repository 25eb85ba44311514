// SPDX-License-Identifier: MIT
/*
 * Page state as the CPU's page table has it, read without faulting anything
 * in: /proc/self/pagemap entries, and PAGEMAP_SCAN (6.7) categories (present,
 * the shared zero page, huge) where the kernel has it. Without it (Debian
 * 12's 6.1) the categories come from pagemap entries: the zero page is told
 * by its frame number, which pagemap shows only to CAP_SYS_ADMIN, and huge
 * pages are not told at all.
 */
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernel.h"

static _Atomic int pagemap_fd = -1;
static _Atomic int pagemap_scan = -1;   /* -1 unknown, 0 no, 1 yes */
#define ZERO_PFN_HIDDEN UINT64_MAX       /* frame numbers read 0 */
#define ZERO_PFN_NONE (UINT64_MAX - 1)   /* read faults here map no zero page */
static _Atomic uint64_t zero_pfn;        /* 0 unknown, else a frame or one of the above */

void pagemap_reset(void)
{
	proc_self_close(&pagemap_fd);
}

int pagemap_read(uintptr_t start, size_t npages, uint64_t *ret)
{
	int fd = proc_self_fd(&pagemap_fd, "/proc/self/pagemap");
	size_t want = npages * sizeof(uint64_t);
	size_t got = 0;

	if (fd < 0)
		return fd;
	while (got < want) {
		ssize_t n = pread(fd, (char *)ret + got, want - got,
				  (off_t)((start >> PAGE_SHIFT) * sizeof(uint64_t) + got));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (!n)
			return -EIO;
		got += (size_t)n;
	}
	return 0;
}

/*
 * The shared zero page's frame number, learned once from two pages of our
 * own that were read and never written: both map it, so both show the same
 * frame. Some kernels map no zero page on a read fault (it allocates a
 * page; UFFDIO_ZEROPAGE still maps the zero page): then the frames differ
 * and the zero page's frame stays unknown, rather than wrongly taken to be
 * that of a page that is about to be freed and reused. Frame numbers read 0
 * without CAP_SYS_ADMIN: hidden.
 */
static uint64_t learn_zero_pfn(void)
{
	uint64_t pfn = atomic_load(&zero_pfn), e[2];
	volatile char *p;

	if (pfn)
		return pfn;
	p = sys_mmap(NULL, 2 * PAGE_SIZE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return ZERO_PFN_HIDDEN;    /* no memory now: ask again next time */
	(void)p[0];
	(void)p[PAGE_SIZE];
	if (pagemap_read((uintptr_t)p, 2, e) || !(e[0] & e[1] & PM_PRESENT))
		pfn = ZERO_PFN_HIDDEN;
	else if ((e[0] & PM_PFN_MASK) != (e[1] & PM_PFN_MASK))
		pfn = ZERO_PFN_NONE;
	else if (!(e[0] & PM_PFN_MASK))
		pfn = ZERO_PFN_HIDDEN;
	else
		pfn = e[0] & PM_PFN_MASK;
	sys_munmap((void *)p, 2 * PAGE_SIZE);
	atomic_store(&zero_pfn, pfn);
	return pfn;
}

static bool pm_is_zero(uint64_t e, uint64_t zpfn)
{
	return (e & PM_PRESENT) && zpfn < ZERO_PFN_NONE && (e & PM_PFN_MASK) == zpfn;
}

bool pagemap_knows_zero(void)
{
	return pagemap_have_scan() || learn_zero_pfn() < ZERO_PFN_NONE;
}

/* Without PAGEMAP_SCAN: the categories pagemap entries can tell. */
static int categories_slow(uintptr_t start, size_t npages, uint8_t *ret)
{
	uint64_t zpfn = learn_zero_pfn();
	uint64_t pm[512];

	for (size_t done = 0; done < npages;) {
		size_t n = MIN(npages - done, ARRAY_SIZE(pm));
		int err = pagemap_read(start + done * PAGE_SIZE, n, pm);

		if (err)
			return err;
		for (size_t i = 0; i < n; i++)
			ret[done + i] = (uint8_t)(((pm[i] & PM_PRESENT) ? PAGE_IS_PRESENT : 0) |
						  ((pm[i] & PM_SWAP) ? PAGE_IS_SWAPPED : 0) |
						  ((pm[i] & PM_FILE_OR_SHARED) ? PAGE_IS_FILE : 0) |
						  (pm_is_zero(pm[i], zpfn) ? PAGE_IS_PFNZERO : 0));
		done += n;
	}
	return 0;
}

int pagemap_categories(uintptr_t start, size_t npages, uint8_t *ret)
{
	int fd = proc_self_fd(&pagemap_fd, "/proc/self/pagemap");
	struct page_region regions[64];
	uintptr_t end = start + npages * PAGE_SIZE;
	uintptr_t at = start;

	if (fd < 0)
		return fd;
	if (!pagemap_have_scan())
		return categories_slow(start, npages, ret);
	memset(ret, 0, npages);
	while (at < end) {
		struct pm_scan_arg arg = {
			.size = sizeof(arg),
			.start = at,
			.end = end,
			.vec = (uintptr_t)regions,
			.vec_len = ARRAY_SIZE(regions),
			.return_mask = PAGE_IS_PRESENT | PAGE_IS_PFNZERO | PAGE_IS_HUGE |
				       PAGE_IS_SWAPPED | PAGE_IS_FILE,
		};
		long n = ioctl(fd, PAGEMAP_SCAN, &arg);

		if (n < 0)
			return -errno;
		for (long i = 0; i < n; i++)
			for (uintptr_t a = regions[i].start; a < regions[i].end; a += PAGE_SIZE)
				ret[(a - start) >> PAGE_SHIFT] = (uint8_t)regions[i].categories;
		if (arg.walk_end <= at)
			break;
		at = arg.walk_end;
	}
	return 0;
}

/* Whether PAGEMAP_SCAN works: one scan of a page of our stack tells. */
bool pagemap_have_scan(void)
{
	int fd = proc_self_fd(&pagemap_fd, "/proc/self/pagemap");
	struct page_region region;
	char here;
	struct pm_scan_arg arg = {
		.size = sizeof(arg),
		.start = (uintptr_t)&here & ~(PAGE_SIZE - 1),
		.end = ((uintptr_t)&here & ~(PAGE_SIZE - 1)) + PAGE_SIZE,
		.vec = (uintptr_t)&region,
		.vec_len = 1,
		.return_mask = PAGE_IS_PRESENT,
	};

	if (atomic_load(&pagemap_scan) >= 0 || fd < 0)
		return atomic_load(&pagemap_scan) == 1;
	if (kernel_hides("PAGEMAP_SCAN"))
		atomic_store(&pagemap_scan, 0);
	else
		atomic_store(&pagemap_scan, ioctl(fd, PAGEMAP_SCAN, &arg) >= 0 ||
						    (errno != ENOTTY && errno != EINVAL));
	return atomic_load(&pagemap_scan) == 1;
}

int pagemap_entry_runs(uintptr_t start, uintptr_t end, bool (*match)(uint64_t e, void *ctx),
		       void *ctx, int (*fn)(uintptr_t s, uintptr_t e, void *arg), void *arg)
{
	uint64_t pm[512];

	for (uintptr_t at = start; at < end;) {
		size_t n = MIN((end - at) / PAGE_SIZE, ARRAY_SIZE(pm));
		uintptr_t run = 0;
		int err = pagemap_read(at, n, pm);

		if (err)
			return err;
		for (size_t i = 0; i <= n; i++) {
			bool in = i < n && match(pm[i], ctx);

			if (in && !run)
				run = at + i * PAGE_SIZE;
			if (!in && run) {
				err = fn(run, at + i * PAGE_SIZE, arg);
				if (err)
					return err;
				run = 0;
			}
		}
		at += n * PAGE_SIZE;
	}
	return 0;
}

int pagemap_scan_runs(uintptr_t start, uintptr_t end, const struct pm_scan_arg *query,
		      int (*fn)(uintptr_t s, uintptr_t e, void *arg), void *arg)
{
	int fd = proc_self_fd(&pagemap_fd, "/proc/self/pagemap");
	struct page_region regions[64];
	uintptr_t at = start;

	if (fd < 0)
		return fd;
	if (!pagemap_have_scan())
		return -EOPNOTSUPP;
	while (at < end) {
		struct pm_scan_arg scan = *query;
		long n;

		scan.size = sizeof(scan);
		scan.start = at;
		scan.end = end;
		scan.vec = (uintptr_t)regions;
		scan.vec_len = ARRAY_SIZE(regions);
		n = ioctl(fd, PAGEMAP_SCAN, &scan);
		if (n < 0)
			return -errno;
		for (long i = 0; i < n; i++) {
			int err = fn(regions[i].start, regions[i].end, arg);

			if (err)
				return err;
		}
		if (scan.walk_end <= at)
			break;
		at = scan.walk_end;
	}
	return 0;
}

/* Without PAGEMAP_SCAN, zero pages are left out where frame numbers show which they are. */
static bool resident(uint64_t e, void *zpfn)
{
	return (e & PM_PRESENT) && !pm_is_zero(e, *(uint64_t *)zpfn);
}

int pagemap_resident_runs(uintptr_t start, uintptr_t end,
			  int (*fn)(uintptr_t s, uintptr_t e, void *arg), void *arg)
{
	/* Present and not the shared zero page. */
	static const struct pm_scan_arg query = {
		.category_mask = PAGE_IS_PRESENT | PAGE_IS_PFNZERO,
		.category_inverted = PAGE_IS_PFNZERO,
		.return_mask = PAGE_IS_PRESENT,
	};
	uint64_t zpfn;

	if (pagemap_have_scan())
		return pagemap_scan_runs(start, end, &query, fn, arg);
	zpfn = learn_zero_pfn();
	return pagemap_entry_runs(start, end, resident, &zpfn, fn, arg);
}
