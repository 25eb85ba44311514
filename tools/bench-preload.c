// SPDX-License-Identifier: MIT
/*
 * uhmm-bench, transparent mode: a real allocation-heavy program (CPython
 * building dicts and lists, JSON round trip, a sort), run natively and under
 * uhmm-run, runs interleaved so that the machine's drift hits both sides;
 * the fastest run of each side counts. Children are started with
 * posix_spawn, which runs no fork handlers in this (managed) process.
 */
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

extern char **environ;

#define PYTHON "/usr/bin/python3"

static const char workload[] =
	"import json\n"
	"d = {}\n"
	"for i in range(120000):\n"
	"    d['k%d' % i] = [i, str(i) * 3, {'v': i, 'w': [i] * 4}]\n"
	"s = json.dumps(d)\n"
	"e = json.loads(s)\n"
	"l = sorted(e.items(), key=lambda kv: (kv[1][0] * 7919) % 1000003)\n"
	"print(len(s), l[0][0], l[-1][0])\n";

struct outcome {
	double secs;
	long maxrss_kb;
};

/* Runs argv with stdout discarded; false when it did not exit 0. */
static bool run(char *const argv[], struct outcome *ret)
{
	posix_spawn_file_actions_t fa;
	struct rusage ru;
	double t0;
	pid_t pid;
	int status;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
	t0 = now();
	if (posix_spawn(&pid, argv[0], &fa, NULL, argv, environ)) {
		posix_spawn_file_actions_destroy(&fa);
		return false;
	}
	posix_spawn_file_actions_destroy(&fa);
	if (wait4(pid, &status, 0, &ru) != pid)
		return false;
	ret->secs = now() - t0;
	ret->maxrss_kb = ru.ru_maxrss;
	return WIFEXITED(status) && !WEXITSTATUS(status);
}

static void keep_best(struct outcome *best, const struct outcome *o)
{
	if (!best->secs || o->secs < best->secs)
		best->secs = o->secs;
	if (!best->maxrss_kb || o->maxrss_kb < best->maxrss_kb)
		best->maxrss_kb = o->maxrss_kb;
}

/* The workload natively and under each of the uhmm-run command lines. */
static bool compare(char *const native[], char *const *const managed[], unsigned nmanaged,
		    unsigned runs, struct outcome *ret_native, struct outcome *ret_managed)
{
	memset(ret_native, 0, sizeof(*ret_native));
	memset(ret_managed, 0, nmanaged * sizeof(*ret_managed));
	for (unsigned i = 0; i < runs; i++) {
		struct outcome o;

		if (!run(native, &o)) {
			fprintf(stderr, "uhmm-bench: %s failed natively\n", native[0]);
			return false;
		}
		keep_best(ret_native, &o);
		for (unsigned m = 0; m < nmanaged; m++) {
			if (!run(managed[m], &o)) {
				fprintf(stderr, "uhmm-bench: %s failed under uhmm-run\n", native[0]);
				return false;
			}
			keep_best(&ret_managed[m], &o);
		}
	}
	return true;
}

/* uhmm-bench-malloc's figure (ns per pair), best of three runs of argv. */
static double pair_ns(char *const argv[])
{
	double best = 0;

	for (int i = 0; i < 3; i++) {
		double v = bench_figure(argv, NULL);

		if (v <= 0)
			return 0;
		if (!best || v < best)
			best = v;
	}
	return best;
}

/*
 * How far a fast allocator gets past the host limit: the most host-resident
 * memory of its blocks (pagemap, sampled every millisecond, by the program
 * itself) over the limit, the worst of a few runs.
 */
static void host_limit_overshoot(const char *run_path, const char *dir, unsigned runs)
{
	char helper[PATH_MAX];
	double worst = 0;

	snprintf(helper, sizeof(helper), "%s/uhmm-bench-hostlimit", dir);
	char *argv[] = { (char *)run_path, "--device", "sim", "--host-limit", "64M", "--",
			 helper, "64", NULL };

	for (unsigned i = 0; i < runs; i++) {
		double v = bench_figure(argv, NULL);

		if (v <= 0) {
			fprintf(stderr, "uhmm-bench: %s did not run: host_limit_overshoot left out\n",
				helper);
			return;
		}
		worst = v > worst ? v : worst;
	}
	report("host_limit_overshoot", worst, "x", 1.0, "the limit, 64 MiB");
}

void bench_preload(const char *dir, bool quick)
{
	char run_path[PATH_MAX], helper[PATH_MAX];
	unsigned runs = quick ? 3 : 5;
	struct outcome native, managed[2];
	char limit[32];

	snprintf(run_path, sizeof(run_path), "%s/uhmm-run", dir);
	snprintf(helper, sizeof(helper), "%s/uhmm-bench-malloc", dir);
	if (access(run_path, X_OK) || access(PYTHON, X_OK)) {
		fprintf(stderr, "uhmm-bench: no %s or no %s: transparent-mode figures left out\n",
			run_path, PYTHON);
		return;
	}

	char *native_argv[] = { PYTHON, "-c", (char *)workload, NULL };
	char *uhmm_argv[] = { run_path, "--device", "sim", "--", PYTHON, "-c", (char *)workload, NULL };
	char *const *one[] = { uhmm_argv };

	host_limit_overshoot(run_path, dir, runs);
	if (!compare(native_argv, one, 1, runs, &native, managed))
		return;
	report("preload_overhead", managed[0].secs, "s", native.secs, "native run");
	report("preload_rss_overhead", (double)managed[0].maxrss_kb / 1024, "MiB",
	       (double)native.maxrss_kb / 1024, "native peak RSS");

	/* Host limit at half the footprint: half the heap lives on the device. */
	snprintf(limit, sizeof(limit), "%ldK", native.maxrss_kb / 2);
	char *limited_argv[] = { run_path, "--device", "sim", "--host-limit", limit, "--",
				 PYTHON, "-c", (char *)workload, NULL };
	char *const *both[] = { uhmm_argv, limited_argv };

	if (!compare(native_argv, both, 2, quick ? 2 : 3, &native, managed))
		return;
	report("spill_slowdown", managed[1].secs, "s", managed[0].secs, "no host limit");

	/* Small pairs: glibc's malloc, then ours (uhmm-run with no device). */
	char *glibc_argv[] = { helper, "5000000", NULL };
	char *ours_argv[] = { run_path, "--", helper, "5000000", NULL };
	double glibc_ns = pair_ns(glibc_argv), ours_ns = pair_ns(ours_argv);

	if (glibc_ns > 0 && ours_ns > 0)
		report("malloc_free_ns", ours_ns, "ns", glibc_ns, "glibc malloc+free");
	else
		fprintf(stderr, "uhmm-bench: %s did not run: malloc_free_ns left out\n", helper);
}
