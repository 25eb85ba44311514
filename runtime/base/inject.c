// SPDX-License-Identifier: MIT
/*
 * Fault injection (UHMM_FAULT, hmm_fault_inject): named allocation and copy
 * points fail on demand so that every error path can be run by a test.
 * Backends ask by name (hmm_fault_should_fail); a point that only one
 * backend has is named for it.
 */
#include <errno.h>
#include <string.h>

#include <uhmm/device.h>

#include "base.h"

#define FAIL_ALWAYS (-1)

static const char *const names[INJ_NR] = {
	[INJ_DEVMEM_ALLOC] = "devmem_alloc",
	[INJ_DEVMEM_ALLOC_HUGE] = "devmem_alloc_huge",
	[INJ_DMA_TO_DEVICE] = "dma_to_device",
	[INJ_DMA_TO_HOST] = "dma_to_host",
	[INJ_URING_SHORT_IO] = "uring_short_io",
};

static _Atomic int remaining[INJ_NR];

bool inject_fire(enum inject_point p)
{
	int n = atomic_load_explicit(&remaining[p], memory_order_relaxed);

	while (n != 0) {
		if (n == FAIL_ALWAYS)
			return true;
		if (atomic_compare_exchange_weak(&remaining[p], &n, n - 1))
			return true;
	}
	return false;
}

bool hmm_fault_should_fail(const char *point)
{
	for (int p = 0; p < INJ_NR; p++)
		if (!strcmp(point, names[p]))
			return inject_fire((enum inject_point)p);
	return false;
}

static int parse_one(const char *s, size_t len, int *ret_point, int *ret_count)
{
	const char *colon = memchr(s, ':', len);
	size_t nlen = colon ? (size_t)(colon - s) : len;
	uint64_t count = 1;
	char num[16];

	*ret_point = -1;
	for (int p = 0; p < INJ_NR; p++)
		if (strlen(names[p]) == nlen && !strncmp(s, names[p], nlen))
			*ret_point = p;
	if (*ret_point < 0)
		return -EINVAL;
	if (colon) {
		size_t clen = len - nlen - 1;

		if (clen == 6 && !strncmp(colon + 1, "always", 6)) {
			*ret_count = FAIL_ALWAYS;
			return 0;
		}
		if (!clen || clen >= sizeof(num))
			return -EINVAL;
		memcpy(num, colon + 1, clen);
		num[clen] = 0;
		if (parse_uint(num, 1u << 30, &count))
			return -EINVAL;
	}
	*ret_count = (int)count;
	return 0;
}

/* All or nothing: a bad spec changes no counter. */
int inject_configure(const char *spec)
{
	int counts[INJ_NR];
	const char *s = spec;

	if (!spec)
		return -EINVAL;
	if (!strcmp(spec, "off") || !*spec) {
		for (int p = 0; p < INJ_NR; p++)
			atomic_store(&remaining[p], 0);
		return 0;
	}
	for (int p = 0; p < INJ_NR; p++)
		counts[p] = atomic_load(&remaining[p]);
	while (*s) {
		size_t len = strcspn(s, ",");
		int point, count;

		if (parse_one(s, len, &point, &count))
			return -EINVAL;
		counts[point] = count;
		s += len;
		if (*s == ',')
			s++;
	}
	for (int p = 0; p < INJ_NR; p++)
		atomic_store(&remaining[p], counts[p]);
	return 0;
}

int hmm_fault_inject(const char *spec)
{
	return inject_configure(spec);
}
