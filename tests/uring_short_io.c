// SPDX-License-Identifier: MIT
/*
 * Short transfers on the storage tier are carried on, never taken for
 * whole: with UHMM_FAULT=uring_short_io every request of two pages or more
 * asks the kernel for half of what is left, so each run completes in many
 * pieces, through the DMA queue (io_uring) and on the fault thread
 * (pread). A round trip out and home, and out and back by CPU faults,
 * keeps every byte, and pages never written read as zeros.
 */
#include <stdlib.h>

#include "harness.h"

#define N NPAGES
#define INTS (N * PAGE / sizeof(int))
#define HOLE_FROM 600       /* pages [HOLE_FROM, HOLE_TO) are never written */
#define HOLE_TO 700

static int *alloc_with_hole(void)
{
	int *p = hmm_alloc(N * PAGE);

	if (!p)
		return NULL;
	t_fill(p, HOLE_FROM * PAGE / sizeof(int), 0);
	t_fill(p + HOLE_TO * PAGE / sizeof(int), (N - HOLE_TO) * PAGE / sizeof(int),
	       (int)(HOLE_TO * PAGE / sizeof(int)));
	return p;
}

/* Every byte as alloc_with_hole left it. */
static int intact(const int *p)
{
	const size_t hole = HOLE_FROM * PAGE / sizeof(int), end = HOLE_TO * PAGE / sizeof(int);

	CHECK_EQ(t_count_bad(p, hole, 0), 0);
	CHECK(t_is_zero(p + hole, (HOLE_TO - HOLE_FROM) * PAGE));
	CHECK_EQ(t_count_bad(p + end, INTS - end, (int)end), 0);
	return T_PASS;
}

static int round_trip(void)
{
	int *p = alloc_with_hole(), *buf = malloc(N * PAGE);
	struct hmm_access acc;
	size_t pages = 0;

	CHECK(p && buf);
	CHECK_OK(hmm_fault_inject("uring_short_io:always"));

	/* Out and home through the queue: runs of up to 512 pages, halved again and again. */
	CHECK_OK(hmm_migrate(p, N * PAGE, dev0, 0, &pages));
	CHECK_EQ(pages, N);
	CHECK_OK(hmm_device_read(dev0, p, N * PAGE, buf, &acc));
	if (intact(buf))
		return T_FAIL;
	CHECK_OK(hmm_migrate(p, N * PAGE, NULL, 0, &pages));
	CHECK_EQ(pages, N);
	if (intact(p))
		return T_FAIL;

	/*
	 * Out again, and back by CPU faults in address order: windows of up to
	 * 16 pages are read on the fault thread, larger ones by the queue.
	 */
	CHECK_OK(hmm_migrate(p, N * PAGE, dev0, 0, &pages));
	CHECK_EQ(pages, N);
	if (intact(p))
		return T_FAIL;
	CHECK_EQ(t_pages_at(p, N, HMM_LOC_HOST), N);
	CHECK_OK(hmm_fault_inject("off"));
	hmm_free(p);
	free(buf);
	return T_PASS;
}

T_MAIN(TEST_CASE(round_trip, T_PRIVATE_ONLY))
