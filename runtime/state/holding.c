// SPDX-License-Identifier: MIT
/*
 * The holding area: where a page waits while a device has exclusive (atomic)
 * access to it. Taking the page out of the CPU's page table is what makes
 * any CPU access fault and revoke the device's access, the job the kernel's
 * device-exclusive entries do. The area is anonymous memory registered with
 * our userfaultfd in write-protect mode only (so pages can be moved in, and
 * an empty slot reads as zeros without a fault), and is not inherited by
 * children: fork brings exclusive pages home first.
 */
#include <errno.h>
#include <sys/mman.h>

#include "state.h"

static struct {
	pthread_mutex_t lock;
	char *base;
	size_t bytes;
	struct devmem mem;
	bool ready;
} hold = { .lock = PTHREAD_MUTEX_INITIALIZER };

int holding_reserve(void)
{
	int err = 0;

	pthread_mutex_lock(&hold.lock);
	if (hold.ready)
		goto out;
	hold.bytes = opt.exclusive_mem;
	hold.base = sys_mmap(NULL, hold.bytes, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (hold.base == MAP_FAILED) {
		err = -ENOMEM;
		goto out;
	}
	sys_madvise(hold.base, hold.bytes, MADV_DONTFORK);
	err = uffd_register((uintptr_t)hold.base, hold.bytes, UFFDIO_REGISTER_MODE_WP);
	if (!err)
		err = devmem_init(&hold.mem, hold.bytes / PAGE_SIZE, true);
	if (err) {
		sys_munmap(hold.base, hold.bytes);
		goto out;
	}
	hold.ready = true;
out:
	pthread_mutex_unlock(&hold.lock);
	return err;
}

void *holding_addr(uint64_t slot)
{
	return hold.base + slot * PAGE_SIZE;
}

/* A clean slot; empties stale ones when it must (never on the fault thread). */
int holding_alloc(uint64_t *ret_slot)
{
	uint64_t first;
	size_t n;

	if (devmem_alloc(&hold.mem, 1, 1, true, ret_slot))
		return 0;
	while ((n = devmem_take_stale(&hold.mem, 512, &first))) {
		sys_madvise(holding_addr(first), n * PAGE_SIZE, MADV_DONTNEED);
		devmem_free(&hold.mem, first, n, false);
	}
	return devmem_alloc(&hold.mem, 1, 1, true, ret_slot) ? 0 : -ENOMEM;
}

void holding_free(uint64_t slot, bool stale)
{
	devmem_free(&hold.mem, slot, 1, stale);
}

void holding_release(void)
{
	pthread_mutex_lock(&hold.lock);
	if (hold.ready) {
		devmem_destroy(&hold.mem);
		sys_munmap(hold.base, hold.bytes);
		hold.ready = false;
	}
	pthread_mutex_unlock(&hold.lock);
}

/* MADV_DONTFORK: the child has no holding area, and no exclusive pages. */
void holding_fork_child(void)
{
	pthread_mutex_init(&hold.lock, NULL);
	hold.ready = false;
}
