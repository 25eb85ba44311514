// SPDX-License-Identifier: MIT
/*
 * Which pages of a range were written, learnt without a fault reaching us:
 * a second userfaultfd in asynchronous write-protect mode
 * (UFFD_FEATURE_WP_ASYNC, 6.7). A write to a protected page is resolved by
 * the kernel itself, which clears the page's write-protect bit; PAGEMAP_SCAN
 * then reports the pages whose bit is clear (PAGE_IS_WRITTEN). The first
 * write to each page costs one minor fault in the kernel, nothing more, so
 * tracking never waits on the runtime's threads (the CRIU-style dirty
 * tracking the kernel added this for).
 *
 * The file is its own: ranges tracked here are never the runtime's managed
 * memory (a VMA has one userfaultfd), and it delivers no messages, so
 * nobody reads it. User-mode-only is enough for that, and always allowed.
 *
 * A page that is gone from the page table (madvise(MADV_DONTNEED) by the
 * allocator, or never populated) reads as zeros now, whatever it held at
 * the reset: it is reported as changed too, as is a swapped-out page
 * (cheaper to send than to tell apart).
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kernel.h"

static _Atomic int wtrack_fd = -2;      /* -2 not tried, -1 not available */
static pthread_mutex_t wtrack_open_lock = PTHREAD_MUTEX_INITIALIZER;

static int wtrack_new(void)
{
	/* A kernel without WP_ASYNC refuses the handshake (unknown feature). */
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_WP_ASYNC };
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);

	if (fd < 0)
		return -1;
	if (ioctl(fd, UFFDIO_API, &api) || !pagemap_have_scan()) {
		close(fd);
		return -1;
	}
	return fd;
}

bool wtrack_available(void)
{
	if (atomic_load(&wtrack_fd) == -2) {
		pthread_mutex_lock(&wtrack_open_lock);
		if (atomic_load(&wtrack_fd) == -2)
			atomic_store(&wtrack_fd, wtrack_new());
		pthread_mutex_unlock(&wtrack_open_lock);
	}
	return atomic_load(&wtrack_fd) >= 0;
}

int wtrack_register(uintptr_t start, size_t len)
{
	struct uffdio_register reg = {
		.range = { start, len },
		.mode = UFFDIO_REGISTER_MODE_WP,
	};

	if (!wtrack_available())
		return -EOPNOTSUPP;
	if (((start | len) & (PAGE_SIZE - 1)) || !len)
		return -EINVAL;
	return ioctl(atomic_load(&wtrack_fd), UFFDIO_REGISTER, &reg) ? -errno : 0;
}

int wtrack_reset(uintptr_t start, size_t len)
{
	struct uffdio_writeprotect wp = {
		.range = { start, len },
		.mode = UFFDIO_WRITEPROTECT_MODE_WP,
	};

	if (atomic_load(&wtrack_fd) < 0)
		return -EOPNOTSUPP;
	return ioctl(atomic_load(&wtrack_fd), UFFDIO_WRITEPROTECT, &wp) ? -errno : 0;
}

int wtrack_changed(uintptr_t start, uintptr_t end,
		   int (*fn)(uintptr_t s, uintptr_t e, void *arg), void *arg)
{
	/* Written, or not present (inverted): either way not what it was. */
	static const struct pm_scan_arg query = {
		.category_inverted = PAGE_IS_PRESENT,
		.category_anyof_mask = PAGE_IS_WRITTEN | PAGE_IS_PRESENT,
		.return_mask = PAGE_IS_WRITTEN | PAGE_IS_PRESENT,
	};

	if (atomic_load(&wtrack_fd) < 0)
		return -EOPNOTSUPP;
	return pagemap_scan_runs(start, end, &query, fn, arg);
}

void wtrack_reset_after_fork(void)
{
	int fd = atomic_exchange(&wtrack_fd, -2);

	if (fd >= 0)
		close(fd);
}
