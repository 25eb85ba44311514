// SPDX-License-Identifier: MIT
/*
 * uhmm-stat: live counters of a running process under uhmm, like numastat
 * or nvidia-smi. The process publishes them in its stats region (a memfd);
 * hmm_stats_read() finds it through /proc/PID/fd, which the kernel lets
 * only the same user (or root) open.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uhmm.h>

static void usage(FILE *f)
{
	fprintf(f, "usage: uhmm-stat [-i MS [-n COUNT]] [--kv] PID\n"
		   "Prints the live counters of a process running under uhmm (uhmm-run).\n"
		   "  -i, --interval MS  print again every MS milliseconds until the process ends\n"
		   "  -n, --count N      stop after N reports\n"
		   "      --kv           key=value lines (as uhmm-run --stats=FILE writes)\n");
}

/* A whole number in [min, max], or -1. */
static long long number(const char *s, long long min, long long max)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return -1;
	return v;
}

static void print(const struct hmm_stats_region *r, bool kv)
{
	char buf[4096];
	int n = hmm_stats_format(r, kv ? HMM_STATS_FORMAT_KV : HMM_STATS_FORMAT_TEXT, buf,
				 sizeof(buf));

	if (n > 0)
		fwrite(buf, 1, (size_t)n, stdout);
}

static const char *why(int err)
{
	switch (err) {
	case -ENOENT:
		return "no uhmm stats region (not running under uhmm?)";
	case -ESRCH:
		return "no such process";
	case -EPROTO:
		return "unknown stats region format";
	case -EAGAIN:
		return "the counters kept changing under us";
	}
	return strerror(-err);
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
	long long interval = 0, count = 0, pid;
	struct hmm_stats_region r;
	bool kv = false;
	int c, err;

	while ((c = getopt_long(argc, argv, "i:n:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'i':
			if ((interval = number(optarg, 1, 3600 * 1000)) < 0) {
				fprintf(stderr, "uhmm-stat: --interval %s: expected milliseconds\n", optarg);
				return 2;
			}
			break;
		case 'n':
			if ((count = number(optarg, 1, UINT32_MAX)) < 0) {
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
	if (optind != argc - 1 || (pid = number(argv[optind], 1, INT32_MAX)) < 0) {
		usage(stderr);
		return 2;
	}
	for (long long n = 1;; n++) {
		err = hmm_stats_read((pid_t)pid, &r);
		if (err && n > 1 && (err == -ESRCH || err == -ENOENT))
			break; /* the process ended between two reports */
		if (err) {
			fprintf(stderr, "uhmm-stat: process %lld: %s\n", pid, why(err));
			return 1;
		}
		print(&r, kv);
		fflush(stdout);
		if (!interval || (count && n >= count))
			break;
		usleep((useconds_t)(interval * 1000));
		if (!kv)
			putchar('\n');
	}
	return 0;
}
