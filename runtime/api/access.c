// SPDX-License-Identifier: MIT
/*
 * The device's side of HMM in the API: reads and writes through the
 * device's page table, snapshots, exclusive access, atomics (engine/access.c
 * and engine/exclusive.c do the work).
 */
#include <errno.h>
#include <string.h>

#include "api.h"

static int device_rw(struct hmm_device *dev, uintptr_t addr, size_t len, void *buf, bool write,
		     struct hmm_access *ret)
{
	struct hmm_device_core *c;
	struct hmm_access acc;
	uintptr_t start, end;
	int err;

	if (!buf || !api_page_span((void *)addr, len, &start, &end))
		return -EINVAL;
	err = api_enter_dev(dev, &c);
	if (err)
		return err;
	err = acc_copy(c, addr, len, buf, write, &acc);
	rt_leave();
	if (!err && ret)
		*ret = acc;
	return err;
}

int hmm_device_read(struct hmm_device *dev, const void *addr, size_t len, void *dst,
		    struct hmm_access *ret)
{
	return device_rw(dev, (uintptr_t)addr, len, dst, false, ret);
}

int hmm_device_write(struct hmm_device *dev, void *addr, size_t len, const void *src,
		     struct hmm_access *ret)
{
	return device_rw(dev, (uintptr_t)addr, len, (void *)src, true, ret);
}

int hmm_device_snapshot(struct hmm_device *dev, const void *addr, size_t len, uint8_t *ret_flags)
{
	struct hmm_device_core *c;
	uintptr_t start, end;
	int err;

	if (!ret_flags || !api_page_span(addr, len, &start, &end))
		return -EINVAL;
	err = api_enter_dev(dev, &c);
	if (err)
		return err;
	err = snap_take(c, start, (end - start) / PAGE_SIZE, ret_flags);
	rt_leave();
	return err;
}

int hmm_device_exclusive(struct hmm_device *dev, void *addr, size_t len, struct hmm_access *ret)
{
	struct hmm_device_core *c;
	struct hmm_access acc;
	uintptr_t start, end;
	int err;

	if (!api_page_span(addr, len, &start, &end))
		return -EINVAL;
	err = api_enter_dev(dev, &c);
	if (err)
		return err;
	/* Exclusive pages are out of the CPU's page table: system calls on them
	 * need kernel-mode faults. */
	if (!uffd.kernel_faults)
		err = -EPERM;
	else
		err = excl_grant(c, start, end, &acc);
	rt_leave();
	if (!err && ret)
		*ret = acc;
	return err;
}

int hmm_device_check_exclusive(struct hmm_device *dev, const void *addr, size_t len)
{
	struct hmm_device_core *c;
	uintptr_t start, end;
	bool any;
	int err;

	if (!api_page_span(addr, len, &start, &end))
		return -EINVAL;
	err = api_enter_dev(dev, &c);
	if (err)
		return err;
	mirror_lock(&c->mirror);
	any = mirror_any(&c->mirror, start, end, MIR_ATOMIC);
	mirror_unlock(&c->mirror);
	rt_leave();
	return any ? -EPERM : 0;
}

int hmm_device_atomic_add(struct hmm_device *dev, uint64_t *addr, uint64_t value,
			  uint64_t *ret_old)
{
	struct hmm_device_core *c;
	uint64_t old = 0;
	int err;

	if (!addr || ((uintptr_t)addr & 7))
		return -EINVAL;
	err = api_enter_dev(dev, &c);
	if (err)
		return err;
	err = acc_atomic_add(c, addr, value, &old);
	rt_leave();
	if (!err && ret_old)
		*ret_old = old;
	return err;
}

