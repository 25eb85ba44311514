// SPDX-License-Identifier: MIT
/*
 * The runtime's own memory: page-state arrays, mirror tables, bitmaps.
 * Large blocks come straight from mmap so they are never managed memory and
 * their pages cost nothing until touched; small ones come from the unmanaged
 * heap (heap.c), or from calloc when the heap is glibc's. Every byte is
 * counted for hmm_stats.metadata_bytes.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

#define META_MMAP_MIN (64 * 1024)

static _Atomic uint64_t bytes;

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
		p = heap_meta_calloc(size);
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
		heap_meta_free(p);
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
