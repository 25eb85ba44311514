// SPDX-License-Identifier: MIT
/*
 * uhmm-info: what this machine gives the runtime (userfaultfd features and
 * privilege, page-table introspection), which backends are built and
 * present, and every UHMM_* variable with its default (like fi_info -e);
 * with --device, how one device runs here. Public API only:
 * hmm_kernel_info, hmm_kernel_feature, hmm_backend_info, hmm_option_info,
 * hmm_device_open and hmm_device_info.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <uhmm.h>

static void usage(FILE *f)
{
	fprintf(f, "usage: uhmm-info [--env | --device SPEC] [--help]\n"
		   "Prints the kernel features the runtime found, the device backends and\n"
		   "every UHMM_* environment variable with its default.\n"
		   "  --env           only the environment variables\n"
		   "  --device SPEC   open the device SPEC and say how it runs here\n");
}

static const char *const model_names[] = {
	[HMM_MEMORY_PRIVATE] = "private",
	[HMM_MEMORY_DMA_ONLY] = "DMA-only",
	[HMM_MEMORY_COHERENT] = "coherent",
};

/* Open one device as a program would, and print what it became. */
static int print_device(const char *spec)
{
	struct hmm_device_info info = { .size = sizeof(info) };
	struct hmm_device *dev;
	int err = hmm_init();

	if (!err)
		err = hmm_device_open(spec, &dev);
	if (!err)
		err = hmm_device_info(dev, &info);
	if (err) {
		fprintf(stderr, "uhmm-info: %s: %s\n", spec, strerror(-err));
		return 1;
	}
	printf("%s: %s, %s memory, %llu MiB\n", info.name, info.kind,
	       info.memory_model >= 0 && info.memory_model < 3 ? model_names[info.memory_model]
								: "?",
	       (unsigned long long)(info.mem_total >> 20));
	if (info.detail[0])
		printf("  %s\n", info.detail);
	hmm_device_close(dev);
	return 0;
}

static void print_env(void)
{
	struct hmm_option_info o = { .size = sizeof(o) };

	printf("Environment (UHMM_*):\n");
	for (int i = 0; !hmm_option_info(i, &o); i++)
		printf("  %-20s default \"%s\"%s%s%s\n      %s\n", o.name, o.default_value,
		       o.value ? ", now \"" : "", o.value ? o.value : "", o.value ? "\"" : "", o.help);
}

static void print_kernel(void)
{
	struct hmm_kernel_info k = { .size = sizeof(k) };
	struct hmm_kernel_feature f = { .size = sizeof(f) };
	const char *group = "";

	hmm_kernel_info(&k);
	printf("userfaultfd:\n");
	if (k.uffd_error) {
		printf("  unavailable: %s (the runtime cannot start)\n", strerror(-k.uffd_error));
	} else {
		printf("  obtained through %s\n", k.uffd_origin);
		printf("  kernel-mode faults (read(2) into device pages): %s\n",
		       k.kernel_faults ? "served" :
		       "NOT allowed: pages stay on the host (need root, CAP_SYS_PTRACE,\n"
		       "    vm.unprivileged_userfaultfd=1 or access to /dev/userfaultfd)");
		printf("  features 0x%llx:\n", (unsigned long long)k.uffd_features);
	}
	for (int i = 0; !hmm_kernel_feature(i, &f); i++) {
		bool uffd_feature = !strcmp(f.group, "userfaultfd");

		if (uffd_feature && k.uffd_error)
			continue;
		if (strcmp(f.group, group)) {
			group = f.group;
			if (!uffd_feature)
				printf("\n%s:\n", group);
		}
		printf("    %-20s %-4s %s\n", f.name, f.present ? "yes" : "no", f.use);
	}
}

static void print_backends(void)
{
	struct hmm_backend_info b = { .size = sizeof(b) };

	printf("\nbackends:\n");
	for (int i = 0; !hmm_backend_info(i, &b); i++) {
		printf("  %-8s %s (%s)\n", b.kind, b.description,
		       b.present ? strerror(-b.present) : "present");
		for (const struct hmm_device_param *p = b.params; p && p->key; p++)
			printf("           option %-10s %s%s%s\n", p->key, p->help,
			       p->env ? "; default from " : "", p->env ? p->env : "");
		for (const struct hmm_device_variant *v = b.variants; v && v->spec; v++)
			printf("           tested as %s\n", v->spec);
	}
	printf("           option %-10s device memory (all kinds), e.g. mem=256M\n", "mem");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "env", no_argument, NULL, 'e' },
		{ "device", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct utsname u;
	int c;

	while ((c = getopt_long(argc, argv, "ed:h", opts, NULL)) != -1) {
		switch (c) {
		case 'e':
			print_env();
			return 0;
		case 'd':
			return print_device(optarg);
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	uname(&u);
	printf("uhmm %d.%d.%d on Linux %s (%s), page size %ld\n\n", UHMM_VERSION_MAJOR,
	       UHMM_VERSION_MINOR, UHMM_VERSION_PATCH, u.release, u.machine, sysconf(_SC_PAGESIZE));
	print_kernel();
	print_backends();
	printf("\n");
	print_env();
	return 0;
}
