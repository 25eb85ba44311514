// SPDX-License-Identifier: MIT
/*
 * uhmm-bench, spill_vs_swap: one program, four times too big for its
 * limit, run under kernel swap (a swapfile on the file system the uring
 * device uses by default, and a cgroup v1 memory limit) and under uhmm-run
 * --device uring --host-limit with the same limit; wall times, runs
 * alternated, the fastest of each side counts; and the highest peak RSS of
 * each side, which says whether the limit held.
 *
 * Swap is system-wide, so it is on only while a swap-side run runs, and
 * everything made here (swapfile, cgroup) goes on every way out: normal
 * return, failure, or a terminating signal (a meson timeout). A run killed
 * harder than that leaves its swapfile and cgroup named after its pid; the
 * next run takes them down once that pid is gone. Where swapon or the
 * cgroup is refused (not root, a container), one line says why, and the
 * figure is left out.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/swap.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

extern char **environ;

#define LIMIT_MIB 64
#define BUFFER_MIB (4 * LIMIT_MIB)
#define SWAP_MIB (2 * BUFFER_MIB)       /* room for all of it, and then some */
#define MEMCG_ROOT "/sys/fs/cgroup/memory"
#define SWAP_PREFIX "uhmm-bench-swap."
#define MEMCG_PREFIX "uhmm-bench-"

/* What there is to take down; the signal handler reads it too. */
static struct {
	char swapfile[PATH_MAX];
	char memcg[PATH_MAX];
	volatile pid_t child;
} made;

/* Async-signal-safe: only system calls. Each step is harmless when not needed. */
static void take_down(void)
{
	pid_t child = made.child;

	if (child > 0) {
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
		made.child = 0;
	}
	if (made.swapfile[0]) {
		swapoff(made.swapfile);
		unlink(made.swapfile);
	}
	if (made.memcg[0])
		rmdir(made.memcg);
}

static void on_signal(int sig)
{
	take_down();
	signal(sig, SIG_DFL);
	raise(sig);
}

static const int fatal_signals[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };

static void catch_signals(bool on)
{
	for (size_t i = 0; i < sizeof(fatal_signals) / sizeof(fatal_signals[0]); i++)
		signal(fatal_signals[i], on ? on_signal : SIG_DFL);
}

static bool pid_alive(long pid)
{
	return pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

/* The pid a name made here ends with, or 0. */
static long pid_of(const char *name, const char *prefix)
{
	const char *p = strstr(name, prefix);
	char *end;
	long pid;

	if (!p)
		return 0;
	pid = strtol(p + strlen(prefix), &end, 10);
	return *end && *end != '\n' && *end != ' ' && *end != '\t' ? 0 : pid;
}

/* Swapfiles and cgroups left by runs killed before they could take them down. */
static void take_down_stale(void)
{
	FILE *f = fopen("/proc/swaps", "r");
	char line[PATH_MAX + 128], path[PATH_MAX + 1];
	DIR *d;
	struct dirent *e;

	while (f && fgets(line, sizeof(line), f)) {
		long pid;

		if (sscanf(line, "%4096s", path) != 1)
			continue;
		pid = pid_of(path, SWAP_PREFIX);
		if (pid && !pid_alive(pid) && !swapoff(path)) {
			unlink(path);
			fprintf(stderr, "uhmm-bench: took down %s, left by an earlier run\n", path);
		}
	}
	if (f)
		fclose(f);
	d = opendir(MEMCG_ROOT);
	while (d && (e = readdir(d))) {
		long pid = strncmp(e->d_name, MEMCG_PREFIX, strlen(MEMCG_PREFIX)) ? 0
			   : pid_of(e->d_name, MEMCG_PREFIX);

		if (pid && !pid_alive(pid)) {
			snprintf(path, sizeof(path), "%s/%s", MEMCG_ROOT, e->d_name);
			rmdir(path);
		}
	}
	if (d)
		closedir(d);
}

static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC), err = 0;
	ssize_t len = (ssize_t)strlen(text);

	if (fd < 0)
		return -errno;
	if (write(fd, text, (size_t)len) != len)
		err = -errno;
	close(fd);
	return err;
}

/* A cgroup v1 memory cgroup limited to LIMIT_MIB; -errno, *why set, on failure. */
static int make_memcg(const char **why)
{
	char path[PATH_MAX + 32], limit[32];
	int err;

	snprintf(made.memcg, sizeof(made.memcg), "%s/%s%d", MEMCG_ROOT, MEMCG_PREFIX,
		 (int)getpid());
	if (mkdir(made.memcg, 0755)) {
		err = -errno;
		made.memcg[0] = 0;
		*why = "cannot make a memory cgroup (cgroup v1) under " MEMCG_ROOT;
		return err;
	}
	snprintf(path, sizeof(path), "%s/memory.limit_in_bytes", made.memcg);
	snprintf(limit, sizeof(limit), "%lu", (unsigned long)LIMIT_MIB << 20);
	err = write_file(path, limit);
	if (err)
		*why = "cannot set memory.limit_in_bytes";
	return err;
}

/*
 * A swapfile of SWAP_MIB: allocated blocks (no holes, which swapon refuses)
 * and a version-1 swap header, as mkswap writes it; then one swapon to see
 * that the kernel takes it.
 */
static int make_swapfile(const char *dir, const char **why)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), len = (size_t)SWAP_MIB << 20;
	char *hdr = calloc(1, page);
	uint32_t *info;
	int fd, err = 0;

	snprintf(made.swapfile, sizeof(made.swapfile), "%s/%s%d", dir, SWAP_PREFIX, (int)getpid());
	fd = open(made.swapfile, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || !hdr) {
		err = fd < 0 ? -errno : -ENOMEM;
		made.swapfile[0] = 0;
		*why = "cannot create the swapfile";
		goto out;
	}
	err = posix_fallocate(fd, 0, (off_t)len);
	if (err) {
		err = -err;
		*why = "cannot allocate the swapfile";
		goto out;
	}
	/* bootbits[1024], then version, last_page, nr_badpages; the magic ends the page. */
	info = (uint32_t *)(hdr + 1024);
	info[0] = 1;
	info[1] = (uint32_t)(len / page - 1);
	memcpy(hdr + page - 10, "SWAPSPACE2", 10);
	if (pwrite(fd, hdr, page, 0) != (ssize_t)page || fsync(fd)) {
		err = -errno;
		*why = "cannot write the swap header";
		goto out;
	}
	if (swapon(made.swapfile, 0) || swapoff(made.swapfile)) {
		err = -errno;
		*why = "swapon refused";
	}
out:
	if (fd >= 0)
		close(fd);
	free(hdr);
	return err;
}

/* A run's wall time in seconds (negative: it failed) and peak RSS in KiB. */
struct outcome {
	double secs;
	long maxrss_kb;
};

/*
 * Runs argv to its end, stdout into out. The child is recorded as it
 * starts, so that a signal takes it down before its cgroup.
 */
static struct outcome run_timed(char *const argv[], char *out, size_t outlen)
{
	struct outcome o = { -1, 0 };
	posix_spawn_file_actions_t fa;
	struct rusage ru;
	int fds[2], status;
	ssize_t got;
	double t0;
	pid_t pid;

	if (pipe(fds))
		return o;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
	posix_spawn_file_actions_addclose(&fa, fds[0]);
	t0 = now();
	if (posix_spawn(&pid, argv[0], &fa, NULL, argv, environ))
		pid = -1;
	posix_spawn_file_actions_destroy(&fa);
	close(fds[1]);
	if (pid < 0) {
		close(fds[0]);
		return o;
	}
	made.child = pid;
	got = read(fds[0], out, outlen - 1);
	out[got > 0 ? got : 0] = 0;
	close(fds[0]);
	if (wait4(pid, &status, 0, &ru) != pid)
		status = -1;
	t0 = now() - t0;
	made.child = 0;
	if (WIFEXITED(status) && !WEXITSTATUS(status) && got > 0)
		o = (struct outcome){ t0, ru.ru_maxrss };
	return o;
}

/* One run with swap on for it alone. */
static struct outcome run_swapped(char *const argv[], char *out, size_t outlen)
{
	struct outcome o = { -1, 0 };

	if (swapon(made.swapfile, 0))
		return o;
	o = run_timed(argv, out, outlen);
	if (swapoff(made.swapfile)) {
		fprintf(stderr, "uhmm-bench: swapoff %s: %s\n", made.swapfile, strerror(errno));
		o.secs = -1;
	}
	return o;
}

static void keep(struct outcome *best, const struct outcome *o)
{
	if (!best->secs || o->secs < best->secs)
		best->secs = o->secs;
	if (o->maxrss_kb > best->maxrss_kb)
		best->maxrss_kb = o->maxrss_kb;
}

static bool compare(const char *run_path, const char *helper, const char *mode, unsigned runs)
{
	char name[32], buffer[16], limit[16], uhmm_out[64], swap_out[64];
	struct outcome uhmm = { 0, 0 }, swap = { 0, 0 };

	snprintf(buffer, sizeof(buffer), "%d", BUFFER_MIB);
	snprintf(limit, sizeof(limit), "%dM", LIMIT_MIB);
	char *uhmm_argv[] = { (char *)run_path, "--device", "uring", "--host-limit", limit, "--",
			      (char *)helper, (char *)mode, buffer, NULL };
	char *swap_argv[] = { (char *)helper, "--cgroup", made.memcg, (char *)mode, buffer, NULL };

	for (unsigned i = 0; i < runs; i++) {
		struct outcome o = run_timed(uhmm_argv, uhmm_out, sizeof(uhmm_out));

		if (o.secs < 0) {
			fprintf(stderr, "uhmm-bench: %s %s failed under uhmm-run --device uring: "
				"spill_vs_swap_%s left out\n", helper, mode, mode);
			return false;
		}
		keep(&uhmm, &o);
		o = run_swapped(swap_argv, swap_out, sizeof(swap_out));
		if (o.secs < 0) {
			fprintf(stderr, "uhmm-bench: %s %s failed under kernel swap: "
				"spill_vs_swap_%s left out\n", helper, mode, mode);
			return false;
		}
		keep(&swap, &o);
		if (strcmp(uhmm_out, swap_out)) {
			fprintf(stderr, "uhmm-bench: %s %s printed %s under uhmm, %s under swap\n",
				helper, mode, uhmm_out, swap_out);
			return false;
		}
	}
	snprintf(name, sizeof(name), "spill_vs_swap_%s", mode);
	report(name, uhmm.secs, "s", swap.secs, "kernel swap, same limit");
	/*
	 * The cgroup holds the swap side to the limit; a uhmm side that went
	 * past it ran with more memory, and its wall time flatters it.
	 */
	snprintf(name, sizeof(name), "spill_peak_rss_%s", mode);
	report(name, (double)uhmm.maxrss_kb / 1024, "MiB", (double)swap.maxrss_kb / 1024,
	       "kernel swap's peak RSS");
	return true;
}

void bench_swap(const char *dir, bool quick)
{
	char run_path[PATH_MAX], helper[PATH_MAX];
	const char *tmp = getenv("TMPDIR"), *why = NULL;
	int err;

	if (!tmp || !*tmp)
		tmp = "/var/tmp"; /* where the uring device puts its file by default */
	snprintf(run_path, sizeof(run_path), "%s/uhmm-run", dir);
	snprintf(helper, sizeof(helper), "%s/uhmm-bench-spill", dir);
	if (access(run_path, X_OK) || access(helper, X_OK)) {
		fprintf(stderr, "uhmm-bench: no %s or no %s: spill_vs_swap left out\n", run_path,
			helper);
		return;
	}
	take_down_stale();
	catch_signals(true);
	err = make_memcg(&why);
	if (!err)
		err = make_swapfile(tmp, &why);
	if (err) {
		fprintf(stderr, "uhmm-bench: %s (%s; the swapfile would be in %s): "
			"spill_vs_swap left out\n", why, strerror(-err), tmp);
	} else {
		fflush(stdout);
		if (compare(run_path, helper, "seq", quick ? 1 : 2))
			compare(run_path, helper, "rand", quick ? 1 : 2);
	}
	take_down();
	made.swapfile[0] = made.memcg[0] = 0;
	catch_signals(false);
}
