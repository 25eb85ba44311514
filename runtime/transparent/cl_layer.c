// SPDX-License-Identifier: MIT
/*
 * The OpenCL layer: ordinary pointers in kernels on any device. ocl-icd
 * loads the libraries named in OPENCL_LAYERS and calls their clInitLayer
 * with the driver's dispatch table; ours registers itself when the process
 * runs under uhmm (cl_layer_register), keeps the driver's table, and hands
 * back one with a few entries of its own. It sees what kernels are given
 * (pointer arguments, buffers, the exec info), every launch, and the points
 * where the host waits for the device.
 *
 * How a device is served depends on what it offers (or UHMM_OPENCL_SVM):
 *   system  the device reads host memory in place (fine-grain system SVM,
 *           or a CPU device: its memory is host memory). Before a launch the
 *           pages a kernel is given come home in batches, so the device
 *           does not fault on them one by one (a GPU cannot wait for the
 *           fault thread at all); pages it reaches through pointers stored
 *           in memory are served as they are touched, where the device can.
 *   buffer  no shared virtual memory. A pointer argument becomes a buffer
 *           holding the allocation it points into, copied in at the launch
 *           and back when the host next waits for the device (clFinish,
 *           clWaitForEvents): only bytes the kernel changed are written
 *           back, so the host's other writes stand. A kernel that follows
 *           pointers stored in memory cannot work this way, and its launch
 *           is refused with a message saying so.
 *   coarse  coarse-grain SVM only: the heap is served from the device's SVM
 *           memory (cl_coarse.c), so pointers, stored ones included, are
 *           the driver's to follow; they are checked, not replaced.
 *
 * cl_complete.c sees the other ways a host learns that kernels ended (event
 * status, callbacks); cl_svm.c serves SVM commands given ordinary memory.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl_layer.h"

#ifndef UHMM_SANITIZED

enum cl_mode { MODE_SYSTEM, MODE_COARSE, MODE_BUFFER };

static const char *const mode_names[] = { "system", "coarse", "buffer" };

/* The driver's entries (or the next layer's), which we call; ours, which the loader calls. */
struct _cl_icd_dispatch cl_driver;
static struct _cl_icd_dispatch ours;

#define MAX_ARGS 64
#define BUCKETS 256

/* What a kernel has been given, as far as memory goes. */
struct kernel_state {
	struct kernel_state *chain;
	cl_kernel kernel;
	const void *svm[MAX_ARGS];      /* pointer arguments, by index */
	struct {                        /* buffer arguments over host memory (USE_HOST_PTR) */
		const void *start;
		size_t len;
	} host_buf[MAX_ARGS];
	bool fine_grain_system;         /* exec info: it may follow any pointer */
	const void **svm_ptrs;          /* exec info: allocations it reaches */
	unsigned nsvm_ptrs;
};

/* A buffer standing in for a pointer argument until the host waits. */
struct stand_in {
	struct stand_in *next;
	cl_command_queue queue;
	cl_event done;
	cl_mem buf;
	char *host;
	size_t len;
	char *snapshot;                 /* the host's bytes at the launch */
	bool read_only;                 /* every kernel given it declares it const */
	bool in_place;                  /* the buffer is the host's memory (shared) */
	bool lease;                     /* no buffer: the shared heap, lent to the device */
};

/* How the layer serves a device, decided at its first launch. */
struct served_device {
	cl_device_id device;
	enum cl_mode mode;
	bool shares_memory;             /* CL_DEVICE_HOST_UNIFIED_MEMORY */
};

static struct {
	pthread_mutex_t lock;           /* all of the below */
	struct kernel_state *buckets[BUCKETS];
	struct served_device modes[16];
	unsigned nmodes;
	struct stand_in *pending;
} layer = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* ---- bookkeeping: layer.lock held ---------------------------------------- */

static struct kernel_state **bucket(cl_kernel k)
{
	return &layer.buckets[((uintptr_t)k >> 4) % BUCKETS];
}

static struct kernel_state *state_of(cl_kernel k, bool create)
{
	struct kernel_state *s;

	for (s = *bucket(k); s; s = s->chain)
		if (s->kernel == k)
			return s;
	if (!create || !(s = meta_alloc(sizeof(*s))))
		return NULL;
	s->kernel = k;
	s->chain = *bucket(k);
	*bucket(k) = s;
	return s;
}

static void state_drop(cl_kernel k)
{
	for (struct kernel_state **p = bucket(k); *p; p = &(*p)->chain) {
		struct kernel_state *s = *p;

		if (s->kernel == k) {
			*p = s->chain;
			meta_free(s->svm_ptrs, s->nsvm_ptrs * sizeof(*s->svm_ptrs));
			meta_free(s, sizeof(*s));
			return;
		}
	}
}

static enum cl_mode mode_from_env(bool *ret_forced)
{
	const char *e = getenv("UHMM_OPENCL_SVM");

	*ret_forced = true;
	if (e && !strcmp(e, "system"))
		return MODE_SYSTEM;
	if (e && !strcmp(e, "coarse"))
		return MODE_COARSE;
	if (e && !strcmp(e, "buffer"))
		return MODE_BUFFER;
	if (e && *e)
		log_warn("UHMM_OPENCL_SVM=%s: expected system, coarse or buffer", e);
	*ret_forced = false;
	return MODE_SYSTEM;
}

/* What the device offers decides, unless UHMM_OPENCL_SVM does. layer.lock held. */
static struct served_device served(cl_device_id d)
{
	cl_device_svm_capabilities svm = 0;
	cl_device_type type = 0;
	cl_bool unified = CL_FALSE;
	enum cl_mode mode;
	bool forced;

	for (unsigned i = 0; i < layer.nmodes; i++)
		if (layer.modes[i].device == d)
			return layer.modes[i];
	mode = mode_from_env(&forced);
	cl_driver.clGetDeviceInfo(d, CL_DEVICE_HOST_UNIFIED_MEMORY, sizeof(unified), &unified, NULL);
	if (!forced) {
		cl_driver.clGetDeviceInfo(d, CL_DEVICE_SVM_CAPABILITIES, sizeof(svm), &svm, NULL);
		cl_driver.clGetDeviceInfo(d, CL_DEVICE_TYPE, sizeof(type), &type, NULL);
		if ((svm & CL_DEVICE_SVM_FINE_GRAIN_SYSTEM) || ((type & CL_DEVICE_TYPE_CPU) && unified))
			mode = MODE_SYSTEM;
		else if (svm & CL_DEVICE_SVM_COARSE_GRAIN_BUFFER)
			mode = MODE_COARSE;
		else
			mode = MODE_BUFFER;
	}
	if (layer.nmodes < ARRAY_SIZE(layer.modes))
		layer.modes[layer.nmodes++] = (struct served_device){ d, mode, unified };
	if (opt.log_level >= LOG_INFO) {
		char name[128] = "?";

		cl_driver.clGetDeviceInfo(d, CL_DEVICE_NAME, sizeof(name), name, NULL);
		cl_driver.clGetDeviceInfo(d, CL_DEVICE_SVM_CAPABILITIES, sizeof(svm), &svm, NULL);
		log_info("opencl: %s (SVM capabilities 0x%llx) served in %s mode", name,
			 (unsigned long long)svm, mode_names[mode]);
	}
	return (struct served_device){ d, mode, unified };
}

static enum cl_mode device_mode(cl_device_id d)
{
	return served(d).mode;
}

/* ---- what a pointer points into ------------------------------------------ */

/*
 * The memory a pointer argument stands for: the heap allocation it starts
 * (or, for small ones, the size class holding it), the driver's SVM
 * allocation holding it, else the rest of its mapping. -ENOENT: no memory
 * there at all.
 */
static int extent_of(const void *p, uintptr_t *ret_start, size_t *ret_len)
{
	struct vma v;

	if (!heap_extent(p, ret_start, ret_len) || !cl_svm_extent(p, ret_start, ret_len))
		return 0;
	if (vma_query((uintptr_t)p, &v))
		return -ENOENT;
	*ret_start = (uintptr_t)p;
	*ret_len = v.end - (uintptr_t)p;
	return 0;
}

/*
 * System mode: what the kernel is given comes home in batches before it
 * runs (nothing to do, and no cost but a look, when it is home already).
 */
static void bring_home_span(uintptr_t start, size_t len)
{
	struct mig_result res;

	if (!rt_hold())
		return;
	mig_home(ALIGN_DOWN(start, PAGE_SIZE), ALIGN_UP(start + len, PAGE_SIZE), NULL, &res);
	rt_leave();
}

static void bring_home(const void *p)
{
	uintptr_t start;
	size_t len;

	if (p && !extent_of(p, &start, &len))
		bring_home_span(start, len);
}

/* And what the program advised ACCESSED_BY: the kernel may reach it through pointers. */
static void bring_home_advised(void)
{
	struct mig_result res;

	if (!rt_hold())
		return;
	mig_home_accessed_by(&res);
	rt_leave();
}

/* ---- buffer mode ------------------------------------------------------------ */

/*
 * Only what the kernel changed goes back, so the host's other writes stand:
 * a page the kernel left alone is not touched (nor dirtied); one the host
 * left alone since the launch takes the kernel's page whole; one both
 * wrote takes the kernel's words where they differ from the launch.
 */
static void write_back(const struct stand_in *s, const char *device)
{
	for (size_t at = 0; at < s->len;) {
		size_t n = MIN(PAGE_SIZE - ((uintptr_t)(s->host + at) & (PAGE_SIZE - 1)), s->len - at);
		const char *dev = device + at, *snap = s->snapshot + at;
		char *host = s->host + at;

		at += n;
		if (!memcmp(dev, snap, n))
			continue;
		if (!memcmp(host, snap, n)) {
			memcpy(host, dev, n);
			continue;
		}
		for (size_t i = 0; i < n; i++)
			if (dev[i] != snap[i])
				host[i] = dev[i];
	}
}

/*
 * One snapshot's memory is kept for the next launch (up to a cap): a
 * program launching the same kernels again finds it touched already.
 * layer.lock held.
 */
#define SNAPSHOT_CACHE_MAX (256ul << 20)

static struct {
	char *mem;
	size_t len;
} spare;

static char *snapshot_alloc(size_t len)
{
	char *p;

	if (spare.mem && spare.len == len) {
		p = spare.mem;
		spare.mem = NULL;
		return p;
	}
	return meta_alloc(len);
}

static void snapshot_free(char *p, size_t len)
{
	if (!p)
		return;
	if (len <= SNAPSHOT_CACHE_MAX && (!spare.mem || spare.len < len)) {
		meta_free(spare.mem, spare.len);
		spare.mem = p;
		spare.len = len;
		return;
	}
	meta_free(p, len);
}

static void free_stand_in(struct stand_in *s)
{
	if (s->done)
		cl_driver.clReleaseEvent(s->done);
	if (s->buf)
		cl_driver.clReleaseMemObject(s->buf);
	cl_driver.clReleaseCommandQueue(s->queue);
	snapshot_free(s->snapshot, s->len);
	meta_free(s, sizeof(*s));
}

#define BOUNCE_SIZE (4ul << 20)

/*
 * Wait for the stand-in's kernel, copy back what it changed, and let it go.
 * The device's bytes come through one bounce buffer a piece at a time:
 * no copy as large as the allocation is ever made for them.
 */
static void settle_one(struct stand_in *s)
{
	static char *bounce;
	bool ok = true;

	cl_driver.clWaitForEvents(1, &s->done);
	if (s->lease) {
		cl_coarse_take_back(s->queue);
		free_stand_in(s);
		return;
	}
	if (s->in_place) {
		/* A map is where the host is promised the kernel's writes; nothing moves. */
		void *at = cl_driver.clEnqueueMapBuffer(s->queue, s->buf, CL_TRUE, CL_MAP_READ, 0,
							s->len, 0, NULL, NULL, NULL);

		if (at)
			cl_driver.clEnqueueUnmapMemObject(s->queue, s->buf, at, 0, NULL, NULL);
		else
			log_err("opencl: cannot map %zu bytes at %p back: the kernel's writes there "
				"may not be visible", s->len, (void *)s->host);
		free_stand_in(s);
		return;
	}
	if (!s->read_only && !bounce)
		bounce = meta_alloc(BOUNCE_SIZE);
	for (size_t at = 0; !s->read_only && ok && at < s->len; at += BOUNCE_SIZE) {
		struct stand_in piece = *s;

		piece.host = s->host + at;
		piece.snapshot = s->snapshot + at;
		piece.len = MIN(BOUNCE_SIZE, s->len - at);
		ok = bounce && cl_driver.clEnqueueReadBuffer(s->queue, s->buf, CL_TRUE, at, piece.len, bounce,
							0, NULL, NULL) == CL_SUCCESS;
		if (ok)
			write_back(&piece, bounce);
	}
	if (!ok)
		log_err("opencl: cannot read back %zu bytes at %p: the kernel's writes there are lost",
			s->len, (void *)s->host);
	free_stand_in(s);
}

/* layer.lock held: copy back what the kernels behind stand-ins wrote. */
static void settle(bool (*which)(const struct stand_in *s, const void *arg), const void *arg)
{
	for (struct stand_in **p = &layer.pending; *p;) {
		struct stand_in *s = *p;

		if (!which(s, arg)) {
			p = &s->next;
			continue;
		}
		*p = s->next;
		settle_one(s);
	}
}

/*
 * layer.lock held. Before a new stand-in for [start, start + len) on q:
 * one still pending for the same allocation on the same (in-order) queue
 * is handed over, so the next kernel sees what the last one wrote without
 * a trip through the host (unless it kept no launch bytes and the next
 * kernel may write); one that overlaps otherwise is settled first.
 */
static struct stand_in *take_over(cl_command_queue q, uintptr_t start, size_t len, bool read_only)
{
	struct stand_in *found = NULL;

	for (struct stand_in **p = &layer.pending; *p;) {
		struct stand_in *s = *p;
		uintptr_t h = (uintptr_t)s->host;

		if (h >= start + len || h + s->len <= start) {
			p = &s->next;
			continue;
		}
		*p = s->next;
		if (!found && h == start && s->len == len && s->queue == q && (!s->read_only || read_only)) {
			found = s; /* keeps its event until the new launch is in */
		} else {
			settle_one(s);
		}
	}
	return found;
}

static bool on_queue(const struct stand_in *s, const void *q)
{
	return s->queue == (cl_command_queue)q;
}

static bool any(const struct stand_in *s, const void *arg)
{
	(void)s, (void)arg;
	return true;
}

/* Its kernel has ended (or failed): reading its buffer back will not wait. */
static bool ended(const struct stand_in *s, const void *arg)
{
	cl_int status = CL_QUEUED;

	(void)arg;
	return cl_driver.clGetEventInfo(s->done, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof(status),
					&status, NULL) == CL_SUCCESS &&
	       status <= CL_COMPLETE;
}

static void settle_now(bool (*which)(const struct stand_in *s, const void *arg), const void *arg)
{
	pthread_mutex_lock(&layer.lock);
	settle(which, arg);
	pthread_mutex_unlock(&layer.lock);
}

void cl_settle_all(void)
{
	settle_now(any, NULL);
}

void cl_settle_queue(cl_command_queue q)
{
	settle_now(on_queue, q);
}

void cl_settle_ended(void)
{
	settle_now(ended, NULL);
}

cl_int cl_blocking_done(cl_command_queue q, cl_bool blocking, cl_int err)
{
	if (blocking && err == CL_SUCCESS)
		cl_settle_queue(q);
	return err;
}

static enum cl_mode mode_of(cl_device_id d)
{
	enum cl_mode mode;

	pthread_mutex_lock(&layer.lock);
	mode = device_mode(d);
	pthread_mutex_unlock(&layer.lock);
	return mode;
}

bool cl_device_coarse(cl_device_id d)
{
	return mode_of(d) == MODE_COARSE;
}

bool cl_queue_reads_host(cl_command_queue q)
{
	cl_device_id d = NULL;

	if (cl_driver.clGetCommandQueueInfo(q, CL_QUEUE_DEVICE, sizeof(d), &d, NULL) != CL_SUCCESS)
		return true; /* not a queue: the driver says so */
	return mode_of(d) == MODE_SYSTEM;
}

bool cl_pending(void)
{
	bool pending;

	pthread_mutex_lock(&layer.lock);
	pending = layer.pending != NULL;
	pthread_mutex_unlock(&layer.lock);
	return pending;
}

/* The kernel declares argument i const: it cannot change what it points to. */
static bool arg_is_const(cl_kernel k, cl_uint i)
{
	cl_kernel_arg_type_qualifier q = 0;

	return cl_driver.clGetKernelArgInfo &&
	       cl_driver.clGetKernelArgInfo(k, i, CL_KERNEL_ARG_TYPE_QUALIFIER, sizeof(q), &q, NULL) ==
		       CL_SUCCESS &&
	       (q & CL_KERNEL_ARG_TYPE_CONST);
}

/*
 * A buffer for pointer argument i of k, holding its allocation; the kernel
 * gets the buffer. The stand-in joins *list once the launch is enqueued.
 */
static cl_int stand_in_for(cl_command_queue q, cl_kernel k, unsigned i, const void *p,
			   bool in_place, struct stand_in **list)
{
	cl_context ctx = NULL;
	struct stand_in *s;
	uintptr_t start;
	size_t len;
	cl_int err;

	if (extent_of(p, &start, &len) || start != (uintptr_t)p) {
		log_err("opencl: kernel argument %u is %p, which is not the start of an allocation: "
			"without shared virtual memory its size cannot be known", i, p);
		return CL_INVALID_ARG_VALUE;
	}
	s = take_over(q, start, len, arg_is_const(k, i));
	if (s) {
		err = cl_driver.clSetKernelArg(k, i, sizeof(s->buf), &s->buf);
		goto out;
	}
	cl_driver.clGetCommandQueueInfo(q, CL_QUEUE_CONTEXT, sizeof(ctx), &ctx, NULL);
	s = meta_alloc(sizeof(*s));
	if (!s || (!in_place && !arg_is_const(k, i) && !(s->snapshot = snapshot_alloc(len)))) {
		meta_free(s, sizeof(*s));
		return CL_OUT_OF_HOST_MEMORY;
	}
	s->host = (char *)p;
	s->len = len;
	s->read_only = arg_is_const(k, i);
	s->in_place = in_place;
	if (in_place) {
		/*
		 * The device computes in host memory: the buffer wraps the
		 * allocation (an integrated GPU's zero-copy idiom), whose pages
		 * come home first as in system mode, and the kernel's writes
		 * land in place beside the host's.
		 */
		bring_home_span(start, len);
		s->buf = cl_driver.clCreateBuffer(ctx, CL_MEM_READ_WRITE | CL_MEM_USE_HOST_PTR, len,
					     (void *)p, &err);
	} else {
		/* What the kernel may change needs the launch's bytes to tell its writes apart. */
		if (!s->read_only)
			memcpy(s->snapshot, p, len);
		s->buf = cl_driver.clCreateBuffer(ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, len,
					     s->read_only ? (void *)p : s->snapshot, &err);
	}
	if (err != CL_SUCCESS) {
		snapshot_free(s->snapshot, len);
		meta_free(s, sizeof(*s));
		return err;
	}
	cl_driver.clRetainCommandQueue(q);
	s->queue = q;
	err = cl_driver.clSetKernelArg(k, i, sizeof(s->buf), &s->buf);
	log_debug("opencl: argument %u (%p, %zu bytes) stands in as buffer %p (%s): %d", i, p, len,
		  (void *)s->buf, in_place ? "in place" : "a copy", err);
out:
	/* On the list even on error: the caller lets go of the whole list. */
	s->next = *list;
	*list = s;
	return err;
}

/*
 * A launch that did not happen: its new stand-ins go; one handed over from
 * an earlier launch still holds that launch's results, which come back now.
 */
static void drop_stand_ins(struct stand_in *list)
{
	while (list) {
		struct stand_in *s = list;

		list = s->next;
		if (s->done)
			settle_one(s); /* handed over: its earlier kernel's writes come back */
		else if (s->lease)
			settle_one(s); /* the heap was handed over: it comes back after that */
		else
			free_stand_in(s);
	}
}

/* ---- the entries we take ------------------------------------------------- */

/*
 * Whether the devices a kernel can run on read host memory in place: only
 * then does the driver see its pointer arguments. A driver without shared
 * virtual memory may refuse the kernel's next launch over a pointer it
 * was given once (NVIDIA's does, even after the argument is set again as
 * a buffer), so it never sees them: the stand-ins are set at the launch.
 */
static bool driver_takes_pointers(cl_kernel k)
{
	cl_context ctx = NULL;
	cl_device_id devices[16];
	size_t size = 0;
	bool system = true;

	if (cl_driver.clGetKernelInfo(k, CL_KERNEL_CONTEXT, sizeof(ctx), &ctx, NULL) != CL_SUCCESS)
		return true;
	if (cl_coarse_context(ctx))
		return true; /* every heap pointer is an SVM pointer there */
	if (cl_driver.clGetContextInfo(ctx, CL_CONTEXT_DEVICES, sizeof(devices), devices,
				       &size) != CL_SUCCESS)
		return true;
	for (size_t i = 0; i < size / sizeof(devices[0]); i++)
		system &= mode_of(devices[i]) == MODE_SYSTEM;
	return system;
}

static cl_int CL_API_CALL set_arg_svm(cl_kernel k, cl_uint i, const void *p)
{
	cl_int err = CL_SUCCESS;

	if (driver_takes_pointers(k) || i >= MAX_ARGS)
		err = cl_driver.clSetKernelArgSVMPointer(k, i, p);
	if (err == CL_SUCCESS && i < MAX_ARGS) {
		struct kernel_state *s;

		pthread_mutex_lock(&layer.lock);
		if ((s = state_of(k, true)))
			s->svm[i] = p;
		pthread_mutex_unlock(&layer.lock);
	}
	return err;
}

/*
 * A buffer argument created over host memory (CL_MEM_USE_HOST_PTR): the
 * device reads that memory, so in system mode it comes home before a launch
 * as pointer arguments do. Only an argument the kernel declares __global or
 * __constant is a buffer; without argument information nothing is assumed.
 */
static bool host_memory_of(cl_kernel k, cl_uint i, size_t size, const void *value,
			   const void **ret_start, size_t *ret_len)
{
	cl_kernel_arg_address_qualifier where = 0;
	cl_mem_flags flags = 0;
	cl_mem m;

	if (size != sizeof(cl_mem) || !value || !(m = *(const cl_mem *)value) ||
	    !cl_driver.clGetKernelArgInfo ||
	    cl_driver.clGetKernelArgInfo(k, i, CL_KERNEL_ARG_ADDRESS_QUALIFIER, sizeof(where), &where,
					 NULL) != CL_SUCCESS ||
	    (where != CL_KERNEL_ARG_ADDRESS_GLOBAL && where != CL_KERNEL_ARG_ADDRESS_CONSTANT))
		return false;
	return cl_driver.clGetMemObjectInfo(m, CL_MEM_FLAGS, sizeof(flags), &flags, NULL) ==
		       CL_SUCCESS &&
	       (flags & CL_MEM_USE_HOST_PTR) &&
	       cl_driver.clGetMemObjectInfo(m, CL_MEM_HOST_PTR, sizeof(*ret_start), ret_start,
					    NULL) == CL_SUCCESS &&
	       cl_driver.clGetMemObjectInfo(m, CL_MEM_SIZE, sizeof(*ret_len), ret_len, NULL) ==
		       CL_SUCCESS &&
	       *ret_start;
}

/* A plain argument replaces a pointer one at the same index. */
static cl_int CL_API_CALL set_arg(cl_kernel k, cl_uint i, size_t size, const void *value)
{
	cl_int err = cl_driver.clSetKernelArg(k, i, size, value);
	struct kernel_state *s;
	const void *start = NULL;
	size_t len = 0;
	bool host;

	if (err != CL_SUCCESS || i >= MAX_ARGS)
		return err;
	host = host_memory_of(k, i, size, value, &start, &len);
	pthread_mutex_lock(&layer.lock);
	s = state_of(k, host);
	if (s) {
		s->svm[i] = NULL;
		s->host_buf[i].start = host ? start : NULL;
		s->host_buf[i].len = host ? len : 0;
	}
	pthread_mutex_unlock(&layer.lock);
	return err;
}

static cl_int CL_API_CALL set_exec_info(cl_kernel k, cl_kernel_exec_info name, size_t size,
					const void *value)
{
	struct kernel_state *s;
	cl_int err;

	/*
	 * In the shared heap's context the device follows stored pointers into
	 * the heap's regions, which each launch names (prepare_coarse); a
	 * coarse-grain driver would refuse fine-grain system SVM.
	 */
	if (name == CL_KERNEL_EXEC_INFO_SVM_FINE_GRAIN_SYSTEM && cl_coarse_kernel(k))
		err = size == sizeof(cl_bool) && value ? CL_SUCCESS : CL_INVALID_VALUE;
	else
		err = cl_driver.clSetKernelExecInfo(k, name, size, value);

	if (err != CL_SUCCESS)
		return err;
	pthread_mutex_lock(&layer.lock);
	s = state_of(k, true);
	if (s && name == CL_KERNEL_EXEC_INFO_SVM_FINE_GRAIN_SYSTEM && size == sizeof(cl_bool))
		s->fine_grain_system = *(const cl_bool *)value;
	if (s && name == CL_KERNEL_EXEC_INFO_SVM_PTRS) {
		unsigned n = (unsigned)(size / sizeof(void *));
		const void **v = meta_alloc(n * sizeof(*v) + 1);

		if (v) {
			memcpy(v, value, n * sizeof(*v));
			meta_free(s->svm_ptrs, s->nsvm_ptrs * sizeof(*s->svm_ptrs));
			s->svm_ptrs = v;
			s->nsvm_ptrs = n;
		}
	}
	pthread_mutex_unlock(&layer.lock);
	return err;
}

static cl_int CL_API_CALL release_kernel(cl_kernel k)
{
	cl_uint refs = 0;

	cl_driver.clGetKernelInfo(k, CL_KERNEL_REFERENCE_COUNT, sizeof(refs), &refs, NULL);
	if (refs == 1) {
		pthread_mutex_lock(&layer.lock);
		state_drop(k);
		pthread_mutex_unlock(&layer.lock);
	}
	return cl_driver.clReleaseKernel(k);
}

static bool in_shared_memory(const void *p)
{
	return cl_coarse_owns(p) || cl_svm_driver_owns(p, 1);
}

static cl_int refuse_outside(cl_kernel k, const char *what, unsigned i, const void *p)
{
	char name[128] = "?";

	cl_driver.clGetKernelInfo(k, CL_KERNEL_FUNCTION_NAME, sizeof(name), name, NULL);
	log_err("opencl: kernel %s: %s %u is %p, outside the device's shared virtual memory "
		"(coarse mode serves the heap from it; this memory was allocated before the layer "
		"set up, or not by malloc): launch refused", name, what, i, p);
	return CL_INVALID_ARG_VALUE;
}

/*
 * layer.lock held. Coarse mode, in the shared heap's context: every pointer
 * the kernel is given must lie in SVM memory; the heap's regions join the
 * allocations the exec info names (the kernel may follow stored pointers
 * into any of them) and go to the device on q. A lease on the pending list
 * brings them back when the host learns the kernel ended.
 */
static cl_int prepare_coarse(cl_command_queue q, cl_kernel k, struct kernel_state *s,
			     struct stand_in **ret_list)
{
	const void *ptrs[MAX_ARGS + 32];
	struct stand_in *lease = NULL;
	unsigned n = 0;
	cl_int err;

	for (unsigned i = 0; s && i < MAX_ARGS; i++)
		if (s->svm[i] && !in_shared_memory(s->svm[i]))
			return refuse_outside(k, "argument", i, s->svm[i]);
	for (unsigned i = 0; s && i < s->nsvm_ptrs; i++) {
		if (s->svm_ptrs[i] && !in_shared_memory(s->svm_ptrs[i]))
			return refuse_outside(k, "exec-info pointer", i, s->svm_ptrs[i]);
		if (n < MAX_ARGS)
			ptrs[n++] = s->svm_ptrs[i];
	}
	n += cl_coarse_regions(ptrs + n, 32);
	err = cl_driver.clSetKernelExecInfo(k, CL_KERNEL_EXEC_INFO_SVM_PTRS, n * sizeof(ptrs[0]),
					    ptrs);
	if (err != CL_SUCCESS)
		return err;
	/* One lease at a time: on another queue, the heap comes back first. */
	for (struct stand_in **p = &layer.pending; *p; p = &(*p)->next) {
		if (!(*p)->lease)
			continue;
		lease = *p;
		*p = lease->next;
		if (lease->queue != q) {
			settle_one(lease);
			lease = NULL;
		}
		break;
	}
	if (!lease && !(lease = meta_alloc(sizeof(*lease))))
		return CL_OUT_OF_HOST_MEMORY;
	if (!lease->queue) {
		lease->lease = true;
		cl_driver.clRetainCommandQueue(q);
		lease->queue = q;
	}
	lease->next = NULL;
	*ret_list = lease;
	return cl_coarse_hand_over(q);
}

/* layer.lock held: the launch's memory made ready for its mode. */
static cl_int prepare(cl_command_queue q, cl_kernel k, struct stand_in **ret_list)
{
	struct kernel_state *s = state_of(k, false);
	struct served_device sv;
	cl_device_id d = NULL;
	enum cl_mode mode;

	*ret_list = NULL;
	cl_driver.clGetCommandQueueInfo(q, CL_QUEUE_DEVICE, sizeof(d), &d, NULL);
	sv = served(d);
	mode = sv.mode;
	log_debug("opencl: launch of kernel %p in %s mode", (void *)k, mode_names[mode]);
	if (mode == MODE_SYSTEM) {
		/* Even a kernel given no pointer may find some in a buffer. */
		bring_home_advised();
		for (unsigned i = 0; s && i < MAX_ARGS; i++) {
			bring_home(s->svm[i]);
			if (s->host_buf[i].start)
				bring_home_span((uintptr_t)s->host_buf[i].start, s->host_buf[i].len);
		}
		for (unsigned i = 0; s && i < s->nsvm_ptrs; i++)
			bring_home(s->svm_ptrs[i]);
		return CL_SUCCESS;
	}
	if (mode == MODE_COARSE && cl_coarse_kernel(k)) {
		cl_int err = prepare_coarse(q, k, s, ret_list);

		if (err != CL_SUCCESS) {
			drop_stand_ins(*ret_list);
			*ret_list = NULL;
		}
		return err;
	}
	if (!s)
		return CL_SUCCESS;
	if (s->fine_grain_system || s->nsvm_ptrs) {
		char name[128] = "?";

		cl_driver.clGetKernelInfo(k, CL_KERNEL_FUNCTION_NAME, sizeof(name), name, NULL);
		log_err("opencl: kernel %s follows pointers stored in memory (its exec info says so), "
			"which this device cannot do without shared virtual memory (%s mode): "
			"launch refused", name, mode_names[mode]);
		return CL_INVALID_OPERATION;
	}
	for (unsigned i = 0; i < MAX_ARGS; i++) {
		cl_int err;

		if (!s->svm[i])
			continue;
		err = stand_in_for(q, k, i, s->svm[i], sv.shares_memory, ret_list);
		if (err != CL_SUCCESS) {
			drop_stand_ins(*ret_list);
			*ret_list = NULL;
			return err;
		}
	}
	return CL_SUCCESS;
}

typedef cl_int (*enqueue_fn)(cl_command_queue q, cl_kernel k, cl_event *ev, const void *arg);

/* Every launch: prepare, enqueue, and for stand-ins remember when to settle. */
static cl_int launch(cl_command_queue q, cl_kernel k, cl_event *user_event, enqueue_fn enqueue,
		     const void *arg)
{
	struct stand_in *list;
	cl_event ev = NULL;
	cl_int err;

	pthread_mutex_lock(&layer.lock);
	err = prepare(q, k, &list);
	if (err != CL_SUCCESS) {
		pthread_mutex_unlock(&layer.lock);
		return err;
	}
	/* Stand-ins stay the kernel's arguments: its next launch sets new ones. */
	err = enqueue(q, k, list ? &ev : user_event, arg);
	if (err != CL_SUCCESS)
		log_debug("opencl: the driver refused a launch of kernel %p: %d", (void *)k, err);
	if (err != CL_SUCCESS) {
		drop_stand_ins(list);
		pthread_mutex_unlock(&layer.lock);
		return err;
	}
	while (list) {
		struct stand_in *s = list;

		list = s->next;
		if (s->done)
			cl_driver.clReleaseEvent(s->done); /* an in-order queue: the new launch ends last */
		cl_driver.clRetainEvent(ev);
		s->done = ev;
		s->next = layer.pending;
		layer.pending = s;
	}
	pthread_mutex_unlock(&layer.lock);
	if (ev) {
		if (user_event)
			*user_event = ev;
		else
			cl_driver.clReleaseEvent(ev);
	}
	return CL_SUCCESS;
}

struct ndrange {
	cl_uint dim;
	const size_t *offset, *global, *local;
	cl_uint nwait;
	const cl_event *wait;
};

static cl_int enqueue_ndrange(cl_command_queue q, cl_kernel k, cl_event *ev, const void *arg)
{
	const struct ndrange *r = arg;

	return cl_driver.clEnqueueNDRangeKernel(q, k, r->dim, r->offset, r->global, r->local, r->nwait,
					   r->wait, ev);
}

static cl_int CL_API_CALL enqueue_ndrange_kernel(cl_command_queue q, cl_kernel k, cl_uint dim,
						  const size_t *offset, const size_t *global,
						  const size_t *local, cl_uint nwait,
						  const cl_event *wait, cl_event *ev)
{
	struct ndrange r = { dim, offset, global, local, nwait, wait };

	return launch(q, k, ev, enqueue_ndrange, &r);
}

static cl_int CL_API_CALL enqueue_task(cl_command_queue q, cl_kernel k, cl_uint nwait,
				       const cl_event *wait, cl_event *ev)
{
	static const size_t one = 1;
	struct ndrange r = { 1, NULL, &one, &one, nwait, wait };

	return launch(q, k, ev, enqueue_ndrange, &r);
}

/* The host waits for the device: what stand-ins hold comes back first. */
static cl_int CL_API_CALL finish(cl_command_queue q)
{
	cl_int err = cl_driver.clFinish(q);

	cl_settle_queue(q);
	return err;
}

static cl_int CL_API_CALL wait_for_events(cl_uint n, const cl_event *events)
{
	cl_int err = cl_driver.clWaitForEvents(n, events);

	/* Which launch an event belongs to is the driver's business: settle all. */
	cl_settle_all();
	return err;
}

/*
 * Blocking commands are waits too: on an in-order queue, the launches before
 * them are done when they return, and a program may read its memory then.
 */
static cl_int CL_API_CALL read_buffer(cl_command_queue q, cl_mem m, cl_bool blocking, size_t off,
				      size_t size, void *ptr, cl_uint nwait, const cl_event *wait,
				      cl_event *ev)
{
	return cl_blocking_done(q, blocking, cl_driver.clEnqueueReadBuffer(q, m, blocking, off, size,
									  ptr, nwait, wait, ev));
}

static void *CL_API_CALL map_buffer(cl_command_queue q, cl_mem m, cl_bool blocking,
				    cl_map_flags flags, size_t off, size_t size, cl_uint nwait,
				    const cl_event *wait, cl_event *ev, cl_int *ret_err)
{
	cl_int err;
	void *p = cl_driver.clEnqueueMapBuffer(q, m, blocking, flags, off, size, nwait, wait, ev, &err);

	err = cl_blocking_done(q, blocking, err);
	if (ret_err)
		*ret_err = err;
	return p;
}


/*
 * Programs are built with their kernels' argument information, so that a
 * const pointer argument is known for what it is (a buffer that never
 * comes back). It adds metadata, and changes nothing the program sees.
 */
static char *with_arg_info(const char *options)
{
	static const char flag[] = "-cl-kernel-arg-info";
	size_t n = options ? strlen(options) : 0;
	char *s;

	if (options && strstr(options, flag))
		return NULL;
	s = meta_alloc(n + sizeof(flag) + 1);
	if (s)
		snprintf(s, n + sizeof(flag) + 1, "%s%s%s", options ? options : "", n ? " " : "", flag);
	return s;
}

static cl_int CL_API_CALL build_program(cl_program p, cl_uint ndev, const cl_device_id *devs,
					const char *options,
					void (CL_CALLBACK *notify)(cl_program, void *), void *data)
{
	char *opts = with_arg_info(options);
	cl_int err = cl_driver.clBuildProgram(p, ndev, devs, opts ? opts : options, notify, data);

	if (opts)
		meta_free(opts, strlen(opts) + 1);
	return err;
}

static cl_int CL_API_CALL compile_program(cl_program p, cl_uint ndev, const cl_device_id *devs,
					  const char *options, cl_uint nheaders,
					  const cl_program *headers, const char **names,
					  void (CL_CALLBACK *notify)(cl_program, void *), void *data)
{
	char *opts = with_arg_info(options);
	cl_int err = cl_driver.clCompileProgram(p, ndev, devs, opts ? opts : options, nheaders, headers,
					   names, notify, data);

	if (opts)
		meta_free(opts, strlen(opts) + 1);
	return err;
}

/*
 * Extension entries come back as ours where we have one of that name (our
 * table's entry: wrapped, cl_wrap.c), else the driver's, wrapped too.
 */
static void *ours_by_name(const char *name, void *theirs)
{
	const struct {
		const char *name;
		void *fn;
	} table[] = {
		{ "clSetKernelArgSVMPointer", (void *)ours.clSetKernelArgSVMPointer },
		{ "clSetKernelExecInfo", (void *)ours.clSetKernelExecInfo },
		{ "clEnqueueNDRangeKernel", (void *)ours.clEnqueueNDRangeKernel },
	};

	for (size_t i = 0; name && theirs && i < ARRAY_SIZE(table); i++)
		if (!strcmp(name, table[i].name))
			return table[i].fn;
	return theirs ? cl_wrap_extension(theirs) : NULL;
}

static void *CL_API_CALL get_extension_address(const char *name)
{
	return ours_by_name(name, cl_driver.clGetExtensionFunctionAddress(name));
}

static void *CL_API_CALL get_extension_address_for_platform(cl_platform_id p, const char *name)
{
	return ours_by_name(name, cl_driver.clGetExtensionFunctionAddressForPlatform(p, name));
}

/* ---- the layer's own entry points ----------------------------------------- */

UHMM_INTERPOSE cl_int clGetLayerInfo(cl_layer_info name, size_t size, void *value,
				     size_t *size_ret)
{
	static const char layer_name[] = "uhmm: ordinary pointers in kernels";
	const void *src;
	size_t n;
	cl_layer_api_version version = CL_LAYER_API_VERSION_100;

	switch (name) {
	case CL_LAYER_API_VERSION:
		src = &version;
		n = sizeof(version);
		break;
	case CL_LAYER_NAME:
		src = layer_name;
		n = sizeof(layer_name);
		break;
	default:
		return CL_INVALID_VALUE;
	}
	if (value && size < n)
		return CL_INVALID_VALUE;
	if (value)
		memcpy(value, src, n);
	if (size_ret)
		*size_ret = n;
	return CL_SUCCESS;
}

UHMM_INTERPOSE cl_int clInitLayer(cl_uint num_entries, const struct _cl_icd_dispatch *target,
				  cl_uint *num_entries_ret,
				  const struct _cl_icd_dispatch **layer_dispatch_ret)
{
	size_t have = num_entries * sizeof(void *);

	if (!target || !num_entries_ret || !layer_dispatch_ret)
		return CL_INVALID_VALUE;
	/* A loader that knows fewer entries than we do: the rest stay NULL. */
	memcpy(&cl_driver, target, MIN(have, sizeof(cl_driver)));
	ours = cl_driver;
	ours.clSetKernelArgSVMPointer = set_arg_svm;
	ours.clSetKernelArg = set_arg;
	ours.clSetKernelExecInfo = set_exec_info;
	ours.clReleaseKernel = release_kernel;
	ours.clEnqueueNDRangeKernel = enqueue_ndrange_kernel;
	ours.clEnqueueTask = enqueue_task;
	ours.clFinish = finish;
	ours.clWaitForEvents = wait_for_events;
	ours.clGetEventInfo = cl_get_event_info;
	ours.clSetEventCallback = cl_set_event_callback;
	ours.clEnqueueReadBuffer = read_buffer;
	ours.clEnqueueMapBuffer = map_buffer;
	ours.clCreateContext = cl_create_context;
	ours.clCreateContextFromType = cl_create_context_from_type;
	ours.clSVMAlloc = cl_svm_alloc;
	ours.clSVMFree = cl_svm_free;
	ours.clEnqueueSVMFree = cl_enqueue_svm_free;
	ours.clEnqueueSVMMemcpy = cl_svm_memcpy;
	ours.clEnqueueSVMMemFill = cl_svm_memfill;
	ours.clEnqueueSVMMap = cl_svm_map;
	ours.clEnqueueSVMUnmap = cl_svm_unmap;
	ours.clEnqueueSVMMigrateMem = cl_svm_migrate;
	ours.clBuildProgram = build_program;
	ours.clCompileProgram = compile_program;
	ours.clGetExtensionFunctionAddress = get_extension_address;
	ours.clGetExtensionFunctionAddressForPlatform = get_extension_address_for_platform;
	*num_entries_ret = (cl_uint)MIN(num_entries, sizeof(ours) / sizeof(void *));
	cl_wrap_table(&ours, *num_entries_ret);
	*layer_dispatch_ret = &ours;
	return CL_SUCCESS;
}

/*
 * Under uhmm: name ourselves last in OPENCL_LAYERS, before the program's
 * first OpenCL call makes the loader read it. ocl-icd wraps each layer it
 * loads around the ones before, so the last is the one the program calls:
 * layers already named sit between us and the driver, and see what the
 * device is given. UHMM_OPENCL_LAYER=0 leaves OpenCL alone.
 */
void cl_layer_register(void)
{
	const char *off = getenv("UHMM_OPENCL_LAYER"), *old = getenv("OPENCL_LAYERS");
	char value[4096];
	Dl_info self;

	if ((off && !strcmp(off, "0")) || !dladdr((void *)clInitLayer, &self) || !self.dli_fname)
		return;
	if (!old || !strstr(old, self.dli_fname)) {
		snprintf(value, sizeof(value), "%s%s%s", old && *old ? old : "",
			 old && *old ? ":" : "", self.dli_fname);
		setenv("OPENCL_LAYERS", value, 1);
	}
	cl_coarse_start();
}

#else

void cl_layer_register(void)
{
}

#endif /* UHMM_SANITIZED */
