// SPDX-License-Identifier: MIT
/*
 * UHMM_* environment variables: one table (mimalloc's options, libfabric's
 * fi_param), read once at start. Each entry says how its value parses and
 * where it lands; the same parser answers hmm_option_check(), so a tool that
 * sets a variable for a child (uhmm-run) rejects exactly what the runtime
 * would, and hmm_option_info() lists the table for uhmm-info --env.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"

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
	.kernel_hide = "",
};

enum opt_type {
	OPT_STRING,     /* const char *, any text */
	OPT_SIZE,       /* uint64_t, bytes with K/M/G/T, at least a page, rounded up to pages */
	OPT_UINT,       /* unsigned in [min, max] */
	OPT_BOOL,       /* bool: 1/yes/on, 0/no/off */
	OPT_CHOICE,     /* unsigned: index into choices */
};

#define NO_FIELD SIZE_MAX   /* read by its user itself (UHMM_HEAP: before we start) */

struct opt_desc {
	const char *name;
	enum opt_type type;
	size_t field;               /* offsetof(struct rt_options, ...) */
	uint64_t min, max;          /* OPT_UINT */
	const char *const *choices; /* OPT_CHOICE, NULL-terminated */
	const char *def;            /* the default, as text */
	const char *help;
};

#define FIELD(f) offsetof(struct rt_options, f)

static const char *const uffd_modes[] = { "auto", "kernel", "user", NULL };
static const char *const cl_modes[] = { "system", "coarse", "buffer", NULL };
static const char *const type_names[] = {
	[OPT_STRING] = "string", [OPT_SIZE] = "size", [OPT_UINT] = "number",
	[OPT_BOOL] = "boolean", [OPT_CHOICE] = "choice",
};

/* UHMM_LOG first: complaints about the others obey it. */
static const struct opt_desc descs[] = {
	{ "UHMM_LOG", OPT_UINT, FIELD(log_level), 0, LOG_DEBUG, NULL, "1",
	  "0 errors, 1 warnings, 2 info, 3 debug (to stderr)" },
	{ "UHMM_DEVICES", OPT_STRING, FIELD(devices), 0, 0, NULL, "",
	  "devices opened at start, specs separated by ';' (e.g. \"sim;sim:coherent\")" },
	{ "UHMM_DEVICE_MEM", OPT_SIZE, FIELD(device_mem), 0, 0, NULL, "1G",
	  "device memory of a device whose spec has no mem=" },
	{ "UHMM_FAULT", OPT_STRING, FIELD(fault), 0, 0, NULL, "",
	  "fault injection: point[:N|:always],... with points devmem_alloc, devmem_alloc_huge, "
	  "dma_to_device, dma_to_host, uring_short_io" },
	{ "UHMM_FAULT_AROUND", OPT_UINT, FIELD(fault_around), 1, 1u << 16, NULL, "512",
	  "most pages one CPU fault brings home when faults are sequential" },
	{ "UHMM_DMA_BATCH", OPT_UINT, FIELD(dma_batch), 1, 1u << 16, NULL, "512",
	  "pages per DMA batch" },
	{ "UHMM_RETRY_MS", OPT_UINT, FIELD(retry_ms), 1, 3600 * 1000, NULL, "1000",
	  "how long a device fault retries against concurrent invalidations before -EBUSY" },
	{ "UHMM_FAULT_RETRIES", OPT_UINT, FIELD(fault_retries), 1, 1000, NULL, "3",
	  "copy attempts before a CPU fault that cannot bring its page home gets SIGBUS" },
	{ "UHMM_EXCLUSIVE_MEM", OPT_SIZE, FIELD(exclusive_mem), 0, 0, NULL, "256M",
	  "address space reserved for pages under exclusive device access" },
	{ "UHMM_USERFAULTFD", OPT_CHOICE, FIELD(uffd_mode), 0, 0, uffd_modes, "auto",
	  "auto, kernel (require kernel-mode faults) or user (user-mode faults only)" },
	{ "UHMM_ZERO_AROUND", OPT_UINT, FIELD(zero_around), 1, 512, NULL, "16",
	  "pages one first-touch fault maps (as zero pages) ahead of the faulting one" },
	{ "UHMM_HEAP", OPT_BOOL, NO_FIELD, 0, 0, NULL, "",
	  "1: malloc serves managed memory (the default under LD_PRELOAD), 0: glibc's malloc" },
	{ "UHMM_OPENCL_LAYER", OPT_BOOL, NO_FIELD, 0, 0, NULL, "1",
	  "0: under uhmm, leave OpenCL programs alone (no layer: pointers reach the driver as they are)" },
	{ "UHMM_OPENCL_SVM", OPT_CHOICE, NO_FIELD, 0, 0, cl_modes, "",
	  "how the OpenCL layer serves a device: system, coarse or buffer (default: what it offers)" },
	{ "UHMM_OPENCL_SVM_HEAP", OPT_SIZE, NO_FIELD, 0, 0, NULL, "1G",
	  "coarse mode: the heap is served from the device's SVM memory in pieces of this size "
	  "(at most the device's largest allocation)" },
	{ "UHMM_HOST_LIMIT", OPT_SIZE, FIELD(host_limit), 0, 0, NULL, "",
	  "keep managed host-resident memory under this size by evicting cold pages to the "
	  "first device" },
	{ "UHMM_THRASH_MS", OPT_UINT, FIELD(thrash_ms), 1, 3600 * 1000, NULL, "1000",
	  "a page evicted and faulted back twice within this window stays on the host for a while" },
	{ "UHMM_CHAOS", OPT_UINT, FIELD(chaos_ms), 0, 3600 * 1000, NULL, "",
	  "test aid: every N ms migrate a random share of managed pages to a device and some back" },
	{ "UHMM_STATS", OPT_BOOL, FIELD(stats_summary), 0, 0, NULL, "0",
	  "1: print a summary of the runtime's work when the process exits" },
	{ "UHMM_STATS_PID", OPT_UINT, FIELD(stats_pid), 0, INT32_MAX, NULL, "",
	  "print the summary only in the process with this pid (uhmm-run sets it)" },
	{ "UHMM_STATS_FILE", OPT_STRING, FIELD(stats_file), 0, 0, NULL, "",
	  "write the summary as key=value lines to this file instead of stderr" },
	{ "UHMM_KERNEL_HIDE", OPT_STRING, FIELD(kernel_hide), 0, 0, NULL, "",
	  "test aid: act as if the kernel lacked these features (MOVE, POISON, PAGEMAP_SCAN, "
	  "PROCMAP_QUERY, separated by ','), so an older kernel's ways run on this one" },
};

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

/* The parsed value of s for d, into whichever member its type uses. */
union opt_value {
	const char *s;
	uint64_t size;
	unsigned u;
	bool b;
};

static int parse(const struct opt_desc *d, const char *s, union opt_value *ret)
{
	uint64_t v;

	switch (d->type) {
	case OPT_STRING:
		ret->s = s;
		return 0;
	case OPT_SIZE:
		if (parse_size(s, &v) || v < PAGE_SIZE || v > UINT64_MAX - PAGE_SIZE)
			return -EINVAL;
		ret->size = ALIGN_UP(v, PAGE_SIZE);
		return 0;
	case OPT_UINT:
		if (parse_uint(s, d->max, &v) || v < d->min)
			return -EINVAL;
		ret->u = (unsigned)v;
		return 0;
	case OPT_BOOL:
		if (!strcmp(s, "1") || !strcmp(s, "yes") || !strcmp(s, "on"))
			ret->b = true;
		else if (!strcmp(s, "0") || !strcmp(s, "no") || !strcmp(s, "off"))
			ret->b = false;
		else
			return -EINVAL;
		return 0;
	case OPT_CHOICE:
		for (unsigned i = 0; d->choices[i]; i++) {
			if (!strcmp(s, d->choices[i])) {
				ret->u = i;
				return 0;
			}
		}
		return -EINVAL;
	}
	return -EINVAL;
}

static void store(const struct opt_desc *d, const union opt_value *v)
{
	char *field = (char *)&opt + d->field;

	switch (d->type) {
	case OPT_STRING:
		*(const char **)field = v->s;
		break;
	case OPT_SIZE:
		*(uint64_t *)field = v->size;
		break;
	case OPT_UINT:
	case OPT_CHOICE:
		*(unsigned *)field = v->u;
		break;
	case OPT_BOOL:
		*(bool *)field = v->b;
		break;
	}
}

static const char *expected(const struct opt_desc *d, char *buf, size_t len)
{
	switch (d->type) {
	case OPT_SIZE:
		return "a size of at least 4K (K, M, G, T suffixes)";
	case OPT_UINT:
		snprintf(buf, len, "a number in [%llu, %llu]", (unsigned long long)d->min,
			 (unsigned long long)d->max);
		return buf;
	case OPT_BOOL:
		return "1 or 0";
	case OPT_CHOICE:
		return "one of the choices uhmm-info --env lists";
	case OPT_STRING:
		break;
	}
	return "text";
}

static void load(void)
{
	for (size_t i = 0; i < ARRAY_SIZE(descs); i++) {
		const struct opt_desc *d = &descs[i];
		const char *s = getenv(d->name);
		union opt_value v;
		char buf[64];

		if (!s || (!*s && d->type != OPT_STRING) || d->field == NO_FIELD)
			continue;
		if (parse(d, s, &v)) {
			log_warn("%s=%s: expected %s; using the default", d->name, s,
				 expected(d, buf, sizeof(buf)));
			continue;
		}
		store(d, &v);
	}
}

/* Once per process: the environment is read at start, as libc's own tunables are. */
void opt_load(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, load);
}

static const struct opt_desc *find(const char *name)
{
	for (size_t i = 0; name && i < ARRAY_SIZE(descs); i++)
		if (!strcmp(descs[i].name, name))
			return &descs[i];
	return NULL;
}

int hmm_option_check(const char *name, const char *value)
{
	const struct opt_desc *d = find(name);
	union opt_value v;

	if (!d)
		return -ENOENT;
	if (!value)
		return -EINVAL;
	return parse(d, value, &v);
}

int hmm_option_info(int index, struct hmm_option_info *ret_info)
{
	struct hmm_option_info info = { .size = sizeof(info) };
	const struct opt_desc *d;

	if (!ret_info || ret_info->size < offsetof(struct hmm_option_info, name) || index < 0)
		return -EINVAL;
	if ((size_t)index >= ARRAY_SIZE(descs))
		return -ENOENT;
	d = &descs[index];
	info.name = d->name;
	info.type = type_names[d->type];
	info.default_value = d->def;
	info.value = getenv(d->name);
	info.help = d->help;
	memcpy((char *)ret_info + sizeof(info.size), (char *)&info + sizeof(info.size),
	       MIN(ret_info->size, sizeof(info)) - sizeof(info.size));
	return 0;
}
