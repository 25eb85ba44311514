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
#include <uhmm.h>

#include "fast-allocator.h"

#define SLACK (2ul << 20)           /* pages in flight while a sample is taken */

int main(int argc, char **argv)
{
	size_t limit = argc > 1 ? strtoull(argv[1], NULL, 10) << 20 : 0, peak = 0, allowed, own;
	unsigned n = (unsigned)(4 * limit / FA_BLOCK);
	struct hmm_stats_region region;
	int err;

	if (!limit || n > FA_MAX_BLOCKS) {
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
	if (fast_allocator_fill(limit, &peak))
		return 1;
	printf("peak %.1f MiB of %zu MiB filled, limit %zu MiB (%.3f)\n", (double)peak / (1 << 20),
	       n * FA_BLOCK >> 20, limit >> 20, (double)peak / (double)limit);
	if (peak > allowed) {
		fprintf(stderr, "FAIL: %zu bytes on the host, %zu allowed\n", peak, allowed);
		return 1;
	}

	/* Published about every 100 ms: wait for two publications of the end state. */
	usleep(300000);
	own = fast_allocator_resident();
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
