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
 * cl_layer.c).
 *
 * Only the pages the host changed go to the device. On a device whose SVM
 * is host memory (PoCL's, CL_DEVICE_HOST_UNIFIED_MEMORY) map and unmap move
 * nothing, so there is nothing to save. Elsewhere, where the kernel can
 * track writes without faulting us (wtrack.c: asynchronous write-protect,
 * 6.7), a region comes back mapped read-only (CL_MAP_READ: its next unmap
 * copies nothing) and tracked; the next launch copies the runs the host
 * wrote into a staging buffer while the host still holds the region, unmaps
 * it, and sends the runs with clEnqueueSVMMemcpy ahead of the kernel. A new
 * region, or one where tracking is not available, moves whole. What the
 * kernel wrote comes back whole: coarse-grain SVM says nothing about it.
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

struct shared_region {
	uintptr_t start;            /* as clSVMAlloc returned it */
	size_t len;
	uintptr_t pages_start;      /* the whole pages inside, which hold all the heap uses */
	uintptr_t pages_end;
	bool host_owns;             /* mapped for the host */
	bool tracked;               /* registered with wtrack: it can come back read-only */
	bool read_mapped;           /* mapped CL_MAP_READ, writes tracked since */
	char *staging;              /* the changed runs on their way to the device */
	size_t staging_len;
};

static struct {
	cl_device_id device;
	cl_context ctx;
	cl_command_queue queue;     /* for mapping new regions */
	bool track_writes;          /* the device keeps its own copy, and wtrack works */
	pthread_mutex_t lock;       /* the regions */
	struct shared_region r[MAX_SHARED_REGIONS];
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
	shared.r[shared.n++] = (struct shared_region){
		.start = (uintptr_t)p,
		.len = len,
		.pages_start = ALIGN_UP((uintptr_t)p, PAGE_SIZE),
		.pages_end = ALIGN_DOWN((uintptr_t)p + len, PAGE_SIZE),
		.host_owns = true,
	};
	pthread_mutex_unlock(&shared.lock);
	return p;
}

/* The device has memory of its own, and the host's writes can be tracked. */
static bool worth_tracking(cl_device_id d)
{
	cl_bool unified = CL_TRUE;

	if (cl_driver.clGetDeviceInfo(d, CL_DEVICE_HOST_UNIFIED_MEMORY, sizeof(unified), &unified,
				      NULL) != CL_SUCCESS || unified)
		return false;
	if (!wtrack_available()) {
		log_info("opencl: this kernel cannot track writes without faults (userfaultfd "
			 "WP_ASYNC and PAGEMAP_SCAN, 6.7): whole regions of the shared heap move "
			 "at each launch");
		return false;
	}
	return true;
}

/*
 * The staging buffer: for each changed run, in address order, where it goes
 * and its bytes. It lives until the region comes back, after the kernels
 * that followed the copies out of it.
 */
struct staged_run {
	uintptr_t at;
	size_t len;
	char bytes[];
};

struct staging_walk {
	struct shared_region *r;
	size_t used, data;
	bool copy;                  /* second pass: copy, not count */
};

static int stage_run(uintptr_t s, uintptr_t e, void *arg)
{
	struct staging_walk *w = arg;
	size_t need = sizeof(struct staged_run) + (e - s);

	if (w->copy) {
		struct staged_run *run = (struct staged_run *)(w->r->staging + w->used);

		if (w->used + need > w->r->staging_len)
			return -EAGAIN; /* written since counted: the caller starts over */
		run->at = s;
		run->len = e - s;
		memcpy(run->bytes, (void *)s, e - s);
	}
	w->used += need;
	w->data += e - s;
	return 0;
}

/*
 * shared.lock held, the host holding r: copy the runs it changed since the
 * region came back into r->staging. The bytes changed, or -errno.
 */
static long stage_changed(struct shared_region *r)
{
	for (;;) {
		struct staging_walk w = { .r = r };
		int err = wtrack_changed(r->pages_start, r->pages_end, stage_run, &w);

		if (err)
			return err;
		meta_free(r->staging, r->staging_len);
		r->staging = NULL;
		r->staging_len = w.used;
		if (w.used && !(r->staging = meta_alloc(w.used))) {
			r->staging_len = 0;
			return -ENOMEM;
		}
		w = (struct staging_walk){ .r = r, .copy = true };
		err = wtrack_changed(r->pages_start, r->pages_end, stage_run, &w);
		if (err != -EAGAIN) {
			r->staging_len = w.used;
			return err ? err : (long)w.data;
		}
	}
}

/* shared.lock held, r unmapped: the staged runs into the device's copy, on q. */
static cl_int send_staged(struct shared_region *r, cl_command_queue q)
{
	cl_int err = CL_SUCCESS;

	for (size_t at = 0; err == CL_SUCCESS && at < r->staging_len;) {
		struct staged_run *run = (struct staged_run *)(r->staging + at);

		err = cl_driver.clEnqueueSVMMemcpy(q, CL_FALSE, (void *)run->at, run->bytes,
						   run->len, 0, NULL, NULL);
		at += sizeof(*run) + run->len;
	}
	return err;
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
	shared.track_writes = worth_tracking(shared.device);
	log_info("opencl: the heap is served from the device's shared virtual memory (coarse mode%s)",
		 shared.track_writes ? ", only changed pages to the device" : "");
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
		ret[i] = (const void *)shared.r[i].start;
	pthread_mutex_unlock(&shared.lock);
	return n;
}

/* An out-of-order queue runs what follows only after what we enqueued. */
static cl_int order_after(cl_command_queue q)
{
	cl_command_queue_properties props = 0;

	cl_driver.clGetCommandQueueInfo(q, CL_QUEUE_PROPERTIES, sizeof(props), &props, NULL);
	if (!(props & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE))
		return CL_SUCCESS;
	return cl_driver.clEnqueueBarrierWithWaitList(q, 0, NULL, NULL);
}

/* Before a launch on q: the regions the host holds go to the device. */
cl_int cl_coarse_hand_over(cl_command_queue q)
{
	cl_int err = CL_SUCCESS;
	bool sent = false;

	pthread_mutex_lock(&shared.lock);
	for (unsigned i = 0; err == CL_SUCCESS && i < shared.n; i++) {
		struct shared_region *r = &shared.r[i];
		long changed = -1;

		if (!r->host_owns)
			continue;
		/* Staged while the host still holds the region, as an unmap would copy it. */
		if (r->read_mapped && (changed = stage_changed(r)) < 0) {
			log_err("opencl: cannot stage what the host wrote to the shared heap: %s",
				strerror((int)-changed));
			err = CL_OUT_OF_HOST_MEMORY; /* the launch fails; the host keeps the heap */
			break;
		}
		err = cl_driver.clEnqueueSVMUnmap(q, (void *)r->start, 0, NULL, NULL);
		if (err == CL_SUCCESS && changed > 0)
			err = send_staged(r, q);
		if (err != CL_SUCCESS)
			break;
		r->host_owns = false;
		sent = true;
		log_debug("opencl: %s of the shared heap to the device: %zu bytes",
			  changed >= 0 ? "the changed runs" : "a whole region",
			  changed >= 0 ? (size_t)changed : r->len);
	}
	if (err == CL_SUCCESS && sent)
		err = order_after(q);
	pthread_mutex_unlock(&shared.lock);
	return err;
}

/*
 * shared.lock held, r mapped read-only: note the host's writes from here on.
 * false where that fails; the region is then mapped for writing instead.
 */
static bool track_from_here(struct shared_region *r, cl_command_queue q)
{
	int err = 0;

	if (!r->tracked) {
		err = wtrack_register(r->pages_start, r->pages_end - r->pages_start);
		r->tracked = !err;
	}
	if (!err)
		err = wtrack_reset(r->pages_start, r->pages_end - r->pages_start);
	if (!err)
		return true;
	log_warn("opencl: cannot track the host's writes to the shared heap (%s): whole regions "
		 "move at each launch", strerror(-err));
	shared.track_writes = false;
	/* Unseen writes would be lost: map it for writing, which an unmap copies whole. */
	cl_driver.clEnqueueSVMUnmap(q, (void *)r->start, 0, NULL, NULL);
	return false;
}

/* The kernels that had the regions ended (q: the last one's queue): the host takes them back. */
void cl_coarse_take_back(cl_command_queue q)
{
	pthread_mutex_lock(&shared.lock);
	for (unsigned i = 0; i < shared.n; i++) {
		struct shared_region *r = &shared.r[i];
		bool read_only = shared.track_writes;

		if (r->host_owns)
			continue;
		/* The copies out of the staging buffer ran before those kernels. */
		meta_free(r->staging, r->staging_len);
		r->staging = NULL;
		r->staging_len = 0;
again:
		if (cl_driver.clEnqueueSVMMap(q, CL_TRUE, read_only ? CL_MAP_READ
								   : CL_MAP_READ | CL_MAP_WRITE,
					      (void *)r->start, r->len, 0, NULL, NULL) != CL_SUCCESS) {
			log_err("opencl: cannot map %zu bytes of the shared heap back for the host",
				r->len);
			continue;
		}
		if (read_only && !track_from_here(r, q)) {
			read_only = false;
			goto again;
		}
		r->read_mapped = read_only;
		r->host_owns = true;
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
