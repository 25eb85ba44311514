// SPDX-License-Identifier: MIT
/*
 * The CPU's mappings, read without touching them: VMA lookups through
 * PROCMAP_QUERY (6.11) with a /proc/self/maps parser as the fallback.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "kernel.h"

static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int maps_fd = -1;
static _Atomic int procmap_query = -1;  /* -1 unknown, 0 no, 1 yes */

/* A /proc/self file opened once and kept: *slot caches it. */
int proc_self_fd(_Atomic int *slot, const char *path)
{
	int fd = atomic_load(slot);

	if (fd >= 0)
		return fd;
	pthread_mutex_lock(&open_lock);
	fd = atomic_load(slot);
	if (fd < 0) {
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			fd = -errno;
		else
			atomic_store(slot, fd);
	}
	pthread_mutex_unlock(&open_lock);
	return fd;
}

/* The child of fork: /proc/self names another process now. */
void proc_self_close(_Atomic int *slot)
{
	int fd = atomic_exchange(slot, -1);

	if (fd >= 0)
		close(fd);
}

void vma_reset(void)
{
	proc_self_close(&maps_fd);
	pthread_mutex_init(&open_lock, NULL);
}

static unsigned prot_flags(uint64_t qflags, uint64_t inode, uint64_t page_size)
{
	unsigned f = 0;

	if (qflags & PROCMAP_QUERY_VMA_READABLE)
		f |= VMA_READ;
	if (qflags & PROCMAP_QUERY_VMA_WRITABLE)
		f |= VMA_WRITE;
	if (qflags & PROCMAP_QUERY_VMA_EXECUTABLE)
		f |= VMA_EXEC;
	if (qflags & PROCMAP_QUERY_VMA_SHARED)
		f |= VMA_SHARED;
	if (inode)
		f |= VMA_FILE;
	if (page_size > PAGE_SIZE)
		f |= VMA_HUGETLB;
	return f;
}

/* Covering VMA, or with next the first one above addr. */
static int query_ioctl(int fd, uintptr_t addr, bool next, struct vma *ret)
{
	struct procmap_query q = {
		.size = sizeof(q),
		.query_flags = next ? PROCMAP_QUERY_COVERING_OR_NEXT_VMA : 0,
		.query_addr = addr,
	};

	if (ioctl(fd, PROCMAP_QUERY, &q))
		return -errno;
	ret->start = q.vma_start;
	ret->end = q.vma_end;
	ret->page_size = q.vma_page_size;
	ret->flags = prot_flags(q.vma_flags, q.inode, q.vma_page_size);
	return 0;
}

/* The slow way, for kernels before 6.11: scan the text of /proc/self/maps. */
static int query_text(uintptr_t addr, bool next, struct vma *ret)
{
	char buf[4096];
	size_t have = 0;
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	int err = -ENOENT;

	if (fd < 0)
		return -errno;
	for (;;) {
		ssize_t n = read(fd, buf + have, sizeof(buf) - have - 1);
		char *line, *nl;

		if (n <= 0)
			break;
		have += (size_t)n;
		buf[have] = 0;
		line = buf;
		while ((nl = strchr(line, '\n'))) {
			unsigned long s, e, off, ino;
			char perms[5];
			unsigned maj, min;

			*nl = 0;
			if (sscanf(line, "%lx-%lx %4s %lx %x:%x %lu", &s, &e, perms, &off, &maj,
				   &min, &ino) == 7 &&
			    (addr < e && (next || addr >= s))) {
				uint64_t qf = 0;

				if (perms[0] == 'r')
					qf |= PROCMAP_QUERY_VMA_READABLE;
				if (perms[1] == 'w')
					qf |= PROCMAP_QUERY_VMA_WRITABLE;
				if (perms[2] == 'x')
					qf |= PROCMAP_QUERY_VMA_EXECUTABLE;
				if (perms[3] == 's')
					qf |= PROCMAP_QUERY_VMA_SHARED;
				ret->start = s;
				ret->end = e;
				/* MAP_HUGETLB anonymous memory shows up under this name */
				ret->page_size = strstr(line, "anon_hugepage") ? PMD_SIZE : PAGE_SIZE;
				ret->flags = prot_flags(qf, ino, ret->page_size);
				err = 0;
				goto out;
			}
			line = nl + 1;
		}
		have = strlen(line);
		memmove(buf, line, have);
	}
out:
	close(fd);
	return err;
}

static int query(uintptr_t addr, bool next, struct vma *ret)
{
	int fd, err;

	if (atomic_load(&procmap_query) < 0 && kernel_hides("PROCMAP_QUERY"))
		atomic_store(&procmap_query, 0);
	if (atomic_load(&procmap_query) != 0) {
		fd = proc_self_fd(&maps_fd, "/proc/self/maps");
		if (fd >= 0) {
			err = query_ioctl(fd, addr, next, ret);
			if (err != -ENOTTY && err != -EINVAL) {
				atomic_store(&procmap_query, 1);
				return err;
			}
		}
		atomic_store(&procmap_query, 0);
	}
	return query_text(addr, next, ret);
}

int vma_query(uintptr_t addr, struct vma *ret)
{
	return query(addr, false, ret);
}

bool vma_have_procmap_query(void)
{
	struct vma v;

	if (atomic_load(&procmap_query) < 0)
		query((uintptr_t)&v, false, &v);
	return atomic_load(&procmap_query) == 1;
}

bool vma_private_anon(const struct vma *v)
{
	return !(v->flags & (VMA_SHARED | VMA_FILE | VMA_HUGETLB));
}

int vma_walk(uintptr_t start, uintptr_t end,
	     int (*fn)(const struct vma *v, uintptr_t s, uintptr_t e, void *arg), void *arg)
{
	uintptr_t at = start;

	while (at < end) {
		struct vma v;
		int err = query(at, true, &v);

		if (err == -ENOENT || (!err && v.start >= end)) {
			return fn(NULL, at, end, arg);
		}
		if (err)
			return err;
		if (v.start > at) {
			err = fn(NULL, at, v.start, arg);
			if (err)
				return err;
			at = v.start;
		}
		err = fn(&v, at, MIN(v.end, end), arg);
		if (err)
			return err;
		at = MIN(v.end, end);
	}
	return 0;
}

static uint64_t locked_bytes(void)
{
	char buf[4096];
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	ssize_t n;
	char *p;

	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	p = strstr(buf, "VmLck:");
	return p ? strtoull(p + 6, NULL, 10) : 0;
}

/*
 * mlock'ed pages are never migrated. No cheap per-VMA query reports VM_LOCKED,
 * so read the process total first (almost always 0) and look at smaps only
 * when something is locked.
 */
int vma_locked(uintptr_t start, uintptr_t end, bool *ret_locked)
{
	FILE *f;
	char line[512];
	bool in = false;

	*ret_locked = false;
	if (!locked_bytes())
		return 0;
	f = fopen("/proc/self/smaps", "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		unsigned long s, e;

		if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, '-') < strchr(line, ' ')) {
			in = s < end && e > start;
			continue;
		}
		if (in && !strncmp(line, "VmFlags:", 8) && strstr(line, " lo")) {
			*ret_locked = true;
			break;
		}
	}
	fclose(f);
	return 0;
}
