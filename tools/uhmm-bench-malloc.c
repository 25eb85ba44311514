// SPDX-License-Identifier: MIT
/*
 * uhmm-bench-malloc N: N small malloc+free pairs, prints nanoseconds per
 * pair. uhmm-bench runs it twice, with glibc's malloc and with libuhmm.so
 * preloaded; it links nothing of uhmm's so that the glibc run is plain glibc.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 10000000;
	void *volatile sink;
	struct timespec a, b;

	if (n <= 0)
		return 2;
	/* Warm up: the allocator's first calls set it up. */
	for (long i = 0; i < 100000; i++) {
		sink = malloc(16 + (size_t)(i & 15) * 16);
		free(sink);
	}
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++) {
		/* Sizes 16..256: the small classes programs use most. */
		sink = malloc(16 + (size_t)(i & 15) * 16);
		*(volatile char *)sink = (char)i;
		free(sink);
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%.3f\n", ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / (double)n);
	return 0;
}
