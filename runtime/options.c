// SPDX-License-Identifier: MIT
/* UHMM_* environment variables: one table, read once at start. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct rt_options opt = {
	.devices = "",
	.device_mem = 1ull << 30,
	.log_level = LOG_WARN,
	.fault = "",
	.fault_around = 512,
	.dma_batch = 512,
	.retry_ms = 1000,
	.fault_retries = 3,
	.exclusive_mem = 256ull << 20,
	.uffd_mode = UFFD_MODE_AUTO,
	.zero_around = 16,
	.thrash_ms = 1000,
	.stats_file = "",
};

static const struct opt_desc descs[] = {
	{ "UHMM_DEVICES", "", "devices opened at start, specs separated by ';' (e.g. \"sim;sim:coherent\")" },
	{ "UHMM_DEVICE_MEM", "1G", "device memory of a device whose spec has no mem=" },
	{ "UHMM_LOG", "1", "0 errors, 1 warnings, 2 info, 3 debug (to stderr)" },
	{ "UHMM_FAULT", "", "fault injection: point[:N|:always],... with points devmem_alloc, devmem_alloc_huge, dma_to_device, dma_to_host" },
	{ "UHMM_FAULT_AROUND", "512", "most pages one CPU fault brings home when faults are sequential" },
	{ "UHMM_DMA_BATCH", "512", "pages per DMA batch" },
	{ "UHMM_RETRY_MS", "1000", "how long a device fault retries against concurrent invalidations before -EBUSY" },
	{ "UHMM_FAULT_RETRIES", "3", "copy attempts before a CPU fault that cannot bring its page home gets SIGBUS" },
	{ "UHMM_EXCLUSIVE_MEM", "256M", "address space reserved for pages under exclusive device access" },
	{ "UHMM_USERFAULTFD", "auto", "auto, kernel (require kernel-mode faults) or user (user-mode faults only)" },
	{ "UHMM_ZERO_AROUND", "16", "pages one first-touch fault maps (as zero pages) ahead of the faulting one" },
	{ "UHMM_HEAP", "", "1: malloc serves managed memory (the default under LD_PRELOAD), 0: glibc's malloc" },
	{ "UHMM_HOST_LIMIT", "", "keep managed host-resident memory under this size by evicting cold pages to the first device" },
	{ "UHMM_THRASH_MS", "1000", "a page evicted and faulted back twice within this window stays on the host for a while" },
	{ "UHMM_CHAOS", "", "test aid: every N ms migrate a random share of managed pages to a device and some back" },
	{ "UHMM_STATS", "0", "1: print a summary of the runtime's work when the process exits" },
	{ "UHMM_STATS_PID", "", "print the summary only in the process with this pid (uhmm-run sets it)" },
	{ "UHMM_STATS_FILE", "", "write the summary as key=value lines to this file instead of stderr" },
};

const struct opt_desc *opt_descs(size_t *ret_n)
{
	*ret_n = ARRAY_SIZE(descs);
	return descs;
}

int parse_uint(const char *s, uint64_t max, uint64_t *ret)
{
	char *end;
	unsigned long long v;

	if (!s || !*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v > max)
		return -EINVAL;
	*ret = v;
	return 0;
}

int parse_size(const char *s, uint64_t *ret)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	if (!s || !*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	}
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end || (shift && v > (UINT64_MAX >> shift)))
		return -EINVAL;
	*ret = (uint64_t)v << shift;
	return 0;
}

static void load_uint(const char *name, unsigned *field, uint64_t min, uint64_t max)
{
	const char *s = getenv(name);
	uint64_t v;

	if (!s || !*s)
		return;
	if (parse_uint(s, max, &v) || v < min) {
		log_warn("%s=%s is not a number in [%llu, %llu]; using %u", name, s,
			 (unsigned long long)min, (unsigned long long)max, *field);
		return;
	}
	*field = (unsigned)v;
}

static void load_size(const char *name, uint64_t *field)
{
	const char *s = getenv(name);
	uint64_t v;

	if (!s || !*s)
		return;
	if (parse_size(s, &v) || v < PAGE_SIZE) {
		log_warn("%s=%s is not a size of at least 4K; using the default", name, s);
		return;
	}
	*field = ALIGN_UP(v, PAGE_SIZE);
}

static void load_bool(const char *name, bool *field)
{
	const char *s = getenv(name);

	if (!s || !*s)
		return;
	if (!strcmp(s, "1") || !strcmp(s, "yes") || !strcmp(s, "on"))
		*field = true;
	else if (!strcmp(s, "0") || !strcmp(s, "no") || !strcmp(s, "off"))
		*field = false;
	else
		log_warn("%s=%s: expected 1 or 0", name, s);
}

void opt_load(void)
{
	const char *s;
	unsigned level = (unsigned)opt.log_level, stats_pid = 0;

	/* UHMM_LOG first, so that complaints about the others obey it. */
	load_uint("UHMM_LOG", &level, 0, LOG_DEBUG);
	opt.log_level = (int)level;
	if ((s = getenv("UHMM_DEVICES")))
		opt.devices = s;
	if ((s = getenv("UHMM_FAULT")))
		opt.fault = s;
	load_size("UHMM_DEVICE_MEM", &opt.device_mem);
	load_size("UHMM_EXCLUSIVE_MEM", &opt.exclusive_mem);
	load_uint("UHMM_FAULT_AROUND", &opt.fault_around, 1, 1u << 16);
	load_uint("UHMM_DMA_BATCH", &opt.dma_batch, 1, 1u << 16);
	load_uint("UHMM_RETRY_MS", &opt.retry_ms, 1, 3600 * 1000);
	load_uint("UHMM_FAULT_RETRIES", &opt.fault_retries, 1, 1000);
	load_uint("UHMM_ZERO_AROUND", &opt.zero_around, 1, 512);
	load_uint("UHMM_THRASH_MS", &opt.thrash_ms, 1, 3600 * 1000);
	load_uint("UHMM_CHAOS", &opt.chaos_ms, 0, 3600 * 1000);
	load_size("UHMM_HOST_LIMIT", &opt.host_limit);
	load_bool("UHMM_STATS", &opt.stats_summary);
	load_uint("UHMM_STATS_PID", &stats_pid, 0, INT32_MAX);
	opt.stats_pid = (int)stats_pid;
	if ((s = getenv("UHMM_STATS_FILE")))
		opt.stats_file = s;
	s = getenv("UHMM_USERFAULTFD");
	if (s && *s) {
		if (!strcmp(s, "auto"))
			opt.uffd_mode = UFFD_MODE_AUTO;
		else if (!strcmp(s, "kernel"))
			opt.uffd_mode = UFFD_MODE_KERNEL;
		else if (!strcmp(s, "user"))
			opt.uffd_mode = UFFD_MODE_USER;
		else
			log_warn("UHMM_USERFAULTFD=%s: expected auto, kernel or user", s);
	}
}
