// SPDX-License-Identifier: MIT
/*
 * Bad input to every API function: a clear -errno, nothing changed, and
 * errno left alone (except hmm_alloc, which reports through errno).
 */
#include <stdlib.h>

#include "harness.h"

#define BIG_END ((void *)(UINTPTR_MAX & ~(PAGE - 1)))

/* A kind the project knows that this build left out. */
static const char *not_built(void)
{
	static const char *const kinds[] = { "cuda", "numa", "fabric", "uring", "opencl" };
	struct hmm_backend_info b = { .size = sizeof(b) };

	for (size_t k = 0; k < T_ARRAY_SIZE(kinds); k++) {
		bool built = false;

		for (int i = 0; !hmm_backend_info(i, &b); i++)
			built |= !strcmp(b.kind, kinds[k]);
		if (!built)
			return kinds[k];
	}
	return "cuda";
}

static int specs(void)
{
	static const char *const invalid[] = {
		"", "nope", "sim:", "sim:bogus", "sim:mem", "sim:mem=", "sim:mem=abc", "sim:mem=-1",
		"sim:mem=1M,mem=2M", "sim:coherent,copy", "sim:coherent=1", "sim:,", "sim:mem=1X",
		":sim",
	};
	struct hmm_device *d = (struct hmm_device *)0x1;

	for (size_t i = 0; i < T_ARRAY_SIZE(invalid); i++) {
		int err = hmm_device_open(invalid[i], &d);

		if (err != -EINVAL) {
			t_note("spec \"%s\" gave %d", invalid[i], err);
			return T_FAIL;
		}
	}
	CHECK(d == (struct hmm_device *)0x1); /* not written on failure */
	CHECK_RET(hmm_device_open(NULL, &d), -EINVAL);
	CHECK_RET(hmm_device_open("sim", NULL), -EINVAL);
	CHECK_RET(hmm_device_open(not_built(), &d), -ENODEV); /* known, not built */
	return T_PASS;
}

static int handles(void)
{
	struct hmm_device *bogus = (struct hmm_device *)&bogus;
	struct hmm_device_info info = { .size = sizeof(info) };
	struct hmm_access acc = { 5, 5 };
	char buf[PAGE], *p = hmm_alloc(PAGE);
	uint8_t snap;
	uint64_t old = 9;

	CHECK(p);
	CHECK_RET(hmm_device_close(NULL), -EINVAL);
	CHECK_RET(hmm_device_close(bogus), -EINVAL);
	CHECK_RET(hmm_device_info(NULL, &info), -EINVAL);
	CHECK_RET(hmm_device_info(dev0, NULL), -EINVAL);
	info.size = 0;
	CHECK_RET(hmm_device_info(dev0, &info), -EINVAL);
	CHECK(hmm_device_get(-1) == NULL);
	CHECK(hmm_device_get(1000) == NULL);
	CHECK_RET(hmm_device_read(bogus, p, PAGE, buf, &acc), -EINVAL);
	CHECK_RET(hmm_device_write(NULL, p, PAGE, buf, &acc), -EINVAL);
	CHECK_RET(hmm_device_snapshot(bogus, p, PAGE, &snap), -EINVAL);
	CHECK_RET(hmm_device_exclusive(bogus, p, PAGE, &acc), -EINVAL);
	CHECK_RET(hmm_device_check_exclusive(bogus, p, PAGE), -EINVAL);
	CHECK_RET(hmm_device_atomic_add(bogus, (uint64_t *)p, 1, &old), -EINVAL);
	CHECK_RET(hmm_device_release(bogus), -EINVAL);
	CHECK_RET(hmm_migrate(p, PAGE, bogus, 0, NULL), -EINVAL);
	CHECK_RET(hmm_advise(p, PAGE, HMM_ADVISE_PREFETCH, bogus), -EINVAL);
	CHECK_RET(hmm_sync(bogus), -EINVAL);
	CHECK_EQ(acc.pages, 5);
	CHECK_EQ(old, 9);
	CHECK_EQ(t_loc(p), HMM_LOC_NONE);
	hmm_free(p);
	return T_PASS;
}

static int ranges(void)
{
	char *p = hmm_alloc(4 * PAGE), buf[4 * PAGE];
	char *hole = t_map(3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
	struct hmm_access acc;
	size_t pages = 77;
	uint8_t snap[4];
	int loc[4];

	CHECK(p && hole);
	memset(p, 1, 4 * PAGE);
	CHECK_OK(munmap(hole + PAGE, PAGE));
	/* zero length, wrap-around, NULL buffers */
	CHECK_RET(hmm_migrate(p, 0, dev0, 0, &pages), -EINVAL);
	CHECK_RET(hmm_migrate(BIG_END, 2 * PAGE, dev0, 0, &pages), -EINVAL);
	CHECK_RET(hmm_migrate(p, PAGE, dev0, 1, &pages), -EINVAL);
	CHECK_RET(hmm_migrate(hole, 3 * PAGE, dev0, 0, &pages), -EINVAL);
	CHECK_EQ(pages, 77);
	CHECK_EQ(t_pages_at(p, 4, HMM_LOC_HOST), 4); /* nothing moved */
	CHECK_EQ(t_loc(hole), HMM_LOC_NONE);
	CHECK_RET(hmm_residency(p, 0, loc), -EINVAL);
	CHECK_RET(hmm_residency(p, PAGE, NULL), -EINVAL);
	CHECK_RET(hmm_device_read(dev0, p, 0, buf, &acc), -EINVAL);
	CHECK_RET(hmm_device_read(dev0, p, PAGE, NULL, &acc), -EINVAL);
	CHECK_RET(hmm_device_read(dev0, BIG_END, 2 * PAGE, buf, &acc), -EINVAL);
	CHECK_RET(hmm_device_read(dev0, hole, 3 * PAGE, buf, &acc), -EFAULT);
	CHECK_RET(hmm_device_write(dev0, hole, 3 * PAGE, buf, &acc), -EFAULT);
	CHECK_RET(hmm_device_snapshot(dev0, p, PAGE, NULL), -EINVAL);
	CHECK_RET(hmm_device_snapshot(dev0, p, 0, snap), -EINVAL);
	CHECK_RET(hmm_device_exclusive(dev0, p, 0, &acc), -EINVAL);
	CHECK_RET(hmm_device_check_exclusive(dev0, p, 0), -EINVAL);
	CHECK_RET(hmm_device_atomic_add(dev0, (uint64_t *)(p + 4), 1, NULL), -EINVAL);
	CHECK_RET(hmm_device_atomic_add(dev0, NULL, 1, NULL), -EINVAL);
	CHECK_RET(hmm_manage(p, 0), -EINVAL);
	CHECK_RET(hmm_manage(BIG_END, 2 * PAGE), -EINVAL);
	CHECK_RET(hmm_manage(hole, 3 * PAGE), -EINVAL);
	CHECK_RET(hmm_unmanage(hole, PAGE), -EINVAL);
	CHECK_RET(hmm_unmanage(p, 0), -EINVAL);
	CHECK_EQ(p[0], 1);
	hmm_free(p);
	t_unmap(hole, PAGE);
	t_unmap(hole + 2 * PAGE, PAGE);
	return T_PASS;
}

static int advice_values(void)
{
	char *p = hmm_alloc(PAGE);

	CHECK(p);
	CHECK_RET(hmm_advise(p, PAGE, 0, dev0), -EINVAL);
	CHECK_RET(hmm_advise(p, PAGE, 1000, dev0), -EINVAL);
	CHECK_RET(hmm_advise(p, PAGE, -1, dev0), -EINVAL);
	CHECK_RET(hmm_advise(p, PAGE, HMM_ADVISE_ACCESSED_BY, NULL), -EINVAL);
	CHECK_RET(hmm_advise(p, PAGE, HMM_ADVISE_UNSET_ACCESSED_BY, NULL), -EINVAL);
	CHECK_RET(hmm_advise(p, 0, HMM_ADVISE_PIN_HOST, NULL), -EINVAL);
	CHECK_RET(hmm_advise(BIG_END, 2 * PAGE, HMM_ADVISE_PIN_HOST, NULL), -EINVAL);
	hmm_free(p);
	return T_PASS;
}

static int stats_and_faults(void)
{
	struct hmm_stats st = { .size = 0 };

	CHECK_RET(hmm_stats_get(NULL), -EINVAL);
	CHECK_RET(hmm_stats_get(&st), -EINVAL);
	CHECK_RET(hmm_fault_inject(NULL), -EINVAL);
	CHECK_RET(hmm_fault_inject("no_such_point"), -EINVAL);
	CHECK_RET(hmm_fault_inject("dma_to_host:x"), -EINVAL);
	/* A bad spec arms nothing: a later migration still works. */
	CHECK_RET(hmm_fault_inject("dma_to_device:1,bogus"), -EINVAL);
	char *p = hmm_alloc(PAGE);
	size_t pages;

	CHECK(p);
	CHECK_OK(hmm_migrate(p, PAGE, dev0, 0, &pages));
	hmm_free(p);
	return T_PASS;
}

static int alloc_and_errno(void)
{
	errno = 4321;
	CHECK(hmm_alloc(0) == NULL);
	CHECK_EQ(errno, EINVAL);
	CHECK(hmm_alloc(SIZE_MAX) == NULL);
	CHECK_EQ(errno, ENOMEM);
	/* Not from hmm_alloc: ignored, nothing unmapped. */
	char *p = t_map(PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);

	CHECK(p);
	p[0] = 3;
	hmm_free(p);
	hmm_free(p + 1);
	CHECK_EQ(p[0], 3);
	errno = 4321;
	CHECK_RET(hmm_migrate(p, 0, dev0, 0, NULL), -EINVAL);
	CHECK_RET(hmm_device_open("nope", &dev1), -EINVAL);
	CHECK_EQ(errno, 4321);
	t_unmap(p, PAGE);
	return T_PASS;
}

T_MAIN(TEST_CASE(specs, T_NO_DEVICES | T_ONE_VARIANT),
       TEST_CASE(handles, 0),
       TEST_CASE(ranges, 0),
       TEST_CASE(advice_values, 0),
       TEST_CASE(stats_and_faults, 0),
       TEST_CASE(alloc_and_errno, 0))
