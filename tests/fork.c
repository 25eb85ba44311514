// SPDX-License-Identifier: MIT
/*
 * anon_write_child, anon_write_child_shared, hmm_cow_in_device, and fork
 * with pages on a device: the child sees all the data, holds no device
 * state, can open devices of its own, and its device writes reach the
 * parent only through MAP_SHARED memory.
 */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "harness.h"

static int child_status(pid_t pid)
{
	int status;

	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

/*
 * The child's verdict: it passed, or skipped the part that needs a device
 * of its own (its backend cannot be used in a child of fork).
 */
static int child_done(pid_t pid)
{
	int rc = child_status(pid);

	if (rc != T_PASS && rc != T_SKIP) {
		t_note("the child failed (%d)", rc);
		return T_FAIL;
	}
	return rc;
}

/* In the child: the data is there, the parent's devices are not. */
static int child_writes(int *p, size_t npages, bool check_mirror, int *mirror)
{
	size_t ints = npages * PAGE / sizeof(int);
	struct hmm_device *d;
	struct hmm_access acc;

	CHECK_EQ(t_count_bad(p, ints, 0), 0);
	if (check_mirror)
		CHECK_EQ(t_count_neg(mirror, ints), 0);
	CHECK_EQ(hmm_device_count(), 0);
	CHECK_RET(hmm_device_read(dev0, p, PAGE, mirror, &acc), -EINVAL);
	CHILD_OPEN(&d);
	CHECK_OK(hmm_device_write(d, p, npages * PAGE, mirror, &acc));
	CHECK_EQ(acc.pages, npages);
	CHECK_EQ(acc.faults, 1);
	CHECK_EQ(t_count_neg(p, ints), 0);
	CHECK_OK(hmm_device_close(d));
	return T_PASS;
}

static int write_child(bool migrate, bool thp)
{
	size_t len = thp ? THP_SIZE : NPAGES * PAGE, npages = len / PAGE, ints = len / sizeof(int);
	void *map = NULL;
	size_t map_len = len;
	int *p, *mirror = malloc(len);
	pid_t pid;
	int rc;

	if (thp)
		p = t_thp_region(&map, &map_len, PROT_READ | PROT_WRITE);
	else
		p = map = t_map(len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
	CHECK(p && mirror);
	t_fill(p, ints, 0);
	for (size_t i = 0; i < ints; i++)
		mirror[i] = -(int)i;
	if (migrate) {
		size_t pages;

		CHECK_OK(hmm_migrate(p, len, dev0, 0, &pages));
		CHECK_EQ(pages, npages);
	}
	pid = fork();
	CHECK(pid >= 0);
	if (!pid)
		_exit(child_writes(p, npages, !migrate, mirror));
	rc = child_done(pid);
	CHECK(rc != T_FAIL);
	if (rc == T_SKIP)
		return T_SKIP;
	CHECK_EQ(t_count_bad(p, ints, 0), 0); /* copy-on-write kept ours */
	t_unmap(map, map_len);
	free(mirror);
	return T_PASS;
}

static int anon_write_child(void) { return write_child(false, false); }
static int anon_write_child_migrated(void) { return write_child(true, false); }
static int anon_write_child_thp(void) { return write_child(false, true); }
static int anon_write_child_thp_migrated(void) { return write_child(true, true); }

static int child_shared(int *p, int *mirror)
{
	size_t ints = NPAGES * PAGE / sizeof(int);
	struct hmm_device *d;
	struct hmm_access acc;

	CHECK_EQ(t_count_bad(p, ints, 0), 0);
	CHECK_EQ(t_count_neg(mirror, ints), 0);
	CHILD_OPEN(&d);
	CHECK_OK(hmm_device_write(d, p, NPAGES * PAGE, mirror, &acc));
	CHECK_EQ(acc.pages, NPAGES);
	CHECK_EQ(acc.faults, 1);
	CHECK_EQ(t_count_neg(p, ints), 0);
	CHECK_OK(hmm_device_close(d));
	return T_PASS;
}

static int anon_write_child_shared(void)
{
	size_t ints = NPAGES * PAGE / sizeof(int);
	int *p = t_map(NPAGES * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
	int *mirror = malloc(NPAGES * PAGE);
	pid_t pid;
	int rc;

	CHECK(p && mirror);
	t_fill(p, ints, 0);
	for (size_t i = 0; i < ints; i++)
		mirror[i] = -(int)i;
	pid = fork();
	CHECK(pid >= 0);
	if (!pid)
		_exit(child_shared(p, mirror));
	rc = child_done(pid);
	CHECK(rc != T_FAIL);
	if (rc == T_SKIP)
		return T_SKIP;
	CHECK_EQ(t_count_neg(p, ints), 0); /* the child's device write is ours too */
	t_unmap(p, NPAGES * PAGE);
	free(mirror);
	return T_PASS;
}

static int hmm_cow_in_device(void)
{
	size_t npages = 4, ints = npages * PAGE / sizeof(int), pages;
	int *p = t_map(npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
	uint8_t snap[4];
	int status;
	pid_t pid;

	CHECK(p);
	t_fill(p, ints, 0);
	CHECK_OK(hmm_migrate(p, npages * PAGE, dev0, 0, &pages));
	CHECK_EQ(pages, npages);
	pid = fork();
	CHECK(pid >= 0);
	if (!pid) {
		for (;;)
			pause();
	}
	/* Copy-on-write breaks on pages that were on the device. */
	for (size_t i = 0; i < ints; i++)
		p[i] = (int)i;
	kill(pid, SIGKILL);
	CHECK_EQ(waitpid(pid, &status, 0), pid);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	CHECK_OK(hmm_device_snapshot(dev0, p, npages * PAGE, snap));
	for (size_t i = 0; i < npages; i++)
		CHECK_EQ(snap[i], HMM_SNAP_WRITE);
	t_unmap(p, npages * PAGE);
	return T_PASS;
}

/* The child keeps managing its memory: it can migrate and fault pages back. */
static int child_migrates(int *p, size_t npages)
{
	size_t ints = npages * PAGE / sizeof(int), pages;
	struct hmm_device *d;

	CHECK_EQ(t_count_bad(p, ints, 7), 0);
	CHECK_EQ(t_pages_at(p, npages, HMM_LOC_HOST), npages);
	CHILD_OPEN(&d);
	CHECK_OK(hmm_migrate(p, npages * PAGE, d, 0, &pages));
	CHECK_EQ(pages, npages);
	CHECK_EQ(t_count_bad(p, ints, 7), 0);
	CHECK_OK(hmm_device_close(d));
	return T_PASS;
}

static int fork_with_device_pages(void)
{
	size_t npages = NPAGES, ints = npages * PAGE / sizeof(int), pages;
	int *p = hmm_alloc(npages * PAGE);
	pid_t pid;
	int rc;

	CHECK(p);
	t_fill(p, ints, 7);
	CHECK_OK(hmm_migrate(p, npages * PAGE, dev0, 0, &pages));
	CHECK_EQ(pages, npages);
	pid = fork();
	CHECK(pid >= 0);
	if (!pid)
		_exit(child_migrates(p, npages));
	rc = child_done(pid);
	CHECK(rc != T_FAIL);
	if (rc == T_SKIP)
		return T_SKIP;
	/* fork brought them home first */
	CHECK_EQ(t_pages_at(p, npages, HMM_LOC_HOST), npages);
	CHECK_EQ(t_count_bad(p, ints, 7), 0);
	hmm_free(p);
	return T_PASS;
}

T_MAIN(TEST_CASE(anon_write_child, 0),
       TEST_CASE(anon_write_child_migrated, 0),
       TEST_CASE(anon_write_child_thp, 0),
       TEST_CASE(anon_write_child_thp_migrated, 0),
       TEST_CASE(anon_write_child_shared, 0),
       TEST_CASE(hmm_cow_in_device, 0),
       TEST_CASE(fork_with_device_pages, 0))
