// SPDX-License-Identifier: MIT
/*
 * Anonymous memory in place of a private file mapping whose pages the CPU
 * has copied on write. Those copies are anonymous pages, which the kernel's
 * migrate_vma moves like any other; ours cannot, since userfaultfd registers
 * no regular file's mapping. So the copies change mappings instead.
 *
 * It has to be atomic against the program's writers, which nothing can hold
 * off here (a write-protected file mapping faults with SIGSEGV; synchronous
 * write-protect is for anonymous memory, shmem and hugetlb only). So the old
 * pages are never copied while mapped: a pipe holds a reference to each
 * (vmsplice, no copy), one mremap puts registered anonymous memory with no
 * pages over the range, and only then are the old pages' bytes read, from
 * the pipe. Up to the mremap every write lands in the very pages the pipe
 * holds (each is the process's own, mapped writable, so the kernel reuses
 * it on a write fault rather than copying it); once it returns the pages
 * are mapped nowhere and a write faults on the new memory, which the caller
 * holds off until it has the bytes.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include "kernel.h"

/* An anonymous copy: present or swapped, neither a file page nor shared. */
static bool copied(uint64_t pm, void *ctx)
{
	(void)ctx;
	return (pm & (PM_PRESENT | PM_SWAP)) && !(pm & PM_FILE_OR_SHARED);
}

int replace_copied_runs(uintptr_t start, uintptr_t end,
			int (*fn)(uintptr_t s, uintptr_t e, void *arg), void *arg)
{
	return pagemap_entry_runs(start, end, copied, NULL, fn, arg);
}

static int prot_of(unsigned vflags)
{
	return (vflags & VMA_READ ? PROT_READ : 0) | (vflags & VMA_WRITE ? PROT_WRITE : 0) |
	       (vflags & VMA_EXEC ? PROT_EXEC : 0);
}

/* Every page the pipe holds is still the one mapped there, the process's own. */
static int check_held(uintptr_t start, size_t npages)
{
	uint64_t pm[64];

	for (size_t at = 0; at < npages;) {
		size_t n = MIN(npages - at, ARRAY_SIZE(pm));
		int err = pagemap_read(start + at * PAGE_SIZE, n, pm);

		if (err)
			return err;
		for (size_t i = 0; i < n; i++)
			if (!(pm[i] & PM_PRESENT) || (pm[i] & PM_FILE_OR_SHARED) ||
			    !(pm[i] & PM_EXCLUSIVE))
				return -EAGAIN;
		at += n;
	}
	return 0;
}

int replace_begin(struct replace *rp, uintptr_t start, size_t len, unsigned vflags)
{
	struct iovec iov;
	ssize_t n;
	int cap, err;

	*rp = (struct replace){ .start = start, .pipe = { -1, -1 } };
	if (pipe2(rp->pipe, O_CLOEXEC | O_NONBLOCK))
		return -errno;
	/* As many pages as a pipe may hold (pipe-max-size: 1 MiB by default). */
	cap = -1;
	for (size_t want = MIN(len, (size_t)1 << 30); cap < 0 && want > PAGE_SIZE; want /= 2)
		cap = fcntl(rp->pipe[1], F_SETPIPE_SZ, (int)want);
	if (cap < 0)
		cap = fcntl(rp->pipe[1], F_GETPIPE_SZ);
	if (cap < (int)PAGE_SIZE) {
		err = cap < 0 ? -errno : -ENOMEM;
		goto close_pipe;
	}
	len = MIN(len, ALIGN_DOWN((size_t)cap, PAGE_SIZE));
	/* A page shared with a child would be copied by the next write, away from the pipe. */
	if ((vflags & VMA_WRITE) && sys_madvise((void *)start, len, MADV_POPULATE_WRITE)) {
		err = -errno;
		goto close_pipe;
	}
	iov = (struct iovec){ .iov_base = (void *)start, .iov_len = len };
	n = vmsplice(rp->pipe[1], &iov, 1, SPLICE_F_NONBLOCK);
	if (n <= 0 || n % PAGE_SIZE) {
		err = n < 0 ? -errno : -EAGAIN;
		goto close_pipe;
	}
	rp->len = (size_t)n;
	err = check_held(start, rp->len / PAGE_SIZE);
	if (err)
		goto close_pipe;
	rp->stage = sys_mmap(NULL, rp->len, prot_of(vflags), MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (rp->stage == MAP_FAILED) {
		err = -errno;
		goto close_pipe;
	}
	return 0;

close_pipe:
	close(rp->pipe[0]);
	close(rp->pipe[1]);
	rp->pipe[0] = rp->pipe[1] = -1;
	rp->stage = NULL;
	return err;
}

int replace_commit(struct replace *rp)
{
	void *at = sys_mremap(rp->stage, rp->len, rp->len, MREMAP_MAYMOVE | MREMAP_FIXED,
			      (void *)rp->start);

	if (at == MAP_FAILED)
		return -errno;
	rp->stage = NULL;
	return 0;
}

int replace_read(struct replace *rp, void *buf, size_t len)
{
	for (size_t got = 0; got < len;) {
		ssize_t n = read(rp->pipe[0], (char *)buf + got, len - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		got += (size_t)n;
	}
	return 0;
}

void replace_end(struct replace *rp)
{
	if (rp->stage) {
		uffd_unregister((uintptr_t)rp->stage, rp->len);
		sys_munmap(rp->stage, rp->len);
		rp->stage = NULL;
	}
	if (rp->pipe[0] >= 0) {
		close(rp->pipe[0]);
		close(rp->pipe[1]);
		rp->pipe[0] = rp->pipe[1] = -1;
	}
}
