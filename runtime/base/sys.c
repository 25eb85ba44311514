// SPDX-License-Identifier: MIT
/*
 * Raw system calls. libuhmm exports munmap, mprotect and friends to see the
 * application's mapping changes first; the runtime itself must never go
 * through those wrappers, so it calls the kernel directly.
 */
#include <errno.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base.h"

void *sys_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
}

int sys_munmap(void *addr, size_t len)
{
	return (int)syscall(SYS_munmap, addr, len);
}

void *sys_mremap(void *old, size_t old_len, size_t new_len, int flags, void *new_addr)
{
	return (void *)syscall(SYS_mremap, old, old_len, new_len, flags, new_addr);
}

int sys_mprotect(void *addr, size_t len, int prot)
{
	return (int)syscall(SYS_mprotect, addr, len, prot);
}

int sys_madvise(void *addr, size_t len, int advice)
{
	int ret;

	do
		ret = (int)syscall(SYS_madvise, addr, len, advice);
	while (ret < 0 && errno == EINTR);
	return ret;
}

pid_t sys_gettid(void)
{
	return (pid_t)syscall(SYS_gettid);
}
