// SPDX-License-Identifier: MIT
/*
 * uhmm-bench-hostlimit LIMIT_MIB: a fast allocator. It mallocs and fills
 * 1 MiB blocks, four times LIMIT_MIB in all, keeping every one, while a
 * second thread counts every millisecond how many pages of those blocks are
 * resident in host memory (present in /proc/self/pagemap: a page on the sim
 * device is not, although its memory is the process's own). Prints the
 * largest count over LIMIT_MIB. uhmm-bench runs it under uhmm-run
 * --host-limit LIMIT_MIB; it links nothing of uhmm's.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BLOCK (1ul << 20)
#define PAGE 4096ul
#define MAX_BLOCKS 65536

static char *blocks[MAX_BLOCKS];
static _Atomic unsigned nblocks;
static _Atomic bool done;
static int pagemap;

/* Pages of the blocks handed out so far that are in host memory. */
static size_t resident_pages(void)
{
	static uint64_t pm[BLOCK / PAGE + 1];	/* a block not page-aligned spans one more */
	unsigned n = atomic_load(&nblocks);
	size_t count = 0;

	for (unsigned i = 0; i < n; i++) {
		uintptr_t a = (uintptr_t)blocks[i] & ~(PAGE - 1);
		size_t npages = ((uintptr_t)blocks[i] + BLOCK - a + PAGE - 1) / PAGE;

		if (pread(pagemap, pm, npages * sizeof(*pm), (off_t)(a / PAGE * sizeof(*pm))) !=
		    (ssize_t)(npages * sizeof(*pm)))
			continue;
		for (size_t j = 0; j < npages; j++)
			count += pm[j] >> 63;
	}
	return count;
}

static void *sampler(void *arg)
{
	struct timespec ms = { 0, 1000000 };
	size_t *peak = arg;

	while (!atomic_load(&done)) {
		size_t n = resident_pages();

		if (n > *peak)
			*peak = n;
		nanosleep(&ms, NULL);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	size_t limit = argc > 1 ? strtoull(argv[1], NULL, 10) << 20 : 0, peak = 0;
	unsigned n = (unsigned)(4 * limit / BLOCK);
	pthread_t t;

	if (!limit || n > MAX_BLOCKS) {
		fprintf(stderr, "usage: uhmm-bench-hostlimit LIMIT_MIB (1..%lu)\n",
			MAX_BLOCKS * BLOCK / 4 >> 20);
		return 2;
	}
	pagemap = open("/proc/self/pagemap", O_RDONLY);
	if (pagemap < 0 || pthread_create(&t, NULL, sampler, &peak))
		return 1;
	for (unsigned i = 0; i < n; i++) {
		blocks[i] = malloc(BLOCK);
		if (!blocks[i])
			return 1;
		memset(blocks[i], (int)(i | 1), BLOCK);
		atomic_store(&nblocks, i + 1);
	}
	usleep(20000); /* a few samples of the end state */
	atomic_store(&done, true);
	pthread_join(t, NULL);
	for (unsigned i = 0; i < n; i++)
		if (blocks[i][BLOCK - 1] != (char)(i | 1))
			return 1;
	printf("%.4f\n", (double)(peak * PAGE) / (double)limit);
	return 0;
}
