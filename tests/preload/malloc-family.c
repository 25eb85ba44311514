// SPDX-License-Identifier: MIT
/*
 * Run under uhmm-run --device sim: the malloc family's contract as glibc
 * documents it, with the managed heap behind it, and what transparent mode
 * adds: heap and mmap'd pointers go to the device and come back intact, and
 * mlock brings pages home first.
 */
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <uhmm.h>

static int failures;

#define CHECK(cond)                                                               \
	do {                                                                      \
		if (!(cond)) {                                                    \
			fprintf(stderr, "malloc-family:%d: %s\n", __LINE__, #cond); \
			failures++;                                               \
		}                                                                 \
	} while (0)

static void alignment(void)
{
	void *p = NULL;

	for (size_t align = sizeof(void *); align <= (1 << 20); align <<= 1) {
		CHECK(posix_memalign(&p, align, 100) == 0 && (uintptr_t)p % align == 0);
		free(p);
		p = aligned_alloc(align, align * 3);
		CHECK(p && (uintptr_t)p % align == 0);
		free(p);
		p = memalign(align, 1);
		CHECK(p && (uintptr_t)p % align == 0);
		free(p);
	}
	p = valloc(10);
	CHECK(p && (uintptr_t)p % 4096 == 0);
	free(p);
	p = pvalloc(5000);
	CHECK(p && (uintptr_t)p % 4096 == 0 && malloc_usable_size(p) >= 8192);
	free(p);
	CHECK(posix_memalign(&p, 3, 16) == EINVAL);
	CHECK(posix_memalign(&p, sizeof(void *) / 2, 16) == EINVAL);
	/* The fresh big block is zero. */
	p = malloc(16 << 20);
	CHECK(p && ((char *)p)[12345] == 0 && ((char *)p)[(16 << 20) - 1] == 0);
	free(p);
}

static void bad_sizes(void)
{
	/* Hidden from the compiler, which would refuse the call outright. */
	volatile size_t huge = SIZE_MAX, half = SIZE_MAX / 2;

	errno = 0;
	CHECK(!malloc(huge) && errno == ENOMEM);
	errno = 0;
	CHECK(!calloc(half, 3) && errno == ENOMEM);
	errno = 0;
	CHECK(!reallocarray(NULL, half, 3) && errno == ENOMEM);
	errno = 0;
	CHECK(!aligned_alloc(64, huge - 4096) && errno == ENOMEM);
}

static void contents(void)
{
	char *p = malloc(100), *q;
	int *z = calloc(1000, sizeof(int));
	int nonzero = 0;

	CHECK(p && z);
	if (!p || !z)
		return;
	for (int i = 0; i < 1000; i++)
		nonzero |= z[i];
	CHECK(!nonzero);
	memset(p, 'x', 100);
	q = realloc(p, 1 << 20); /* grows: contents move along */
	CHECK(q && q[0] == 'x' && q[99] == 'x');
	p = realloc(q, 10);
	CHECK(p && p[9] == 'x' && malloc_usable_size(p) >= 10);
	CHECK(malloc_usable_size(NULL) == 0);
	errno = 1234;
	free(p);
	free(NULL);
	CHECK(errno == 1234); /* free leaves errno alone */
	free(z);
}

/*
 * Contents survive a trip to the device and back (CPU touch = fault home).
 * p need not be page aligned: a page's worth from p spans two pages, and
 * hmm_residency reports one location per page spanned.
 */
static void round_trip(char *p, size_t len, struct hmm_device *dev, const char *what)
{
	int loc[2] = { -2, -2 };

	for (size_t i = 0; i < len; i += 4096)
		p[i] = (char)(i / 4096 * 7);
	CHECK(hmm_migrate(p, len, dev, 0, NULL) == 0);
	CHECK(hmm_residency(p, 4096, loc) == 0 && loc[0] == 0);
	for (size_t i = 0; i < len; i += 4096) {
		if (p[i] != (char)(i / 4096 * 7)) {
			fprintf(stderr, "malloc-family: %s lost page %zu\n", what, i / 4096);
			failures++;
			break;
		}
	}
	CHECK(hmm_residency(p, 4096, loc) == 0 && loc[0] == HMM_LOC_HOST);
}

static void managed(void)
{
	struct hmm_device *dev = hmm_device_get(0);
	size_t len = 4 << 20;
	char *heap = malloc(len);
	char *anon = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int loc = -1;

	CHECK(dev && heap && anon != MAP_FAILED);
	if (!dev || !heap || anon == MAP_FAILED)
		return;
	round_trip(heap, len, dev, "heap");
	round_trip(anon, len, dev, "mmap");
	/* mlock brings a device-resident range home before it pins it. */
	CHECK(hmm_migrate(anon, len, dev, 0, NULL) == 0);
	CHECK(mlock(anon, len) == 0);
	CHECK(hmm_residency(anon + len - 4096, 4096, &loc) == 0 && loc == HMM_LOC_HOST);
	CHECK(anon[len - 4096] == (char)((len - 4096) / 4096 * 7));
	munlock(anon, len);
	munmap(anon, len);
	free(heap);
}

int main(void)
{
	alignment();
	bad_sizes();
	contents();
	managed();
	if (failures) {
		fprintf(stderr, "malloc-family: %d failures\n", failures);
		return 1;
	}
	printf("malloc-family: ok\n");
	return 0;
}
