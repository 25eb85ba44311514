// SPDX-License-Identifier: MIT
/*
 * uhmm-bench, OpenCL: saxpy over malloc'd memory under uhmm-run --device
 * opencl, in each way the layer serves a device, against the same
 * computation written with buffers and run natively; and the cost of a
 * launch with four pointer arguments, under uhmm and not. The workloads
 * are uhmm-bench-opencl's, an ordinary OpenCL program.
 */
#include <limits.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uhmm.h>

#include "bench.h"

extern char **environ;

/* Runs argv with one more variable (or none) and reads the number it prints. */
static double figure(char *const argv[], const char *extra)
{
	char **envp, out[64] = "";
	size_t n = 0;
	int fds[2], status;
	ssize_t got = -1;
	pid_t pid;
	posix_spawn_file_actions_t fa;

	while (environ[n])
		n++;
	envp = calloc(n + 2, sizeof(*envp));
	if (!envp || pipe(fds)) {
		free(envp);
		return 0;
	}
	memcpy(envp, environ, n * sizeof(*envp));
	envp[n] = (char *)extra;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
	posix_spawn_file_actions_addclose(&fa, fds[0]);
	if (posix_spawn(&pid, argv[0], &fa, NULL, argv, envp))
		pid = -1;
	posix_spawn_file_actions_destroy(&fa);
	close(fds[1]);
	if (pid > 0) {
		got = read(fds[0], out, sizeof(out) - 1);
		waitpid(pid, &status, 0);
		if (!WIFEXITED(status) || WEXITSTATUS(status))
			got = -1;
	}
	close(fds[0]);
	free(envp);
	return got > 0 ? strtod(out, NULL) : 0;
}

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

	native = figure(buffers, NULL);
	for (size_t m = 0; native > 0 && m < sizeof(modes) / sizeof(modes[0]); m++) {
		snprintf(name, sizeof(name), "opencl_saxpy_%s", modes[m]);
		snprintf(env, sizeof(env), "UHMM_OPENCL_SVM=%s", modes[m]);
		ours = figure(pointers, env);
		if (ours > 0)
			report(name, ours, "s", native, "buffers, native");
		else
			fprintf(stderr, "uhmm-bench: %s failed\n", name);
	}

	char *launch_native[] = { helper, "launch", quick ? "2000" : "10000", NULL };
	char *launch_ours[] = { run_path, "--device", "opencl", "--", helper, "launch",
				quick ? "2000" : "10000", NULL };

	native = figure(launch_native, NULL);
	ours = figure(launch_ours, NULL);
	if (native > 0 && ours > 0)
		report("opencl_launch_overhead", ours, "ns", native, "native launch");
}
