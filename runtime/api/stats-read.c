// SPDX-License-Identifier: MIT
/*
 * hmm_stats_read: another process's live counters, for uhmm-stat and any
 * monitor. The process publishes them in a memfd (stats.c); we find it in
 * /proc/PID/fd, which the kernel lets only the same user (or root) open,
 * map it read-only, and copy it under its sequence count. Nothing of the
 * runtime is started for it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api.h"

/* The region's descriptor in /proc/PID/fd, or -errno. */
static int open_region(pid_t pid)
{
	static const char prefix[] = "/memfd:" HMM_STATS_REGION_NAME " ";
	char dir[64], link[320], target[128];
	struct dirent *e;
	int fd = -ENOENT;
	DIR *d;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	d = opendir(dir);
	if (!d)
		return errno == ENOENT ? -ESRCH : -errno;
	while (fd < 0 && (e = readdir(d))) {
		ssize_t n;

		if (e->d_name[0] == '.')
			continue;
		snprintf(link, sizeof(link), "%s/%s", dir, e->d_name);
		n = readlink(link, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = 0;
		if (strncmp(target, prefix, sizeof(prefix) - 1))
			continue;
		fd = open(link, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			fd = -errno;
	}
	closedir(d);
	return fd;
}

/* A consistent copy: the writer makes seq odd while it updates. */
static bool copy_region(const volatile struct hmm_stats_region *m, struct hmm_stats_region *out)
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

int hmm_stats_read(pid_t pid, struct hmm_stats_region *ret_region)
{
	struct hmm_stats_region *m;
	struct stat st;
	int fd, err = 0;

	if (pid <= 0 || !ret_region)
		return -EINVAL;
	fd = open_region(pid);
	if (fd < 0)
		return fd;
	if (fstat(fd, &st) || (size_t)st.st_size < sizeof(*m)) {
		close(fd);
		return -EPROTO;
	}
	m = sys_mmap(NULL, sizeof(*m), PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (m == MAP_FAILED)
		return -ENOMEM;
	if (m->magic != HMM_STATS_REGION_MAGIC || m->version != HMM_STATS_REGION_VERSION)
		err = -EPROTO;
	else if (!copy_region(m, ret_region))
		err = -EAGAIN;
	sys_munmap(m, sizeof(*m));
	return err;
}
