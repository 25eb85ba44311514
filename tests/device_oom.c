// SPDX-License-Identifier: MIT
/*
 * A device runs out of memory: hmm_migrate places what fits, reports
 * -ENOMEM with the count, and the rest stays where it was, intact.
 */
#include "harness.h"

static int device_oom(void)
{
	struct hmm_device_info info = { .size = sizeof(info) };
	size_t n = 64, ints = n * PAGE / sizeof(int), pages = 0;
	struct hmm_device *small;
	char spec[64];
	int *p = hmm_alloc(n * PAGE), *q = hmm_alloc(8 * PAGE);

	CHECK(p && q);
	snprintf(spec, sizeof(spec), "%s%smem=64K", variant->spec,
		 strchr(variant->spec, ':') ? "," : ":");
	CHECK_OK(hmm_device_open(spec, &small));
	t_fill(p, ints, 1);
	CHECK_RET(hmm_migrate(p, n * PAGE, small, 0, &pages), -ENOMEM);
	CHECK_EQ(pages, 16);
	CHECK_EQ(t_pages_at(p, n, t_dev_index(small)), 16);
	CHECK_EQ(t_pages_at(p, n, HMM_LOC_HOST), n - 16);
	CHECK_OK(hmm_device_info(small, &info));
	CHECK_EQ(info.mem_used, 64 * 1024);
	CHECK_RET(hmm_migrate(q, 8 * PAGE, small, 0, &pages), -ENOMEM);
	CHECK_EQ(pages, 0);
	CHECK_EQ(t_count_bad(p, ints, 1), 0);
	/* What the device gave back (faults, release) can be used again. */
	CHECK_OK(hmm_device_release(small));
	CHECK_OK(hmm_migrate(q, 8 * PAGE, small, 0, &pages));
	CHECK_EQ(pages, 8);
	CHECK_OK(hmm_device_close(small));
	CHECK_EQ(t_count_bad(p, ints, 1), 0);
	hmm_free(p);
	hmm_free(q);
	return T_PASS;
}

T_MAIN(TEST_CASE(device_oom, T_NO_DEVICES))
