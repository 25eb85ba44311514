// SPDX-License-Identifier: MIT
/*
 * The userfaultfd file: how we get one (with kernel-mode faults when the
 * process may have them), which features the kernel offers, and thin ioctl
 * wrappers that turn partial results into "bytes done or -errno".
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kernel.h"

#define REQUIRED_FEATURES                                                        \
	(UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_REMAP | \
	 UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_THREAD_ID)
#define OPTIONAL_FEATURES (UFFD_FEATURE_MOVE | UFFD_FEATURE_POISON)

struct uffd_state uffd = { .fd = -1 };

/* A new userfaultfd, trying the privileged ways first. */
static int uffd_new(bool *ret_kernel_faults, const char **ret_origin)
{
	int fd, err;

	if (opt.uffd_mode != UFFD_MODE_USER) {
		fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
		if (fd >= 0) {
			*ret_kernel_faults = true;
			*ret_origin = "userfaultfd(2)";
			return fd;
		}
		err = -errno;
		if (err == -ENOSYS)
			return err;
		int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
		if (dev >= 0) {
			fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
			close(dev);
			if (fd >= 0) {
				*ret_kernel_faults = true;
				*ret_origin = "/dev/userfaultfd";
				return fd;
			}
		}
		if (opt.uffd_mode == UFFD_MODE_KERNEL)
			return err;
	}
	fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (fd < 0)
		return -errno;
	*ret_kernel_faults = false;
	*ret_origin = "userfaultfd(2), user-mode faults only";
	return fd;
}

bool kernel_hides(const char *feature)
{
	size_t n = strlen(feature);

	for (const char *s = opt.kernel_hide; s && *s;) {
		size_t len = strcspn(s, ",");

		if (len == n && !strncasecmp(s, feature, n))
			return true;
		s += len + (s[len] == ',');
	}
	return false;
}

/* What UHMM_KERNEL_HIDE takes away from the features the kernel offers. */
static uint64_t hidden_features(void)
{
	return (kernel_hides("MOVE") ? UFFD_FEATURE_MOVE : 0) |
	       (kernel_hides("POISON") ? UFFD_FEATURE_POISON : 0);
}

/* UFFDIO_API on a throw-away descriptor: what the kernel offers. */
static int uffd_available(uint64_t *ret_features, uint64_t *ret_ioctls)
{
	struct uffdio_api api = { .api = UFFD_API };
	bool kf;
	const char *origin;
	int fd = uffd_new(&kf, &origin);

	if (fd < 0)
		return fd;
	if (ioctl(fd, UFFDIO_API, &api)) {
		int err = -errno;

		close(fd);
		return err;
	}
	close(fd);
	*ret_features = api.features & ~hidden_features();
	*ret_ioctls = api.ioctls;
	return 0;
}

void uffd_probe(struct uffd_probe *ret)
{
	int fd;

	*ret = (struct uffd_probe){ 0 };
	ret->error = uffd_available(&ret->features, &ret->ioctls);
	if (ret->error)
		return;
	fd = uffd_new(&ret->kernel_faults, &ret->origin);
	if (fd >= 0)
		close(fd);
}

int uffd_open(void)
{
	struct uffdio_api api = { .api = UFFD_API };
	uint64_t avail, ioctls;
	int fd, err;

	if (uffd.fd >= 0)
		return 0;
	err = uffd_available(&avail, &ioctls);
	if (err)
		return err;
	if ((avail & REQUIRED_FEATURES) != REQUIRED_FEATURES) {
		log_err("userfaultfd lacks events or write-protect support (kernel too old)");
		return -EOPNOTSUPP;
	}
	fd = uffd_new(&uffd.kernel_faults, &uffd.origin);
	if (fd < 0)
		return fd;
	api.features = REQUIRED_FEATURES | (avail & OPTIONAL_FEATURES);
	if (ioctl(fd, UFFDIO_API, &api)) {
		err = -errno;
		close(fd);
		return err;
	}
	uffd.fd = fd;
	uffd.features = api.features;
	/* Pages only leave the CPU's page table when the kernel can fault them back. */
	uffd.can_move = (api.features & UFFD_FEATURE_MOVE) && uffd.kernel_faults && !uffd.forked;
	uffd.can_poison = api.features & UFFD_FEATURE_POISON;
	if (!uffd.kernel_faults)
		log_warn("userfaultfd is limited to user-mode faults (vm.unprivileged_userfaultfd=0 "
			 "and no CAP_SYS_PTRACE): pages stay in host memory, so that system calls "
			 "on them keep working");
	return 0;
}

void uffd_close(void)
{
	if (uffd.fd >= 0)
		close(uffd.fd);
	uffd.fd = -1;
}

/*
 * In a child of fork, pages move by copy. Its memory starts out shared with
 * the parent, and on 6.18 we have seen UFFDIO_MOVE spin in the kernel for
 * good in such a child (holding a lock that a concurrent madvise then waits
 * on: the process hangs). Copies cost more, but children of a preloaded
 * program mostly exec soon.
 */
void uffd_forget(void)
{
	uffd_close();
	uffd.forked = true;
}

int uffd_register(uintptr_t start, size_t len, uint64_t mode)
{
	struct uffdio_register r = { .range = { start, len }, .mode = mode };

	return ioctl(uffd.fd, UFFDIO_REGISTER, &r) ? -errno : 0;
}

int uffd_unregister(uintptr_t start, size_t len)
{
	struct uffdio_range r = { start, len };

	return ioctl(uffd.fd, UFFDIO_UNREGISTER, &r) ? -errno : 0;
}

/*
 * The kernel reports partial progress in the result field; fold it in.
 * Callers must run the ioctl first: as an argument next to the field it
 * writes, the field could be read before the call.
 */
static long partial(int rc, int64_t done, size_t len)
{
	if (!rc)
		return (long)len;
	if (done > 0)
		return (long)done;
	return done < 0 ? (long)done : -errno;
}

/* A page table entry is there: a page, or a swap entry (bits 63 and 62). */
static bool pm_populated(uint64_t e)
{
	return e >> 62;
}

/*
 * Pages the kernel moved beyond what it reported. Seen on 6.18: a move cut
 * short by -EAGAIN (lock contention) can leave the page after the reported
 * count already moved. Taking the report at its word would free a device
 * slot that holds the page and treat the emptied source as a hole: data
 * lost. A page whose destination is filled and whose source is empty moved
 * (both are ours while the move runs: busy pages, claimed slots).
 */
static size_t unreported_moves(uintptr_t dst, uintptr_t src, size_t npages)
{
	enum { CHUNK = 64 };
	uint64_t d[CHUNK], s[CHUNK];
	size_t extra = 0;

	while (extra < npages) {
		size_t n = npages - extra < CHUNK ? npages - extra : CHUNK;

		if (pagemap_read(dst + extra * PAGE_SIZE, n, d) ||
		    pagemap_read(src + extra * PAGE_SIZE, n, s))
			return extra;
		for (size_t i = 0; i < n; i++, extra++)
			if (!pm_populated(d[i]) || pm_populated(s[i]))
				return extra;
	}
	return extra;
}

long uffd_move(uintptr_t dst, uintptr_t src, size_t len, uint64_t mode)
{
	struct uffdio_move m = { .dst = dst, .src = src, .len = len, .mode = mode };
	int rc = ioctl(uffd.fd, UFFDIO_MOVE, &m);
	int err = errno;
	size_t done = rc && m.move > 0 ? (size_t)m.move : 0;
	size_t extra;

	if (!rc)
		return (long)len;
	extra = unreported_moves(dst + done, src + done, (len - done) / PAGE_SIZE);
	if (extra)
		m.move = (int64_t)(done + extra * PAGE_SIZE);
	errno = err;
	return partial(rc, m.move, len);
}

long uffd_copy(uintptr_t dst, const void *src, size_t len, uint64_t mode)
{
	struct uffdio_copy c = { .dst = dst, .src = (uintptr_t)src, .len = len, .mode = mode };
	int rc = ioctl(uffd.fd, UFFDIO_COPY, &c);

	return partial(rc, c.copy, len);
}

long uffd_zero(uintptr_t dst, size_t len, uint64_t mode)
{
	struct uffdio_zeropage z = { .range = { dst, len }, .mode = mode };
	int rc = ioctl(uffd.fd, UFFDIO_ZEROPAGE, &z);

	return partial(rc, z.zeropage, len);
}

int uffd_protect(uintptr_t start, size_t len, bool protect, bool wake)
{
	/* The kernel refuses DONTWAKE with WP: protecting wakes nobody anyway. */
	struct uffdio_writeprotect wp = {
		.range = { start, len },
		.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP
				: (wake ? 0 : UFFDIO_WRITEPROTECT_MODE_DONTWAKE),
	};

	return ioctl(uffd.fd, UFFDIO_WRITEPROTECT, &wp) ? -errno : 0;
}

int uffd_wake(uintptr_t start, size_t len)
{
	struct uffdio_range r = { start, len };

	return ioctl(uffd.fd, UFFDIO_WAKE, &r) ? -errno : 0;
}

int uffd_poison(uintptr_t start, size_t len)
{
	struct uffdio_poison p = { .range = { start, len } };

	if (!uffd.can_poison)
		return -EOPNOTSUPP;
	return ioctl(uffd.fd, UFFDIO_POISON, &p) ? -errno : 0;
}
