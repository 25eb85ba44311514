/* SPDX-License-Identifier: MIT */
/*
 * The per-process stats region: a small memfd named "uhmm-stats" that the
 * runtime maps shared and refreshes; uhmm-stat finds it through
 * /proc/PID/fd (which only the same user, or root, may open) and maps it
 * read-only. Writers bump seq to odd before and to even after an update.
 */
#ifndef UHMM_STATS_REGION_H
#define UHMM_STATS_REGION_H

#include <stddef.h>
#include <stdint.h>

#include <uhmm.h>

#define UHMM_STATS_MEMFD "uhmm-stats"
#define UHMM_STATS_MAGIC 0x53484d55u    /* "UMHS" */
#define UHMM_STATS_VERSION 1

struct uhmm_stats_region {
	uint32_t magic;
	uint32_t version;
	int32_t pid;
	uint32_t ndevices;              /* device_names[0, ndevices) may be set */
	uint64_t seq;
	uint64_t updated_ns;            /* CLOCK_MONOTONIC */
	uint64_t host_limit;            /* bytes; 0: none */
	uint64_t chaos_ms;
	uint64_t host_present_bytes;    /* managed pages with host memory of their own */
	struct hmm_stats s;
	char device_names[HMM_STATS_MAX_DEVICES][64];
};

/* stats-format.c: the summary's and uhmm-stat's shared text. */
size_t stats_put(char *buf, size_t len, size_t at, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
const char *stats_human_bytes(uint64_t bytes, char *buf, size_t len);
size_t stats_format_kv(const struct uhmm_stats_region *r, char *buf, size_t len);

#endif /* UHMM_STATS_REGION_H */
