// SPDX-License-Identifier: MIT
/*
 * The counters every layer adds to and hmm_stats_get, the live region and
 * the summary at exit report. Relaxed atomics: each is a count on its own;
 * readers that need them consistent with page state read under reg.lock,
 * where page transitions count.
 */
#include <string.h>

#include "base.h"

struct rt_stats stats;

/* The child of fork counts its own work. */
void stats_reset(void)
{
	memset(&stats, 0, sizeof(stats));
}
