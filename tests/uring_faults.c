// SPDX-License-Identifier: MIT
/*
 * CPU faults on the storage tier, as a program's threads make them: many
 * at once (the DMA queue gathers them into one trip through the ring, all
 * in flight together), and streams (read-ahead: the windows after the
 * faulting one come home in the same trip). What must hold whatever the
 * timing: every page reads what was written to it, a page emptied or
 * unmapped while its read-ahead was in flight reads zero or is gone, and
 * a stream faults about once per read-ahead, not once per window. A page
 * read home and not written since is not written to the tier again.
 */
#include <pthread.h>
#include <stdlib.h>

#include "harness.h"

#define THREADS 32
#define TOUCHES 256                /* per thread */
#define REGION (32ul << 20)
#define STREAM (128ul << 20)
#define WINDOW_PAGES 512           /* the largest fault window on this device (2 MiB) */

/* Managed anonymous memory holding ints i + base, all of it on the tier. */
static char *on_tier(size_t len, int base)
{
	char *p = t_map(len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);

	if (!p || hmm_manage(p, len))
		return NULL;
	t_fill((int *)p, len / sizeof(int), base);
	return hmm_migrate(p, len, dev0, 0, NULL) ? NULL : p;
}

struct toucher {
	char *region;
	unsigned seed;
	bool write;
	size_t bad;
};

/* Random pages: read the first int of each (it is i + base), or write it. */
static void *touch(void *arg)
{
	struct toucher *t = arg;
	unsigned s = t->seed;

	for (unsigned i = 0; i < TOUCHES; i++) {
		size_t page, at;

		s = s * 1103515245 + 12345;
		page = (s >> 8) % (REGION / PAGE);
		at = page * PAGE / sizeof(int);
		if (t->write && page % 2)
			((volatile int *)t->region)[at] = -(int)at;
		else if (((volatile int *)t->region)[at] != (int)at + 7 &&
			 ((volatile int *)t->region)[at] != -(int)at)
			t->bad++;
	}
	return NULL;
}

/*
 * THREADS threads fault random tier pages at once, half of them writing
 * odd pages as they go: every read sees the data or that thread's write,
 * and afterwards every page holds one of the two.
 */
static int parallel_faults(void)
{
	char *p = on_tier(REGION, 7);
	struct toucher t[THREADS];
	pthread_t th[THREADS];
	size_t bad = 0;

	CHECK(p);
	for (unsigned round = 0; round < 3; round++) {
		for (unsigned i = 0; i < THREADS; i++) {
			t[i] = (struct toucher){ p, i * 7919 + round + 1, i % 2, 0 };
			CHECK_OK(pthread_create(&th[i], NULL, touch, &t[i]));
		}
		for (unsigned i = 0; i < THREADS; i++) {
			CHECK_OK(pthread_join(th[i], NULL));
			bad += t[i].bad;
		}
		CHECK_EQ(bad, 0);
		CHECK_OK(hmm_migrate(p, REGION, dev0, 0, NULL));
	}
	for (size_t i = 0; i < REGION / sizeof(int); i++) {
		int v = ((int *)p)[i];

		if (v != (int)i + 7 && !(i % (PAGE / sizeof(int)) == 0 && v == -(int)i))
			bad++;
	}
	CHECK_EQ(bad, 0);
	t_unmap(p, REGION);
	return T_PASS;
}

static uint64_t faults_not_parked(void)
{
	struct hmm_stats s = { .size = sizeof(s) };

	hmm_stats_get(&s);
	/* A parked fault is counted twice: when it parks and when it comes back. */
	return s.cpu_faults - s.parked_faults;
}

/*
 * A sequential read of STREAM from the tier: the data is right, and it took
 * fewer faults than one per largest window (which is what it takes without
 * read-ahead: the window doubles from one page to WINDOW_PAGES first).
 */
static int stream_readahead(void)
{
	char *p = on_tier(STREAM, 11);
	size_t npages = STREAM / PAGE, most = npages / WINDOW_PAGES / 2 + 16;
	uint64_t before;

	CHECK(p);
	before = faults_not_parked();
	CHECK_EQ(t_count_bad((int *)p, STREAM / sizeof(int), 11), 0);
	t_note("%llu faults for %zu pages", (unsigned long long)(faults_not_parked() - before),
	       npages);
	CHECK(faults_not_parked() - before <= most);
	CHECK_EQ(t_pages_at(p, npages, HMM_LOC_HOST), npages); /* all of it home */
	t_unmap(p, STREAM);
	return T_PASS;
}

/*
 * Pages emptied (MADV_DONTNEED) right behind a stream's fault, while their
 * read-ahead may be in flight: they read zero, whether the read-ahead
 * landed before or after. The pages after them read their data.
 */
static int readahead_discard(void)
{
	size_t lead = 8ul << 20, gone = 16ul << 20, len = 32ul << 20;

	for (int round = 0; round < 8; round++) {
		char *p = on_tier(len, round);

		CHECK(p);
		CHECK_EQ(t_count_bad((int *)p, lead / sizeof(int), round), 0);
		CHECK_OK(madvise(p + lead, gone, MADV_DONTNEED));
		CHECK(t_is_zero(p + lead, gone));
		CHECK_EQ(t_count_bad((int *)(p + lead + gone), (len - lead - gone) / sizeof(int),
				     round + (int)((lead + gone) / sizeof(int))), 0);
		t_unmap(p, len);
	}
	return T_PASS;
}

/*
 * A stream's mapping goes away (munmap) while its read-ahead may be in
 * flight: nothing of it is left on the device, and its slots serve the
 * next allocation, whose data is its own.
 */
static int readahead_unmap(void)
{
	size_t lead = 8ul << 20, len = 32ul << 20;

	for (int round = 0; round < 8; round++) {
		char *p = on_tier(len, round);
		struct hmm_device_info info = { .size = sizeof(info) };

		CHECK(p);
		CHECK_EQ(t_count_bad((int *)p, lead / sizeof(int), round), 0);
		t_unmap(p, len);
		p = on_tier(len, 100 + round);
		CHECK(p);
		CHECK_EQ(t_count_bad((int *)p, len / sizeof(int), 100 + round), 0);
		t_unmap(p, len);
		CHECK_OK(hmm_device_info(dev0, &info));
		CHECK_EQ(info.mem_used, 0);
	}
	return T_PASS;
}

/*
 * A page read home and not written since goes back to the tier without
 * being written again (its copy there is still good, as the swap cache's):
 * with every write to the tier failing, the clean pages still go and the
 * written ones stay; every page reads what it should, then and after a
 * migration that writes.
 */
static int clean_pages_not_rewritten(void)
{
	size_t len = 8ul << 20, n = len / PAGE, ints = PAGE / sizeof(int);
	char *p = on_tier(len, 3);
	int dev = t_dev_index(dev0), err;

	CHECK(p);
	CHECK_EQ(t_count_bad((int *)p, len / sizeof(int), 3), 0); /* home, clean */
	for (size_t i = 1; i < n; i += 2)
		((int *)p)[i * ints] = -1;                          /* odd pages written */
	CHECK_OK(hmm_fault_inject("dma_to_device:always"));
	err = hmm_migrate(p, len, dev0, 0, NULL);
	CHECK_OK(hmm_fault_inject("off"));
	CHECK(err < 0);
	for (size_t i = 0; i < n; i++)
		CHECK_EQ(t_loc(p + i * PAGE), i % 2 ? HMM_LOC_HOST : dev);
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < n; i++) {
			int *page = (int *)(p + i * PAGE);

			CHECK_EQ(page[0], i % 2 ? -1 : (int)(i * ints) + 3);
			CHECK_EQ(t_count_bad(page + 1, ints - 1, (int)(i * ints) + 4), 0);
		}
		CHECK_OK(hmm_migrate(p, len, dev0, 0, NULL));
		CHECK_EQ(t_pages_at(p, n, dev), n);
	}
	t_unmap(p, len);
	return T_PASS;
}

int main(int argc, char **argv)
{
	static const struct test_case cases[] = {
		TEST_CASE(parallel_faults, 0),
		TEST_CASE(stream_readahead, 0),
		TEST_CASE(readahead_discard, 0),
		TEST_CASE(readahead_unmap, 0),
		TEST_CASE(clean_pages_not_rewritten, 0),
	};

	return t_run(cases, T_ARRAY_SIZE(cases), argc, argv);
}
