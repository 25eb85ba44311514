// SPDX-License-Identifier: MIT
/*
 * Page state as the CPU's page table has it, read without faulting anything
 * in: /proc/self/pagemap entries, and PAGEMAP_SCAN (6.7) categories (present,
 * the shared zero page, huge) where the kernel has it.
 */
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "kernel.h"

static _Atomic int pagemap_fd = -1;
static _Atomic int pagemap_scan = -1;   /* -1 unknown, 0 no, 1 yes */

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

int pagemap_categories(uintptr_t start, size_t npages, uint8_t *ret)
{
	int fd = proc_self_fd(&pagemap_fd, "/proc/self/pagemap");
	struct page_region regions[64];
	uintptr_t end = start + npages * PAGE_SIZE;
	uintptr_t at = start;

	if (fd < 0)
		return fd;
	if (atomic_load(&pagemap_scan) == 0)
		return -EOPNOTSUPP;
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

		if (n < 0) {
			if (errno == ENOTTY || errno == EINVAL) {
				atomic_store(&pagemap_scan, 0);
				return -EOPNOTSUPP;
			}
			return -errno;
		}
		atomic_store(&pagemap_scan, 1);
		for (long i = 0; i < n; i++)
			for (uintptr_t a = regions[i].start; a < regions[i].end; a += PAGE_SIZE)
				ret[(a - start) >> PAGE_SHIFT] = (uint8_t)regions[i].categories;
		if (arg.walk_end <= at)
			break;
		at = arg.walk_end;
	}
	return 0;
}

bool pagemap_have_scan(void)
{
	uint8_t c;

	if (atomic_load(&pagemap_scan) < 0)
		pagemap_categories((uintptr_t)&c & ~(PAGE_SIZE - 1), 1, &c);
	return atomic_load(&pagemap_scan) == 1;
}

/* Without PAGEMAP_SCAN: present pages from /proc/self/pagemap, zero pages included. */
static int resident_runs_slow(uintptr_t start, uintptr_t end,
			      int (*fn)(uintptr_t s, uintptr_t e, void *arg), void *arg)
{
	uint64_t pm[512];

	for (uintptr_t at = start; at < end;) {
		size_t n = MIN((end - at) / PAGE_SIZE, ARRAY_SIZE(pm));
		uintptr_t run = 0;
		int err = pagemap_read(at, n, pm);

		if (err)
			return err;
		for (size_t i = 0; i <= n; i++) {
			bool present = i < n && (pm[i] & PM_PRESENT);

			if (present && !run)
				run = at + i * PAGE_SIZE;
			if (!present && run) {
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

int pagemap_resident_runs(uintptr_t start, uintptr_t end,
			  int (*fn)(uintptr_t s, uintptr_t e, void *arg), void *arg)
{
	int fd = proc_self_fd(&pagemap_fd, "/proc/self/pagemap");
	struct page_region regions[64];
	uintptr_t at = start;

	if (fd < 0)
		return fd;
	if (!pagemap_have_scan())
		return resident_runs_slow(start, end, fn, arg);
	while (at < end) {
		/* Present and not the shared zero page. */
		struct pm_scan_arg scan = {
			.size = sizeof(scan),
			.start = at,
			.end = end,
			.vec = (uintptr_t)regions,
			.vec_len = ARRAY_SIZE(regions),
			.category_mask = PAGE_IS_PRESENT | PAGE_IS_PFNZERO,
			.category_inverted = PAGE_IS_PFNZERO,
			.return_mask = PAGE_IS_PRESENT,
		};
		long n = ioctl(fd, PAGEMAP_SCAN, &scan);

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
