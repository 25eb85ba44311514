// SPDX-License-Identifier: MIT
/*
 * file_read, file_write: devices read and write file mappings through the
 * page cache. migrate_file_private: a private file mapping whose pages the
 * CPU has all written holds anonymous copies, which migrate (the runtime
 * puts anonymous memory with the same bytes in the mapping's place); where
 * only some were written the file's own pages are holes in the migration,
 * and keep reading the file; a thread writing during the migration loses
 * nothing.
 */
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
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
	size_t len = NPAGES * PAGE, ints = len / sizeof(int), pages = 0;
	int fd = tmpfile_of(len), *mirror = malloc(len), *p;
	struct hmm_access acc;

	CHECK(fd >= 0 && mirror);
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	CHECK(p != MAP_FAILED);
	t_fill(p, ints, 0);
	CHECK_OK(hmm_migrate(p, len, dev0, 0, &pages));
	CHECK_EQ(pages, NPAGES);
	CHECK_EQ(t_pages_at(p, NPAGES, t_dev_index(dev0)), NPAGES);
	CHECK_OK(hmm_device_read(dev0, p, len, mirror, &acc));
	CHECK_EQ(t_count_bad(mirror, ints, 0), 0);
	/* The CPU faults the pages back and reads what it wrote; the file never saw it. */
	CHECK_EQ(t_count_bad(p, ints, 0), 0);
	CHECK_EQ(pread(fd, mirror, len, 0), len);
	CHECK(t_is_zero(mirror, len));
	CHECK_OK(munmap(p, len));
	close(fd);
	free(mirror);
	return T_PASS;
}

/* Pages written in the first half only: those move, the rest keep reading the file. */
static int migrate_file_private_partial(void)
{
	size_t len = NPAGES * PAGE, half = len / 2, ints = half / sizeof(int), pages = 0;
	int fd = tmpfile_of(len), *buf = malloc(half), *p;

	CHECK(fd >= 0 && buf);
	t_fill(buf, ints, 1000);
	CHECK_EQ(pwrite(fd, buf, half, (off_t)half), half);
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	CHECK(p != MAP_FAILED);
	t_fill(p, ints, 0);
	/* Read, not written: the page cache's pages, mapped. */
	CHECK_EQ(t_count_bad(p + ints, ints, 1000), 0);
	CHECK_RET(hmm_migrate(p, len, dev0, 0, &pages), -ENOENT);
	CHECK_EQ(pages, NPAGES / 2);
	CHECK_EQ(t_pages_at(p, NPAGES / 2, t_dev_index(dev0)), NPAGES / 2);
	CHECK_EQ(t_pages_at(p + ints, NPAGES / 2, t_dev_index(dev0)), 0);
	/* The unwritten half is the file's still: a change to the file shows through. */
	t_fill(buf, ints, 2000);
	CHECK_EQ(pwrite(fd, buf, half, (off_t)half), half);
	CHECK_EQ(t_count_bad(p + ints, ints, 2000), 0);
	CHECK_EQ(t_count_bad(p, ints, 0), 0);
	/* Written now, those copies move too. */
	t_fill(p + ints, ints, 3000);
	CHECK_OK(hmm_migrate(p, len, dev0, 0, &pages));
	CHECK_EQ(pages, NPAGES);
	CHECK_EQ(t_count_bad(p, ints, 0), 0);
	CHECK_EQ(t_count_bad(p + ints, ints, 3000), 0);
	CHECK_OK(munmap(p, len));
	close(fd);
	free(buf);
	return T_PASS;
}

#define RACE_PAGES 64ul
#define RACE_ROUNDS 200

struct scribbler {
	int *p;
	_Atomic bool stop;
	_Atomic int passes;
	int last[RACE_PAGES];   /* the last value written to each page's first int */
};

static void *scribble(void *arg)
{
	struct scribbler *s = arg;
	int v = 0;

	while (!atomic_load(&s->stop)) {
		for (size_t i = 0; i < RACE_PAGES; i++) {
			s->p[i * PAGE / sizeof(int)] = ++v;
			s->last[i] = v;
		}
		atomic_fetch_add(&s->passes, 1);
	}
	return NULL;
}

/* A thread writes every page while the mapping is replaced and migrated. */
static int migrate_file_private_race(void)
{
	size_t len = RACE_PAGES * PAGE, pages;
	int fd = tmpfile_of(len), migrated = 0;

	CHECK(fd >= 0);
	for (int round = 0; round < RACE_ROUNDS; round++) {
		struct scribbler s = { 0 };
		pthread_t t;
		int err;

		s.p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
		CHECK(s.p != MAP_FAILED);
		memset(s.p, 0xff, len);
		CHECK_OK(pthread_create(&t, NULL, scribble, &s));
		while (!atomic_load(&s.passes))
			sched_yield();
		/* Any page the writer copied since is migrated; a page it wrote during is not lost. */
		err = hmm_migrate(s.p, len, dev0, 0, &pages);
		atomic_store(&s.stop, true);
		CHECK_OK(pthread_join(t, NULL));
		CHECK(err == 0 || err == -ENOENT);
		migrated += !err;
		for (size_t i = 0; i < RACE_PAGES; i++)
			CHECK_EQ(s.p[i * PAGE / sizeof(int)], s.last[i]);
		CHECK_OK(munmap(s.p, len));
	}
	t_note("%d of %d rounds migrated every page", migrated, RACE_ROUNDS);
	CHECK(migrated > 0);
	close(fd);
	return T_PASS;
}

T_MAIN(TEST_CASE(file_read, 0),
       TEST_CASE(file_write, 0),
       TEST_CASE(migrate_file_private, 0),
       TEST_CASE(migrate_file_private_partial, 0),
       TEST_CASE(migrate_file_private_race, 0))
