// SPDX-License-Identifier: MIT
/*
 * uhmm-demo: the main job on the sim device, step by step. Allocates managed
 * memory, migrates it to the device, lets the CPU touch it (pages fault back
 * home), lets the device read and write through its mirror, and prints what
 * happened at each step.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uhmm.h>

#define PAGES 4096
#define PAGE 4096

static struct hmm_stats stats(void)
{
	struct hmm_stats s = { .size = sizeof(s) };

	hmm_stats_get(&s);
	return s;
}

static void where(const char *what, const void *p, int dev_index)
{
	int *loc = calloc(PAGES, sizeof(int));
	size_t host = 0, dev = 0, none = 0;

	hmm_residency(p, (size_t)PAGES * PAGE, loc);
	for (int i = 0; i < PAGES; i++) {
		host += loc[i] == HMM_LOC_HOST;
		dev += loc[i] == dev_index;
		none += loc[i] == HMM_LOC_NONE;
	}
	printf("  %-44s host %4zu  device %4zu  untouched %4zu\n", what, host, dev, none);
	free(loc);
}

static int fail(const char *what, int err)
{
	fprintf(stderr, "uhmm-demo: %s: %s\n", what, strerror(-err));
	return 1;
}

int main(int argc, char **argv)
{
	const char *spec = argc > 1 ? argv[1] : "sim";

	if (argc > 2 || (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")))) {
		printf("usage: uhmm-demo [SPEC]\n"
		       "Walks through the main job on one device (default \"sim\"): allocate,\n"
		       "migrate, CPU faults bring pages home, the device reads and writes\n"
		       "through its mirror. SPEC is a device spec such as sim:coherent.\n");
		return argc == 2 ? 0 : 2;
	}
	struct hmm_device_info info = { .size = sizeof(info) };
	struct hmm_device *dev;
	struct hmm_access acc;
	struct hmm_stats s0, s1;
	size_t len = (size_t)PAGES * PAGE, pages;
	unsigned *p, *buf;
	uint64_t sum = 0;
	int err;

	if ((err = hmm_init()))
		return fail("hmm_init", err);
	if ((err = hmm_device_open(spec, &dev)))
		return fail(spec, err);
	hmm_device_info(dev, &info);
	printf("device %s (%s%s), index %d, %llu MiB of memory\n\n", info.name, info.kind,
	       info.coherent ? ", coherent" : ", device-private", info.index,
	       (unsigned long long)(info.mem_total >> 20));

	p = hmm_alloc(len);
	buf = malloc(len);
	if (!p || !buf)
		return 1;
	printf("1. hmm_alloc(%zu MiB) and the CPU writes every page\n", len >> 20);
	where("after hmm_alloc:", p, info.index);
	for (size_t i = 0; i < len / sizeof(*p); i++)
		p[i] = (unsigned)i;
	where("after the CPU wrote it:", p, info.index);

	printf("2. hmm_migrate to %s\n", info.name);
	s0 = stats();
	if ((err = hmm_migrate(p, len, dev, 0, &pages)))
		return fail("hmm_migrate", err);
	s1 = stats();
	where("after hmm_migrate:", p, info.index);
	printf("  %zu pages on the device, %llu MiB of device memory in use\n", pages,
	       (unsigned long long)(s1.device_resident_bytes[info.index] >> 20));

	printf("3. the CPU reads the first quarter%s\n",
	       info.coherent ? " (in place: coherent memory)" : " (pages fault back home)");
	s0 = stats();
	for (size_t i = 0; i < len / sizeof(*p) / 4; i++)
		sum += p[i];
	s1 = stats();
	where("after the CPU read:", p, info.index);
	printf("  %llu CPU faults served, %llu pages came home (checksum %llu)\n",
	       (unsigned long long)(s1.cpu_faults - s0.cpu_faults),
	       (unsigned long long)(s1.pages_to_host - s0.pages_to_host), (unsigned long long)sum);

	printf("4. the device reads everything through its mirror\n");
	if ((err = hmm_device_read(dev, p, len, buf, &acc)))
		return fail("hmm_device_read", err);
	for (size_t i = 0; i < len / sizeof(*p); i++)
		if (buf[i] != (unsigned)i)
			return fail("device read: wrong data", -EIO);
	printf("  %llu pages read in %llu device fault round(s), data correct\n",
	       (unsigned long long)acc.pages, (unsigned long long)acc.faults);

	printf("5. the device writes the last page; the CPU sees it\n");
	memset(buf, 0xab, PAGE);
	if ((err = hmm_device_write(dev, (char *)p + len - PAGE, PAGE, buf, &acc)))
		return fail("hmm_device_write", err);
	printf("  CPU reads 0x%08x from the last page\n", p[len / sizeof(*p) - 1]);

	printf("6. hmm_migrate home, then close\n");
	if ((err = hmm_migrate(p, len, NULL, 0, &pages)))
		return fail("hmm_migrate home", err);
	where("after migrating home:", p, info.index);
	s1 = stats();
	printf("\ntotals: %llu CPU faults, %llu device fault rounds, %llu pages to the device, "
	       "%llu home, %llu bytes of runtime metadata\n",
	       (unsigned long long)s1.cpu_faults, (unsigned long long)s1.device_faults,
	       (unsigned long long)s1.pages_to_device, (unsigned long long)s1.pages_to_host,
	       (unsigned long long)s1.metadata_bytes);
	hmm_free(p);
	free(buf);
	return hmm_device_close(dev) ? 1 : 0;
}
