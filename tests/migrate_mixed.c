// SPDX-License-Identifier: MIT
/*
 * migrate_mixed: protections decide what migrates. Holes and PROT_NONE are
 * -EINVAL; read-only and zero pages migrate and stay read-only. Unlike the
 * kernel's dmirror, our API moves a page that another device holds across
 * (API.md: "pages on another device move across").
 */
#include "harness.h"

static int migrate_mixed(void)
{
	char *p = t_map(6 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS);
	uint8_t snap[4];
	size_t pages = 99;

	CHECK(p);
	CHECK_RET(hmm_migrate(p, 6 * PAGE, dev1, 0, &pages), -EINVAL);
	CHECK_EQ(pages, 99);
	CHECK_OK(munmap(p + PAGE, PAGE));
	CHECK_RET(hmm_migrate(p, 3 * PAGE, dev1, 0, &pages), -EINVAL);

	CHECK_OK(mprotect(p + 2 * PAGE, PAGE, PROT_READ));
	CHECK_EQ(((volatile int *)(p + 2 * PAGE))[0], 0);
	CHECK_OK(mprotect(p + 3 * PAGE, PAGE, PROT_READ | PROT_WRITE));
	*(int *)(p + 3 * PAGE) = 3;
	CHECK_OK(mprotect(p + 3 * PAGE, PAGE, PROT_READ));
	CHECK_OK(mprotect(p + 4 * PAGE, 2 * PAGE, PROT_READ | PROT_WRITE));
	*(int *)(p + 4 * PAGE) = 3;
	*(int *)(p + 5 * PAGE) = 3;

	CHECK_OK(hmm_migrate(p + 2 * PAGE, 4 * PAGE, dev1, 0, &pages));
	CHECK_EQ(pages, 4);
	CHECK_EQ(t_pages_at(p + 2 * PAGE, 4, t_dev_index(dev1)), 4);
	CHECK_OK(hmm_device_snapshot(dev1, p + 2 * PAGE, 4 * PAGE, snap));
	uint8_t local = variant->coherent ? HMM_SNAP_DEV_COHERENT : HMM_SNAP_DEV_PRIVATE;
	CHECK_EQ(snap[0], local | HMM_SNAP_READ);
	CHECK_EQ(snap[1], local | HMM_SNAP_READ);
	CHECK_EQ(snap[2], local | HMM_SNAP_WRITE);

	CHECK_OK(hmm_migrate(p + 5 * PAGE, PAGE, dev0, 0, &pages));
	CHECK_EQ(pages, 1);
	CHECK_EQ(t_loc(p + 5 * PAGE), t_dev_index(dev0));

	CHECK_EQ(*(volatile int *)(p + 2 * PAGE), 0);
	CHECK_EQ(*(volatile int *)(p + 3 * PAGE), 3);
	CHECK_EQ(*(volatile int *)(p + 4 * PAGE), 3);
	CHECK_EQ(*(volatile int *)(p + 5 * PAGE), 3);
	t_unmap(p, PAGE);
	t_unmap(p + 2 * PAGE, 4 * PAGE);
	return T_PASS;
}

T_MAIN(TEST_CASE(migrate_mixed, T_TWO_DEVICES))
