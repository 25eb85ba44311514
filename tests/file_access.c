// SPDX-License-Identifier: MIT
/*
 * file_read, file_write, migrate_file_private: devices read and write file
 * mappings through the page cache; file mappings never migrate (API.md),
 * even private ones whose pages the CPU has copied on write; the kernel's
 * dmirror would migrate those, we report -ENOENT and keep serving them.
 */
#include <fcntl.h>
#include <stdlib.h>

#include "harness.h"

static int tmpfile_of(size_t len)
{
	int fd = open("/tmp", O_TMPFILE | O_RDWR, 0600);

	if (fd >= 0 && ftruncate(fd, (off_t)len)) {
		close(fd);
		return -1;
	}
	return fd;
}

static int file_read(void)
{
	size_t len = NPAGES * PAGE, ints = len / sizeof(int);
	int fd = tmpfile_of(len), *buf = malloc(len), *mirror = calloc(1, len), *p;
	struct hmm_access acc;

	CHECK(fd >= 0 && buf && mirror);
	t_fill(buf, ints, 0);
	CHECK_EQ(pwrite(fd, buf, len, 0), len);
	p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
	CHECK(p != MAP_FAILED);
	CHECK_OK(hmm_device_read(dev0, p, len, mirror, &acc));
	CHECK_EQ(acc.pages, NPAGES);
	CHECK_EQ(acc.faults, 1);
	CHECK_EQ(t_count_bad(mirror, ints, 0), 0);
	munmap(p, len);
	close(fd);
	free(buf);
	free(mirror);
	return T_PASS;
}

static int file_write(void)
{
	size_t len = NPAGES * PAGE, ints = len / sizeof(int);
	int fd = tmpfile_of(len), *mirror = malloc(len), *back = malloc(len), *p;
	struct hmm_access acc;

	CHECK(fd >= 0 && mirror && back);
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(p != MAP_FAILED);
	t_fill(mirror, ints, 0);
	CHECK_OK(hmm_device_write(dev0, p, len, mirror, &acc));
	CHECK_EQ(acc.pages, NPAGES);
	CHECK_EQ(acc.faults, 1);
	CHECK_EQ(t_count_bad(p, ints, 0), 0);
	CHECK_EQ(pread(fd, back, len, 0), len);
	CHECK_EQ(t_count_bad(back, ints, 0), 0);
	munmap(p, len);
	close(fd);
	free(mirror);
	free(back);
	return T_PASS;
}

static int migrate_file_private(void)
{
	size_t len = NPAGES * PAGE, ints = len / sizeof(int), pages = 99;
	int fd = tmpfile_of(len), *mirror = malloc(len), *p;
	struct hmm_access acc;

	CHECK(fd >= 0 && mirror);
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	CHECK(p != MAP_FAILED);
	t_fill(p, ints, 0);
	CHECK_RET(hmm_migrate(p, len, dev0, 0, &pages), -ENOENT);
	CHECK_EQ(pages, 0);
	CHECK_EQ(t_pages_at(p, NPAGES, HMM_LOC_HOST), NPAGES);
	CHECK_OK(hmm_device_read(dev0, p, len, mirror, &acc));
	CHECK_EQ(t_count_bad(mirror, ints, 0), 0);
	munmap(p, len);
	close(fd);
	free(mirror);
	return T_PASS;
}

T_MAIN(TEST_CASE(file_read, 0),
       TEST_CASE(file_write, 0),
       TEST_CASE(migrate_file_private, 0))
