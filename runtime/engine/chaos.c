// SPDX-License-Identifier: MIT
/*
 * UHMM_CHAOS=MS, a test aid: every MS milliseconds the agent moves a random
 * share of managed pages to a random device and brings some back, so that a
 * program's results can prove it never noticed where its memory was.
 */
#include <time.h>
#include <unistd.h>

#include "engine.h"

#define SHARE 64                    /* up to 1/SHARE of managed pages per tick */
#define MAX_PAGES_PER_TICK 256      /* ... and no more than 1 MiB */
#define MAX_WINDOW 64

static uint64_t rng_state;

static uint64_t rng(void)
{
	/* xorshift64*: plenty for picking pages */
	if (!rng_state)
		rng_state = now_ns() ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ull;
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

static struct hmm_device_core *random_device(void)
{
	struct hmm_device_core *open[MAX_DEVICES];
	int n = 0;

	for (int i = 0; i < MAX_DEVICES; i++)
		if (dev_table[i] && !dev_table[i]->closing)
			open[n++] = dev_table[i];
	return n ? open[rng() % (uint64_t)n] : NULL;
}

/* A random window of managed pages, up to max pages long. */
static bool random_window(const struct span *v, size_t n, uint64_t total, size_t max,
			  uintptr_t *ret_start, uintptr_t *ret_end)
{
	uint64_t at = rng() % total;
	size_t len = 1 + (size_t)(rng() % MIN(max, (size_t)MAX_WINDOW));

	for (size_t i = 0; i < n; i++) {
		uint64_t pages = (v[i].end - v[i].start) >> PAGE_SHIFT;

		if (at < pages) {
			*ret_start = v[i].start + at * PAGE_SIZE;
			*ret_end = MIN(v[i].end, *ret_start + len * PAGE_SIZE);
			return true;
		}
		at -= pages;
	}
	return false;
}

void chaos_tick(void)
{
	struct hmm_device_core *c = random_device();
	struct span *v;
	size_t n, budget;
	uint64_t total = 0;

	if (!c)
		return;
	reg_lock();
	if (reg_snapshot(&v, &n)) {
		reg_unlock();
		return;
	}
	reg_unlock();
	for (size_t i = 0; i < n; i++)
		total += (v[i].end - v[i].start) >> PAGE_SHIFT;
	budget = total ? MIN(total / SHARE + 1, (uint64_t)MAX_PAGES_PER_TICK) : 0;
	/* Out: errors only mean the window changed under us (unmapped, protected). */
	for (size_t left = budget; left;) {
		struct mig_result res;
		uintptr_t s, e;

		if (!random_window(v, n, total, left, &s, &e))
			break;
		mig_range(s, e, c, &res);
		left -= MIN(left, (e - s) >> PAGE_SHIFT);
	}
	/* And a quarter of that back home. */
	for (size_t left = budget / 4; left;) {
		struct mig_result res;
		uintptr_t s, e;

		if (!random_window(v, n, total, left, &s, &e))
			break;
		mig_home(s, e, NULL, &res);
		left -= MIN(left, (e - s) >> PAGE_SHIFT);
	}
	meta_free(v, n * sizeof(*v));
}
