// SPDX-License-Identifier: MIT
/*
 * A test layer that gives PoCL's coarse-grain SVM the behaviour of a
 * discrete GPU's, so that coarse mode's ownership transfers are tested
 * where CI runs. PoCL's CPU device reads SVM memory in place, so any
 * sequence of map and unmap gives right results there; a discrete device
 * keeps its own copy, which only unmap (host to device) and map (device to
 * host) bring in line. Here every SVM allocation gets such a copy:
 *   - clEnqueueSVMUnmap copies what the host was allowed to write into the
 *     device copy; clEnqueueSVMMap copies the device copy out (but for
 *     CL_MAP_WRITE_INVALIDATE_REGION). The device copy starts as garbage.
 *   - a launch runs on the device copies (they are swapped in around the
 *     kernel, which runs to its end), and is refused while any SVM memory
 *     is mapped for the host;
 *   - while nothing of an allocation is mapped, the host cannot touch it
 *     (PROT_NONE): an access is reported and the process exits;
 *   - clEnqueueSVMMemcpy into or out of SVM memory reaches the device copy;
 *   - the device reports memory of its own (CL_DEVICE_HOST_UNIFIED_MEMORY
 *     false), and counts the bytes it receives from the host
 *     (discrete_bytes_to_device(), for tests that check what moves).
 * So a transfer left out shows as a wrong result, a refused launch or a
 * crash with a line saying which. It stays out of the way (passes every
 * call through) in a process not running uhmm, so the same program also
 * runs natively for comparison.
 *
 * Loaded after uhmm's layer (OPENCL_LAYERS), between it and the driver.
 */
#define CL_TARGET_OPENCL_VERSION 300
#include <CL/cl_layer.h>
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MAX_ALLOCS 64
#define MAX_MAPS 16
#define PAGE 4096ul

struct alloc {
	char *host;
	char *dev;                      /* the device's copy */
	size_t len;
	struct {
		char *at;
		size_t len;
		bool write;
	} maps[MAX_MAPS];
	unsigned nmaps;
};

static struct _cl_icd_dispatch next, ours;
static bool active;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct alloc allocs[MAX_ALLOCS];
static unsigned nallocs;
static _Atomic unsigned long long to_device; /* bytes, by unmap and memcpy */

__attribute__((visibility("default"))) unsigned long long discrete_bytes_to_device(void)
{
	return to_device;
}

static void die(const char *what, const void *p)
{
	fprintf(stderr, "discrete: %s (%p)\n", what, p);
	fflush(stderr);
	_exit(97);
}

/* The pages wholly inside an allocation: the host's access to them follows its mappings. */
static void protect(struct alloc *a, bool host_may)
{
	uintptr_t s = ((uintptr_t)a->host + PAGE - 1) & ~(PAGE - 1);
	uintptr_t e = ((uintptr_t)a->host + a->len) & ~(PAGE - 1);

	if (e > s && mprotect((void *)s, e - s, host_may ? PROT_READ | PROT_WRITE : PROT_NONE))
		die("mprotect failed", a->host);
}

static struct alloc *find(const void *p, size_t len)
{
	for (unsigned i = 0; i < nallocs; i++)
		if ((const char *)p >= allocs[i].host &&
		    (const char *)p + len <= allocs[i].host + allocs[i].len)
			return &allocs[i];
	return NULL;
}

static void on_segv(int sig, siginfo_t *si, void *uc)
{
	(void)sig, (void)uc;
	pthread_mutex_lock(&lock);
	if (find(si->si_addr, 1))
		die("the host touched SVM memory the device owns (not mapped)", si->si_addr);
	pthread_mutex_unlock(&lock);
	signal(SIGSEGV, SIG_DFL); /* not ours: crash as it would have */
}

static void *CL_API_CALL svm_alloc(cl_context ctx, cl_svm_mem_flags flags, size_t size,
				   cl_uint align)
{
	void *p = next.clSVMAlloc(ctx, flags, size, align);
	struct alloc *a;

	if (!p || !active)
		return p;
	pthread_mutex_lock(&lock);
	if (nallocs == MAX_ALLOCS)
		die("too many SVM allocations", p);
	a = &allocs[nallocs++];
	*a = (struct alloc){ .host = p, .len = size, .dev = malloc(size) };
	if (!a->dev)
		die("no memory for a device copy", p);
	memset(a->dev, 0xa5, size); /* device memory starts as garbage */
	protect(a, false);
	pthread_mutex_unlock(&lock);
	return p;
}

static void CL_API_CALL svm_free(cl_context ctx, void *p)
{
	struct alloc *a;

	pthread_mutex_lock(&lock);
	if (active && (a = find(p, 1))) {
		protect(a, true);
		free(a->dev);
		*a = allocs[--nallocs];
	}
	pthread_mutex_unlock(&lock);
	next.clSVMFree(ctx, p);
}

/* A command done here, synchronously: what came before it ends first. */
static cl_int done(cl_command_queue q, cl_uint nwait, const cl_event *wait, cl_event *ev)
{
	cl_context ctx;
	cl_int err = nwait ? next.clWaitForEvents(nwait, wait) : CL_SUCCESS;

	if (err == CL_SUCCESS)
		err = next.clFinish(q);
	if (err == CL_SUCCESS && ev) {
		next.clGetCommandQueueInfo(q, CL_QUEUE_CONTEXT, sizeof(ctx), &ctx, NULL);
		*ev = next.clCreateUserEvent(ctx, &err);
		if (err == CL_SUCCESS)
			err = next.clSetUserEventStatus(*ev, CL_COMPLETE);
	}
	return err;
}

static cl_int CL_API_CALL svm_map(cl_command_queue q, cl_bool blocking, cl_map_flags flags,
				  void *p, size_t size, cl_uint nwait, const cl_event *wait,
				  cl_event *ev)
{
	struct alloc *a;
	cl_int err;

	pthread_mutex_lock(&lock);
	a = active ? find(p, size) : NULL;
	pthread_mutex_unlock(&lock);
	if (!a)
		return next.clEnqueueSVMMap(q, blocking, flags, p, size, nwait, wait, ev);
	err = done(q, nwait, wait, ev);
	if (err != CL_SUCCESS)
		return err;
	pthread_mutex_lock(&lock);
	if (a->nmaps == MAX_MAPS)
		die("too many mappings", p);
	protect(a, true);
	if (!(flags & CL_MAP_WRITE_INVALIDATE_REGION))
		memcpy(p, a->dev + ((char *)p - a->host), size);
	a->maps[a->nmaps].at = p;
	a->maps[a->nmaps].len = size;
	a->maps[a->nmaps].write = flags & (CL_MAP_WRITE | CL_MAP_WRITE_INVALIDATE_REGION);
	a->nmaps++;
	pthread_mutex_unlock(&lock);
	return CL_SUCCESS;
}

static cl_int CL_API_CALL svm_unmap(cl_command_queue q, void *p, cl_uint nwait,
				    const cl_event *wait, cl_event *ev)
{
	struct alloc *a;
	unsigned i;
	cl_int err;

	pthread_mutex_lock(&lock);
	a = active ? find(p, 1) : NULL;
	pthread_mutex_unlock(&lock);
	if (!a)
		return next.clEnqueueSVMUnmap(q, p, nwait, wait, ev);
	err = done(q, nwait, wait, ev);
	if (err != CL_SUCCESS)
		return err;
	pthread_mutex_lock(&lock);
	for (i = 0; i < a->nmaps && a->maps[i].at != p; i++)
		;
	if (i == a->nmaps)
		die("unmap of SVM memory that is not mapped", p);
	if (a->maps[i].write) {
		memcpy(a->dev + ((char *)p - a->host), p, a->maps[i].len);
		to_device += a->maps[i].len;
	}
	a->maps[i] = a->maps[--a->nmaps];
	if (!a->nmaps)
		protect(a, false);
	pthread_mutex_unlock(&lock);
	return CL_SUCCESS;
}

/* The kernel runs on the device copies, to its end. */
static cl_int CL_API_CALL launch(cl_command_queue q, cl_kernel k, cl_uint dim, const size_t *off,
				 const size_t *global, const size_t *local, cl_uint nwait,
				 const cl_event *wait, cl_event *ev)
{
	char *saved[MAX_ALLOCS];
	cl_event mine;
	cl_int err;

	if (!active)
		return next.clEnqueueNDRangeKernel(q, k, dim, off, global, local, nwait, wait, ev);
	err = done(q, nwait, wait, NULL);
	if (err != CL_SUCCESS)
		return err;
	pthread_mutex_lock(&lock);
	for (unsigned i = 0; i < nallocs; i++) {
		struct alloc *a = &allocs[i];

		if (a->nmaps)
			die("a kernel launched while SVM memory is mapped for the host", a->host);
		saved[i] = malloc(a->len);
		if (!saved[i])
			die("no memory to swap a device copy in", a->host);
		protect(a, true);
		memcpy(saved[i], a->host, a->len);
		memcpy(a->host, a->dev, a->len);
	}
	err = next.clEnqueueNDRangeKernel(q, k, dim, off, global, local, 0, NULL, &mine);
	if (err == CL_SUCCESS)
		err = next.clWaitForEvents(1, &mine);
	for (unsigned i = 0; i < nallocs; i++) {
		struct alloc *a = &allocs[i];

		memcpy(a->dev, a->host, a->len);
		memcpy(a->host, saved[i], a->len);
		free(saved[i]);
		protect(a, false);
	}
	pthread_mutex_unlock(&lock);
	if (err == CL_SUCCESS && ev)
		*ev = mine;
	else if (err == CL_SUCCESS)
		next.clReleaseEvent(mine);
	return err;
}

/* A copy into or out of SVM memory reaches the device's copy, not the host's. */
static cl_int CL_API_CALL svm_memcpy(cl_command_queue q, cl_bool blocking, void *dst,
				     const void *src, size_t size, cl_uint nwait,
				     const cl_event *wait, cl_event *ev)
{
	struct alloc *to, *from;
	cl_int err;

	pthread_mutex_lock(&lock);
	to = active ? find(dst, size) : NULL;
	from = active ? find(src, size) : NULL;
	pthread_mutex_unlock(&lock);
	if (!to && !from)
		return next.clEnqueueSVMMemcpy(q, blocking, dst, src, size, nwait, wait, ev);
	err = done(q, nwait, wait, ev);
	if (err != CL_SUCCESS)
		return err;
	pthread_mutex_lock(&lock);
	memmove(to ? to->dev + ((char *)dst - to->host) : (char *)dst,
		from ? from->dev + ((const char *)src - from->host) : (const char *)src, size);
	if (to && !from)
		to_device += size;
	pthread_mutex_unlock(&lock);
	return CL_SUCCESS;
}

/* A discrete device's memory is its own. */
static cl_int CL_API_CALL device_info(cl_device_id d, cl_device_info name, size_t size,
				      void *value, size_t *size_ret)
{
	cl_bool unified = CL_FALSE;

	if (!active || name != CL_DEVICE_HOST_UNIFIED_MEMORY)
		return next.clGetDeviceInfo(d, name, size, value, size_ret);
	if (value && size < sizeof(unified))
		return CL_INVALID_VALUE;
	if (value)
		memcpy(value, &unified, sizeof(unified));
	if (size_ret)
		*size_ret = sizeof(unified);
	return CL_SUCCESS;
}

cl_int clGetLayerInfo(cl_layer_info name, size_t size, void *value, size_t *size_ret)
{
	static const char layer_name[] = "uhmm tests: discrete coarse-grain SVM";
	cl_layer_api_version version = CL_LAYER_API_VERSION_100;
	const void *src = name == CL_LAYER_API_VERSION ? (const void *)&version : layer_name;
	size_t n = name == CL_LAYER_API_VERSION ? sizeof(version) : sizeof(layer_name);

	if (name != CL_LAYER_API_VERSION && name != CL_LAYER_NAME)
		return CL_INVALID_VALUE;
	if (value && size < n)
		return CL_INVALID_VALUE;
	if (value)
		memcpy(value, src, n);
	if (size_ret)
		*size_ret = n;
	return CL_SUCCESS;
}

cl_int clInitLayer(cl_uint num_entries, const struct _cl_icd_dispatch *target,
		   cl_uint *num_entries_ret, const struct _cl_icd_dispatch **layer_dispatch_ret)
{
	size_t have = num_entries * sizeof(void *);
	struct sigaction sa = { .sa_sigaction = on_segv, .sa_flags = SA_SIGINFO };

	memcpy(&next, target, have < sizeof(next) ? have : sizeof(next));
	ours = next;
	ours.clSVMAlloc = svm_alloc;
	ours.clSVMFree = svm_free;
	ours.clEnqueueSVMMap = svm_map;
	ours.clEnqueueSVMUnmap = svm_unmap;
	ours.clEnqueueSVMMemcpy = svm_memcpy;
	ours.clEnqueueNDRangeKernel = launch;
	ours.clGetDeviceInfo = device_info;
	/* Only under uhmm; natively the program runs as it is. */
	active = dlsym(RTLD_DEFAULT, "hmm_init") != NULL;
	if (active)
		sigaction(SIGSEGV, &sa, NULL);
	*num_entries_ret = num_entries < sizeof(ours) / sizeof(void *) ? num_entries
								      : sizeof(ours) / sizeof(void *);
	*layer_dispatch_ret = &ours;
	return CL_SUCCESS;
}
