// SPDX-License-Identifier: MIT
/*
 * Protection changes on pages that live on a device: the device obeys the
 * CPU's protections (read-only gives -EPERM, PROT_NONE -EFAULT), read-only
 * pages still come home when the CPU touches them, and data survives.
 */
#include <stdlib.h>

#include "harness.h"

static int prot_on_device(void)
{
	size_t n = 64, ints = n * PAGE / sizeof(int), pages;
	int *p = hmm_alloc(n * PAGE), *buf = malloc(n * PAGE);
	struct hmm_access acc;

	CHECK(p && buf);
	t_fill(p, ints, 9);
	CHECK_OK(hmm_migrate(p, n * PAGE, dev0, 0, &pages));
	CHECK_OK(mprotect(p, n * PAGE, PROT_READ));
	CHECK_RET(hmm_device_write(dev0, p, n * PAGE, buf, &acc), -EPERM);
	CHECK_OK(hmm_device_read(dev0, p, n * PAGE, buf, &acc));
	CHECK_EQ(acc.faults, 1);
	CHECK_EQ(t_count_bad(buf, ints, 9), 0);
	CHECK_OK(mprotect(p, n * PAGE, PROT_NONE));
	CHECK_RET(hmm_device_read(dev0, p, n * PAGE, buf, &acc), -EFAULT);
	CHECK_OK(mprotect(p, n * PAGE, PROT_READ));
	/* Read-only pages come home by copy (a move needs a writable mapping). */
	CHECK_EQ(t_count_bad(p, ints, 9), 0);
	CHECK_OK(mprotect(p, n * PAGE, PROT_READ | PROT_WRITE));
	p[0] = 1;
	CHECK_EQ(p[0], 1);
	hmm_free(p);
	free(buf);
	return T_PASS;
}

/* Read-only pages migrate by the copy path, both ways, many times. */
static int readonly_round_trips(void)
{
	size_t n = 128, ints = n * PAGE / sizeof(int), pages;
	int *p = hmm_alloc(n * PAGE);

	CHECK(p);
	t_fill(p, ints, 4);
	CHECK_OK(mprotect(p, n * PAGE, PROT_READ));
	for (int i = 0; i < NTIMES; i++) {
		CHECK_OK(hmm_migrate(p, n * PAGE, dev0, 0, &pages));
		CHECK_EQ(pages, n);
		if (i & 1)
			CHECK_OK(hmm_migrate(p, n * PAGE, NULL, 0, &pages));
		CHECK_EQ(t_count_bad(p, ints, 4), 0);
	}
	hmm_free(p);
	return T_PASS;
}

T_MAIN(TEST_CASE(prot_on_device, 0),
       TEST_CASE(readonly_round_trips, 0))
