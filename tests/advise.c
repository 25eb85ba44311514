// SPDX-License-Identifier: MIT
/*
 * hmm_advise: preferred location, accessed-by, read-mostly, prefetch with
 * hmm_sync, and pinning to the host (cudaMemAdvise's vocabulary).
 */
#include <stdlib.h>

#include "harness.h"

#define N 64

static int *alloc_filled(int base)
{
	int *p = hmm_alloc(N * PAGE);

	if (p)
		t_fill(p, N * PAGE / sizeof(int), base);
	return p;
}

/* A device fault on pages preferring the device migrates them there. */
static int preferred_device(void)
{
	int *p = alloc_filled(1), *buf = malloc(N * PAGE);
	struct hmm_access acc;

	CHECK(p && buf);
	CHECK_OK(hmm_advise(p, N * PAGE, HMM_ADVISE_PREFERRED_LOCATION, dev0));
	CHECK_EQ(t_pages_at(p, N, HMM_LOC_HOST), N); /* advice alone moves nothing */
	CHECK_OK(hmm_device_read(dev0, p, N * PAGE, buf, &acc));
	CHECK_EQ(acc.faults, 1);
	CHECK_EQ(t_count_bad(buf, N * PAGE / sizeof(int), 1), 0);
	if (!variant->coherent)
		CHECK_EQ(t_pages_at(p, N, t_dev_index(dev0)), N);
	CHECK_OK(hmm_advise(p, N * PAGE, HMM_ADVISE_UNSET_PREFERRED_LOCATION, NULL));
	CHECK_EQ(t_count_bad(p, N * PAGE / sizeof(int), 1), 0);
	hmm_free(p);
	free(buf);
	return T_PASS;
}

static int preferred_host(void)
{
	int *p = alloc_filled(2), *buf = malloc(N * PAGE);
	struct hmm_access acc;

	CHECK(p && buf);
	CHECK_OK(hmm_advise(p, N * PAGE, HMM_ADVISE_PREFERRED_LOCATION, NULL));
	CHECK_OK(hmm_device_read(dev0, p, N * PAGE, buf, &acc));
	CHECK_EQ(t_pages_at(p, N, HMM_LOC_HOST), N);
	hmm_free(p);
	free(buf);
	return T_PASS;
}

/* The device stays mapped as pages move: no fault on its next access. */
static int accessed_by(void)
{
	int *p = alloc_filled(3), *buf = malloc(N * PAGE);
	struct hmm_access acc;
	size_t pages;

	CHECK(p && buf);
	CHECK_OK(hmm_advise(p, N * PAGE, HMM_ADVISE_ACCESSED_BY, dev0));
	CHECK_OK(hmm_device_read(dev0, p, N * PAGE, buf, &acc));
	CHECK_EQ(acc.faults, 0);
	CHECK_OK(hmm_migrate(p, N * PAGE, dev1, 0, &pages));
	CHECK_EQ(pages, N);
	/* Back home by CPU faults: the mapping is re-established as they land. */
	CHECK_EQ(t_count_bad(p, N * PAGE / sizeof(int), 3), 0);
	CHECK_OK(hmm_device_read(dev0, p, N * PAGE, buf, &acc));
	CHECK_EQ(acc.faults, 0);
	CHECK_EQ(t_count_bad(buf, N * PAGE / sizeof(int), 3), 0);
	CHECK_OK(hmm_advise(p, N * PAGE, HMM_ADVISE_UNSET_ACCESSED_BY, dev0));
	hmm_free(p);
	free(buf);
	return T_PASS;
}

/* Reads duplicate; a write on either side collapses the copies. */
static int read_mostly(void)
{
	size_t ints = N * PAGE / sizeof(int);
	int *p = alloc_filled(4), *buf = malloc(N * PAGE);
	struct hmm_access acc;

	CHECK(p && buf);
	CHECK_OK(hmm_advise(p, N * PAGE, HMM_ADVISE_READ_MOSTLY, NULL));
	CHECK_OK(hmm_device_read(dev0, p, N * PAGE, buf, &acc));
	CHECK_EQ(t_count_bad(buf, ints, 4), 0);
	CHECK_EQ(t_pages_at(p, N, HMM_LOC_HOST), N); /* duplicated, not moved */
	CHECK_OK(hmm_device_read(dev0, p, N * PAGE, buf, &acc));
	CHECK_EQ(acc.faults, 0);
	/* CPU write: the device's copy goes, the next device read sees it. */
	p[5] = -5;
	CHECK_OK(hmm_device_read(dev0, p, N * PAGE, buf, &acc));
	CHECK_EQ(buf[5], -5);
	/* (coherent devices read host memory in place: nothing to duplicate) */
	CHECK_EQ(acc.faults, variant->coherent ? 0 : 1);
	/* Device write: the same, the other way. */
	buf[0] = 1000;
	CHECK_OK(hmm_device_write(dev0, p, PAGE, buf, &acc));
	CHECK_EQ(p[0], 1000);
	CHECK_OK(hmm_advise(p, N * PAGE, HMM_ADVISE_UNSET_READ_MOSTLY, NULL));
	p[ints - 1] = 7;
	CHECK_EQ(p[ints - 1], 7);
	hmm_free(p);
	free(buf);
	return T_PASS;
}

static int prefetch(void)
{
	int *p = alloc_filled(5);

	CHECK(p);
	CHECK_OK(hmm_advise(p, N * PAGE, HMM_ADVISE_PREFETCH, dev0));
	CHECK_OK(hmm_sync(dev0));
	CHECK_EQ(t_pages_at(p, N, t_dev_index(dev0)), N);
	CHECK_OK(hmm_advise(p, N * PAGE, HMM_ADVISE_PREFETCH, NULL));
	CHECK_OK(hmm_sync(NULL));
	CHECK_EQ(t_pages_at(p, N, HMM_LOC_HOST), N);
	CHECK_EQ(t_count_bad(p, N * PAGE / sizeof(int), 5), 0);
	hmm_free(p);
	return T_PASS;
}

static int pin_host(void)
{
	int *p = alloc_filled(6);
	size_t pages = 99;

	CHECK(p);
	CHECK_OK(hmm_migrate(p, N * PAGE, dev0, 0, &pages));
	CHECK_OK(hmm_advise(p, N / 2 * PAGE, HMM_ADVISE_PIN_HOST, NULL));
	CHECK_EQ(t_pages_at(p, N / 2, HMM_LOC_HOST), N / 2); /* brought home */
	CHECK_RET(hmm_migrate(p, N * PAGE, dev0, 0, &pages), -ENOENT);
	CHECK_EQ(pages, N / 2);
	CHECK_OK(hmm_advise(p, N / 2 * PAGE, HMM_ADVISE_UNPIN_HOST, NULL));
	CHECK_OK(hmm_migrate(p, N * PAGE, dev0, 0, &pages));
	CHECK_EQ(pages, N);
	CHECK_EQ(t_count_bad(p, N * PAGE / sizeof(int), 6), 0);
	hmm_free(p);
	return T_PASS;
}

/* Advice on memory nobody manages yet adopts it. */
static int adopts(void)
{
	int *p = t_map(N * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);

	CHECK(p);
	t_fill(p, N * PAGE / sizeof(int), 7);
	CHECK_OK(hmm_advise(p, N * PAGE, HMM_ADVISE_PREFETCH, dev0));
	CHECK_OK(hmm_sync(NULL));
	CHECK_EQ(t_pages_at(p, N, t_dev_index(dev0)), N);
	CHECK_EQ(t_count_bad(p, N * PAGE / sizeof(int), 7), 0);
	t_unmap(p, N * PAGE);
	return T_PASS;
}

T_MAIN(TEST_CASE(preferred_device, 0),
       TEST_CASE(preferred_host, 0),
       TEST_CASE(accessed_by, T_TWO_DEVICES),
       TEST_CASE(read_mostly, 0),
       TEST_CASE(prefetch, 0),
       TEST_CASE(pin_host, 0),
       TEST_CASE(adopts, 0))
