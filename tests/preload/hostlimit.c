// SPDX-License-Identifier: MIT
/*
 * The host limit holds for a fast allocator: run under uhmm-run --device sim
 * --host-limit LIMIT, this program mallocs and fills four times LIMIT in
 * 1 MiB blocks as fast as it can, while a thread counts every millisecond
 * the pages of those blocks that are in host memory (present in its own
 * pagemap; a page on the sim device is not, although the device's memory is
 * the process's own, so VmRSS would not tell). The most it sees may not
 * pass LIMIT by more than 10% and a little slack. At the end the live stats
 * (hmm_stats_read, what uhmm-stat shows) must say as much: at least what
 * the program counts itself, and no more than the limit allows.
 *
 * Usage: preload-hostlimit LIMIT_MIB (the limit uhmm-run was given).
 */
#include <errno.h>
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
#include <uhmm.h>

#define BLOCK (1ul << 20)
#define PAGE 4096ul
#define MAX_BLOCKS 4096
#define SLACK (2ul << 20)           /* pages in flight while a sample is taken */

static char *blocks[MAX_BLOCKS];
static _Atomic unsigned nblocks;
static _Atomic bool done;
static int pagemap;

static size_t resident_bytes(void)
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
	return count * PAGE;
}

static void *sampler(void *arg)
{
	struct timespec ms = { 0, 1000000 };
	size_t *peak = arg;

	while (!atomic_load(&done)) {
		size_t n = resident_bytes();

		if (n > *peak)
			*peak = n;
		nanosleep(&ms, NULL);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	size_t limit = argc > 1 ? strtoull(argv[1], NULL, 10) << 20 : 0, peak = 0, allowed, own;
	unsigned n = (unsigned)(4 * limit / BLOCK);
	struct hmm_stats_region region;
	pthread_t t;
	int err;

	if (!limit || n > MAX_BLOCKS) {
		fprintf(stderr, "usage: preload-hostlimit LIMIT_MIB, under uhmm-run --host-limit\n");
		return 2;
	}
	/* The region exists from the start; its first publication follows. */
	for (int i = 0; (err = hmm_stats_read(getpid(), &region)) == 0 && !region.updated_ns && i < 200; i++)
		usleep(10000);
	if (err == -ENOENT) {
		printf("SKIP: not running under uhmm (no userfaultfd?)\n");
		return 77;
	}
	if (err || region.host_limit != limit) {
		fprintf(stderr, "FAIL: stats: error %d, host limit %llu, not %zu\n", err,
			(unsigned long long)region.host_limit, limit);
		return 1;
	}
	allowed = limit + limit / 10 + SLACK;
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
	usleep(20000);
	atomic_store(&done, true);
	pthread_join(t, NULL);
	for (unsigned i = 0; i < n; i++) {
		if (blocks[i][0] != (char)(i | 1) || blocks[i][BLOCK - 1] != (char)(i | 1)) {
			fprintf(stderr, "FAIL: block %u lost its data\n", i);
			return 1;
		}
	}
	printf("peak %.1f MiB of %zu MiB filled, limit %zu MiB (%.3f)\n", (double)peak / (1 << 20),
	       n * BLOCK >> 20, limit >> 20, (double)peak / (double)limit);
	if (peak > allowed) {
		fprintf(stderr, "FAIL: %zu bytes on the host, %zu allowed\n", peak, allowed);
		return 1;
	}

	/* Published about every 100 ms: wait for two publications of the end state. */
	usleep(300000);
	own = resident_bytes();
	if (hmm_stats_read(getpid(), &region))
		return 1;
	printf("host_present_bytes %.1f MiB, the blocks' own count %.1f MiB\n",
	       (double)region.host_present_bytes / (1 << 20), (double)own / (1 << 20));
	if (region.host_present_bytes < own || region.host_present_bytes > allowed) {
		fprintf(stderr, "FAIL: host_present_bytes %llu: the blocks hold %zu, %zu allowed\n",
			(unsigned long long)region.host_present_bytes, own, allowed);
		return 1;
	}
	return 0;
}
