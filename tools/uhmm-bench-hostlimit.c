// SPDX-License-Identifier: MIT
/*
 * uhmm-bench-hostlimit LIMIT_MIB: a fast allocator. It mallocs and fills
 * 1 MiB blocks, four times LIMIT_MIB in all, keeping every one, while a
 * second thread counts every millisecond how many pages of those blocks are
 * resident in host memory (fast-allocator.h). Prints the largest count over
 * LIMIT_MIB. uhmm-bench runs it under uhmm-run
 * --host-limit LIMIT_MIB; it links nothing of uhmm's.
 */
#include <stdio.h>
#include <stdlib.h>

#include "fast-allocator.h"

int main(int argc, char **argv)
{
	size_t limit = argc > 1 ? strtoull(argv[1], NULL, 10) << 20 : 0, peak;

	if (!limit || 4 * limit / FA_BLOCK > FA_MAX_BLOCKS) {
		fprintf(stderr, "usage: uhmm-bench-hostlimit LIMIT_MIB (1..%lu)\n",
			FA_MAX_BLOCKS * FA_BLOCK / 4 >> 20);
		return 2;
	}
	if (fast_allocator_fill(limit, &peak))
		return 1;
	printf("%.4f\n", (double)peak / (double)limit);
	return 0;
}
