// SPDX-License-Identifier: MIT
/*
 * anon_write, anon_write_prot, anon_write_huge: the device writes through
 * its mirror; a read-only mapping refuses with -EPERM and stays untouched
 * until mprotect allows it, which also replaces the zero page the earlier
 * read mapped.
 */
#include <stdlib.h>

#include "harness.h"

static int *map_prot(size_t npages, int prot, bool managed)
{
	int *p = t_map(npages * PAGE, prot, MAP_PRIVATE | MAP_ANONYMOUS);

	if (p && managed && hmm_manage(p, npages * PAGE)) {
		t_unmap(p, npages * PAGE);
		return NULL;
	}
	return p;
}

static int write_case(bool managed)
{
	size_t ints = NPAGES * PAGE / sizeof(int);
	int *p = map_prot(NPAGES, PROT_READ | PROT_WRITE, managed), *mirror = malloc(NPAGES * PAGE);
	struct hmm_access acc;

	CHECK(p && mirror);
	t_fill(mirror, ints, 0);
	CHECK_OK(hmm_device_write(dev0, p, NPAGES * PAGE, mirror, &acc));
	CHECK_EQ(acc.pages, NPAGES);
	CHECK_EQ(acc.faults, 1);
	CHECK_EQ(t_count_bad(p, ints, 0), 0);
	t_unmap(p, NPAGES * PAGE);
	free(mirror);
	return T_PASS;
}

static int anon_write(void) { return write_case(false); }
static int anon_write_managed(void) { return write_case(true); }

static int prot_case(bool managed)
{
	size_t ints = NPAGES * PAGE / sizeof(int);
	int *p = map_prot(NPAGES, PROT_READ, managed), *mirror = malloc(NPAGES * PAGE);
	struct hmm_access acc;

	CHECK(p && mirror);
	CHECK_OK(hmm_device_read(dev0, p, PAGE, mirror, &acc));
	CHECK_EQ(acc.pages, 1);
	CHECK_EQ(acc.faults, 1);
	CHECK(t_is_zero(mirror, PAGE));

	t_fill(mirror, ints, 0);
	CHECK_RET(hmm_device_write(dev0, p, NPAGES * PAGE, mirror, &acc), -EPERM);
	CHECK(t_is_zero(p, NPAGES * PAGE));

	CHECK_OK(mprotect(p, NPAGES * PAGE, PROT_READ | PROT_WRITE));
	CHECK_OK(hmm_device_write(dev0, p, NPAGES * PAGE, mirror, &acc));
	CHECK_EQ(acc.pages, NPAGES);
	CHECK_EQ(acc.faults, 1);
	CHECK_EQ(t_count_bad(p, ints, 0), 0);
	t_unmap(p, NPAGES * PAGE);
	free(mirror);
	return T_PASS;
}

static int anon_write_prot(void) { return prot_case(false); }
static int anon_write_prot_managed(void) { return prot_case(true); }

/* A write permission the device had is gone after mprotect(PROT_READ). */
static int write_after_prot_read(void)
{
	int *p = map_prot(4, PROT_READ | PROT_WRITE, true), *mirror = calloc(4, PAGE);
	struct hmm_access acc;

	CHECK(p && mirror);
	CHECK_OK(hmm_device_write(dev0, p, 4 * PAGE, mirror, &acc));
	CHECK_OK(mprotect(p, 4 * PAGE, PROT_READ));
	mirror[0] = 42;
	CHECK_RET(hmm_device_write(dev0, p, 4 * PAGE, mirror, &acc), -EPERM);
	CHECK_EQ(p[0], 0);
	t_unmap(p, 4 * PAGE);
	free(mirror);
	return T_PASS;
}

static int anon_write_huge(void)
{
	size_t npages = THP_SIZE / PAGE, ints = THP_SIZE / sizeof(int), map_len;
	void *map;
	int *p = t_thp_region(&map, &map_len, PROT_READ | PROT_WRITE);
	int *mirror = malloc(THP_SIZE);
	uint8_t *snap = malloc(npages);
	struct hmm_access acc;

	CHECK(p && mirror && snap);
	t_fill(mirror, ints, 0);
	CHECK_OK(hmm_device_write(dev0, p, THP_SIZE, mirror, &acc));
	CHECK_EQ(acc.pages, npages);
	CHECK_EQ(acc.faults, 1);
	CHECK_EQ(t_count_bad(p, ints, 0), 0);
	CHECK_OK(hmm_device_snapshot(dev0, p, THP_SIZE, snap));
	for (size_t i = 0; i < npages; i++)
		CHECK_EQ(snap[i] & ~HMM_SNAP_HUGE, HMM_SNAP_WRITE);
	if (t_have_thp() && !(snap[0] & HMM_SNAP_HUGE))
		t_note(t_kernel_has("PAGEMAP_SCAN") ? "the kernel gave no huge page this time"
						    : "huge pages untold without PAGEMAP_SCAN (6.7)");
	t_unmap(map, map_len);
	free(mirror);
	free(snap);
	return T_PASS;
}

T_MAIN(TEST_CASE(anon_write, 0),
       TEST_CASE(anon_write_managed, 0),
       TEST_CASE(anon_write_prot, 0),
       TEST_CASE(anon_write_prot_managed, 0),
       TEST_CASE(write_after_prot_read, 0),
       TEST_CASE(anon_write_huge, 0))
