// SPDX-License-Identifier: MIT
/*
 * uhmm-bench, OpenCL: saxpy over malloc'd memory under uhmm-run --device
 * opencl, in each way the layer serves a device, against the same
 * computation written with buffers and run natively; and the cost of a
 * launch with four pointer arguments, under uhmm and not. The workloads
 * are uhmm-bench-opencl's, an ordinary OpenCL program.
 */
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <uhmm.h>

#include "bench.h"

static bool opencl_present(void)
{
	struct hmm_backend_info b = { .size = sizeof(b) };

	for (int i = 0; !hmm_backend_info(i, &b); i++)
		if (!strcmp(b.kind, "opencl"))
			return !b.present;
	return false;
}

void bench_opencl(const char *dir, bool quick)
{
	static const char *const modes[] = { "system", "coarse", "buffer" };
	char run_path[PATH_MAX], helper[PATH_MAX], bytes[32], name[64], env[64];
	double native, ours;

	snprintf(run_path, sizeof(run_path), "%s/uhmm-run", dir);
	snprintf(helper, sizeof(helper), "%s/uhmm-bench-opencl", dir);
	if (!opencl_present() || access(helper, X_OK)) {
		fprintf(stderr, "uhmm-bench: no OpenCL device or no %s: OpenCL figures left out\n",
			helper);
		return;
	}
	snprintf(bytes, sizeof(bytes), "%d", quick ? 64 << 20 : 256 << 20);
	char *buffers[] = { helper, "saxpy-buffers", bytes, NULL };
	char *pointers[] = { run_path, "--device", "opencl", "--", helper, "saxpy-pointers", bytes, NULL };

	native = bench_figure(buffers, NULL);
	for (size_t m = 0; native > 0 && m < sizeof(modes) / sizeof(modes[0]); m++) {
		snprintf(name, sizeof(name), "opencl_saxpy_%s", modes[m]);
		snprintf(env, sizeof(env), "UHMM_OPENCL_SVM=%s", modes[m]);
		ours = bench_figure(pointers, env);
		if (ours > 0)
			report(name, ours, "s", native, "buffers, native");
		else
			fprintf(stderr, "uhmm-bench: %s failed\n", name);
	}

	/*
	 * Buffer mode on PoCL wraps host memory (the device shares it); over the
	 * test layer that gives PoCL a discrete GPU's memory, from the build
	 * tree, the stand-ins are copies as on a discrete card.
	 */
	char layer_env[PATH_MAX + 32], layer[PATH_MAX];

	snprintf(layer, sizeof(layer), "%s/../tests/opencl/libcl-discrete.so", dir);
	snprintf(layer_env, sizeof(layer_env), "OPENCL_LAYERS=%s", layer);
	char *copies[] = { "/usr/bin/env", layer_env, "UHMM_OPENCL_SVM=buffer", run_path,
			   "--device", "sim", "--", helper, "saxpy-pointers", bytes, NULL };

	if (native > 0 && !access(layer, R_OK)) {
		ours = bench_figure(copies, NULL);
		if (ours > 0)
			report("opencl_saxpy_buffer_copy", ours, "s", native, "buffers, native");
		else
			fprintf(stderr, "uhmm-bench: opencl_saxpy_buffer_copy failed\n");
	}

	char *launch_native[] = { helper, "launch", quick ? "2000" : "10000", NULL };
	char *launch_ours[] = { run_path, "--device", "opencl", "--", helper, "launch",
				quick ? "2000" : "10000", NULL };

	native = bench_figure(launch_native, NULL);
	ours = bench_figure(launch_ours, NULL);
	if (native > 0 && ours > 0)
		report("opencl_launch_overhead", ours, "ns", native, "native launch");
}
