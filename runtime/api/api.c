// SPDX-License-Identifier: MIT
/*
 * The public API: argument checks (bad input changes nothing), then the
 * subsystem that does the work. Every function returns 0, a count, or
 * -errno, and leaves errno alone. Here: managed memory and placement;
 * devices.c has the device calls, access.c the device's side of HMM.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "api.h"

bool api_page_span(const void *addr, size_t len, uintptr_t *ret_start, uintptr_t *ret_end)
{
	uintptr_t a = (uintptr_t)addr;

	if (!len || a + len < a || a + len > UINTPTR_MAX - PAGE_SIZE)
		return false;
	*ret_start = ALIGN_DOWN(a, PAGE_SIZE);
	*ret_end = ALIGN_UP(a + len, PAGE_SIZE);
	return true;
}

int api_enter_dev(struct hmm_device *dev, struct hmm_device_core **ret_c)
{
	int err = rt_enter();

	if (err)
		return err;
	*ret_c = dev_from_handle(dev);
	if (!*ret_c) {
		rt_leave();
		return -EINVAL;
	}
	return 0;
}

void *hmm_alloc(size_t size)
{
	size_t len, map_len;
	char *map, *p;
	struct range *r;
	int err;

	if (!size || size > (1ull << 46)) {
		errno = size ? ENOMEM : EINVAL;
		return NULL;
	}
	err = rt_enter();
	if (err) {
		errno = -err;
		return NULL;
	}
	len = ALIGN_UP(size, PAGE_SIZE);
	/* 2 MiB alignment lets whole huge pages move at once. */
	map_len = len >= PMD_SIZE ? len + PMD_SIZE : len;
	map = sys_mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED) {
		rt_leave();
		errno = ENOMEM;
		return NULL;
	}
	p = len >= PMD_SIZE ? (char *)ALIGN_UP((uintptr_t)map, PMD_SIZE) : map;
	if (p != map)
		sys_munmap(map, (size_t)(p - map));
	if ((size_t)(p - map) + len < map_len)
		sys_munmap(p + len, map_len - (size_t)(p - map) - len);
	handler_barrier();
	reg_lock();
	err = reg_add((uintptr_t)p, (uintptr_t)p + len, &r);
	if (!err && !r)
		err = -ENOMEM; /* unmapped by someone else already */
	if (!err) {
		r->flags |= RANGE_ALLOCATED;
		r->map_start = (uintptr_t)p;
		r->map_len = len;
	}
	reg_unlock();
	rt_leave();
	if (err) {
		sys_munmap(p, len);
		errno = -err;
		return NULL;
	}
	return p;
}

void hmm_free(void *ptr)
{
	struct range *r;
	size_t len = 0;

	if (!ptr || rt_enter())
		return;
	reg_lock();
	r = reg_lookup((uintptr_t)ptr);
	if (r && (r->flags & RANGE_ALLOCATED) && r->map_start == (uintptr_t)ptr)
		len = r->map_len;
	reg_unlock();
	rt_leave();
	if (!len) {
		log_warn_ratelimited("hmm_free(%p): not from hmm_alloc; ignored", ptr);
		return;
	}
	/* Through the wrapper: devices let go before the memory does. */
	icpt_munmap(ptr, len);
}

static int check_private_anon(const struct vma *v, uintptr_t s, uintptr_t e, void *arg)
{
	(void)s, (void)e, (void)arg;
	return v && vma_private_anon(v) ? 0 : -EINVAL;
}

int hmm_manage(void *addr, size_t len)
{
	uintptr_t start, end;
	int err;

	if (!api_page_span(addr, len, &start, &end))
		return -EINVAL;
	err = rt_enter();
	if (err)
		return err;
	err = vma_walk(start, end, check_private_anon, NULL);
	if (!err) {
		handler_barrier();
		reg_lock();
		err = reg_add(start, end, NULL);
		reg_unlock();
	}
	rt_leave();
	return err;
}

int hmm_unmanage(void *addr, size_t len)
{
	struct mig_result res;
	uintptr_t start, end;
	int err;

	if (!api_page_span(addr, len, &start, &end))
		return -EINVAL;
	err = rt_enter();
	if (err)
		return err;
	reg_lock();
	err = reg_covers(start, end) ? 0 : -EINVAL;
	reg_unlock();
	if (!err)
		err = mig_home(start, end, NULL, &res);
	if (!err && res.eio)
		err = -EIO;
	if (!err) {
		reg_lock();
		reg_wait_quiet(start, end, false);
		err = reg_remove(start, end);
		reg_unlock();
	}
	rt_leave();
	return err;
}

int hmm_migrate(void *addr, size_t len, struct hmm_device *dst, unsigned flags,
		size_t *ret_pages)
{
	struct hmm_device_core *c = NULL;
	struct mig_result res;
	uintptr_t start, end;
	int err;

	if (flags || !api_page_span(addr, len, &start, &end))
		return -EINVAL;
	err = rt_enter();
	if (err)
		return err;
	if (dst && !(c = dev_from_handle(dst))) {
		rt_leave();
		return -EINVAL;
	}
	if (c && !dev_coherent(c) && !uffd.kernel_faults) {
		/* A page on a private device would break syscalls that touch it. */
		log_warn_ratelimited("hmm_migrate: kernel-mode userfaults are not allowed here; "
				     "pages stay in host memory");
		rt_leave();
		return -EPERM;
	}
	err = mig_range(start, end, c, &res);
	rt_leave();
	if (err)
		return err;
	if (ret_pages)
		*ret_pages = res.placed;
	if (res.enomem)
		return -ENOMEM;
	if (res.enospc)
		return -ENOSPC;
	if (res.eio)
		return -EIO;
	if (res.enoent)
		return -ENOENT;
	return 0;
}

int hmm_advise(void *addr, size_t len, int advice, struct hmm_device *dev)
{
	struct hmm_device_core *c = NULL;
	uintptr_t start, end;
	int err;

	if (!api_page_span(addr, len, &start, &end) || advice < HMM_ADVISE_PREFERRED_LOCATION ||
	    advice > HMM_ADVISE_UNPIN_HOST)
		return -EINVAL;
	if ((advice == HMM_ADVISE_ACCESSED_BY || advice == HMM_ADVISE_UNSET_ACCESSED_BY) && !dev)
		return -EINVAL;
	err = rt_enter();
	if (err)
		return err;
	if (dev && !(c = dev_from_handle(dev)))
		err = -EINVAL;
	if (!err)
		err = policy_advise(start, end, advice, c);
	rt_leave();
	return err;
}

int hmm_sync(struct hmm_device *dev)
{
	struct hmm_device_core *c = NULL;
	int err = rt_enter();

	if (err)
		return err;
	if (dev && !(c = dev_from_handle(dev)))
		err = -EINVAL;
	rt_leave();
	if (err)
		return err;
	policy_wait(c);
	/* Then the queues: asynchronous fault-ins. A device closed meanwhile has none. */
	if (rt_enter())
		return 0;
	for (int i = 0; i < MAX_DEVICES; i++)
		if (dev_table[i] && (!dev || dev_table[i]->dev == dev))
			dmaq_drain(&dev_table[i]->q);
	rt_leave();
	return 0;
}

int hmm_residency(const void *addr, size_t len, int *ret_loc)
{
	uintptr_t start, end;
	int err;

	if (!ret_loc || !api_page_span(addr, len, &start, &end))
		return -EINVAL;
	err = rt_enter();
	if (err)
		return err;
	err = snap_residency(start, (end - start) / PAGE_SIZE, ret_loc);
	rt_leave();
	return err;
}
