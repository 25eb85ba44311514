// SPDX-License-Identifier: MIT
/*
 * uhmm-stat: live counters of a running process under uhmm, like numastat
 * or nvidia-smi. The process publishes them in its stats region (a memfd,
 * runtime/stats-region.h); we find it through /proc/PID/fd, which the
 * kernel lets only the same user (or root) open.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "stats-region.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: uhmm-stat [-i MS [-n COUNT]] [--kv] PID\n"
		   "Prints the live counters of a process running under uhmm (uhmm-run).\n"
		   "  -i, --interval MS  print again every MS milliseconds until the process ends\n"
		   "  -n, --count N      stop after N reports\n"
		   "      --kv           key=value lines (as uhmm-run --stats=FILE writes)\n");
}

/* The region's descriptor in /proc/PID/fd, or -errno. */
static int open_region(int pid)
{
	char dir[64], link[320], target[128];
	struct dirent *e;
	int fd = -ENOENT;
	DIR *d;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", pid);
	d = opendir(dir);
	if (!d)
		return -errno;
	while (fd < 0 && (e = readdir(d))) {
		ssize_t n;

		if (e->d_name[0] == '.')
			continue;
		snprintf(link, sizeof(link), "%s/%s", dir, e->d_name);
		n = readlink(link, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = 0;
		if (strncmp(target, "/memfd:" UHMM_STATS_MEMFD " ", 7 + strlen(UHMM_STATS_MEMFD) + 1))
			continue;
		fd = open(link, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			fd = -errno;
	}
	closedir(d);
	return fd;
}

/* A consistent copy: the writer makes seq odd while it updates. */
static bool snapshot(const volatile struct uhmm_stats_region *m, struct uhmm_stats_region *out)
{
	for (int tries = 0; tries < 100; tries++) {
		uint64_t seq = __atomic_load_n(&m->seq, __ATOMIC_ACQUIRE);

		if (seq & 1) {
			usleep(100);
			continue;
		}
		memcpy(out, (const void *)m, sizeof(*out));
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		if (__atomic_load_n(&m->seq, __ATOMIC_RELAXED) == seq)
			return true;
	}
	return false;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void print_text(const struct uhmm_stats_region *r)
{
	const struct hmm_stats *s = &r->s;
	char a[32], b[32], c[32];

	printf("pid %d, updated %llu ms ago", r->pid,
	       (unsigned long long)(now_ms() - r->updated_ns / 1000000));
	if (r->host_limit)
		printf(", host limit %s", stats_human_bytes(r->host_limit, a, sizeof(a)));
	if (r->chaos_ms)
		printf(", chaos every %llu ms", (unsigned long long)r->chaos_ms);
	printf("\n  faults     CPU %llu (first touch %llu pages, waited %llu), device %llu, serving %.1f ms\n",
	       (unsigned long long)s->cpu_faults, (unsigned long long)s->zero_fills,
	       (unsigned long long)s->parked_faults, (unsigned long long)s->device_faults,
	       (double)s->fault_ns / 1e6);
	printf("  migrated   to devices %llu pages (%s), to host %llu pages (%s), failed %llu\n",
	       (unsigned long long)s->pages_to_device, stats_human_bytes(s->bytes_to_device, a, sizeof(a)),
	       (unsigned long long)s->pages_to_host, stats_human_bytes(s->bytes_to_host, b, sizeof(b)),
	       (unsigned long long)s->migrations_failed);
	printf("  pressure   evicted %llu pages, thrashing %llu\n",
	       (unsigned long long)s->evictions, (unsigned long long)s->thrash_events);
	printf("  resident   managed %s, host %s", stats_human_bytes(s->managed_bytes, a, sizeof(a)),
	       stats_human_bytes(r->host_present_bytes, b, sizeof(b)));
	for (uint32_t i = 0; i < r->ndevices && i < HMM_STATS_MAX_DEVICES; i++)
		if (r->device_names[i][0])
			printf(", %.*s %s", (int)sizeof(r->device_names[i]), r->device_names[i],
			       stats_human_bytes(s->device_resident_bytes[i], c, sizeof(c)));
	printf("\n  metadata   %s\n", stats_human_bytes(s->metadata_bytes, a, sizeof(a)));
}

static void print_kv(const struct uhmm_stats_region *r)
{
	char buf[4096];

	fwrite(buf, 1, stats_format_kv(r, buf, sizeof(buf)), stdout);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "interval", required_argument, NULL, 'i' },
		{ "count", required_argument, NULL, 'n' },
		{ "kv", no_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t interval = 0, count = 0, pid;
	struct uhmm_stats_region *m, copy;
	bool kv = false;
	int c, fd;

	while ((c = getopt_long(argc, argv, "i:n:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'i':
			if (parse_uint(optarg, 3600 * 1000, &interval) || !interval) {
				fprintf(stderr, "uhmm-stat: --interval %s: expected milliseconds\n", optarg);
				return 2;
			}
			break;
		case 'n':
			if (parse_uint(optarg, UINT32_MAX, &count) || !count) {
				fprintf(stderr, "uhmm-stat: --count %s: expected a number\n", optarg);
				return 2;
			}
			break;
		case 'k':
			kv = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1 || parse_uint(argv[optind], INT32_MAX, &pid)) {
		usage(stderr);
		return 2;
	}
	fd = open_region((int)pid);
	if (fd < 0) {
		fprintf(stderr, "uhmm-stat: process %llu: %s\n", (unsigned long long)pid,
			fd == -ENOENT ? "no uhmm stats region (not running under uhmm?)"
				      : strerror(-fd));
		return 1;
	}
	m = mmap(NULL, sizeof(*m), PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (m == MAP_FAILED || m->magic != UHMM_STATS_MAGIC || m->version != UHMM_STATS_VERSION) {
		fprintf(stderr, "uhmm-stat: process %llu: unknown stats region format\n",
			(unsigned long long)pid);
		return 1;
	}
	for (uint64_t n = 1;; n++) {
		if (!snapshot(m, &copy)) {
			fprintf(stderr, "uhmm-stat: the counters kept changing under us\n");
			return 1;
		}
		if (kv)
			print_kv(&copy);
		else
			print_text(&copy);
		fflush(stdout);
		if (!interval || (count && n >= count))
			break;
		usleep((useconds_t)(interval * 1000));
		if (kill((pid_t)pid, 0) && errno == ESRCH)
			break;
		if (!kv)
			putchar('\n');
	}
	return 0;
}
