// SPDX-License-Identifier: MIT
/*
 * Stats as text, shared by the summary at exit (stats.c) and uhmm-stat:
 * one key=value layout for both, so a --stats=FILE line and a uhmm-stat
 * --kv line read the same. Never allocates (stdio may be gone at exit).
 */
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"
#include "stats-region.h"

size_t stats_put(char *buf, size_t len, size_t at, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (at >= len)
		return at;
	va_start(ap, fmt);
	n = vsnprintf(buf + at, len - at, fmt, ap);
	va_end(ap);
	return n < 0 ? at : MIN(len - 1, at + (size_t)n);
}

const char *stats_human_bytes(uint64_t bytes, char *buf, size_t len)
{
	static const char units[] = "KMGT";
	double v = (double)bytes;
	int u = -1;

	while (v >= 1024 && u < 3) {
		v /= 1024;
		u++;
	}
	if (u < 0)
		snprintf(buf, len, "%llu B", (unsigned long long)bytes);
	else
		snprintf(buf, len, "%.1f %ciB", v, units[u]);
	return buf;
}

size_t stats_format_kv(const struct uhmm_stats_region *r, char *buf, size_t len)
{
	const struct hmm_stats *s = &r->s;
	size_t at = 0;

	at = stats_put(buf, len, at, "pid=%d\ncpu_faults=%llu\nzero_fills=%llu\nparked_faults=%llu\n",
		       r->pid, (unsigned long long)s->cpu_faults, (unsigned long long)s->zero_fills,
		       (unsigned long long)s->parked_faults);
	at = stats_put(buf, len, at, "fault_ns=%llu\ndevice_faults=%llu\n",
		       (unsigned long long)s->fault_ns, (unsigned long long)s->device_faults);
	at = stats_put(buf, len, at, "pages_to_device=%llu\npages_to_host=%llu\n",
		       (unsigned long long)s->pages_to_device, (unsigned long long)s->pages_to_host);
	at = stats_put(buf, len, at, "evictions=%llu\nthrash_events=%llu\nmigrations_failed=%llu\n",
		       (unsigned long long)s->evictions, (unsigned long long)s->thrash_events,
		       (unsigned long long)s->migrations_failed);
	at = stats_put(buf, len, at, "managed_bytes=%llu\nhost_present_bytes=%llu\nhost_limit=%llu\n"
		       "metadata_bytes=%llu\n",
		       (unsigned long long)s->managed_bytes, (unsigned long long)r->host_present_bytes,
		       (unsigned long long)r->host_limit, (unsigned long long)s->metadata_bytes);
	for (uint32_t i = 0; i < r->ndevices && i < HMM_STATS_MAX_DEVICES; i++)
		if (r->device_names[i][0])
			at = stats_put(buf, len, at, "device%u=%.*s\ndevice%u_resident_bytes=%llu\n", i,
				       (int)sizeof(r->device_names[i]), r->device_names[i], i,
				       (unsigned long long)s->device_resident_bytes[i]);
	return at;
}
