// SPDX-License-Identifier: MIT
/*
 * anon_read, anon_read_prot, anon_read_multiple: the device reads anonymous
 * memory through its mirror; an untouched page and the zero page read as
 * zeros; PROT_NONE is -EFAULT and leaves the destination untouched. Each on
 * plain and on managed memory.
 */
#include <stdlib.h>

#include "harness.h"

static int *map_rw(size_t npages, bool managed)
{
	int *p = t_map(npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);

	if (p && managed && hmm_manage(p, npages * PAGE)) {
		t_unmap(p, npages * PAGE);
		return NULL;
	}
	return p;
}

static int read_case(bool managed)
{
	size_t ints = NPAGES * PAGE / sizeof(int);
	int *p = map_rw(NPAGES, managed), *mirror = malloc(NPAGES * PAGE);
	struct hmm_access acc;

	CHECK(p && mirror);
	memset(mirror, 0xff, NPAGES * PAGE);
	/* Pages 0 and 1 stay untouched; page 1 then maps the zero page. */
	for (size_t i = 2 * PAGE / sizeof(int); i < ints; i++)
		p[i] = (int)i;
	CHECK_OK(mprotect(p, NPAGES * PAGE, PROT_READ));
	CHECK_EQ(((volatile int *)p)[PAGE / sizeof(int)], 0);

	CHECK_OK(hmm_device_read(dev0, p, NPAGES * PAGE, mirror, &acc));
	CHECK_EQ(acc.pages, NPAGES);
	CHECK_EQ(acc.faults, 1);
	CHECK(t_is_zero(mirror, 2 * PAGE));
	for (size_t i = 2 * PAGE / sizeof(int); i < ints; i++)
		CHECK_EQ(mirror[i], i);
	/* A second read finds everything mapped. */
	CHECK_OK(hmm_device_read(dev0, p, NPAGES * PAGE, mirror, &acc));
	CHECK_EQ(acc.faults, 0);
	t_unmap(p, NPAGES * PAGE);
	free(mirror);
	return T_PASS;
}

static int anon_read(void) { return read_case(false); }
static int anon_read_managed(void) { return read_case(true); }

static int prot_case(bool managed)
{
	size_t ints = NPAGES * PAGE / sizeof(int);
	int *p = map_rw(NPAGES, managed), *mirror = malloc(NPAGES * PAGE);
	struct hmm_access acc = { 77, 77 };

	CHECK(p && mirror);
	t_fill(p, ints, 0);
	for (size_t i = 0; i < ints; i++)
		mirror[i] = -(int)i;
	CHECK_OK(mprotect(p, NPAGES * PAGE, PROT_NONE));
	CHECK_RET(hmm_device_read(dev0, p, NPAGES * PAGE, mirror, &acc), -EFAULT);
	CHECK_EQ(acc.pages, 77); /* untouched on error */
	CHECK_EQ(t_count_neg(mirror, ints), 0);
	CHECK_OK(mprotect(p, NPAGES * PAGE, PROT_READ));
	CHECK_EQ(t_count_bad(p, ints, 0), 0);
	t_unmap(p, NPAGES * PAGE);
	free(mirror);
	return T_PASS;
}

static int anon_read_prot(void) { return prot_case(false); }
static int anon_read_prot_managed(void) { return prot_case(true); }

/* A read that was fine becomes -EFAULT once mprotect takes the pages away. */
static int read_after_prot_none(void)
{
	int *p = map_rw(4, true), *mirror = malloc(4 * PAGE);
	struct hmm_access acc;

	CHECK(p && mirror);
	t_fill(p, 4 * PAGE / sizeof(int), 0);
	CHECK_OK(hmm_device_read(dev0, p, 4 * PAGE, mirror, &acc));
	CHECK_OK(mprotect(p + PAGE / sizeof(int), PAGE, PROT_NONE));
	CHECK_RET(hmm_device_read(dev0, p, 4 * PAGE, mirror, &acc), -EFAULT);
	t_unmap(p, 4 * PAGE);
	free(mirror);
	return T_PASS;
}

/* Fresh mappings at reused addresses: nothing stale may leak through. */
static int multiple_case(bool managed)
{
	size_t ints = NPAGES * PAGE / sizeof(int);
	int *mirror = malloc(NPAGES * PAGE);

	CHECK(mirror);
	for (int c = 0; c < NTIMES; c++) {
		int *p = map_rw(NPAGES, managed);
		struct hmm_access acc;

		CHECK(p);
		t_fill(p, ints, c);
		CHECK_OK(hmm_device_read(dev0, p, NPAGES * PAGE, mirror, &acc));
		CHECK_EQ(acc.pages, NPAGES);
		CHECK_EQ(acc.faults, 1);
		CHECK_EQ(t_count_bad(mirror, ints, c), 0);
		t_unmap(p, NPAGES * PAGE);
	}
	free(mirror);
	return T_PASS;
}

static int anon_read_multiple(void) { return multiple_case(false); }
static int anon_read_multiple_managed(void) { return multiple_case(true); }

/* Reads of byte ranges that start and end inside pages. */
static int unaligned(void)
{
	char *p = (char *)map_rw(4, true), buf[3 * PAGE];
	struct hmm_access acc;

	CHECK(p);
	for (size_t i = 0; i < 4 * PAGE; i++)
		p[i] = (char)(i * 7);
	CHECK_OK(hmm_device_read(dev0, p + 100, 2 * PAGE + 50, buf, &acc));
	CHECK_EQ(acc.pages, 3);
	for (size_t i = 0; i < 2 * PAGE + 50; i++)
		CHECK_EQ(buf[i], (char)((i + 100) * 7));
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (char)i;
	CHECK_OK(hmm_device_write(dev0, p + PAGE - 3, 6, buf, &acc));
	CHECK_EQ(acc.pages, 2);
	CHECK_EQ(p[PAGE - 4], (char)((PAGE - 4) * 7));
	CHECK_EQ(p[PAGE - 3], 0);
	CHECK_EQ(p[PAGE + 2], 5);
	CHECK_EQ(p[PAGE + 3], (char)((PAGE + 3) * 7));
	t_unmap(p, 4 * PAGE);
	return T_PASS;
}

T_MAIN(TEST_CASE(anon_read, 0),
       TEST_CASE(anon_read_managed, 0),
       TEST_CASE(anon_read_prot, 0),
       TEST_CASE(anon_read_prot_managed, 0),
       TEST_CASE(read_after_prot_none, 0),
       TEST_CASE(anon_read_multiple, 0),
       TEST_CASE(anon_read_multiple_managed, 0),
       TEST_CASE(unaligned, 0))
