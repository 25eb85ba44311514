// SPDX-License-Identifier: MIT
/*
 * Coarse mode: a device with coarse-grain SVM only can follow a pointer
 * only into its SVM allocations. So, as GMAC's shared region did, the
 * program's heap is served from the device's SVM memory: at start, in a
 * process linked with OpenCL, the layer opens the device, and from then on
 * malloc carves the program's allocations out of large clSVMAlloc'd
 * regions (heap_serve_from). Every heap pointer, and every pointer stored
 * in heap memory, is then an SVM pointer the device can follow: lists,
 * trees and records work.
 *
 * The program asks for a context of its own; for that device it gets the
 * layer's (retained), since SVM memory belongs to one context. Its
 * clSVMAlloc calls are served from the same heap, so coarse-grain SVM used
 * without map and unmap is right too.
 *
 * Ownership: coarse-grain SVM belongs to the host while mapped and to the
 * device while not. The regions are mapped for the host when they are
 * provided; a launch unmaps them (on its own queue, ahead of the kernel)
 * and they are mapped back when the host learns the kernel ended, as
 * buffer mode's stand-ins come back (a lease on the pending list,
 * cl_layer.c). Whole regions move, not only the pages that changed: on a
 * device whose SVM is host memory (PoCL) that costs nothing; elsewhere it
 * is the next step.
 *
 * A pointer outside the device's SVM memory (allocated before the layer
 * set up, on the stack, from mmap) cannot be followed: the launch is
 * refused with a line naming it (cl_layer.c).
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cl_layer.h"

#ifndef UHMM_SANITIZED

#define MAX_SHARED_REGIONS 32

static struct {
	cl_device_id device;
	cl_context ctx;
	cl_command_queue queue;     /* for mapping new regions */
	pthread_mutex_t lock;       /* host_owns */
	uintptr_t start[MAX_SHARED_REGIONS];
	size_t len[MAX_SHARED_REGIONS];
	bool host_owns[MAX_SHARED_REGIONS];
	unsigned n;
} shared = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* A new region for the heap: SVM memory of the shared context, the host's to use. */
static void *provide(size_t len, void *arg)
{
	void *p;

	(void)arg;
	if (shared.n == MAX_SHARED_REGIONS)
		return NULL;
	p = cl_driver.clSVMAlloc(shared.ctx, CL_MEM_READ_WRITE, len, 0);
	if (!p)
		return NULL;
	/* Nothing in it yet: the host takes it without a copy. */
	if (cl_driver.clEnqueueSVMMap(shared.queue, CL_TRUE, CL_MAP_WRITE_INVALIDATE_REGION, p, len,
				      0, NULL, NULL) != CL_SUCCESS) {
		cl_driver.clSVMFree(shared.ctx, p);
		return NULL;
	}
	pthread_mutex_lock(&shared.lock);
	shared.start[shared.n] = (uintptr_t)p;
	shared.len[shared.n] = len;
	shared.host_owns[shared.n] = true;
	shared.n++;
	pthread_mutex_unlock(&shared.lock);
	return p;
}

static unsigned env_index(const char *name)
{
	const char *e = getenv(name);

	return e && *e ? (unsigned)strtoul(e, NULL, 10) : 0;
}

/* The device the backend would open (UHMM_OPENCL_PLATFORM, _DEVICE), if coarse. */
static cl_device_id coarse_device(void)
{
	cl_platform_id platforms[16];
	cl_device_id devices[16];
	cl_uint np = 0, nd = 0;
	unsigned p = env_index("UHMM_OPENCL_PLATFORM"), d = env_index("UHMM_OPENCL_DEVICE");

	if (cl_driver.clGetPlatformIDs(16, platforms, &np) != CL_SUCCESS || p >= np ||
	    cl_driver.clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, 16, devices, &nd) !=
		    CL_SUCCESS ||
	    d >= nd)
		return NULL;
	return cl_device_coarse(devices[d]) ? devices[d] : NULL;
}

static uint64_t heap_region_size(void)
{
	const char *e = getenv("UHMM_OPENCL_SVM_HEAP");
	uint64_t size = 1ull << 30, max = 0;

	if (e && *e && parse_size(e, &size))
		log_warn("UHMM_OPENCL_SVM_HEAP=%s: not a size; using 1G", e);
	cl_driver.clGetDeviceInfo(shared.device, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof(max), &max,
				  NULL);
	return ALIGN_UP(max ? MIN(size, max) : size, PMD_SIZE);
}

void cl_coarse_start(void)
{
	void *lib = dlopen("libOpenCL.so.1", RTLD_NOW | RTLD_NOLOAD);
	cl_int (*get_platforms)(cl_uint, cl_platform_id *, cl_uint *);
	cl_platform_id any;
	cl_uint n = 0;
	cl_int err;

	const char *forced = getenv("UHMM_OPENCL_SVM");

	/*
	 * Only a program linked with OpenCL, and only where coarse mode may
	 * apply: the others never pay for the driver's start before main.
	 */
	if (!lib)
		return;
	if (forced && *forced && strcmp(forced, "coarse")) {
		dlclose(lib);
		return;
	}
	rt_self.meta_only++; /* the driver's memory and threads are its own, not the program's */
	get_platforms = (cl_int(*)(cl_uint, cl_platform_id *, cl_uint *))dlsym(lib, "clGetPlatformIDs");
	/* The loader starts here, and calls our clInitLayer. */
	if (!get_platforms || get_platforms(1, &any, &n) != CL_SUCCESS || !cl_driver.clGetDeviceIDs ||
	    !(shared.device = coarse_device()))
		goto out;
	shared.ctx = cl_driver.clCreateContext(NULL, 1, &shared.device, NULL, NULL, &err);
	if (err == CL_SUCCESS)
		shared.queue = cl_driver.clCreateCommandQueueWithProperties(shared.ctx, shared.device,
									    NULL, &err);
	if (err == CL_SUCCESS)
		err = heap_serve_from(provide, NULL, heap_region_size()) ? CL_OUT_OF_RESOURCES : 0;
	if (err != CL_SUCCESS) {
		log_warn("opencl: cannot serve the heap from the device's shared virtual memory "
			 "(%d): pointers stored in memory will not work there", err);
		if (shared.queue)
			cl_driver.clReleaseCommandQueue(shared.queue);
		if (shared.ctx)
			cl_driver.clReleaseContext(shared.ctx);
		shared.ctx = NULL, shared.queue = NULL, shared.device = NULL;
		goto out;
	}
	log_info("opencl: the heap is served from the device's shared virtual memory (coarse mode)");
out:
	rt_self.meta_only--;
	dlclose(lib);
}

bool cl_coarse_context(cl_context ctx)
{
	return ctx && ctx == shared.ctx;
}

bool cl_coarse_kernel(cl_kernel k)
{
	cl_context ctx = NULL;

	return shared.ctx &&
	       cl_driver.clGetKernelInfo(k, CL_KERNEL_CONTEXT, sizeof(ctx), &ctx, NULL) == CL_SUCCESS &&
	       ctx == shared.ctx;
}

bool cl_coarse_owns(const void *p)
{
	uintptr_t start;
	size_t len;

	return shared.ctx && !heap_shared_region(p, &start, &len);
}

unsigned cl_coarse_regions(const void **ret, unsigned max)
{
	unsigned n;

	pthread_mutex_lock(&shared.lock);
	n = MIN(shared.n, max);
	for (unsigned i = 0; i < n; i++)
		ret[i] = (const void *)shared.start[i];
	pthread_mutex_unlock(&shared.lock);
	return n;
}

/* Before a launch on q: the regions the host holds go to the device. */
cl_int cl_coarse_hand_over(cl_command_queue q)
{
	cl_int err = CL_SUCCESS;

	pthread_mutex_lock(&shared.lock);
	for (unsigned i = 0; err == CL_SUCCESS && i < shared.n; i++) {
		if (!shared.host_owns[i])
			continue;
		err = cl_driver.clEnqueueSVMUnmap(q, (void *)shared.start[i], 0, NULL, NULL);
		if (err == CL_SUCCESS)
			shared.host_owns[i] = false;
	}
	pthread_mutex_unlock(&shared.lock);
	return err;
}

/* The kernels that had the regions ended (q: the last one's queue): the host takes them back. */
void cl_coarse_take_back(cl_command_queue q)
{
	pthread_mutex_lock(&shared.lock);
	for (unsigned i = 0; i < shared.n; i++) {
		if (shared.host_owns[i])
			continue;
		if (cl_driver.clEnqueueSVMMap(q, CL_TRUE, CL_MAP_READ | CL_MAP_WRITE,
					      (void *)shared.start[i], shared.len[i], 0, NULL,
					      NULL) != CL_SUCCESS) {
			log_err("opencl: cannot map %zu bytes of the shared heap back for the host",
				shared.len[i]);
			continue;
		}
		shared.host_owns[i] = true;
	}
	pthread_mutex_unlock(&shared.lock);
}

/* ---- the program's contexts and SVM allocations ---------------------------- */

/* A context of just the device the heap lives on is the layer's own. */
cl_context CL_API_CALL cl_create_context(const cl_context_properties *props, cl_uint n,
					 const cl_device_id *devices,
					 void(CL_CALLBACK *notify)(const char *, const void *,
								   size_t, void *),
					 void *data, cl_int *ret_err)
{
	if (shared.ctx && n == 1 && devices && devices[0] == shared.device) {
		if (notify)
			log_debug("opencl: the shared context has no room for the program's notify "
				  "callback");
		cl_driver.clRetainContext(shared.ctx);
		if (ret_err)
			*ret_err = CL_SUCCESS;
		return shared.ctx;
	}
	return cl_driver.clCreateContext(props, n, devices, notify, data, ret_err);
}

cl_context CL_API_CALL cl_create_context_from_type(const cl_context_properties *props,
						   cl_device_type type,
						   void(CL_CALLBACK *notify)(const char *,
									     const void *, size_t,
									     void *),
						   void *data, cl_int *ret_err)
{
	cl_context ctx = cl_driver.clCreateContextFromType(props, type, notify, data, ret_err);
	cl_device_id devices[2];
	size_t size = 0;

	if (ctx && shared.ctx &&
	    cl_driver.clGetContextInfo(ctx, CL_CONTEXT_DEVICES, sizeof(devices), devices, &size) ==
		    CL_SUCCESS &&
	    size == sizeof(devices[0]) && devices[0] == shared.device) {
		cl_driver.clReleaseContext(ctx);
		cl_driver.clRetainContext(shared.ctx);
		return shared.ctx;
	}
	return ctx;
}

/* In the shared context, SVM allocations are heap memory like the rest. */
bool cl_coarse_svm_alloc(cl_context ctx, size_t size, cl_uint align, void **ret)
{
	if (!cl_coarse_context(ctx))
		return false;
	/* The program's memory, though it asked through the driver (cl_wrap.c). */
	*ret = size ? heap_program_memalign(MAX(align, 128u), size) : NULL;
	return true;
}

bool cl_coarse_svm_free(cl_context ctx, void *p)
{
	if (!cl_coarse_context(ctx))
		return false;
	free(p);
	return true;
}

#endif /* UHMM_SANITIZED */
