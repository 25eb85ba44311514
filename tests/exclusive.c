// SPDX-License-Identifier: MIT
/*
 * exclusive, exclusive_mprotect, exclusive_cow: device-exclusive (atomic)
 * access; any CPU access revokes it; losing write permission revokes it;
 * after fork it is plain copy-on-write memory on both sides; a CPU writing
 * while the device takes the pages loses no update (exclusive_vs_cpu: the
 * copy path before UFFDIO_MOVE must see writes made during its copy).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "harness.h"

static int *alloc_filled(size_t npages)
{
	int *p = t_map(npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);

	if (p)
		t_fill(p, npages * PAGE / sizeof(int), 0);
	return p;
}

static int exclusive(void)
{
	size_t ints = NPAGES * PAGE / sizeof(int);
	int *p = alloc_filled(NPAGES);
	struct hmm_access acc;
	uint64_t old;

	CHECK(p);
	CHECK_OK(hmm_device_exclusive(dev0, p, NPAGES * PAGE, &acc));
	CHECK_EQ(acc.pages, NPAGES);
	CHECK_RET(hmm_device_check_exclusive(dev0, p, NPAGES * PAGE), -EPERM);
	/* Device atomics on what it holds exclusively. */
	CHECK_OK(hmm_device_atomic_add(dev0, (uint64_t *)p, 0, &old));
	CHECK_EQ(old, (1ull << 32) | 0);
	for (size_t i = 0; i < ints; i++)
		CHECK_EQ(p[i]++, i);
	for (size_t i = 0; i < ints; i++)
		CHECK_EQ(p[i], i + 1);
	CHECK_OK(hmm_device_check_exclusive(dev0, p, NPAGES * PAGE));
	t_unmap(p, NPAGES * PAGE);
	return T_PASS;
}

/* A read is enough to take it back. */
static int exclusive_read_revokes(void)
{
	int *p = alloc_filled(4);
	struct hmm_access acc;

	CHECK(p);
	CHECK_OK(hmm_device_exclusive(dev0, p, 4 * PAGE, &acc));
	CHECK_EQ(((volatile int *)p)[PAGE / sizeof(int)], PAGE / sizeof(int));
	CHECK_RET(hmm_device_check_exclusive(dev0, p + PAGE / sizeof(int), PAGE), 0);
	CHECK_RET(hmm_device_check_exclusive(dev0, p, 4 * PAGE), -EPERM);
	t_unmap(p, 4 * PAGE);
	return T_PASS;
}

static int exclusive_mprotect(void)
{
	size_t ints = NPAGES * PAGE / sizeof(int);
	int *p = alloc_filled(NPAGES), *mirror = malloc(NPAGES * PAGE);
	struct hmm_access acc;

	CHECK(p && mirror);
	CHECK_OK(hmm_device_exclusive(dev0, p, NPAGES * PAGE, &acc));
	CHECK_EQ(acc.pages, NPAGES);
	CHECK_OK(mprotect(p, NPAGES * PAGE, PROT_READ));
	CHECK_OK(hmm_device_check_exclusive(dev0, p, NPAGES * PAGE));
	t_fill(mirror, ints, 100);
	CHECK_RET(hmm_device_write(dev0, p, NPAGES * PAGE, mirror, &acc), -EPERM);
	CHECK_EQ(t_count_bad(p, ints, 0), 0);
	t_unmap(p, NPAGES * PAGE);
	free(mirror);
	return T_PASS;
}

static int increment_all(int *p, size_t ints)
{
	for (size_t i = 0; i < ints; i++)
		CHECK_EQ(p[i]++, i);
	for (size_t i = 0; i < ints; i++)
		CHECK_EQ(p[i], i + 1);
	return T_PASS;
}

static int exclusive_cow(void)
{
	size_t ints = NPAGES * PAGE / sizeof(int);
	int *p = alloc_filled(NPAGES), status;
	struct hmm_access acc;
	pid_t pid;

	CHECK(p);
	CHECK_OK(hmm_device_exclusive(dev0, p, NPAGES * PAGE, &acc));
	CHECK_EQ(acc.pages, NPAGES);
	pid = fork();
	CHECK(pid >= 0);
	if (!pid)
		_exit(increment_all(p, ints));
	CHECK_EQ(increment_all(p, ints), T_PASS);
	CHECK_EQ(waitpid(pid, &status, 0), pid);
	CHECK(WIFEXITED(status));
	CHECK_EQ(WEXITSTATUS(status), 0);
	t_unmap(p, NPAGES * PAGE);
	return T_PASS;
}

/* Exclusive access to pages resident on another device brings them home first. */
static int exclusive_from_other_device(void)
{
	size_t ints = NPAGES * PAGE / sizeof(int), pages;
	int *p = alloc_filled(NPAGES);
	struct hmm_access acc;

	CHECK(p);
	CHECK_OK(hmm_migrate(p, NPAGES * PAGE, dev1, 0, &pages));
	CHECK_OK(hmm_device_exclusive(dev0, p, NPAGES * PAGE, &acc));
	CHECK_RET(hmm_device_check_exclusive(dev0, p, NPAGES * PAGE), -EPERM);
	CHECK_EQ(t_count_bad(p, ints, 0), 0);
	CHECK_OK(hmm_device_check_exclusive(dev0, p, NPAGES * PAGE));
	t_unmap(p, NPAGES * PAGE);
	return T_PASS;
}

/* Word 0 of each page is the CPU's counter, word 1 the device's. */
struct writer {
	uint64_t *p;
	size_t npages;
	atomic_bool stop;
	uint64_t passes;
};

static void *cpu_writer(void *arg)
{
	struct writer *wr = arg;

	while (!atomic_load(&wr->stop)) {
		for (size_t i = 0; i < wr->npages; i++)
			__atomic_fetch_add(&wr->p[i * PAGE / 8], 1, __ATOMIC_RELAXED);
		wr->passes++;
	}
	return NULL;
}

static int exclusive_vs_cpu(void)
{
	size_t n = 64, rounds = 50;
	struct writer wr = { .p = t_map(n * PAGE, PROT_READ | PROT_WRITE,
					MAP_PRIVATE | MAP_ANONYMOUS), .npages = n };
	struct hmm_access acc;
	pthread_t th;
	uint64_t old;

	CHECK(wr.p);
	memset(wr.p, 0, n * PAGE);
	CHECK_OK(pthread_create(&th, NULL, cpu_writer, &wr));
	for (size_t r = 0; r < rounds; r++) {
		int err = hmm_device_exclusive(dev0, wr.p, n * PAGE, &acc);

		CHECK(!err || err == -EBUSY); /* the writer may win every round for a while */
		for (size_t i = 0; i < n; i++)
			CHECK_OK(hmm_device_atomic_add(dev0, &wr.p[i * PAGE / 8 + 1], 1, &old));
	}
	atomic_store(&wr.stop, true);
	CHECK_OK(pthread_join(th, NULL));
	for (size_t i = 0; i < n; i++) {
		CHECK_EQ(wr.p[i * PAGE / 8], wr.passes);
		CHECK_EQ(wr.p[i * PAGE / 8 + 1], rounds);
	}
	t_unmap(wr.p, n * PAGE);
	return T_PASS;
}

T_MAIN(TEST_CASE(exclusive, 0),
       TEST_CASE(exclusive_read_revokes, 0),
       TEST_CASE(exclusive_mprotect, 0),
       TEST_CASE(exclusive_cow, 0),
       TEST_CASE(exclusive_from_other_device, T_TWO_DEVICES),
       TEST_CASE(exclusive_vs_cpu, 0))
