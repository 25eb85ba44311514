// SPDX-License-Identifier: MIT
/*
 * migrate_anon_huge_{empty,zero,free,fault,err,zero_err}: huge-page regions
 * migrate whole when they can (2 MiB aligned runs of device memory) and in
 * base pages when a huge allocation fails; data survives either way.
 */
#include <stdlib.h>

#include "harness.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25 /* Linux 6.1; glibc 2.36 does not name it */
#endif

#define NP (THP_SIZE / PAGE)

struct region {
	void *map;
	size_t map_len;
	int *p;
};

static bool region(struct region *r, int prot)
{
	r->p = t_thp_region(&r->map, &r->map_len, prot);
	return r->p != NULL;
}

static size_t mem_used(void)
{
	struct hmm_device_info info = { .size = sizeof(info) };

	return hmm_device_info(dev0, &info) ? (size_t)-1 : info.mem_used;
}

static int huge_empty(void)
{
	struct region r;
	char *buf = malloc(THP_SIZE);
	struct hmm_access acc;
	size_t pages;

	CHECK(buf && region(&r, PROT_READ));
	memset(buf, 0xff, THP_SIZE);
	CHECK_OK(hmm_migrate(r.p, THP_SIZE, dev0, 0, &pages));
	CHECK_EQ(pages, NP);
	CHECK_OK(hmm_device_read(dev0, r.p, THP_SIZE, buf, &acc));
	CHECK(t_is_zero(buf, THP_SIZE));
	CHECK(t_is_zero(r.p, THP_SIZE));
	t_unmap(r.map, r.map_len);
	free(buf);
	return T_PASS;
}

static int huge_zero(void)
{
	struct region r;
	size_t pages;

	CHECK(region(&r, PROT_READ));
	CHECK_EQ(((volatile int *)r.p)[0], 0);
	CHECK_OK(hmm_migrate(r.p, THP_SIZE, dev0, 0, &pages));
	CHECK_EQ(pages, NP);
	CHECK(t_is_zero(r.p, THP_SIZE));
	t_unmap(r.map, r.map_len);
	return T_PASS;
}

static int huge_free(void)
{
	struct region r;
	size_t pages;

	CHECK(region(&r, PROT_READ | PROT_WRITE));
	t_fill(r.p, THP_SIZE / sizeof(int), 0);
	CHECK_OK(hmm_migrate(r.p, THP_SIZE, dev0, 0, &pages));
	CHECK_EQ(pages, NP);
	CHECK_OK(madvise(r.p, THP_SIZE, MADV_FREE));
	CHECK_EQ(mem_used(), 0); /* freeing device-resident memory frees it */
	t_unmap(r.map, r.map_len);
	return T_PASS;
}

static int huge_fault(void)
{
	struct region r;
	size_t pages;

	CHECK(region(&r, PROT_READ | PROT_WRITE));
	t_fill(r.p, THP_SIZE / sizeof(int), 0);
	if (madvise(r.p, THP_SIZE, MADV_COLLAPSE))
		SKIP("MADV_COLLAPSE: %s", strerror(errno));
	CHECK_OK(hmm_migrate(r.p, THP_SIZE, dev0, 0, &pages));
	CHECK_EQ(pages, NP);
	CHECK_EQ(t_pages_at(r.p, NP, t_dev_index(dev0)), NP);
	CHECK_EQ(t_count_bad(r.p, THP_SIZE / sizeof(int), 0), 0);
	t_unmap(r.map, r.map_len);
	return T_PASS;
}

static int huge_err(void)
{
	struct region r;
	size_t pages;

	CHECK(region(&r, PROT_READ | PROT_WRITE));
	t_fill(r.p, THP_SIZE / sizeof(int), 0);
	CHECK_OK(hmm_fault_inject("devmem_alloc_huge"));
	CHECK_OK(hmm_migrate(r.p, THP_SIZE, dev0, 0, &pages));
	CHECK_EQ(pages, NP);
	CHECK_EQ(r.p[2048], 2048);
	CHECK_EQ(t_count_bad(r.p, THP_SIZE / sizeof(int), 0), 0);
	t_unmap(r.map, r.map_len);
	return T_PASS;
}

static int huge_zero_err(void)
{
	struct region r;
	size_t pages;

	CHECK(region(&r, PROT_READ));
	CHECK_OK(hmm_fault_inject("devmem_alloc_huge"));
	CHECK_OK(hmm_migrate(r.p, THP_SIZE, dev0, 0, &pages));
	CHECK_EQ(pages, NP);
	CHECK_EQ(r.p[2048], 0);
	t_unmap(r.map, r.map_len);
	return T_PASS;
}

/* Many round trips of managed huge-page-aligned memory, both ways. */
static int huge_round_trips(void)
{
	size_t len = 4 * THP_SIZE, pages;
	int *p = hmm_alloc(len);

	CHECK(p);
	t_fill(p, len / sizeof(int), 3);
	for (int i = 0; i < NTIMES; i++) {
		CHECK_OK(hmm_migrate(p, len, dev0, 0, &pages));
		CHECK_EQ(pages, len / PAGE);
		CHECK_OK(hmm_migrate(p, len, NULL, 0, &pages));
		CHECK_EQ(pages, len / PAGE);
	}
	CHECK_EQ(t_count_bad(p, len / sizeof(int), 3), 0);
	hmm_free(p);
	return T_PASS;
}

T_MAIN(TEST_CASE(huge_empty, 0),
       TEST_CASE(huge_zero, 0),
       TEST_CASE(huge_free, 0),
       TEST_CASE(huge_fault, 0),
       TEST_CASE(huge_err, 0),
       TEST_CASE(huge_zero_err, 0),
       TEST_CASE(huge_round_trips, 0))
