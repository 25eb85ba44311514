// SPDX-License-Identifier: MIT
/*
 * SVM commands (clEnqueueSVMMemcpy, MemFill, Map, Unmap, MigrateMem) given
 * ordinary pointers, which a program written for fine-grain system SVM may
 * do. A device served in system mode reads host memory in place, so they go
 * to the driver as they are. Otherwise the driver knows only its own SVM
 * allocations (clSVMAlloc, tracked here) and the buffers standing in for
 * pointer arguments:
 *   - on the driver's SVM memory a command goes to the driver, once every
 *     stand-in is back in host memory (a kernel's writes to that memory
 *     may still be in one);
 *   - on other memory the driver would be handed a pointer it cannot use,
 *     so the command runs on the host instead: after what it waits for and
 *     everything before it on the queue has ended, and every stand-in is
 *     back. Its event, if asked for, is a user event already complete. The
 *     command is synchronous then, whatever its blocking flag says.
 * Map and unmap of ordinary memory have nothing to move: map waits as the
 * command would, unmap and migrate are complete at once.
 */
#include <errno.h>
#include <string.h>

#include "cl_layer.h"

#ifndef UHMM_SANITIZED

/* The driver's SVM allocations, sorted by start. */
static struct {
	pthread_mutex_t lock;
	struct svm_alloc {
		uintptr_t start;
		size_t len;
	} *v;
	size_t n, cap;
} allocs = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* allocs.lock held: the first allocation that ends after addr. */
static size_t alloc_index(uintptr_t addr)
{
	size_t lo = 0, hi = allocs.n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (allocs.v[mid].start + allocs.v[mid].len <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static void track(void *p, size_t len)
{
	size_t i;

	pthread_mutex_lock(&allocs.lock);
	if (allocs.n == allocs.cap) {
		size_t cap = allocs.cap ? allocs.cap * 2 : 64;
		struct svm_alloc *v = meta_realloc(allocs.v, allocs.cap * sizeof(*v), cap * sizeof(*v));

		if (!v) {
			pthread_mutex_unlock(&allocs.lock);
			log_warn_ratelimited("opencl: cannot track an SVM allocation: SVM commands on "
					     "it run on the host");
			return;
		}
		allocs.v = v;
		allocs.cap = cap;
	}
	i = alloc_index((uintptr_t)p);
	memmove(&allocs.v[i + 1], &allocs.v[i], (allocs.n - i) * sizeof(*allocs.v));
	allocs.v[i] = (struct svm_alloc){ (uintptr_t)p, len };
	allocs.n++;
	pthread_mutex_unlock(&allocs.lock);
}

static void untrack(void *p)
{
	size_t i;

	pthread_mutex_lock(&allocs.lock);
	i = alloc_index((uintptr_t)p);
	if (i < allocs.n && allocs.v[i].start == (uintptr_t)p) {
		memmove(&allocs.v[i], &allocs.v[i + 1], (allocs.n - i - 1) * sizeof(*allocs.v));
		allocs.n--;
	}
	pthread_mutex_unlock(&allocs.lock);
}

int cl_svm_extent(const void *p, uintptr_t *ret_start, size_t *ret_len)
{
	uintptr_t a = (uintptr_t)p;
	int err = -ENOENT;
	size_t i;

	pthread_mutex_lock(&allocs.lock);
	i = alloc_index(a);
	if (i < allocs.n && allocs.v[i].start <= a) {
		*ret_start = allocs.v[i].start;
		*ret_len = allocs.v[i].len;
		err = 0;
	}
	pthread_mutex_unlock(&allocs.lock);
	return err;
}

bool cl_svm_driver_owns(const void *p, size_t len)
{
	uintptr_t a = (uintptr_t)p;
	bool owns;
	size_t i;

	pthread_mutex_lock(&allocs.lock);
	i = alloc_index(a);
	owns = i < allocs.n && allocs.v[i].start <= a && len <= allocs.v[i].len - (a - allocs.v[i].start);
	pthread_mutex_unlock(&allocs.lock);
	return owns;
}

void *CL_API_CALL cl_svm_alloc(cl_context ctx, cl_svm_mem_flags flags, size_t size, cl_uint align)
{
	void *p;

	if (cl_coarse_svm_alloc(ctx, size, align, &p))
		return p;
	p = cl_driver.clSVMAlloc(ctx, flags, size, align);

	if (p)
		track(p, size);
	return p;
}

void CL_API_CALL cl_svm_free(cl_context ctx, void *p)
{
	if (cl_coarse_svm_free(ctx, p))
		return;
	if (p)
		untrack(p);
	cl_driver.clSVMFree(ctx, p);
}

/* ---- commands run on the host ---------------------------------------------- */

struct host_op {
	void *dst;
	const void *src;              /* memcpy: the source; fill: the pattern */
	size_t size, pattern_size;    /* pattern_size 0: memcpy; else fill */
};

static void run_op(const struct host_op *op)
{
	if (!op->dst)
		return;
	if (!op->pattern_size) {
		memmove(op->dst, op->src, op->size);
		return;
	}
	for (size_t at = 0; at + op->pattern_size <= op->size; at += op->pattern_size)
		memcpy((char *)op->dst + at, op->src, op->pattern_size);
}

/*
 * The command on the host, in its place in the queue: what it waits for and
 * what was enqueued before it end first, and the stand-ins come back.
 */
static cl_int on_host(cl_command_queue q, const struct host_op *op, cl_uint nwait,
		      const cl_event *wait, cl_event *ev)
{
	cl_context ctx = NULL;
	cl_int err = CL_SUCCESS;

	if ((nwait && !wait) || (!nwait && wait))
		return CL_INVALID_EVENT_WAIT_LIST;
	if (nwait)
		err = cl_driver.clWaitForEvents(nwait, wait);
	if (err == CL_SUCCESS)
		err = cl_driver.clFinish(q);
	if (err != CL_SUCCESS)
		return err;
	cl_settle_all();
	run_op(op);
	if (!ev)
		return CL_SUCCESS;
	err = cl_driver.clGetCommandQueueInfo(q, CL_QUEUE_CONTEXT, sizeof(ctx), &ctx, NULL);
	if (err == CL_SUCCESS)
		*ev = cl_driver.clCreateUserEvent(ctx, &err);
	if (err == CL_SUCCESS)
		err = cl_driver.clSetUserEventStatus(*ev, CL_COMPLETE);
	return err;
}

cl_int CL_API_CALL cl_enqueue_svm_free(cl_command_queue q, cl_uint n, void *ptrs[],
				       void(CL_CALLBACK *fn)(cl_command_queue, cl_uint, void *[],
							     void *),
				       void *data, cl_uint nwait, const cl_event *wait,
				       cl_event *ev)
{
	cl_context ctx = NULL;
	cl_int err;

	cl_driver.clGetCommandQueueInfo(q, CL_QUEUE_CONTEXT, sizeof(ctx), &ctx, NULL);
	if (cl_coarse_context(ctx) && n && ptrs) {
		/* Heap memory: freed on the host, once what comes before has ended. */
		struct host_op nothing = { 0 };

		err = on_host(q, &nothing, nwait, wait, ev);
		if (err == CL_SUCCESS && fn)
			fn(q, n, ptrs, data);
		for (cl_uint i = 0; err == CL_SUCCESS && !fn && i < n; i++)
			cl_coarse_svm_free(ctx, ptrs[i]);
		return err;
	}
	err = cl_driver.clEnqueueSVMFree(q, n, ptrs, fn, data, nwait, wait, ev);
	for (cl_uint i = 0; err == CL_SUCCESS && ptrs && i < n; i++)
		if (ptrs[i])
			untrack(ptrs[i]);
	return err;
}

/*
 * Where a command on [a, a + size) (and [b, b + size)) goes: the driver
 * (true), or the host. Outside system mode, the driver gets only its own
 * SVM memory, and only once the stand-ins are back.
 */
static bool to_driver(cl_command_queue q, const void *a, const void *b, size_t size)
{
	if (cl_queue_reads_host(q) || !size)
		return true; /* and an invalid queue or size is the driver's to report */
	if (!cl_svm_driver_owns(a, size) || (b && !cl_svm_driver_owns(b, size)))
		return false;
	cl_settle_all();
	return true;
}

cl_int CL_API_CALL cl_svm_memcpy(cl_command_queue q, cl_bool blocking, void *dst, const void *src,
				 size_t size, cl_uint nwait, const cl_event *wait, cl_event *ev)
{
	struct host_op op = { dst, src, size, 0 };

	if (!dst || !src)
		return CL_INVALID_VALUE;
	if ((uintptr_t)dst < (uintptr_t)src + size && (uintptr_t)src < (uintptr_t)dst + size)
		return CL_MEM_COPY_OVERLAP;
	if (!to_driver(q, dst, src, size))
		return on_host(q, &op, nwait, wait, ev);
	return cl_blocking_done(q, blocking, cl_driver.clEnqueueSVMMemcpy(q, blocking, dst, src,
									 size, nwait, wait, ev));
}

cl_int CL_API_CALL cl_svm_memfill(cl_command_queue q, void *p, const void *pattern,
				  size_t pattern_size, size_t size, cl_uint nwait,
				  const cl_event *wait, cl_event *ev)
{
	struct host_op op = { p, pattern, size, pattern_size };

	if (!p || !pattern || !pattern_size || (pattern_size & (pattern_size - 1)) ||
	    pattern_size > 128 || size % pattern_size || (uintptr_t)p % pattern_size)
		return CL_INVALID_VALUE;
	if (!to_driver(q, p, NULL, size))
		return on_host(q, &op, nwait, wait, ev);
	return cl_driver.clEnqueueSVMMemFill(q, p, pattern, pattern_size, size, nwait, wait, ev);
}

cl_int CL_API_CALL cl_svm_map(cl_command_queue q, cl_bool blocking, cl_map_flags flags, void *p,
			      size_t size, cl_uint nwait, const cl_event *wait, cl_event *ev)
{
	struct host_op nothing = { 0 };

	if (!p || !size)
		return CL_INVALID_VALUE;
	if (!to_driver(q, p, NULL, size))
		return on_host(q, &nothing, nwait, wait, ev);
	return cl_blocking_done(q, blocking, cl_driver.clEnqueueSVMMap(q, blocking, flags, p, size,
								       nwait, wait, ev));
}

cl_int CL_API_CALL cl_svm_unmap(cl_command_queue q, void *p, cl_uint nwait, const cl_event *wait,
				cl_event *ev)
{
	struct host_op nothing = { 0 };

	if (!p)
		return CL_INVALID_VALUE;
	/* Ordinary memory was never mapped: unmapping gives nothing to the device. */
	if (!cl_queue_reads_host(q) && !cl_svm_driver_owns(p, 1))
		return on_host(q, &nothing, nwait, wait, ev);
	return cl_driver.clEnqueueSVMUnmap(q, p, nwait, wait, ev);
}

/* A hint: on ordinary memory outside system mode, the next launch moves it anyway. */
cl_int CL_API_CALL cl_svm_migrate(cl_command_queue q, cl_uint n, const void **ptrs,
				  const size_t *sizes, cl_mem_migration_flags flags, cl_uint nwait,
				  const cl_event *wait, cl_event *ev)
{
	struct host_op nothing = { 0 };
	bool ordinary = false;

	if (!n || !ptrs)
		return CL_INVALID_VALUE;
	for (cl_uint i = 0; i < n; i++) {
		if (!ptrs[i])
			return CL_INVALID_VALUE;
		ordinary |= !cl_svm_driver_owns(ptrs[i], sizes && sizes[i] ? sizes[i] : 1);
	}
	if (ordinary && !cl_queue_reads_host(q))
		return on_host(q, &nothing, nwait, wait, ev);
	return cl_driver.clEnqueueSVMMigrateMem(q, n, ptrs, sizes, flags, nwait, wait, ev);
}

#endif /* UHMM_SANITIZED */
