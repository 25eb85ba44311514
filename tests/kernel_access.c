// SPDX-License-Identifier: MIT
/*
 * The GUP test's user-space analogue: the kernel reading and writing pages
 * that live on a device (read(2), write(2), pread/pwrite, process_vm_readv/
 * writev, vmsplice, io_uring, O_DIRECT) sees and leaves the right data.
 * Device-private pages come home on the way; coherent ones stay.
 */
#include <fcntl.h>
#include <liburing.h>
#include <stdlib.h>
#include <sys/uio.h>

#include "harness.h"

#define NP 16

static int tmpfile_with(const int *data, size_t len)
{
	int fd = open("/tmp", O_TMPFILE | O_RDWR, 0600);

	if (fd >= 0 && pwrite(fd, data, len, 0) != (ssize_t)len) {
		close(fd);
		return -1;
	}
	return fd;
}

static int check_pattern(const int *p, size_t first_int, size_t nints, int sign)
{
	for (size_t i = 0; i < nints; i++)
		if (p[i] != sign * (int)(first_int + i))
			return T_FAIL;
	return T_PASS;
}

static int *on_device(void)
{
	int *p = hmm_alloc(NP * PAGE);
	size_t pages;

	if (!p)
		return NULL;
	t_fill(p, NP * PAGE / sizeof(int), 0);
	if (hmm_migrate(p, NP * PAGE, dev0, 0, &pages) || pages != NP) {
		hmm_free(p);
		return NULL;
	}
	return p;
}

static const size_t IPP = PAGE / sizeof(int); /* ints per page */

static int syscalls(void)
{
	int *p = on_device(), *buf = malloc(NP * PAGE), *neg = malloc(NP * PAGE);
	int fd, pipefd[2];
	struct iovec local, remote;

	CHECK(p && buf && neg);
	for (size_t i = 0; i < NP * IPP; i++)
		neg[i] = -(int)i;

	/* write(2) reads pages 0-1 from the device */
	fd = open("/tmp", O_TMPFILE | O_RDWR, 0600);
	CHECK(fd >= 0);
	CHECK_EQ(write(fd, p, 2 * PAGE), 2 * PAGE);
	CHECK_EQ(pread(fd, buf, 2 * PAGE, 0), 2 * PAGE);
	CHECK_EQ(check_pattern(buf, 0, 2 * IPP, 1), T_PASS);
	close(fd);

	/* pread(2) writes pages 2-3 on the device */
	fd = tmpfile_with(neg, NP * PAGE);
	CHECK(fd >= 0);
	CHECK_EQ(pread(fd, p + 2 * IPP, 2 * PAGE, 2 * PAGE), 2 * PAGE);
	CHECK_EQ(check_pattern(p + 2 * IPP, 2 * IPP, 2 * IPP, -1), T_PASS);

	/* read(2) of a pipe into page 4 */
	CHECK_OK(pipe(pipefd));
	CHECK_EQ(write(pipefd[1], neg + 4 * IPP, PAGE), PAGE);
	CHECK_EQ(read(pipefd[0], p + 4 * IPP, PAGE), PAGE);
	CHECK_EQ(check_pattern(p + 4 * IPP, 4 * IPP, IPP, -1), T_PASS);

	/* vmsplice page 5 into the pipe */
	local = (struct iovec){ p + 5 * IPP, PAGE };
	CHECK_EQ(vmsplice(pipefd[1], &local, 1, 0), PAGE);
	CHECK_EQ(read(pipefd[0], buf, PAGE), PAGE);
	CHECK_EQ(check_pattern(buf, 5 * IPP, IPP, 1), T_PASS);
	close(pipefd[0]);
	close(pipefd[1]);

	/* process_vm_readv and writev on ourselves: pages 6-7 and 8-9 */
	local = (struct iovec){ buf, 2 * PAGE };
	remote = (struct iovec){ p + 6 * IPP, 2 * PAGE };
	CHECK_EQ(process_vm_readv(getpid(), &local, 1, &remote, 1, 0), 2 * PAGE);
	CHECK_EQ(check_pattern(buf, 6 * IPP, 2 * IPP, 1), T_PASS);
	local = (struct iovec){ neg + 8 * IPP, 2 * PAGE };
	remote = (struct iovec){ p + 8 * IPP, 2 * PAGE };
	CHECK_EQ(process_vm_writev(getpid(), &local, 1, &remote, 1, 0), 2 * PAGE);
	CHECK_EQ(check_pattern(p + 8 * IPP, 8 * IPP, 2 * IPP, -1), T_PASS);

	/* pwrite(2) of page 10 */
	CHECK_EQ(pwrite(fd, p + 10 * IPP, PAGE, 0), PAGE);
	CHECK_EQ(pread(fd, buf, PAGE, 0), PAGE);
	CHECK_EQ(check_pattern(buf, 10 * IPP, IPP, 1), T_PASS);
	close(fd);

	/* Device-private pages the kernel touched are home now (and maybe some
	 * neighbours: sequential faults bring pages home ahead). */
	if (variant->coherent)
		CHECK_EQ(t_pages_at(p, NP, t_dev_index(dev0)), NP);
	else
		CHECK_EQ(t_pages_at(p, 11, HMM_LOC_HOST), 11);
	CHECK_EQ(check_pattern(p + 11 * IPP, 11 * IPP, (NP - 11) * IPP, 1), T_PASS);
	hmm_free(p);
	free(buf);
	free(neg);
	return T_PASS;
}

/* io_uring reads into device-resident pages from its own workers. */
static int io_uring_read(void)
{
	int *p = on_device(), *neg = malloc(NP * PAGE);
	struct io_uring ring;
	struct io_uring_cqe *cqe;
	int fd, ret;

	CHECK(p && neg);
	for (size_t i = 0; i < NP * IPP; i++)
		neg[i] = -(int)i;
	fd = tmpfile_with(neg, NP * PAGE);
	CHECK(fd >= 0);
	ret = io_uring_queue_init(4, &ring, 0);
	if (ret)
		SKIP("io_uring unavailable: %s", strerror(-ret));
	io_uring_prep_read(io_uring_get_sqe(&ring), fd, p, NP * PAGE, 0);
	CHECK_EQ(io_uring_submit(&ring), 1);
	CHECK_OK(io_uring_wait_cqe(&ring, &cqe));
	CHECK_EQ(cqe->res, NP * PAGE);
	io_uring_cqe_seen(&ring, cqe);
	io_uring_queue_exit(&ring);
	CHECK_EQ(check_pattern(p, 0, NP * IPP, -1), T_PASS);
	close(fd);
	hmm_free(p);
	free(neg);
	return T_PASS;
}

/* O_DIRECT: the device DMAs straight into pinned user pages. */
static int direct_io(void)
{
	int *p = on_device(), *neg = NULL;
	int fd;

	CHECK(p && !posix_memalign((void **)&neg, PAGE, NP * PAGE));
	for (size_t i = 0; i < NP * IPP; i++)
		neg[i] = -(int)i;
	fd = open("/var/tmp", O_TMPFILE | O_RDWR | O_DIRECT, 0600);
	if (fd < 0)
		SKIP("no O_DIRECT file system at /var/tmp: %s", strerror(errno));
	CHECK_EQ(pwrite(fd, neg, NP * PAGE, 0), NP * PAGE);
	CHECK_EQ(pread(fd, p, 4 * PAGE, 0), 4 * PAGE);
	CHECK_EQ(check_pattern(p, 0, 4 * IPP, -1), T_PASS);
	CHECK_EQ(pwrite(fd, p + 4 * IPP, 4 * PAGE, 0), 4 * PAGE);
	CHECK_EQ(pread(fd, neg, PAGE, 0), PAGE);
	CHECK_EQ(check_pattern(neg, 4 * IPP, IPP, 1), T_PASS);
	close(fd);
	hmm_free(p);
	free(neg);
	return T_PASS;
}

T_MAIN(TEST_CASE(syscalls, 0),
       TEST_CASE(io_uring_read, 0),
       TEST_CASE(direct_io, 0))
