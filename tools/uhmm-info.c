// SPDX-License-Identifier: MIT
/*
 * uhmm-info: what this machine gives the runtime (userfaultfd features and
 * privilege, page-table introspection), which backends are built and
 * present, and every UHMM_* variable with its default (like fi_info -e).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "internal.h"
#include "kernel-compat.h"

static const struct {
	uint64_t bit;
	const char *name;
	const char *use;
} features[] = {
	{ UFFD_FEATURE_PAGEFAULT_FLAG_WP, "PAGEFAULT_FLAG_WP", "write-protect faults (copy path, read-mostly)" },
	{ UFFD_FEATURE_EVENT_FORK, "EVENT_FORK", "unused: fork brings pages home first" },
	{ UFFD_FEATURE_EVENT_REMAP, "EVENT_REMAP", "mremap of managed memory" },
	{ UFFD_FEATURE_EVENT_REMOVE, "EVENT_REMOVE", "madvise(DONTNEED/FREE/REMOVE) of managed memory" },
	{ UFFD_FEATURE_MISSING_HUGETLBFS, "MISSING_HUGETLBFS", "unused" },
	{ UFFD_FEATURE_MISSING_SHMEM, "MISSING_SHMEM", "unused" },
	{ UFFD_FEATURE_EVENT_UNMAP, "EVENT_UNMAP", "munmap of managed memory" },
	{ UFFD_FEATURE_SIGBUS, "SIGBUS", "unused" },
	{ UFFD_FEATURE_THREAD_ID, "THREAD_ID", "telling runtime threads' faults apart" },
	{ UFFD_FEATURE_MINOR_HUGETLBFS, "MINOR_HUGETLBFS", "unused" },
	{ UFFD_FEATURE_MINOR_SHMEM, "MINOR_SHMEM", "unused" },
	{ UFFD_FEATURE_EXACT_ADDRESS, "EXACT_ADDRESS", "unused" },
	{ UFFD_FEATURE_WP_HUGETLBFS_SHMEM, "WP_HUGETLBFS_SHMEM", "unused" },
	{ UFFD_FEATURE_WP_UNPOPULATED, "WP_UNPOPULATED", "unused" },
	{ UFFD_FEATURE_POISON, "POISON", "SIGBUS for an access whose page cannot come home" },
	{ UFFD_FEATURE_WP_ASYNC, "WP_ASYNC", "unused" },
	{ UFFD_FEATURE_MOVE, "MOVE", "zero-copy migration (else everything is copied)" },
};

static const struct {
	unsigned nr;
	const char *name;
} ioctls[] = {
	{ _UFFDIO_REGISTER, "REGISTER" }, { _UFFDIO_UNREGISTER, "UNREGISTER" },
	{ _UFFDIO_API, "API" },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: uhmm-info [--env] [--help]\n"
		   "Prints the kernel features the runtime found, the device backends and\n"
		   "every UHMM_* environment variable with its default.\n"
		   "  --env   only the environment variables\n");
}

static void print_env(void)
{
	size_t n;
	const struct opt_desc *d = opt_descs(&n);

	printf("Environment (UHMM_*):\n");
	for (size_t i = 0; i < n; i++) {
		const char *v = getenv(d[i].name);

		printf("  %-20s default \"%s\"%s%s%s\n      %s\n", d[i].name, d[i].def,
		       v ? ", now \"" : "", v ? v : "", v ? "\"" : "", d[i].help);
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "env", no_argument, NULL, 'e' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct uffd_probe probe;
	struct utsname u;
	size_t nb;
	const struct hmm_device_ops *const *b = dev_backends(&nb);
	int c;

	while ((c = getopt_long(argc, argv, "eh", opts, NULL)) != -1) {
		switch (c) {
		case 'e':
			print_env();
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	opt_load();
	uname(&u);
	printf("uhmm %d.%d.%d on Linux %s (%s), page size %ld\n\n", UHMM_VERSION_MAJOR,
	       UHMM_VERSION_MINOR, UHMM_VERSION_PATCH, u.release, u.machine, sysconf(_SC_PAGESIZE));

	uffd_probe(&probe);
	printf("userfaultfd:\n");
	if (probe.error) {
		printf("  unavailable: %s (the runtime cannot start)\n", strerror(-probe.error));
	} else {
		printf("  obtained through %s\n", probe.origin);
		printf("  kernel-mode faults (read(2) into device pages): %s\n",
		       probe.kernel_faults ? "served" :
		       "NOT allowed: pages stay on the host (need root, CAP_SYS_PTRACE,\n"
		       "    vm.unprivileged_userfaultfd=1 or access to /dev/userfaultfd)");
		printf("  features 0x%llx:\n", (unsigned long long)probe.features);
		for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++)
			printf("    %-20s %-4s %s\n", features[i].name,
			       probe.features & features[i].bit ? "yes" : "no", features[i].use);
		printf("  ioctls:");
		for (size_t i = 0; i < sizeof(ioctls) / sizeof(ioctls[0]); i++)
			if (probe.ioctls & (1ull << ioctls[i].nr))
				printf(" %s", ioctls[i].name);
		printf(" (range ioctls are reported per registration)\n");
	}
	printf("\npage tables:\n");
	printf("  PROCMAP_QUERY (VMA lookups without parsing maps): %s\n",
	       vma_have_procmap_query() ? "yes" : "no");
	printf("  PAGEMAP_SCAN (zero and huge pages in snapshots): %s\n",
	       vma_have_pagemap_scan() ? "yes" : "no");

	printf("\nbackends:\n");
	for (size_t i = 0; i < nb; i++) {
		int present = b[i]->probe();

		printf("  %-8s %s (%s)\n", b[i]->kind, b[i]->description,
		       present ? strerror(-present) : "present");
		for (const struct hmm_device_param *p = b[i]->params; p && p->key; p++)
			printf("           option %-10s %s\n", p->key, p->help);
	}
	printf("           option %-10s device memory (all kinds), e.g. mem=256M\n", "mem");
	printf("\n");
	print_env();
	return 0;
}
