// SPDX-License-Identifier: MIT
/*
 * libc calls that change the CPU's mappings, seen before the kernel sees
 * them, as the kernel's invalidate_range_start is: every device's entries for
 * the range go, device accesses in flight finish, and migrations in flight
 * settle, then the call runs. This is what keeps a device from touching
 * memory after munmap returns. mprotect raises no userfaultfd event at all,
 * so without this a device would keep writing through stale permissions.
 *
 * Calls that bypass libc (raw syscall(2)) still reach us as userfaultfd
 * events for managed memory, after the fact.
 */
/* Meson builds with 64-bit file offsets, under which glibc renames mmap to
 * mmap64; here we define both names ourselves. */
#undef _FILE_OFFSET_BITS
#include <errno.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <time.h>

#include "internal.h"

/* Exclusive device access ends before the CPU loses write permission. */
static void revoke_exclusive(uintptr_t start, uintptr_t end)
{
	for (;;) {
		bool again = false;

		reg_lock();
		for (uintptr_t a = start; a < end; a += PAGE_SIZE) {
			uint64_t *w = reg_word(a, NULL);
			int err;

			if (!w || !(*w & PW_EXCL))
				continue;
			err = mig_revoke_exclusive(a, w);
			if (err == -EBUSY || err == -EAGAIN)
				again = true;
		}
		reg_unlock();
		if (!again)
			return;
		nanosleep(&(struct timespec){ .tv_nsec = 50000 }, NULL);
	}
}

struct change {
	uintptr_t start, end;
	struct cpu_change pending;
	struct fence fence;
	bool begun, fenced;
};

/* Before: devices let go of [start, end), migrations of it finish and pause. */
static void change_begin(struct change *ch, uintptr_t start, uintptr_t end)
{
	ch->start = ALIGN_DOWN(start, PAGE_SIZE);
	ch->end = ALIGN_UP(end, PAGE_SIZE);
	ch->fenced = false;
	ch->begun = ch->end > ch->start;
	if (!ch->begun)
		return;
	/* Pending first: a device fault from now on cannot map the range. */
	cpu_change_begin(&ch->pending, ch->start, ch->end);
	mirrors_invalidate(ch->start, ch->end, NULL, true);
	reg_lock();
	if (reg_overlaps(ch->start, ch->end)) {
		reg_fence_add(&ch->fence, ch->start, ch->end);
		ch->fenced = true;
		reg_wait_quiet(ch->start, ch->end, true);
	}
	reg_unlock();
}

/* After: the fault thread has applied the change's events to the registry. */
static void change_end(struct change *ch)
{
	if (ch->fenced) {
		handler_barrier();
		reg_lock();
		reg_fence_remove(&ch->fence);
		reg_unlock();
	}
	if (ch->begun)
		cpu_change_end(&ch->pending);
}

int icpt_munmap(void *addr, size_t len)
{
	struct change ch;
	int ret, err;

	if (!rt_hold())
		return sys_munmap(addr, len);
	change_begin(&ch, (uintptr_t)addr, (uintptr_t)addr + len);
	ret = sys_munmap(addr, len);
	err = errno;
	change_end(&ch);
	rt_leave();
	errno = err;
	return ret;
}

int munmap(void *addr, size_t len)
{
	return icpt_munmap(addr, len);
}

void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...)
{
	void *target = NULL, *ret;
	struct change ch, ch_target = { .begun = false, .fenced = false };
	int err;

	if (flags & MREMAP_FIXED) {
		va_list ap;

		va_start(ap, flags);
		target = va_arg(ap, void *);
		va_end(ap);
	}
	if (!rt_hold())
		return sys_mremap(old, old_len, new_len, flags, target);
	change_begin(&ch, (uintptr_t)old, (uintptr_t)old + old_len);
	if (target)
		change_begin(&ch_target, (uintptr_t)target, (uintptr_t)target + new_len);
	ret = sys_mremap(old, old_len, new_len, flags, target);
	err = errno;
	if (ret != MAP_FAILED && ch.fenced && new_len > old_len) {
		/* The grown tail raises no event; it is managed like the rest. */
		handler_barrier();
		reg_lock();
		reg_extend((uintptr_t)ret + ALIGN_UP(old_len, PAGE_SIZE),
			   (uintptr_t)ret + ALIGN_UP(new_len, PAGE_SIZE));
		reg_unlock();
	}
	change_end(&ch_target);
	change_end(&ch);
	rt_leave();
	errno = err;
	return ret;
}

int mprotect(void *addr, size_t len, int prot)
{
	uintptr_t start = ALIGN_DOWN((uintptr_t)addr, PAGE_SIZE);
	uintptr_t end = ALIGN_UP((uintptr_t)addr + len, PAGE_SIZE);
	struct cpu_change pending;
	bool taking;
	int ret, err;

	if (!rt_hold())
		return sys_mprotect(addr, len, prot);
	/* Only taking permissions away makes device entries wrong. */
	taking = end > start && (prot & (PROT_READ | PROT_WRITE)) != (PROT_READ | PROT_WRITE);
	if (taking) {
		if (!(prot & PROT_WRITE))
			revoke_exclusive(start, end);
		cpu_change_begin(&pending, start, end);
		mirrors_invalidate(start, end, NULL, true);
	}
	ret = sys_mprotect(addr, len, prot);
	err = errno;
	if (taking)
		cpu_change_end(&pending);
	rt_leave();
	errno = err;
	return ret;
}

int madvise(void *addr, size_t len, int advice)
{
	struct change ch;
	int ret, err;

	if (!rt_hold())
		return sys_madvise(addr, len, advice);
	switch (advice) {
	case MADV_DONTNEED:
	case MADV_FREE:
	case MADV_REMOVE:
	case 24: /* MADV_DONTNEED_LOCKED */
		break;
	default:
		rt_leave();
		return sys_madvise(addr, len, advice);
	}
	change_begin(&ch, (uintptr_t)addr, (uintptr_t)addr + len);
	ret = sys_madvise(addr, len, advice);
	err = errno;
	change_end(&ch);
	rt_leave();
	errno = err;
	return ret;
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	struct change ch;
	void *ret;
	int err;

	/* Only MAP_FIXED replaces what was there. */
	if (!(flags & MAP_FIXED) || !rt_hold())
		return sys_mmap(addr, len, prot, flags, fd, off);
	change_begin(&ch, (uintptr_t)addr, (uintptr_t)addr + len);
	ret = sys_mmap(addr, len, prot, flags, fd, off);
	err = errno;
	change_end(&ch);
	rt_leave();
	errno = err;
	return ret;
}

/* Programs built with _FILE_OFFSET_BITS=64 import this name. */
void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return mmap(addr, len, prot, flags, fd, off);
}
