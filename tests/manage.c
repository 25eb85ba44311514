// SPDX-License-Identifier: MIT
/*
 * Managed memory: hmm_alloc/hmm_free, hmm_manage/hmm_unmanage, residency
 * reports (NONE, HOST, device, UNMAPPED), and the statistics counters.
 */
#include <stdlib.h>

#include "harness.h"

static int alloc_free(void)
{
	struct hmm_stats st = { .size = sizeof(st) };
	char *p = hmm_alloc(10 * PAGE + 1), *big = hmm_alloc(THP_SIZE);

	CHECK(p && big);
	CHECK_EQ((uintptr_t)p % PAGE, 0);
	CHECK_EQ((uintptr_t)big % THP_SIZE, 0);
	CHECK_EQ(t_pages_at(p, 11, HMM_LOC_NONE), 11);
	p[0] = 1;
	CHECK_EQ(t_loc(p), HMM_LOC_HOST);
	CHECK_OK(hmm_stats_get(&st));
	CHECK_EQ(st.managed_bytes, 11 * PAGE + THP_SIZE);
	hmm_free(p);
	hmm_free(big);
	hmm_free(NULL);
	CHECK_EQ(t_loc(p), HMM_LOC_UNMAPPED);
	CHECK_OK(hmm_stats_get(&st));
	CHECK_EQ(st.managed_bytes, 0);
	return T_PASS;
}

static int manage_unmanage(void)
{
	size_t n = 32, ints = n * PAGE / sizeof(int), pages;
	int *p = t_map(n * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);

	CHECK(p);
	t_fill(p, ints, 8);
	CHECK_OK(hmm_manage(p, n / 2 * PAGE));
	CHECK_OK(hmm_manage(p, n * PAGE)); /* overlapping: the rest joins */
	CHECK_OK(hmm_migrate(p, n * PAGE, dev0, 0, &pages));
	CHECK_EQ(pages, n);
	CHECK_OK(hmm_unmanage(p, n * PAGE));
	CHECK_EQ(t_pages_at(p, n, HMM_LOC_HOST), n);
	CHECK_RET(hmm_unmanage(p, n * PAGE), -EINVAL);
	CHECK_EQ(t_count_bad(p, ints, 8), 0);
	/* Unmanaged private memory is adopted again on demand. */
	CHECK_OK(hmm_migrate(p, n * PAGE, dev0, 0, &pages));
	CHECK_EQ(pages, n);
	CHECK_EQ(t_count_bad(p, ints, 8), 0);
	t_unmap(p, n * PAGE);
	return T_PASS;
}

static int manage_refuses(void)
{
	char *shared = t_map(4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
	char *hole = t_map(4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
	struct hmm_stats st = { .size = sizeof(st) };

	CHECK(shared && hole);
	CHECK_OK(munmap(hole + PAGE, PAGE));
	CHECK_RET(hmm_manage(shared, 4 * PAGE), -EINVAL);
	/* (sanitizer runtimes may map their own memory into a fresh gap) */
	if (t_loc(hole + PAGE) != HMM_LOC_UNMAPPED)
		SKIP("someone mapped the hole");
	CHECK_RET(hmm_manage(hole, 4 * PAGE), -EINVAL);
	CHECK_OK(hmm_stats_get(&st));
	CHECK_EQ(st.managed_bytes, 0); /* nothing half-done */
	t_unmap(shared, 4 * PAGE);
	t_unmap(hole, PAGE);
	t_unmap(hole + 2 * PAGE, 2 * PAGE);
	return T_PASS;
}

static int residency(void)
{
	char *p = t_map(4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
	int loc[4];
	size_t pages;

	CHECK(p);
	p[PAGE] = 1;
	CHECK_OK(hmm_migrate(p + 2 * PAGE, PAGE, dev0, 0, &pages));
	CHECK_OK(munmap(p + 3 * PAGE, PAGE));
	CHECK_OK(hmm_residency(p, 4 * PAGE, loc));
	CHECK_EQ(loc[0], HMM_LOC_NONE);
	CHECK_EQ(loc[1], HMM_LOC_HOST);
	CHECK_EQ(loc[2], t_dev_index(dev0));
	CHECK_EQ(loc[3], HMM_LOC_UNMAPPED);
	t_unmap(p, 3 * PAGE);
	return T_PASS;
}

static int stats(void)
{
	struct hmm_stats a = { .size = sizeof(a) }, b = { .size = sizeof(b) };
	size_t n = 64, pages;
	int idx = t_dev_index(dev0);
	char *p = hmm_alloc(n * PAGE);
	struct hmm_access acc;
	char buf[PAGE];

	CHECK(p);
	memset(p, 1, n * PAGE);
	CHECK_OK(hmm_stats_get(&a));
	CHECK_OK(hmm_migrate(p, n * PAGE, dev0, 0, &pages));
	CHECK_OK(hmm_stats_get(&b));
	CHECK_EQ(b.pages_to_device - a.pages_to_device, n);
	CHECK_EQ(b.bytes_to_device - a.bytes_to_device, n * PAGE);
	CHECK_EQ(b.device_resident_bytes[idx], n * PAGE);
	CHECK_EQ(b.host_resident_bytes, b.managed_bytes - n * PAGE);
	CHECK(b.metadata_bytes > 0);
	if (!variant->coherent) {
		CHECK_EQ(p[0], 1);
		CHECK_OK(hmm_stats_get(&a));
		CHECK(a.cpu_faults > b.cpu_faults);
		CHECK(a.pages_to_host > b.pages_to_host);
		CHECK(a.fault_ns > b.fault_ns);
	}
	CHECK_OK(hmm_migrate(p, n * PAGE, NULL, 0, &pages));
	CHECK_OK(hmm_stats_get(&a));
	CHECK_EQ(a.device_resident_bytes[idx], 0);
	CHECK_OK(hmm_device_read(dev0, p + n * PAGE / 2, PAGE, buf, &acc));
	CHECK_OK(hmm_stats_get(&b));
	CHECK_EQ(b.device_faults - a.device_faults, acc.faults);
	/* A caller that knows fewer counters gets those and no more. */
	uint64_t small[3] = { 2 * sizeof(uint64_t), 0, 12345 };
	CHECK_OK(hmm_stats_get((struct hmm_stats *)small));
	CHECK(small[1] > 0);
	CHECK_EQ(small[2], 12345);
	hmm_free(p);
	return T_PASS;
}

T_MAIN(TEST_CASE(alloc_free, T_NO_DEVICES | T_ONE_VARIANT),
       TEST_CASE(manage_unmanage, 0),
       TEST_CASE(manage_refuses, T_NO_DEVICES | T_ONE_VARIANT),
       TEST_CASE(residency, 0),
       TEST_CASE(stats, 0))
