// SPDX-License-Identifier: MIT
/*
 * uhmm-bench-spill [--cgroup DIR] seq|rand MIB: a program four times too
 * big for its memory limit, for spill_vs_swap. It mallocs MIB MiB and
 * fills it, then either scans it (SEQ_PASSES passes, every word read) or
 * updates a word in RAND_TOUCHES pages picked at random; it prints a
 * checksum, so that both runs can be compared and nothing is optimised
 * away. uhmm-bench runs it in a memory cgroup with kernel swap, and under
 * uhmm-run --device uring --host-limit; it links nothing of uhmm's.
 *
 * --cgroup DIR: join that cgroup (v1, cgroup.procs) before allocating, so
 * every page the program touches is charged to it; and die with the
 * process that started it, which cannot take the cgroup and its swapfile
 * down while we run.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#define PAGE 4096ul
#define SEQ_PASSES 3
#define RAND_TOUCHES 16384

static int join_cgroup(const char *dir)
{
	char path[4096], pid[24];
	int fd, len, ok;

	if (prctl(PR_SET_PDEATHSIG, SIGKILL) || getppid() == 1)
		return -1; /* the parent is gone already */
	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	len = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0) {
		perror(path);
		return -1;
	}
	ok = write(fd, pid, (size_t)len) == len;
	if (!ok)
		perror(path);
	close(fd);
	return ok ? 0 : -1;
}

static uint64_t scan(const uint64_t *w, size_t n)
{
	uint64_t sum = 0;

	for (int pass = 0; pass < SEQ_PASSES; pass++)
		for (size_t i = 0; i < n; i++)
			sum += w[i];
	return sum;
}

/* A fixed xorshift sequence: both runs touch the same pages in the same order. */
static uint64_t update(uint64_t *w, size_t n)
{
	size_t pages = n * sizeof(*w) / PAGE, per_page = PAGE / sizeof(*w);
	uint64_t x = 88172645463325252ull, sum = 0;

	for (unsigned i = 0; i < RAND_TOUCHES; i++) {
		uint64_t *word;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		word = &w[(x % pages) * per_page + (x >> 32) % per_page];
		sum += ++*word;
	}
	return sum;
}

int main(int argc, char **argv)
{
	const char *cgroup = NULL;
	size_t len, n;
	uint64_t *w, sum;
	bool seq;

	if (argc > 2 && !strcmp(argv[1], "--cgroup")) {
		cgroup = argv[2];
		argc -= 2;
		argv += 2;
	}
	if (argc != 3 || (strcmp(argv[1], "seq") && strcmp(argv[1], "rand")) ||
	    !(len = strtoull(argv[2], NULL, 10) << 20)) {
		fprintf(stderr, "usage: uhmm-bench-spill [--cgroup DIR] seq|rand MIB\n");
		return 2;
	}
	seq = !strcmp(argv[1], "seq");
	if (cgroup && join_cgroup(cgroup))
		return 1;
	w = malloc(len);
	if (!w) {
		perror("malloc");
		return 1;
	}
	n = len / sizeof(*w);
	for (size_t i = 0; i < n; i++)
		w[i] = i;
	sum = seq ? scan(w, n) : update(w, n);
	printf("%llu\n", (unsigned long long)sum);
	free(w);
	return 0;
}
