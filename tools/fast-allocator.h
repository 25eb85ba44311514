/* SPDX-License-Identifier: MIT */
/*
 * A fast allocator and its own count of what it holds in host memory, for
 * uhmm-bench-hostlimit and the host-limit test: fast_allocator_fill()
 * mallocs and fills 1 MiB blocks, keeping every one, while a thread counts
 * every millisecond the pages of those blocks that are resident in host
 * memory (present in /proc/self/pagemap: a page on the sim device is not,
 * although its memory is the process's own, so VmRSS would not tell).
 * Nothing of uhmm's: the programs run under uhmm-run --host-limit.
 */
#ifndef UHMM_FAST_ALLOCATOR_H
#define UHMM_FAST_ALLOCATOR_H

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

#define FA_BLOCK (1ul << 20)
#define FA_PAGE 4096ul
#define FA_MAX_BLOCKS 65536

static struct {
	char *blocks[FA_MAX_BLOCKS];
	_Atomic unsigned nblocks;
	_Atomic bool done;
	int pagemap;
	size_t peak;                /* bytes */
} fa = { .pagemap = -1 };

/* Bytes of the blocks handed out so far that are in host memory. */
static inline size_t fast_allocator_resident(void)
{
	static uint64_t pm[FA_BLOCK / FA_PAGE + 1];	/* a block not page-aligned spans one more */
	unsigned n = atomic_load(&fa.nblocks);
	size_t count = 0;

	for (unsigned i = 0; i < n; i++) {
		uintptr_t a = (uintptr_t)fa.blocks[i] & ~(FA_PAGE - 1);
		size_t npages = ((uintptr_t)fa.blocks[i] + FA_BLOCK - a + FA_PAGE - 1) / FA_PAGE;

		if (pread(fa.pagemap, pm, npages * sizeof(*pm),
			  (off_t)(a / FA_PAGE * sizeof(*pm))) != (ssize_t)(npages * sizeof(*pm)))
			continue;
		for (size_t j = 0; j < npages; j++)
			count += pm[j] >> 63;
	}
	return count * FA_PAGE;
}

static inline void *fast_allocator_sampler(void *arg)
{
	struct timespec ms = { 0, 1000000 };

	(void)arg;
	while (!atomic_load(&fa.done)) {
		size_t n = fast_allocator_resident();

		if (n > fa.peak)
			fa.peak = n;
		nanosleep(&ms, NULL);
	}
	return NULL;
}

/*
 * Fill 4 * limit bytes, sampled all along and a little after; check every
 * block kept its data. 0 and the most seen resident in *ret_peak, or -1.
 */
static inline int fast_allocator_fill(size_t limit, size_t *ret_peak)
{
	unsigned n = (unsigned)(4 * limit / FA_BLOCK);
	pthread_t t;

	if (n > FA_MAX_BLOCKS)
		return -1;
	fa.pagemap = open("/proc/self/pagemap", O_RDONLY);
	if (fa.pagemap < 0 || pthread_create(&t, NULL, fast_allocator_sampler, NULL))
		return -1;
	for (unsigned i = 0; i < n; i++) {
		fa.blocks[i] = malloc(FA_BLOCK);
		if (!fa.blocks[i])
			return -1;
		memset(fa.blocks[i], (int)(i | 1), FA_BLOCK);
		atomic_store(&fa.nblocks, i + 1);
	}
	usleep(20000); /* a few samples of the end state */
	atomic_store(&fa.done, true);
	pthread_join(t, NULL);
	for (unsigned i = 0; i < n; i++) {
		if (fa.blocks[i][0] != (char)(i | 1) || fa.blocks[i][FA_BLOCK - 1] != (char)(i | 1)) {
			fprintf(stderr, "fast allocator: block %u lost its data\n", i);
			return -1;
		}
	}
	*ret_peak = fa.peak;
	return 0;
}

#endif /* UHMM_FAST_ALLOCATOR_H */
