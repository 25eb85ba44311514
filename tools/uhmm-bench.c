// SPDX-License-Identifier: MIT
/*
 * uhmm-bench: the runtime's performance figures, each next to a baseline
 * measured in the same run on the same machine (these machines are shared
 * and noisy: ratios travel, absolute times drift).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <dirent.h>
#include <pthread.h>
#include <sched.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uhmm.h>

#include "bench.h"

extern char **environ;

#define PAGE 4096ul
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

static bool kv;
static size_t size = 256ul << 20;
static unsigned samples = 2000;

double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void report(const char *name, double value, const char *unit, double baseline,
		   const char *what)
{
	if (kv)
		printf("name=%s value=%.3f unit=%s baseline=%.3f ratio=%.3f\n", name, value, unit,
		       baseline, value / baseline);
	else
		printf("%-28s %12.3f %-6s baseline %12.3f (%s)  ratio %.3f\n", name, value, unit,
		       baseline, what, value / baseline);
	fflush(stdout);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

double median(double *v, unsigned n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return v[n / 2];
}

void *map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	return p;
}

/* Single-thread memcpy of size bytes between warm buffers, best of three. */
static double memcpy_gbps(void)
{
	char *a = map(size), *b = map(size);
	double best = 0;

	memset(a, 1, size);
	memset(b, 2, size);
	for (int i = 0; i < 3; i++) {
		double t0 = now(), t;

		memcpy(b, a, size);
		t = now() - t0;
		if (size / t / 1e9 > best)
			best = (double)size / t / 1e9;
	}
	munmap(a, size);
	munmap(b, size);
	return best;
}

/* ---- raw userfaultfd round trip: the floor a fault-back stands on ------- */

static int raw_fd;
static char raw_page[PAGE] __attribute__((aligned(PAGE)));

static void *raw_handler(void *arg)
{
	(void)arg;
	for (;;) {
		struct pollfd p = { raw_fd, POLLIN, 0 };
		struct uffd_msg m;

		if (poll(&p, 1, -1) < 0)
			continue;
		if (read(raw_fd, &m, sizeof(m)) != sizeof(m))
			continue;
		if (m.event != UFFD_EVENT_PAGEFAULT)
			continue;
		struct uffdio_copy c = { .dst = m.arg.pagefault.address & ~(PAGE - 1),
					 .src = (uintptr_t)raw_page, .len = PAGE };
		ioctl(raw_fd, UFFDIO_COPY, &c);
	}
	return NULL;
}

static char *raw_region;

static void raw_setup(void)
{
	struct uffdio_api api = { .api = UFFD_API };
	pthread_t t;

	raw_region = map(samples * PAGE);
	raw_fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (raw_fd < 0 || ioctl(raw_fd, UFFDIO_API, &api)) {
		perror("userfaultfd");
		exit(1);
	}
	struct uffdio_register r = { .range = { (uintptr_t)raw_region, samples * PAGE },
				     .mode = UFFDIO_REGISTER_MODE_MISSING };
	if (ioctl(raw_fd, UFFDIO_REGISTER, &r)) {
		perror("UFFDIO_REGISTER");
		exit(1);
	}
	memset(raw_page, 7, PAGE);
	pthread_create(&t, NULL, raw_handler, NULL);
}

/*
 * Both sides make their page missing, let the machine settle (the threads
 * that did it go back to sleep, as they would have long since for a page
 * evicted a while ago), and time the touch.
 */
void settle(void)
{
	nanosleep(&(struct timespec){ .tv_nsec = 200000 }, NULL);
}

/* One raw round trip: make a page missing, touch it, time that. */
double raw_fault_once(unsigned i)
{
	char *page = raw_region + (size_t)i * PAGE;
	double t0;

	madvise(page, PAGE, MADV_DONTNEED);
	settle();
	t0 = now();
	(void)*(volatile char *)page;
	return (now() - t0) * 1e9;
}

/* ---- the runtime ------------------------------------------------------- */

static struct hmm_device *open_dev(const char *spec)
{
	struct hmm_device *d;
	int err = hmm_device_open(spec, &d);

	if (err) {
		fprintf(stderr, "uhmm-bench: cannot open %s: %s\n", spec, strerror(-err));
		exit(1);
	}
	return d;
}

/* An isolated page on the device: time the CPU touch that brings it home. */
static double fault_back_once(struct hmm_device *dev, char *region, unsigned i)
{
	char *page = region + 2 * (size_t)i * PAGE;
	double t0;

	if (hmm_migrate(page, PAGE, dev, 0, NULL))
		exit(1);
	settle();
	t0 = now();
	(void)*(volatile char *)page;
	return (now() - t0) * 1e9;
}

/*
 * Median fault-back latency on dev and of the raw round trip, sampled in
 * alternation so that both see the same machine (same threads, same CPUs,
 * same noise). Every other page is used, so no fault brings a neighbour.
 */
static void fault_latencies(struct hmm_device *dev, double *ret_ours, double *ret_raw)
{
	char *region = hmm_alloc(2 * (size_t)samples * PAGE);
	double *ours = calloc(samples, sizeof(double)), *raw = calloc(samples, sizeof(double));

	if (!region || !ours || !raw)
		exit(1);
	memset(region, 3, 2 * (size_t)samples * PAGE);
	for (unsigned i = 0; i < samples; i++) {
		ours[i] = fault_back_once(dev, region, i);
		raw[i] = raw_fault_once(i);
	}
	*ret_ours = median(ours, samples);
	*ret_raw = median(raw, samples);
	hmm_free(region);
	free(ours);
	free(raw);
}

/*
 * Every thread of the process, the runtime's and the raw handler's
 * included, on one CPU (cpu >= 0) or on all of them again (-1): where
 * hand-offs between threads cost most, since each is a context switch.
 */
static void pin_process(int cpu)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	cpu_set_t set;

	CPU_ZERO(&set);
	if (cpu >= 0)
		CPU_SET(cpu, &set);
	else
		for (long i = 0; i < sysconf(_SC_NPROCESSORS_ONLN) && i < CPU_SETSIZE; i++)
			CPU_SET(i, &set);
	while (d && (e = readdir(d)))
		if (e->d_name[0] != '.')
			sched_setaffinity(atoi(e->d_name), sizeof(set), &set);
	if (d)
		closedir(d);
}

/*
 * fault_rate_mt: one thread per CPU, each touching its own isolated pages
 * (every other page, so none brings a neighbour) on the device, against
 * the same threads touching missing pages that the raw handler serves.
 * Faults per second over all threads; rounds alternate, the best counts.
 */
#define MT_PAGES 1024                   /* per thread and round */

struct mt_toucher {
	char *base;
	pthread_barrier_t *start;
};

static void *mt_touch(void *arg)
{
	struct mt_toucher *t = arg;

	pthread_barrier_wait(t->start);
	for (size_t i = 0; i < MT_PAGES; i++)
		(void)*(volatile char *)(t->base + 2 * i * PAGE);
	return NULL;
}

/* Faults per second with nthreads touching region (2 * MT_PAGES pages each). */
static double mt_round(char *region, unsigned nthreads)
{
	struct mt_toucher t[64];
	pthread_barrier_t start;

	for (unsigned i = 0; i < nthreads; i++)
		t[i] = (struct mt_toucher){ .base = region + (size_t)i * 2 * MT_PAGES * PAGE,
					   .start = &start };
	return (double)nthreads * MT_PAGES / run_released(nthreads, mt_touch, t, sizeof(t[0]), &start);
}

double run_released(unsigned n, void *(*fn)(void *), void *args, size_t arg_size,
		    pthread_barrier_t *start)
{
	pthread_t th[64];
	double t0;

	pthread_barrier_init(start, NULL, n + 1);
	for (unsigned i = 0; i < n; i++)
		pthread_create(&th[i], NULL, fn, (char *)args + i * arg_size);
	pthread_barrier_wait(start);
	t0 = now();
	for (unsigned i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	t0 = now() - t0;
	pthread_barrier_destroy(start);
	return t0;
}

static void fault_rate_mt(struct hmm_device *dev, double *ret_ours, double *ret_raw)
{
	unsigned nthreads = (unsigned)MIN(sysconf(_SC_NPROCESSORS_ONLN), 64);
	size_t len = (size_t)nthreads * 2 * MT_PAGES * PAGE;
	char *ours = hmm_alloc(len), *raw = map(len);
	struct uffdio_register r = { .range = { (uintptr_t)raw, len },
				     .mode = UFFDIO_REGISTER_MODE_MISSING };

	if (!ours || ioctl(raw_fd, UFFDIO_REGISTER, &r)) {
		perror("uhmm-bench: fault_rate_mt");
		exit(1);
	}
	memset(ours, 3, len);
	*ret_ours = *ret_raw = 0;
	for (int round = 0; round < 5; round++) {
		double f;

		if (hmm_migrate(ours, len, dev, 0, NULL))
			exit(1);
		f = mt_round(ours, nthreads);
		*ret_ours = MAX(*ret_ours, f);
		f = mt_round(raw, nthreads);
		*ret_raw = MAX(*ret_raw, f);
		madvise(raw, len, MADV_DONTNEED);
	}
	hmm_free(ours);
	munmap(raw, len);
}

/*
 * What the kernel itself allows the copy path, measured the same way as
 * the migrations (SIZE in 2 MiB runs, best of three): home, a copy into a
 * bounce buffer and UFFDIO_COPY into missing pages (page allocation and a
 * second copy); out, a copy and MADV_DONTNEED (the pages freed).
 */
#define FLOOR_RUN (2ul << 20)

static void copy_floors(double *ret_home, double *ret_out)
{
	char *src = map(size), *dst = map(size), *bounce = map(FLOOR_RUN);
	struct uffdio_register r = { .range = { (uintptr_t)dst, size },
				     .mode = UFFDIO_REGISTER_MODE_MISSING };

	memset(src, 1, size);
	memset(bounce, 0, FLOOR_RUN);
	*ret_home = *ret_out = 0;
	for (int round = 0; round < 3; round++) {
		double t0 = now(), t;

		if (ioctl(raw_fd, UFFDIO_REGISTER, &r)) {
			perror("uhmm-bench: UFFDIO_REGISTER");
			exit(1);
		}
		for (size_t at = 0; at < size; at += FLOOR_RUN) {
			struct uffdio_copy c = { .dst = (uintptr_t)dst + at, .src = (uintptr_t)bounce,
						 .len = FLOOR_RUN };

			memcpy(bounce, src + at, FLOOR_RUN);
			ioctl(raw_fd, UFFDIO_COPY, &c);
		}
		t = now() - t0;
		*ret_home = MAX(*ret_home, (double)size / t / 1e9);
		ioctl(raw_fd, UFFDIO_UNREGISTER, &r.range);
		t0 = now();
		for (size_t at = 0; at < size; at += FLOOR_RUN) {
			memcpy(src + at, dst + at, FLOOR_RUN);
			madvise(dst + at, FLOOR_RUN, MADV_DONTNEED);
		}
		t = now() - t0;
		*ret_out = MAX(*ret_out, (double)size / t / 1e9);
	}
	munmap(src, size);
	munmap(dst, size);
	munmap(bounce, FLOOR_RUN);
}

static double migrate_gbps(struct hmm_device *dev, char *p, bool to_device)
{
	double t0 = now();
	size_t pages;
	int err = hmm_migrate(p, size, to_device ? dev : NULL, 0, &pages);

	if (err || pages != size / PAGE) {
		fprintf(stderr, "uhmm-bench: hmm_migrate: %s (%zu pages)\n", strerror(-err), pages);
		exit(1);
	}
	return (double)size / (now() - t0) / 1e9;
}

double stream_gbps(const char *p, size_t len)
{
	const uint64_t *w = (const uint64_t *)p;
	uint64_t sum = 0;
	double t0 = now();

	for (size_t i = 0; i < len / sizeof(*w); i++)
		sum += w[i];
	double t = now() - t0;

	if (sum == 42)
		printf(" ");
	return (double)len / t / 1e9;
}

static double device_read_gbps(struct hmm_device *dev, char *p, char *buf)
{
	struct hmm_access acc;
	double t0 = now();
	int err = hmm_device_read(dev, p, size, buf, &acc);

	if (err) {
		fprintf(stderr, "uhmm-bench: hmm_device_read: %s\n", strerror(-err));
		exit(1);
	}
	return (double)size / (now() - t0) / 1e9;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: uhmm-bench [--kv] [--size SIZE] [--samples N] [--quick] [--no-preload]\n"
		"                  [--tier-only] [--fabric-only]\n"
		"\n"
		"Measures the runtime on the sim device, then on the uring storage tier, each\n"
		"figure next to a baseline taken in the same run:\n"
		"  fault_back_latency      CPU fault bringing one isolated page home (ns),\n"
		"                          vs. a raw userfaultfd MISSING + UFFDIO_COPY round trip\n"
		"  migrate_to_device_bw    hmm_migrate of SIZE to the device, vs. memcpy of SIZE\n"
		"  migrate_to_host_bw      hmm_migrate of SIZE home, vs. memcpy\n"
		"  fault_stream_bw         sequential CPU read of SIZE that faults home, vs. memcpy\n"
		"  device_read_bw          hmm_device_read of SIZE never mapped by the device, vs. memcpy\n"
		"  *_copy                  the same on sim:copy (every transfer a DMA copy)\n"
		"  copy_floor_home_bw      the kernel's floor for the copy path home: memcpy to a\n"
		"                          bounce + UFFDIO_COPY in 2 MiB runs, vs. memcpy\n"
		"  copy_floor_out_bw       ... and out: memcpy + MADV_DONTNEED in 2 MiB runs\n"
		"  fault_back_latency*_1cpu  the latencies with every thread on one CPU\n"
		"  fault_rate_mt           one thread per CPU faulting isolated pages home from\n"
		"                          sim:copy (faults/s), vs. raw userfaultfd, same threads\n"
		"  metadata_per_page       runtime metadata per managed page (bytes), vs. the\n"
		"                          kernel's struct page (64 bytes)\n"
		"Storage tier (the uring device; its file in $TMPDIR or /var/tmp), against raw\n"
		"io_uring O_DIRECT I/O on a file of the same size in the same place:\n"
		"  uring_fault_latency     CPU fault on an isolated tier page, pages taken at\n"
		"                          random (ns), vs. a 4 KiB read at qd 1 + a raw uffd\n"
		"                          round trip\n"
		"  uring_fault_rate        32 threads faulting random tier pages (faults/s),\n"
		"                          vs. random 4 KiB reads, qd 32 (the device's)\n"
		"  uring_evict_bw          hmm_migrate of SIZE to the tier, vs. 2 MiB writes,\n"
		"                          qd 32\n"
		"  uring_stream_bw         sequential CPU read of SIZE from the tier, vs. 2 MiB\n"
		"                          reads, qd 32\n"
		"  uring_stream_floor_bw   those raw reads into memory never touched before (4 KiB\n"
		"                          pages, as faults install them), each page then read\n"
		"                          once, vs. the reads into a warm buffer\n"
		"  spill_vs_swap_seq       wall time of uhmm-bench-spill (256 MiB filled, then\n"
		"                          scanned three times) under uhmm-run --device uring\n"
		"                          --host-limit 64M, vs. kernel swap (a swapfile in the\n"
		"                          same place, a cgroup v1 memory limit of 64 MiB); root\n"
		"                          only\n"
		"  spill_vs_swap_rand      the same, 16384 words updated in random pages\n"
		"  spill_peak_rss_<seq|rand>  the highest peak RSS of the uhmm-run side, vs. the\n"
		"                          swap side's (held by its cgroup): above about 1.1, the\n"
		"                          host limit did not hold, and the wall time flatters uhmm\n"
		"Transparent mode (python3 building dicts, a JSON round trip, a sort):\n"
		"  preload_overhead        wall time under uhmm-run --device sim, vs. native\n"
		"  preload_rss_overhead    peak RSS under uhmm-run, vs. native\n"
		"  spill_slowdown          wall time with the host limit at half the native peak\n"
		"                          RSS, vs. no limit\n"
		"  malloc_free_ns          small malloc+free pair under uhmm-run, vs. glibc\n"
		"  host_limit_overshoot    a program filling 4 x 64 MiB of malloc'd blocks under\n"
		"                          --host-limit 64M: the most of them resident on the host\n"
		"                          (its pagemap, every ms) over the limit; target <= 1.10\n"
		"OpenCL, where a device is present (saxpy over 256 MiB of malloc'd memory):\n"
		"  opencl_saxpy_<mode>     under uhmm-run --device opencl in system, coarse or\n"
		"                          buffer mode, vs. hand-written buffers run natively\n"
		"  opencl_saxpy_buffer_copy  buffer mode with stand-ins copied, as on a discrete\n"
		"                          device (the test layer, from the build tree)\n"
		"  opencl_launch_overhead  empty kernel, 4 pointer arguments, vs. native\n"
		"\n"
		"  --kv         one line per metric: name= value= unit= baseline= ratio=\n"
		"  --size SIZE  working set (default 256M)\n"
		"  --samples N  latency samples (default 2000)\n"
		"  --quick      fewer runs of the transparent-mode programs and storage-tier rounds\n"
		"  --no-preload leave the transparent-mode figures out, spill_vs_swap too\n"
		"  --tier-only  only the storage-tier figures (uring_*, spill_vs_swap)\n"
		"  --fabric-only  only the remote-memory figures (fabric_*)\n");
}

static size_t parse_size(const char *s)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);

	switch (*end) {
	case 'k': case 'K': v <<= 10; break;
	case 'm': case 'M': v <<= 20; break;
	case 'g': case 'G': v <<= 30; break;
	}
	return (size_t)v & ~(PAGE - 1);
}

/* Runs argv with one more variable (or none) and reads the number it prints. */
double bench_figure(char *const argv[], const char *extra)
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

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "kv", no_argument, NULL, 'k' },
		{ "size", required_argument, NULL, 's' },
		{ "samples", required_argument, NULL, 'n' },
		{ "quick", no_argument, NULL, 'q' },
		{ "no-preload", no_argument, NULL, 'P' },
		{ "tier-only", no_argument, NULL, 'T' },
		{ "fabric-only", no_argument, NULL, 'F' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct hmm_stats st = { .size = sizeof(st) };
	struct hmm_device *dev, *copy_dev, *fresh;
	double mc, raw, ours;
	bool quick = false, preload = true, tier_only = false, fabric_only = false;
	char dir[4096];
	ssize_t n;
	char *p, *buf;
	int c;

	while ((c = getopt_long(argc, argv, "ks:n:qPTh", opts, NULL)) != -1) {
		switch (c) {
		case 'k': kv = true; break;
		case 's': size = parse_size(optarg); break;
		case 'n': samples = (unsigned)atoi(optarg); break;
		case 'q': quick = true; break;
		case 'P': preload = false; break;
		case 'T': tier_only = true; break;
		case 'F': fabric_only = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (size < (1 << 20) || samples < 10) {
		usage(stderr);
		return 2;
	}
	/* Programs under uhmm-run first, while this process manages nothing. */
	n = readlink("/proc/self/exe", dir, sizeof(dir) - 1);
	dir[n > 0 ? n : 0] = 0;
	if (strrchr(dir, '/'))
		*strrchr(dir, '/') = 0;
	if (preload && n > 0) {
		if (!tier_only && !fabric_only) {
			bench_preload(dir, quick);
			bench_opencl(dir, quick);
		}
		if (!fabric_only)
			bench_swap(dir, quick);
	}
	if ((c = hmm_init())) {
		fprintf(stderr, "uhmm-bench: hmm_init: %s\n", strerror(-c));
		return 1;
	}
	if (tier_only) {
		raw_setup();
		bench_uring(size, samples, quick);
		return 0;
	}
	if (fabric_only) {
		raw_setup();
		bench_fabric(dir, size, samples, quick);
		return 0;
	}
	dev = open_dev("sim");
	copy_dev = open_dev("sim:copy");

	raw_setup();
	fault_latencies(dev, &ours, &raw);
	report("fault_back_latency", ours, "ns", raw, "raw uffd round trip");
	fault_latencies(copy_dev, &ours, &raw);
	report("fault_back_latency_copy", ours, "ns", raw, "raw uffd round trip");
	pin_process(0);
	fault_latencies(dev, &ours, &raw);
	report("fault_back_latency_1cpu", ours, "ns", raw, "raw uffd round trip, one CPU");
	fault_latencies(copy_dev, &ours, &raw);
	report("fault_back_latency_copy_1cpu", ours, "ns", raw, "raw uffd round trip, one CPU");
	pin_process(-1);
	fault_rate_mt(copy_dev, &ours, &raw);
	report("fault_rate_mt", ours, "faults/s", raw, "raw uffd, same threads");

	mc = memcpy_gbps();
	p = hmm_alloc(size);
	buf = map(size);
	if (!p)
		return 1;
	memset(p, 5, size);
	memset(buf, 0, size);
	/*
	 * One untimed round trip per device first: the sim's memory is fresh
	 * anonymous memory, and its first touch is not something a device's
	 * own memory costs.
	 */
	migrate_gbps(dev, p, true);
	migrate_gbps(dev, p, false);
	migrate_gbps(copy_dev, p, true);
	migrate_gbps(copy_dev, p, false);
	report("migrate_to_device_bw", migrate_gbps(dev, p, true), "GB/s", mc, "memcpy");
	report("fault_stream_bw", stream_gbps(p, size), "GB/s", mc, "memcpy");
	migrate_gbps(dev, p, true);
	report("migrate_to_host_bw", migrate_gbps(dev, p, false), "GB/s", mc, "memcpy");
	report("migrate_to_device_bw_copy", migrate_gbps(copy_dev, p, true), "GB/s", mc, "memcpy");
	report("fault_stream_bw_copy", stream_gbps(p, size), "GB/s", mc, "memcpy");
	migrate_gbps(copy_dev, p, true);
	report("migrate_to_host_bw_copy", migrate_gbps(copy_dev, p, false), "GB/s", mc, "memcpy");
	copy_floors(&ours, &raw);
	report("copy_floor_home_bw", ours, "GB/s", mc, "memcpy");
	report("copy_floor_out_bw", raw, "GB/s", mc, "memcpy");

	/* A device that has never mapped the range: every page takes the fault path. */
	fresh = open_dev("sim");
	report("device_read_bw", device_read_gbps(fresh, p, buf), "GB/s", mc, "memcpy");
	hmm_stats_get(&st);
	report("metadata_per_page", (double)st.metadata_bytes / ((double)st.managed_bytes / PAGE),
	       "bytes", 64, "struct page");
	hmm_free(p);
	munmap(buf, size);
	hmm_device_close(fresh);
	hmm_device_close(copy_dev);
	hmm_device_close(dev);

	bench_uring(size, samples, quick);
	bench_fabric(dir, size, samples, quick);
	return 0;
}
