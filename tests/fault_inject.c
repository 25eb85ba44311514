// SPDX-License-Identifier: MIT
/*
 * Every fault-injection point: device allocation, huge allocation, copies
 * to the device and copies home (by hmm_migrate and by CPU faults). After
 * each, no data is lost and the API reports the partial result; a CPU fault
 * that cannot be served gets SIGBUS instead of hanging.
 */
#include <stdlib.h>

#include "harness.h"

#define N NPAGES

static int *alloc_filled(int base)
{
	int *p = hmm_alloc(N * PAGE);

	if (p)
		t_fill(p, N * PAGE / sizeof(int), base);
	return p;
}

static int devmem_alloc(void)
{
	int *p = alloc_filled(1);
	size_t pages = 99;

	CHECK(p);
	CHECK_OK(hmm_fault_inject("devmem_alloc"));
	CHECK_RET(hmm_migrate(p, N * PAGE, dev0, 0, &pages), -ENOMEM);
	CHECK_EQ(pages, 0);
	CHECK_EQ(t_pages_at(p, N, HMM_LOC_HOST), N);
	CHECK_EQ(t_count_bad(p, N * PAGE / sizeof(int), 1), 0);
	CHECK_OK(hmm_migrate(p, N * PAGE, dev0, 0, &pages));
	CHECK_EQ(pages, N);
	CHECK_EQ(t_count_bad(p, N * PAGE / sizeof(int), 1), 0);
	hmm_free(p);
	return T_PASS;
}

/* A huge run that cannot be had falls back to base pages. */
static int devmem_alloc_huge(void)
{
	size_t npages = THP_SIZE / PAGE, pages;
	int *p = hmm_alloc(THP_SIZE);

	CHECK(p);
	t_fill(p, THP_SIZE / sizeof(int), 2);
	CHECK_OK(hmm_fault_inject("devmem_alloc_huge"));
	CHECK_OK(hmm_migrate(p, THP_SIZE, dev0, 0, &pages));
	CHECK_EQ(pages, npages);
	CHECK_EQ(p[2048], 2048 + 2);
	CHECK_EQ(t_count_bad(p, THP_SIZE / sizeof(int), 2), 0);
	hmm_free(p);
	return T_PASS;
}

static int dma_to_device(void)
{
	int *p = alloc_filled(3);
	size_t pages = 0;

	CHECK(p);
	CHECK_OK(hmm_fault_inject("dma_to_device:1"));
	CHECK_RET(hmm_migrate(p, N * PAGE, dev0, 0, &pages), -EIO);
	CHECK(pages < N);
	CHECK_EQ(t_pages_at(p, N, t_dev_index(dev0)), pages);
	CHECK_EQ(t_count_bad(p, N * PAGE / sizeof(int), 3), 0);
	CHECK_OK(hmm_migrate(p, N * PAGE, dev0, 0, &pages));
	CHECK_EQ(pages, N);
	CHECK_EQ(t_count_bad(p, N * PAGE / sizeof(int), 3), 0);
	hmm_free(p);
	return T_PASS;
}

/* The copy path (read-only memory): a failed copy leaves pages unprotected again. */
static int dma_to_device_copy_path(void)
{
	int *p = alloc_filled(4);
	size_t pages = 77;

	CHECK(p);
	CHECK_OK(mprotect(p, N * PAGE, PROT_READ));
	CHECK_OK(hmm_fault_inject("dma_to_device:always"));
	CHECK_RET(hmm_migrate(p, N * PAGE, dev0, 0, &pages), -EIO);
	CHECK_EQ(pages, 0);
	CHECK_OK(hmm_fault_inject("off"));
	CHECK_OK(mprotect(p, N * PAGE, PROT_READ | PROT_WRITE));
	p[0] = -1; /* would hang if a write protection were left behind */
	CHECK_EQ(p[0], -1);
	CHECK_EQ(t_count_bad(p + 1, N * PAGE / sizeof(int) - 1, 5), 0);
	hmm_free(p);
	return T_PASS;
}

static int dma_to_host(void)
{
	size_t ints = N * PAGE / sizeof(int), pages = 77;
	int *p = alloc_filled(6), *buf = malloc(N * PAGE);
	struct hmm_access acc;

	CHECK(p && buf);
	CHECK_OK(hmm_migrate(p, N * PAGE, dev0, 0, &pages));
	CHECK_OK(hmm_fault_inject("dma_to_host:always"));
	CHECK_RET(hmm_migrate(p, N * PAGE, NULL, 0, &pages), -EIO);
	CHECK_EQ(pages, 0);
	CHECK_EQ(t_pages_at(p, N, t_dev_index(dev0)), N);
	/* Intact on the device. */
	CHECK_OK(hmm_device_read(dev0, p, N * PAGE, buf, &acc));
	CHECK_EQ(t_count_bad(buf, ints, 6), 0);
	CHECK_OK(hmm_fault_inject("off"));
	CHECK_OK(hmm_migrate(p, N * PAGE, NULL, 0, &pages));
	CHECK_EQ(pages, N);
	CHECK_EQ(t_count_bad(p, ints, 6), 0);
	hmm_free(p);
	free(buf);
	return T_PASS;
}

/* A CPU fault retries a failed copy home. */
static int cpu_fault_retry(void)
{
	int *p = alloc_filled(7);
	size_t pages;

	CHECK(p);
	CHECK_OK(hmm_migrate(p, N * PAGE, dev0, 0, &pages));
	CHECK_OK(hmm_fault_inject("dma_to_host:2"));
	CHECK_EQ(t_count_bad(p, N * PAGE / sizeof(int), 7), 0);
	hmm_free(p);
	return T_PASS;
}

/* A CPU fault that cannot be served fails that access, and nothing is lost. */
static int cpu_fault_sigbus(void)
{
	int *p = alloc_filled(8), v;
	size_t pages;

	CHECK(p);
	CHECK_OK(hmm_migrate(p, N * PAGE, dev0, 0, &pages));
	CHECK_OK(hmm_fault_inject("dma_to_host:always"));
	t_load_or_sigbus(p, &v);
	CHECK_EQ(t_sigbus, 1);
	CHECK_OK(hmm_fault_inject("off"));
	CHECK_OK(hmm_migrate(p, N * PAGE, NULL, 0, &pages));
	CHECK_EQ(pages, N);
	CHECK_EQ(t_count_bad(p, N * PAGE / sizeof(int), 8), 0);
	hmm_free(p);
	return T_PASS;
}

T_MAIN(TEST_CASE(devmem_alloc, 0),
       TEST_CASE(devmem_alloc_huge, 0),
       TEST_CASE(dma_to_device, T_PRIVATE_ONLY),
       TEST_CASE(dma_to_device_copy_path, T_PRIVATE_ONLY),
       TEST_CASE(dma_to_host, T_PRIVATE_ONLY),
       TEST_CASE(cpu_fault_retry, T_PRIVATE_ONLY),
       TEST_CASE(cpu_fault_sigbus, T_PRIVATE_ONLY))
