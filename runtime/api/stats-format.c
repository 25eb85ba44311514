// SPDX-License-Identifier: MIT
/*
 * Stats as text (hmm_stats_format), shared by the summary at exit
 * (stats.c) and uhmm-stat: one key=value layout for both, so a
 * --stats=FILE line and a uhmm-stat --kv line read the same, and the text
 * uhmm-stat shows people. Never allocates (stdio may be gone at exit).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "api.h"

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

static size_t format_kv(const struct hmm_stats_region *r, char *buf, size_t len)
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

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static size_t format_text(const struct hmm_stats_region *r, char *buf, size_t len)
{
	const struct hmm_stats *s = &r->s;
	char a[32], b[32], c[32];
	size_t at = 0;

	at = stats_put(buf, len, at, "pid %d, updated %llu ms ago", r->pid,
		       (unsigned long long)(now_ms() - r->updated_ns / 1000000));
	if (r->host_limit)
		at = stats_put(buf, len, at, ", host limit %s",
			       stats_human_bytes(r->host_limit, a, sizeof(a)));
	if (r->chaos_ms)
		at = stats_put(buf, len, at, ", chaos every %llu ms", (unsigned long long)r->chaos_ms);
	at = stats_put(buf, len, at,
		       "\n  faults     CPU %llu (first touch %llu pages, waited %llu), device %llu, "
		       "serving %.1f ms\n",
		       (unsigned long long)s->cpu_faults, (unsigned long long)s->zero_fills,
		       (unsigned long long)s->parked_faults, (unsigned long long)s->device_faults,
		       (double)s->fault_ns / 1e6);
	at = stats_put(buf, len, at,
		       "  migrated   to devices %llu pages (%s), to host %llu pages (%s), failed %llu\n",
		       (unsigned long long)s->pages_to_device,
		       stats_human_bytes(s->bytes_to_device, a, sizeof(a)),
		       (unsigned long long)s->pages_to_host,
		       stats_human_bytes(s->bytes_to_host, b, sizeof(b)),
		       (unsigned long long)s->migrations_failed);
	at = stats_put(buf, len, at, "  pressure   evicted %llu pages, thrashing %llu\n",
		       (unsigned long long)s->evictions, (unsigned long long)s->thrash_events);
	at = stats_put(buf, len, at, "  resident   managed %s, host %s",
		       stats_human_bytes(s->managed_bytes, a, sizeof(a)),
		       stats_human_bytes(r->host_present_bytes, b, sizeof(b)));
	for (uint32_t i = 0; i < r->ndevices && i < HMM_STATS_MAX_DEVICES; i++)
		if (r->device_names[i][0])
			at = stats_put(buf, len, at, ", %.*s %s", (int)sizeof(r->device_names[i]),
				       r->device_names[i],
				       stats_human_bytes(s->device_resident_bytes[i], c, sizeof(c)));
	return stats_put(buf, len, at, "\n  metadata   %s\n",
			 stats_human_bytes(s->metadata_bytes, a, sizeof(a)));
}

int hmm_stats_format(const struct hmm_stats_region *region, int format, char *buf, size_t len)
{
	size_t n;

	if (!region || !buf || !len)
		return -EINVAL;
	buf[0] = 0;
	switch (format) {
	case HMM_STATS_FORMAT_KV:
		n = format_kv(region, buf, len);
		break;
	case HMM_STATS_FORMAT_TEXT:
		n = format_text(region, buf, len);
		break;
	default:
		return -EINVAL;
	}
	return (int)MIN(n, (size_t)INT32_MAX);
}
