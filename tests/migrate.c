// SPDX-License-Identifier: MIT
/*
 * migrate, migrate_fault, migrate_release, migrate_multiple: pages move to
 * the device and their data with them; the CPU touching them brings them
 * home (device-private) or reads them in place (coherent); release evicts
 * everything home intact.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "harness.h"

static int *alloc_filled(size_t npages, int base)
{
	int *p = t_map(npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);

	if (p)
		t_fill(p, npages * PAGE / sizeof(int), base);
	return p;
}

static int migrate(void)
{
	size_t ints = NPAGES * PAGE / sizeof(int), pages = 0;
	int *p = alloc_filled(NPAGES, 0), *mirror = malloc(NPAGES * PAGE);
	struct hmm_device_info info = { .size = sizeof(info) };
	struct hmm_access acc;

	CHECK(p && mirror);
	CHECK_OK(hmm_migrate(p, NPAGES * PAGE, dev0, 0, &pages));
	CHECK_EQ(pages, NPAGES);
	CHECK_EQ(t_pages_at(p, NPAGES, t_dev_index(dev0)), NPAGES);
	CHECK_OK(hmm_device_info(dev0, &info));
	CHECK_EQ(info.mem_used, NPAGES * PAGE);
	/* The device maps what it just received, as dmirror does. */
	CHECK_OK(hmm_device_read(dev0, p, NPAGES * PAGE, mirror, &acc));
	CHECK_EQ(acc.faults, 0);
	CHECK_EQ(t_count_bad(mirror, ints, 0), 0);
	/* Again: pages already there count and stay. */
	CHECK_OK(hmm_migrate(p, NPAGES * PAGE, dev0, 0, &pages));
	CHECK_EQ(pages, NPAGES);
	CHECK_EQ(t_count_bad(p, ints, 0), 0);
	t_unmap(p, NPAGES * PAGE);
	CHECK_OK(hmm_device_info(dev0, &info));
	CHECK_EQ(info.mem_used, 0); /* munmap gave the device memory back */
	free(mirror);
	return T_PASS;
}

static int migrate_fault(void)
{
	size_t ints = NPAGES * PAGE / sizeof(int), half = ints / 2, pages;
	int *p = alloc_filled(NPAGES, 0), *mirror = malloc(NPAGES * PAGE);
	struct hmm_access acc;

	CHECK(p && mirror);
	CHECK_OK(hmm_migrate(p, NPAGES * PAGE, dev0, 0, &pages));
	CHECK_EQ(pages, NPAGES);
	CHECK_EQ(t_count_bad(p, half, 0), 0);
	if (variant->coherent)
		CHECK_EQ(t_pages_at(p, NPAGES / 2, t_dev_index(dev0)), NPAGES / 2);
	else
		CHECK_EQ(t_pages_at(p, NPAGES / 2, HMM_LOC_HOST), NPAGES / 2);
	/* A mix of host pages and pages already on the device. */
	CHECK_OK(hmm_migrate(p, NPAGES * PAGE, dev0, 0, &pages));
	CHECK_EQ(pages, NPAGES);
	CHECK_OK(hmm_device_read(dev0, p, NPAGES * PAGE, mirror, &acc));
	CHECK_EQ(t_count_bad(mirror, ints, 0), 0);
	CHECK_EQ(t_count_bad(p, ints, 0), 0);
	t_unmap(p, NPAGES * PAGE);
	free(mirror);
	return T_PASS;
}

static int migrate_release(void)
{
	struct hmm_device_info info = { .size = sizeof(info) };
	size_t ints = NPAGES * PAGE / sizeof(int), pages;
	int *p = alloc_filled(NPAGES, 0);

	CHECK(p);
	CHECK_OK(hmm_migrate(p, NPAGES * PAGE, dev0, 0, &pages));
	CHECK_EQ(pages, NPAGES);
	CHECK_OK(hmm_device_release(dev0));
	CHECK_EQ(t_pages_at(p, NPAGES, HMM_LOC_HOST), NPAGES);
	CHECK_OK(hmm_device_info(dev0, &info));
	CHECK_EQ(info.mem_used, 0);
	CHECK_EQ(t_count_bad(p, ints / 2, 0), 0);
	CHECK_EQ(t_count_bad(p, ints, 0), 0);
	t_unmap(p, NPAGES * PAGE);
	return T_PASS;
}

static int migrate_shared(void)
{
	int *p = t_map(NPAGES * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
	size_t pages = 99;

	CHECK(p);
	CHECK_RET(hmm_migrate(p, NPAGES * PAGE, dev0, 0, &pages), -ENOENT);
	CHECK_EQ(pages, 0);
	/* Shared memory is host memory: every page counts once (it used to count twice). */
	CHECK_OK(hmm_migrate(p, NPAGES * PAGE, NULL, 0, &pages));
	CHECK_EQ(pages, NPAGES);
	t_unmap(p, NPAGES * PAGE);
	return T_PASS;
}

static int migrate_multiple(void)
{
	size_t ints = NPAGES * PAGE / sizeof(int);

	for (int c = 0; c < NTIMES; c++) {
		int *p = alloc_filled(NPAGES, c);
		size_t pages;

		CHECK(p);
		CHECK_OK(hmm_migrate(p, NPAGES * PAGE, dev0, 0, &pages));
		CHECK_EQ(pages, NPAGES);
		if (variant->coherent) {
			/* The CPU never faults on coherent memory: explicit way home. */
			CHECK_OK(hmm_migrate(p, NPAGES * PAGE, NULL, 0, &pages));
			CHECK_EQ(pages, NPAGES);
		}
		CHECK_EQ(t_count_bad(p, ints, c), 0);
		t_unmap(p, NPAGES * PAGE);
	}
	return T_PASS;
}

/* Untouched pages migrate as zero pages; writes after the round trip stick. */
static int migrate_untouched(void)
{
	int *p = t_map(NPAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
	size_t pages;

	CHECK(p);
	CHECK_EQ(t_pages_at(p, NPAGES, HMM_LOC_NONE), NPAGES);
	CHECK_OK(hmm_migrate(p, NPAGES * PAGE, dev0, 0, &pages));
	CHECK_EQ(pages, NPAGES);
	CHECK(t_is_zero(p, NPAGES * PAGE));
	t_fill(p, NPAGES * PAGE / sizeof(int), 5);
	CHECK_OK(hmm_migrate(p, NPAGES * PAGE, dev0, 0, &pages));
	CHECK_OK(hmm_migrate(p, NPAGES * PAGE, NULL, 0, &pages));
	CHECK_EQ(pages, NPAGES);
	CHECK_EQ(t_count_bad(p, NPAGES * PAGE / sizeof(int), 5), 0);
	t_unmap(p, NPAGES * PAGE);
	return T_PASS;
}

static _Atomic bool spin_stop;

static void *spin(void *arg)
{
	(void)arg;
	while (!atomic_load_explicit(&spin_stop, memory_order_relaxed))
		;
	return NULL;
}

/*
 * Regression: the CPU reads half the pages back (each fault brings a growing
 * window home, on sim:copy through the DMA queue) and migrates everything
 * again at once. A fault that had been parked while its own window was in
 * flight used to be served a second time, after the new migration had taken
 * the page back: one page came home that nobody asked for, and hmm_migrate
 * reported 1023 of 1024. Spinning threads keep the fault thread waiting for
 * a CPU, which is what made the race show.
 */
static int migrate_fault_again(void)
{
	size_t ints = NPAGES * PAGE / sizeof(int), half = ints / 2, pages;
	int *p = alloc_filled(NPAGES, 0);
	pthread_t spinners[2];

	CHECK(p);
	atomic_store(&spin_stop, false);
	for (int i = 0; i < 2; i++)
		CHECK_OK(pthread_create(&spinners[i], NULL, spin, NULL));
	for (int round = 0; round < 200; round++) {
		CHECK_OK(hmm_migrate(p, NPAGES * PAGE, dev0, 0, &pages));
		CHECK_EQ(pages, NPAGES);
		CHECK_EQ(t_count_bad(p, half, 0), 0);
		CHECK_OK(hmm_migrate(p, NPAGES * PAGE, dev0, 0, &pages));
		CHECK_EQ(pages, NPAGES);
		CHECK_EQ(t_pages_at(p, NPAGES, t_dev_index(dev0)), NPAGES);
	}
	atomic_store(&spin_stop, true);
	for (int i = 0; i < 2; i++)
		pthread_join(spinners[i], NULL);
	CHECK_EQ(t_count_bad(p, ints, 0), 0);
	t_unmap(p, NPAGES * PAGE);
	return T_PASS;
}

/* Two devices: pages on one move across to the other (API.md). */
static int migrate_across(void)
{
	size_t ints = NPAGES * PAGE / sizeof(int), pages;
	int *p = alloc_filled(NPAGES, 3);

	CHECK(p);
	CHECK_OK(hmm_migrate(p, NPAGES * PAGE, dev0, 0, &pages));
	CHECK_OK(hmm_migrate(p, NPAGES * PAGE, dev1, 0, &pages));
	CHECK_EQ(pages, NPAGES);
	CHECK_EQ(t_pages_at(p, NPAGES, t_dev_index(dev1)), NPAGES);
	CHECK_EQ(t_count_bad(p, ints, 3), 0);
	t_unmap(p, NPAGES * PAGE);
	return T_PASS;
}

T_MAIN(TEST_CASE(migrate, 0),
       TEST_CASE(migrate_fault, 0),
       TEST_CASE(migrate_release, 0),
       TEST_CASE(migrate_shared, 0),
       TEST_CASE(migrate_multiple, 0),
       TEST_CASE(migrate_untouched, 0),
       TEST_CASE(migrate_fault_again, 0),
       TEST_CASE(migrate_across, T_TWO_DEVICES))
