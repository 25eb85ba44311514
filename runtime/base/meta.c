// SPDX-License-Identifier: MIT
/*
 * The runtime's own memory: page-state arrays, mirror tables, bitmaps.
 * Large blocks come straight from mmap so they are never managed memory and
 * their pages cost nothing until touched; small ones come from the unmanaged
 * heap that the transparent mode installs (transparent/heap.c), or from
 * calloc when the heap is glibc's. Every byte is counted for
 * hmm_stats.metadata_bytes.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "base.h"

#define META_MMAP_MIN (64 * 1024)

static _Atomic uint64_t bytes;

static void *libc_calloc(size_t size)
{
	return calloc(1, size);
}

static struct {
	void *(*_Atomic calloc_fn)(size_t size);
	void (*_Atomic free_fn)(void *p);
} small = { libc_calloc, free };

void meta_set_allocator(void *(*calloc_fn)(size_t size), void (*free_fn)(void *p))
{
	atomic_store(&small.free_fn, free_fn);
	atomic_store(&small.calloc_fn, calloc_fn);
}

static size_t mmap_len(size_t size)
{
	return ALIGN_UP(size, PAGE_SIZE);
}

void *meta_alloc(size_t size)
{
	void *p;

	if (!size)
		size = 1;
	if (size >= META_MMAP_MIN) {
		p = sys_mmap(NULL, mmap_len(size), PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return NULL;
	} else {
		p = atomic_load_explicit(&small.calloc_fn, memory_order_acquire)(size);
		if (!p)
			return NULL;
	}
	atomic_fetch_add_explicit(&bytes, size, memory_order_relaxed);
	return p;
}

void meta_free(void *p, size_t size)
{
	if (!p)
		return;
	if (!size)
		size = 1;
	atomic_fetch_sub_explicit(&bytes, size, memory_order_relaxed);
	if (size >= META_MMAP_MIN)
		sys_munmap(p, mmap_len(size));
	else
		atomic_load_explicit(&small.free_fn, memory_order_acquire)(p);
}

void *meta_realloc(void *p, size_t old_size, size_t new_size)
{
	void *q;

	if (old_size >= META_MMAP_MIN && new_size >= META_MMAP_MIN) {
		q = sys_mremap(p, mmap_len(old_size), mmap_len(new_size), MREMAP_MAYMOVE, NULL);
		if (q == MAP_FAILED)
			return NULL;
		atomic_fetch_add_explicit(&bytes, new_size - old_size, memory_order_relaxed);
		return q;
	}
	q = meta_alloc(new_size);
	if (!q)
		return NULL;
	if (p)
		memcpy(q, p, MIN(old_size, new_size));
	meta_free(p, old_size);
	return q;
}

uint64_t meta_bytes(void)
{
	return atomic_load_explicit(&bytes, memory_order_relaxed);
}
