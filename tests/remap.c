// SPDX-License-Identifier: MIT
/*
 * migrate_remap_fault and migrate_partial_unmap_fault: mremap and partial
 * munmap of ranges that are (or are about to be) on a device. Data follows
 * the mapping; unmapped pages give their device memory back. Each through
 * libc (which the runtime sees first) and through raw syscalls (which it
 * only learns about from userfaultfd events).
 */
#include <stdlib.h>
#include <sys/syscall.h>

#include "harness.h"

#define SIZE THP_SIZE

static size_t mem_used(void)
{
	struct hmm_device_info info = { .size = sizeof(info) };

	return hmm_device_info(dev0, &info) ? (size_t)-1 : info.mem_used;
}

/*
 * Pages the CPU read from dev0 still hold its memory: coherent memory is
 * read in place, and a device that keeps clean copies (a storage tier)
 * keeps them until the pages are written.
 */
static bool reads_keep_memory(void)
{
	struct hmm_device_info info = { .size = sizeof(info) };

	return variant->coherent || (!hmm_device_info(dev0, &info) && info.keeps_clean);
}

static void *do_mremap(bool raw, void *old, size_t len, int flags, void *target)
{
	if (raw)
		return (void *)syscall(SYS_mremap, old, len, len, flags, target);
	return mremap(old, len, len, flags, target);
}

static int remap_case(bool before, bool dontunmap, bool thp, size_t offset, bool raw)
{
	size_t ints = SIZE / sizeof(int), pages, big = 8 * SIZE;
	char *raw_map = t_map(big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
	char *map, *target, *got;
	int flags = MREMAP_MAYMOVE | MREMAP_FIXED | (dontunmap ? MREMAP_DONTUNMAP : 0);

	CHECK(raw_map);
	map = (char *)(((uintptr_t)raw_map + SIZE - 1) & ~(SIZE - 1));
	CHECK_OK(munmap(map + SIZE, 2 * SIZE));
	madvise(map, SIZE, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	t_fill((int *)map, ints, 0);
	target = map + SIZE + offset;
	if (before) {
		got = do_mremap(raw, map, SIZE, flags, target);
		CHECK(got == target);
		CHECK_OK(hmm_migrate(target, SIZE, dev0, 0, &pages));
	} else {
		CHECK_OK(hmm_migrate(map, SIZE, dev0, 0, &pages));
		got = do_mremap(raw, map, SIZE, flags, target);
		CHECK(got == target);
	}
	CHECK_EQ(pages, SIZE / PAGE);
	CHECK_EQ(t_count_bad((int *)target, ints, 0), 0);
	if (dontunmap)
		CHECK(t_is_zero(map, SIZE));
	CHECK_OK(munmap(target, SIZE));
	if (dontunmap)
		CHECK_OK(munmap(map, SIZE));
	munmap(raw_map, big);
	CHECK_EQ(mem_used(), 0);
	return T_PASS;
}

static int remap_all(bool raw)
{
	size_t offsets[] = { 0, SIZE / 4, SIZE / 2 };

	for (int before = 0; before < 2; before++)
		for (int dontunmap = 0; dontunmap < 2; dontunmap++)
			for (int thp = 0; thp < 2; thp++)
				for (size_t o = 0; o < T_ARRAY_SIZE(offsets); o++)
					if (remap_case(before, dontunmap, thp, offsets[o], raw)) {
						t_note("before=%d dontunmap=%d thp=%d offset=%zu", before,
						       dontunmap, thp, offsets[o]);
						return T_FAIL;
					}
	return T_PASS;
}

static int migrate_remap_fault(void) { return remap_all(false); }
static int migrate_remap_fault_raw(void) { return remap_all(true); }

/* Growing a managed mapping in place: the new tail is managed too. */
static int remap_grow(void)
{
	size_t pages;
	char *p = t_map(8 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS), *q;

	CHECK(p);
	CHECK_OK(munmap(p + 4 * PAGE, 4 * PAGE)); /* room to grow into */
	CHECK_OK(hmm_manage(p, 4 * PAGE));
	memset(p, 1, 4 * PAGE);
	CHECK_OK(hmm_migrate(p, 4 * PAGE, dev0, 0, &pages));
	q = mremap(p, 4 * PAGE, 8 * PAGE, 0);
	CHECK(q == p);
	memset(p + 4 * PAGE, 2, 4 * PAGE);
	CHECK_OK(hmm_migrate(p, 8 * PAGE, dev0, 0, &pages));
	CHECK_EQ(pages, 8);
	CHECK_EQ(p[0], 1);
	CHECK_EQ(p[7 * PAGE], 2);
	munmap(p, 8 * PAGE);
	return T_PASS;
}

static int unmap_case(bool thp, size_t offset, bool raw)
{
	size_t ints = SIZE / sizeof(int), pages, map_len;
	void *map;
	int *p = t_thp_region(&map, &map_len, PROT_READ | PROT_WRITE);
	char *hole;

	CHECK(p);
	madvise(p, SIZE, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	t_fill(p, ints, 0);
	CHECK_OK(hmm_migrate(p, SIZE, dev0, 0, &pages));
	CHECK_EQ(pages, SIZE / PAGE);
	hole = (char *)p + offset;
	if (raw)
		CHECK_OK(syscall(SYS_munmap, hole, SIZE / 2));
	else
		CHECK_OK(munmap(hole, SIZE / 2));
	for (size_t i = 0; i < ints; i++) {
		char *a = (char *)&p[i];

		if (a >= hole && a < hole + SIZE / 2)
			continue;
		CHECK_EQ(p[i], i);
	}
	/* libc munmap is synchronous for the runtime; a raw one settles soon.
	 * Pages the CPU read may still hold device memory. */
	size_t want = reads_keep_memory() ? SIZE / 2 : 0;

	for (int i = 0; i < 100 && mem_used() != want; i++)
		usleep(1000);
	CHECK_EQ(mem_used(), want);
	munmap(map, map_len);
	CHECK_EQ(mem_used(), 0);
	return T_PASS;
}

static int unmap_all(bool raw)
{
	size_t offsets[] = { 0, SIZE / 4, SIZE / 2 };

	for (int thp = 0; thp < 2; thp++)
		for (size_t o = 0; o < T_ARRAY_SIZE(offsets); o++)
			if (unmap_case(thp, offsets[o], raw)) {
				t_note("thp=%d offset=%zu", thp, offsets[o]);
				return T_FAIL;
			}
	return T_PASS;
}

static int migrate_partial_unmap_fault(void) { return unmap_all(false); }
static int migrate_partial_unmap_fault_raw(void) { return unmap_all(true); }

/* After a partial munmap the device keeps only what is still mapped. */
static int partial_unmap_accounting(void)
{
	size_t pages;
	char *p = hmm_alloc(64 * PAGE);

	CHECK(p);
	memset(p, 7, 64 * PAGE);
	CHECK_OK(hmm_migrate(p, 64 * PAGE, dev0, 0, &pages));
	CHECK_OK(munmap(p + 16 * PAGE, 16 * PAGE));
	CHECK_EQ(mem_used(), 48 * PAGE);
	CHECK_EQ(t_loc(p + 16 * PAGE), HMM_LOC_UNMAPPED);
	CHECK_EQ(p[63 * PAGE], 7);
	CHECK_EQ(mem_used(), (reads_keep_memory() ? 48 : 47) * PAGE);
	munmap(p, 16 * PAGE);
	munmap(p + 32 * PAGE, 32 * PAGE);
	CHECK_EQ(mem_used(), 0);
	return T_PASS;
}

T_MAIN(TEST_CASE(migrate_remap_fault, 0),
       TEST_CASE(migrate_remap_fault_raw, 0),
       TEST_CASE(remap_grow, 0),
       TEST_CASE(migrate_partial_unmap_fault, 0),
       TEST_CASE(migrate_partial_unmap_fault_raw, 0),
       TEST_CASE(partial_unmap_accounting, 0))
