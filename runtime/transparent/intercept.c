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
 *
 * In transparent mode mmap also makes private anonymous mappings managed, as
 * the heap is; fork brings device pages home first, and the mlock family
 * brings home what it is about to lock (locked pages never migrate). Calls
 * that jemalloc makes for its own metadata (rt_self.in_alloc) go straight to
 * the kernel.
 */
/* Meson builds with 64-bit file offsets, under which glibc renames mmap to
 * mmap64; here we define both names ourselves. */
#undef _FILE_OFFSET_BITS
#include <errno.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "transparent.h"

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
			err = excl_revoke(a, w);
			if (err == -EBUSY || err == -EAGAIN)
				again = true;
		}
		reg_unlock();
		if (!again)
			return;
		nap();
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
	dev_invalidate_all(ch->start, ch->end, NULL, true);
	reg_lock();
	if (reg_overlaps(ch->start, ch->end)) {
		reg_fence_add(&ch->fence, ch->start, ch->end);
		ch->fenced = true;
		reg_wait_quiet(ch->start, ch->end, true);
	}
	reg_unlock();
}

/*
 * After: the fault thread has applied the change's events to the registry;
 * lazy ranges raise none, so an unmapping (unmapped) is applied to them here.
 */
static void change_end(struct change *ch, bool unmapped)
{
	if (ch->fenced) {
		handler_barrier();
		reg_lock();
		if (unmapped)
			reg_forget_lazy(ch->start, ch->end);
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

	if (rt_self.in_alloc || !rt_hold())
		return sys_munmap(addr, len);
	change_begin(&ch, (uintptr_t)addr, (uintptr_t)addr + len);
	ret = sys_munmap(addr, len);
	err = errno;
	change_end(&ch, ret == 0);
	rt_leave();
	errno = err;
	return ret;
}

UHMM_INTERPOSE int munmap(void *addr, size_t len)
{
	return icpt_munmap(addr, len);
}

/*
 * reg.lock held: a lazy range moved or shrank without telling the fault
 * thread. Its pages are all on the host, so only the extent changes.
 */
static void lazy_remapped(uintptr_t old, size_t old_len, uintptr_t to, size_t new_len, int flags)
{
	if (to != old) {
		if (!(flags & MREMAP_DONTUNMAP))
			reg_forget_lazy(old, old + old_len);
		reg_forget_lazy(to, to + new_len); /* MREMAP_FIXED replaced what was there */
		reg_add_lazy(to, to + new_len);
	} else if (new_len < old_len) {
		reg_forget_lazy(old + new_len, old + old_len);
	}
}

UHMM_INTERPOSE void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...)
{
	void *target = NULL, *ret;
	struct change ch, ch_target = { .begun = false, .fenced = false };
	bool lazy = false;
	int err;

	if (flags & MREMAP_FIXED) {
		va_list ap;

		va_start(ap, flags);
		target = va_arg(ap, void *);
		va_end(ap);
	}
	if (rt_self.in_alloc || !rt_hold())
		return sys_mremap(old, old_len, new_len, flags, target);
	change_begin(&ch, (uintptr_t)old, (uintptr_t)old + old_len);
	if (target)
		change_begin(&ch_target, (uintptr_t)target, (uintptr_t)target + new_len);
	if (ch.fenced) {
		reg_lock();
		lazy = reg_lazy(ch.start, ch.end);
		reg_unlock();
	}
	ret = sys_mremap(old, old_len, new_len, flags, target);
	err = errno;
	if (ret != MAP_FAILED && ch.fenced) {
		old_len = ALIGN_UP(old_len, PAGE_SIZE);
		new_len = ALIGN_UP(new_len, PAGE_SIZE);
		handler_barrier();
		reg_lock();
		if (lazy)
			lazy_remapped((uintptr_t)old, old_len, (uintptr_t)ret, new_len, flags);
		/* The grown tail raises no event; it is managed like the rest. */
		if (new_len > old_len)
			reg_extend((uintptr_t)ret + old_len, (uintptr_t)ret + new_len);
		reg_unlock();
	}
	/* What MREMAP_FIXED replaced is gone (lazy_remapped saw to it already). */
	change_end(&ch_target, ret != MAP_FAILED && !lazy);
	change_end(&ch, false);
	rt_leave();
	errno = err;
	return ret;
}

UHMM_INTERPOSE int mprotect(void *addr, size_t len, int prot)
{
	uintptr_t start = ALIGN_DOWN((uintptr_t)addr, PAGE_SIZE);
	uintptr_t end = ALIGN_UP((uintptr_t)addr + len, PAGE_SIZE);
	struct cpu_change pending;
	bool taking;
	int ret, err;

	if (rt_self.in_alloc || !rt_hold())
		return sys_mprotect(addr, len, prot);
	/* Only taking permissions away makes device entries wrong. */
	taking = end > start && (prot & (PROT_READ | PROT_WRITE)) != (PROT_READ | PROT_WRITE);
	if (taking) {
		if (!(prot & PROT_WRITE))
			revoke_exclusive(start, end);
		cpu_change_begin(&pending, start, end);
		dev_invalidate_all(start, end, NULL, true);
	}
	ret = sys_mprotect(addr, len, prot);
	err = errno;
	if (taking)
		cpu_change_end(&pending);
	rt_leave();
	errno = err;
	return ret;
}

UHMM_INTERPOSE int madvise(void *addr, size_t len, int advice)
{
	struct change ch;
	int ret, err;

	if (rt_self.in_alloc || !rt_hold())
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
	change_end(&ch, false);
	rt_leave();
	errno = err;
	return ret;
}

/* A new mapping the transparent mode manages: private anonymous memory. */
static bool manages(int flags)
{
	if ((flags & MAP_TYPE) != MAP_PRIVATE || !(flags & MAP_ANONYMOUS) ||
	    (flags & (MAP_HUGETLB | MAP_STACK | MAP_GROWSDOWN)))
		return false;
	return heap_managed();
}

UHMM_INTERPOSE void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	bool manage, fixed = flags & MAP_FIXED;
	struct change ch = { .begun = false, .fenced = false };
	void *ret;
	int err;

	if (rt_self.in_alloc || rt_self_internal())
		return sys_mmap(addr, len, prot, flags, fd, off);
	manage = manages(flags);
	if (manage)
		heap_restart_if_requested(); /* a child of fork restarts here too */
	/* Only MAP_FIXED replaces what was there. */
	if ((!fixed && !manage) || !rt_hold())
		return sys_mmap(addr, len, prot, flags, fd, off);
	if (fixed)
		change_begin(&ch, (uintptr_t)addr, (uintptr_t)addr + len);
	ret = sys_mmap(addr, len, prot, flags, fd, off);
	err = errno;
	change_end(&ch, ret != MAP_FAILED);
	if (manage && ret != MAP_FAILED) {
		int e;

		reg_lock();
		e = reg_add_lazy((uintptr_t)ret, (uintptr_t)ret + ALIGN_UP(len, PAGE_SIZE));
		reg_unlock();
		if (e)
			log_warn_ratelimited("a new mapping at %p stays unmanaged: %d", ret, e);
	}
	rt_leave();
	errno = err;
	return ret;
}

/* Programs built with _FILE_OFFSET_BITS=64 import this name. */
UHMM_INTERPOSE void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return mmap(addr, len, prot, flags, fd, off);
}

/* ---- fork and the mlock family ------------------------------------------- */

extern pid_t __fork(void);

/*
 * Pages come home here, while other threads still run; the atfork prepare
 * handler (fork.c) then only has what moved since.
 */
UHMM_INTERPOSE pid_t fork(void)
{
	if (rt_hold()) {
		int err = mig_home_everything(NULL);

		if (err)
			log_warn("fork: bringing device pages home: %d", err);
		rt_leave();
	}
	return __fork();
}

static void home_before_lock(const void *addr, size_t len)
{
	uintptr_t start = ALIGN_DOWN((uintptr_t)addr, PAGE_SIZE);
	uintptr_t end = ALIGN_UP((uintptr_t)addr + len, PAGE_SIZE);
	struct mig_result res;

	if (end <= start || !rt_hold())
		return;
	mig_home(start, end, NULL, &res);
	rt_leave();
}

UHMM_INTERPOSE int mlock(const void *addr, size_t len)
{
	home_before_lock(addr, len);
	return (int)syscall(SYS_mlock, addr, len);
}

UHMM_INTERPOSE int mlock2(const void *addr, size_t len, unsigned int flags)
{
	home_before_lock(addr, len);
	return (int)syscall(SYS_mlock2, addr, len, flags);
}

UHMM_INTERPOSE int mlockall(int flags)
{
	if ((flags & MCL_CURRENT) && rt_hold()) {
		mig_home_everything(NULL);
		rt_leave();
	}
	return (int)syscall(SYS_mlockall, flags);
}
