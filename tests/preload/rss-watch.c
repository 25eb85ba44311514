// SPDX-License-Identifier: MIT
/*
 * rss-watch [-l LIMIT] [-s SLACK] [-o REPORT] -- COMMAND [ARGS...]
 *
 * Runs COMMAND and samples, every 10 ms, the anonymous resident memory
 * (RssAnon in /proc/PID/status) of every process it becomes: the command,
 * its children, theirs, and orphans among them (we are their subreaper, so
 * they stay ours). With -l, a process whose RssAnon passes LIMIT + SLACK in
 * any sample fails the run: the host limit is per process, each process
 * under uhmm-run has its own, so each is held to it on its own (a sum would
 * hold a program of N processes to one limit, N times too tight).
 *
 * A child of fork that has not called exec yet (its executable is its
 * parent's) is held to LIMIT + 2 * SLACK: RssAnon counts the pages it
 * shares copy-on-write with its parent, the parent's runtime among them,
 * and it starts a runtime of its own on its first allocation. A shell
 * between fork and exec is one.
 *
 * A process that forks is excused from FORK_GRACE_MS before a child of it
 * first shows to FORK_GRACE_MS after: uhmm brings every device page home
 * before the child exists (runtime/api/fork.c), so a forking process holds
 * its whole footprint for a moment, and evicts it again after. A sample
 * over the limit is therefore judged FORK_GRACE_MS later (or when its
 * process ends), and the report counts the excused samples.
 *
 * The report (REPORT, or stderr) is key=value lines: samples, the peak of
 * one process and of the sum over processes, how many were seen, over=0|1
 * and, when over, the first sample that broke the limit.
 *
 * Exits 1 when a sample broke the limit; else with COMMAND's status (128 +
 * the signal, as a shell says it, when it was killed), so that a caller
 * compares it with a native run's; 125 when COMMAND could not be run.
 * Standard output is COMMAND's alone.
 *
 * A sample reads /proc/PID/stat only for pids it has not seen before (their
 * parent says whether they are ours) and /proc/PID/status for ours; a pid
 * that dies and is reused by another process between two samples keeps the
 * verdict of the first, which no run of ours comes near.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PERIOD_NS 10000000l /* 10 ms */
#define FORK_GRACE_MS 1000

struct proc {
	pid_t pid, ppid;
	int ours;           /* 1 ours, 0 not, -1 not known yet */
	bool checked;       /* forked is known */
	bool forked;        /* a child of fork, no exec yet: its parent's executable */
	long fork_ms;       /* when a child of it last showed; else -1 */
	long over_ms, over_kib; /* a sample over the limit, not judged yet; else over_ms -1 */
	long peak_kib;
	char comm[32];
};

static struct {
	struct proc *v, *old;
	size_t n, nold, cap;
	pid_t self, child;
	long limit_kib, slack_kib;
	unsigned long samples, seen, excused;
	long peak_kib, peak_sum_kib;
	pid_t peak_pid;
	char peak_comm[32];
	bool over;
	long over_kib, over_ms;
	pid_t over_pid;
	char over_comm[32];
} w;

static volatile sig_atomic_t forward;

static void on_signal(int sig)
{
	forward = sig;
	if (w.child > 0)
		kill(w.child, sig);
}

static long parse_size_kib(const char *s)
{
	char *end;
	double v = strtod(s, &end);

	switch (toupper((unsigned char)*end)) {
	case 'G': v *= 1024; /* fall through */
	case 'M': v *= 1024; /* fall through */
	case 'K': break;
	case 0: v /= 1024; break; /* bytes */
	default: return -1;
	}
	return v < 0 ? -1 : (long)v;
}

static int read_file(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = 0;
	return 0;
}

static int cmp_pid(const void *a, const void *b)
{
	pid_t x = ((const struct proc *)a)->pid, y = ((const struct proc *)b)->pid;

	return (x > y) - (x < y);
}

static struct proc *find(struct proc *v, size_t n, pid_t pid)
{
	struct proc key = { .pid = pid };

	return bsearch(&key, v, n, sizeof(*v), cmp_pid);
}

/* A sample of p over the limit stands: the run fails, on the first one. */
static void convict(const struct proc *p)
{
	if (w.over)
		return;
	w.over = true;
	w.over_kib = p->over_kib;
	w.over_ms = p->over_ms;
	w.over_pid = p->pid;
	memcpy(w.over_comm, p->comm, sizeof(w.over_comm));
}

/* Every pid in /proc now, with what the last sample knew of it. */
static int list_pids(void)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	struct proc *t;

	if (!d)
		return -1;
	t = w.old, w.old = w.v, w.v = t;
	w.nold = w.n;
	w.n = 0;
	while ((e = readdir(d))) {
		pid_t pid = (pid_t)atoi(e->d_name);
		struct proc *o;

		if (pid <= 0)
			continue;
		if (w.n == w.cap) {
			size_t cap = w.cap ? 2 * w.cap : 1024;

			if (!(t = realloc(w.v, cap * sizeof(*t))) ||
			    !(w.old = realloc(w.old, cap * sizeof(*t)))) {
				closedir(d);
				return -1;
			}
			w.v = t;
			w.cap = cap;
		}
		o = find(w.old, w.nold, pid);
		w.v[w.n++] = o ? *o : (struct proc){ .pid = pid, .ours = -1, .fork_ms = -1,
						     .over_ms = -1 };
	}
	closedir(d);
	qsort(w.v, w.n, sizeof(*w.v), cmp_pid);
	/* Gone with a sample over the limit pending, and no child since: it stands. */
	for (size_t i = 0; i < w.nold; i++)
		if (w.old[i].over_ms >= 0 && !find(w.v, w.n, w.old[i].pid))
			convict(&w.old[i]);
	return 0;
}

/* New pids: ours when their parent is (or is us); parents may be new too. */
static void resolve(long ms)
{
	char path[64], buf[1024];
	bool changed = true;

	for (size_t i = 0; i < w.n; i++) {
		struct proc *p = &w.v[i];
		char *s;

		if (p->ours >= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/stat", (int)p->pid);
		if (read_file(path, buf, sizeof(buf)) || !(s = strrchr(buf, ')')) ||
		    sscanf(s + 1, " %*c %d", &p->ppid) != 1)
			p->ours = 0; /* gone already */
	}
	while (changed) {
		changed = false;
		for (size_t i = 0; i < w.n; i++) {
			struct proc *p = &w.v[i], *parent;

			if (p->ours >= 0)
				continue;
			parent = p->ppid == w.self ? NULL : find(w.v, w.n, p->ppid);
			if (p->ppid == w.self || (parent && parent->ours == 1)) {
				p->ours = 1;
				w.seen++;
				changed = true;
				if (parent)
					parent->fork_ms = ms;
			} else if (!parent || parent->ours == 0) {
				p->ours = 0;
				changed = true;
			}
		}
	}
}

/* Does pid run its parent's executable (a child of fork, before exec)? */
static bool same_exe(pid_t pid, pid_t ppid)
{
	char path[64], a[4096], b[4096];
	ssize_t n, m;

	snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
	n = readlink(path, a, sizeof(a));
	snprintf(path, sizeof(path), "/proc/%d/exe", (int)ppid);
	m = readlink(path, b, sizeof(b));
	return n > 0 && n == m && !memcmp(a, b, (size_t)n);
}

static long rss_anon_kib(struct proc *p)
{
	char path[64], buf[4096], *s;
	long kib;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)p->pid);
	if (read_file(path, buf, sizeof(buf)))
		return -1;
	if ((s = strstr(buf, "Name:\t")))
		sscanf(s + 6, "%31s", p->comm);
	if (!(s = strstr(buf, "\nRssAnon:")) || sscanf(s + 9, "%ld", &kib) != 1)
		return -1; /* a zombie */
	return kib;
}

static void sample(long ms)
{
	long sum = 0;

	if (list_pids())
		return;
	resolve(ms);
	for (size_t i = 0; i < w.n; i++) {
		struct proc *p = &w.v[i];
		long kib;

		if (p->ours != 1 || (kib = rss_anon_kib(p)) < 0)
			continue;
		/* Looked at until it calls exec: once past it, it stays past it. */
		if (!p->checked || p->forked) {
			p->forked = p->ppid != w.self && same_exe(p->pid, p->ppid);
			p->checked = true;
		}
		sum += kib;
		if (kib > p->peak_kib)
			p->peak_kib = kib;
		if (kib > w.peak_kib) {
			w.peak_kib = kib;
			w.peak_pid = p->pid;
			memcpy(w.peak_comm, p->comm, sizeof(w.peak_comm));
		}
		/* A pending sample: excused by a child that showed since, or it stands. */
		if (p->over_ms >= 0 && p->fork_ms >= p->over_ms) {
			p->over_ms = -1;
			w.excused++;
		} else if (p->over_ms >= 0 && ms - p->over_ms > FORK_GRACE_MS) {
			convict(p);
			p->over_ms = -1;
		}
		if (!w.limit_kib || kib <= w.limit_kib + (p->forked ? 2 : 1) * w.slack_kib)
			continue;
		if (p->fork_ms >= 0 && ms - p->fork_ms <= FORK_GRACE_MS)
			w.excused++;
		else if (p->over_ms < 0) {
			p->over_ms = ms;
			p->over_kib = kib;
		}
	}
	if (sum > w.peak_sum_kib)
		w.peak_sum_kib = sum;
	w.samples++;
}

static void report(FILE *f)
{
	fprintf(f, "samples=%lu\nprocesses=%lu\npeak_kib=%ld\npeak_pid=%d\npeak_comm=%s\n"
		   "peak_sum_kib=%ld\nlimit_kib=%ld\nslack_kib=%ld\nexcused=%lu\nover=%d\n",
		w.samples, w.seen, w.peak_kib, (int)w.peak_pid, w.peak_comm, w.peak_sum_kib,
		w.limit_kib, w.slack_kib, w.excused, w.over);
	if (w.over)
		fprintf(f, "over_kib=%ld\nover_pid=%d\nover_comm=%s\nover_ms=%ld\n", w.over_kib,
			(int)w.over_pid, w.over_comm, w.over_ms);
}

static long ms_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

int main(int argc, char **argv)
{
	const char *out = NULL;
	struct sigaction sa = { .sa_handler = on_signal };
	struct timespec t0, next;
	int opt, status = 0;
	FILE *f;

	while ((opt = getopt(argc, argv, "+l:s:o:")) != -1) {
		switch (opt) {
		case 'l': w.limit_kib = parse_size_kib(optarg); break;
		case 's': w.slack_kib = parse_size_kib(optarg); break;
		case 'o': out = optarg; break;
		default: goto usage;
		}
	}
	if (optind >= argc || w.limit_kib < 0 || w.slack_kib < 0)
		goto usage;
	w.self = getpid();
	if (prctl(PR_SET_CHILD_SUBREAPER, 1)) {
		perror("rss-watch: PR_SET_CHILD_SUBREAPER");
		return 125;
	}
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	w.child = fork();
	if (w.child < 0) {
		perror("rss-watch: fork");
		return 125;
	}
	if (!w.child) {
		execvp(argv[optind], argv + optind);
		fprintf(stderr, "rss-watch: %s: %s\n", argv[optind], strerror(errno));
		_exit(127);
	}
	next = t0;
	for (;;) {
		pid_t pid;
		int st;

		sample(ms_since(&t0));
		while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
			if (pid == w.child) {
				status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
				w.child = 0;
			}
		}
		if (!w.child || (pid < 0 && errno == ECHILD))
			break;
		next.tv_nsec += PERIOD_NS;
		if (next.tv_nsec >= 1000000000l) {
			next.tv_sec++;
			next.tv_nsec -= 1000000000l;
		}
		if (ms_since(&next) > 0) /* fell behind (a loaded machine): no burst */
			clock_gettime(CLOCK_MONOTONIC, &next);
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
			;
	}
	/* The run is over: what is pending stands (no child came after it). */
	for (size_t i = 0; i < w.n; i++)
		if (w.v[i].ours == 1 && w.v[i].over_ms >= 0)
			convict(&w.v[i]);
	f = out ? fopen(out, "w") : stderr;
	if (!f) {
		perror(out);
		return 125;
	}
	report(f);
	if (f != stderr)
		fclose(f);
	return w.over ? 1 : status;
usage:
	fprintf(stderr, "usage: rss-watch [-l LIMIT] [-s SLACK] [-o REPORT] -- COMMAND [ARGS...]\n");
	return 125;
}
