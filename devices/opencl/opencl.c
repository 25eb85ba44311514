// SPDX-License-Identifier: MIT
/*
 * opencl: an OpenCL device's memory as a placement, through the ocl-icd
 * loader. The device's memory is a set of OpenCL buffers; slot n is the
 * page at n * 4096 across them. Pages placed here are device-private and
 * reachable only through the device's command queue (a DMA-only device, as
 * a discrete card is): migrations are batches of clEnqueueWriteBuffer and
 * clEnqueueReadBuffer commands, enqueued without blocking and completed
 * together; a CPU access brings the page home through the same queue.
 *
 * The runtime calls us only from its own context (API calls, the device's
 * DMA thread), where allocations come from its unmanaged pool; so do the
 * driver's, on those threads. A CPU device's buffers are made over memory
 * we map ourselves (CL_MEM_USE_HOST_PTR, which PoCL uses in place): a
 * driver that allocates a buffer's storage lazily, on a thread of its own,
 * can then never place our device memory in memory the runtime manages.
 *
 * A CPU device's memory is host memory, and its queue is served by the
 * same worker threads that run its kernels. A kernel thread that touches a
 * page placed on its own device would wait for a queue command that waits
 * for a worker: so by default the transfers of a CPU device are copies to
 * and from the memory under its buffers, done by the thread that asks
 * (still device-private, still DMA-only to the runtime). "queue" forces
 * the command queue, for devices that run no kernels meanwhile (and to
 * test that path where the only device is a CPU).
 *
 *   opencl[:platform=P][,device=D][,queue][,mem=SIZE]
 * P and D are indices, as clinfo -l lists them; UHMM_OPENCL_PLATFORM and
 * UHMM_OPENCL_DEVICE give the defaults.
 *
 * libOpenCL is opened when the first device is, not linked: a program run
 * under uhmm that never uses OpenCL does not load it.
 */
#define CL_TARGET_OPENCL_VERSION 300
#include <CL/cl.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <uhmm/device.h>

#define PAGE HMM_PAGE_SIZE
#define MAX_CHUNKS 64
#define CHUNK_ALIGN (2ul << 20)

struct ocl_device {
	struct hmm_device dev;
	cl_context ctx;
	cl_command_queue queue;
	cl_mem chunks[MAX_CHUNKS];  /* device memory, chunk_bytes each (the last may be short) */
	unsigned nchunks;
	uint64_t chunk_bytes;
	void *backing;              /* CPU devices: the memory under the buffers */
	size_t backing_len;
	bool direct;                /* transfers copy to and from backing */
	pthread_mutex_t atomic_lock;    /* read-modify-write of device words */
};

/* The fill pattern of pages never populated (patterns are 1 to 128 bytes). */
static const cl_uint zero_pattern;

static const struct hmm_device_param ocl_params[] = {
	{ "platform", HMM_PARAM_UINT, "platform index, as clinfo -l lists them (0 when not given)",
	  "UHMM_OPENCL_PLATFORM" },
	{ "device", HMM_PARAM_UINT, "device index within the platform (0 when not given)",
	  "UHMM_OPENCL_DEVICE" },
	{ "queue", HMM_PARAM_FLAG, "a CPU device's transfers through its command queue too", NULL },
	{ NULL, 0, NULL, NULL },
};

static const struct hmm_device_variant ocl_variants[] = {
	{ "opencl", HMM_MEMORY_DMA_ONLY },
	{ "opencl:queue", HMM_MEMORY_DMA_ONLY },
	{ NULL, 0 },
};

static _Atomic int ocl_count;

/* The OpenCL calls we make, from libOpenCL.so.1 (ocl-icd). */
static struct {
	cl_int (*GetPlatformIDs)(cl_uint, cl_platform_id *, cl_uint *);
	cl_int (*GetDeviceIDs)(cl_platform_id, cl_device_type, cl_uint, cl_device_id *, cl_uint *);
	cl_int (*GetDeviceInfo)(cl_device_id, cl_device_info, size_t, void *, size_t *);
	cl_context (*CreateContext)(const cl_context_properties *, cl_uint, const cl_device_id *,
				    void (*)(const char *, const void *, size_t, void *), void *,
				    cl_int *);
	cl_command_queue (*CreateCommandQueueWithProperties)(cl_context, cl_device_id,
							     const cl_queue_properties *, cl_int *);
	cl_mem (*CreateBuffer)(cl_context, cl_mem_flags, size_t, void *, cl_int *);
	cl_int (*EnqueueReadBuffer)(cl_command_queue, cl_mem, cl_bool, size_t, size_t, void *,
				    cl_uint, const cl_event *, cl_event *);
	cl_int (*EnqueueWriteBuffer)(cl_command_queue, cl_mem, cl_bool, size_t, size_t,
				     const void *, cl_uint, const cl_event *, cl_event *);
	cl_int (*EnqueueFillBuffer)(cl_command_queue, cl_mem, const void *, size_t, size_t, size_t,
				    cl_uint, const cl_event *, cl_event *);
	cl_int (*WaitForEvents)(cl_uint, const cl_event *);
	cl_int (*GetEventInfo)(cl_event, cl_event_info, size_t, void *, size_t *);
	cl_int (*ReleaseEvent)(cl_event);
	cl_int (*ReleaseMemObject)(cl_mem);
	cl_int (*ReleaseCommandQueue)(cl_command_queue);
	cl_int (*ReleaseContext)(cl_context);
	cl_int (*Finish)(cl_command_queue);
} cl;

static pthread_once_t cl_once = PTHREAD_ONCE_INIT;
static bool cl_loaded;

/*
 * A driver keeps threads and device state that a child of fork does not
 * inherit (PoCL's worker threads, a GPU's context): once a process has
 * started one, its children cannot use it, and say the device is absent.
 */
static _Atomic bool driver_started, orphaned;

static void after_fork_in_child(void)
{
	if (atomic_load(&driver_started))
		atomic_store(&orphaned, true);
}

static void load_opencl(void)
{
	static const struct {
		const char *name;
		void **fn;
	} syms[] = {
		{ "clGetPlatformIDs", (void **)&cl.GetPlatformIDs },
		{ "clGetDeviceIDs", (void **)&cl.GetDeviceIDs },
		{ "clGetDeviceInfo", (void **)&cl.GetDeviceInfo },
		{ "clCreateContext", (void **)&cl.CreateContext },
		{ "clCreateCommandQueueWithProperties", (void **)&cl.CreateCommandQueueWithProperties },
		{ "clCreateBuffer", (void **)&cl.CreateBuffer },
		{ "clEnqueueReadBuffer", (void **)&cl.EnqueueReadBuffer },
		{ "clEnqueueWriteBuffer", (void **)&cl.EnqueueWriteBuffer },
		{ "clEnqueueFillBuffer", (void **)&cl.EnqueueFillBuffer },
		{ "clWaitForEvents", (void **)&cl.WaitForEvents },
		{ "clGetEventInfo", (void **)&cl.GetEventInfo },
		{ "clReleaseEvent", (void **)&cl.ReleaseEvent },
		{ "clReleaseMemObject", (void **)&cl.ReleaseMemObject },
		{ "clReleaseCommandQueue", (void **)&cl.ReleaseCommandQueue },
		{ "clReleaseContext", (void **)&cl.ReleaseContext },
		{ "clFinish", (void **)&cl.Finish },
	};
	void *lib = dlopen("libOpenCL.so.1", RTLD_NOW | RTLD_LOCAL);

	if (!lib)
		return;
	pthread_atfork(NULL, NULL, after_fork_in_child);
	for (size_t i = 0; i < sizeof(syms) / sizeof(syms[0]); i++)
		if (!(*syms[i].fn = dlsym(lib, syms[i].name)))
			return; /* the handle stays: dlclose of a loader is never safe */
	cl_loaded = true;
}

static bool have_opencl(void)
{
	pthread_once(&cl_once, load_opencl);
	return cl_loaded;
}

static inline struct ocl_device *to_ocl(struct hmm_device *dev)
{
	return container_of(dev, struct ocl_device, dev);
}

/* An ICD to load, without loading it: initializing a driver here would
 * leave its threads in a process that forks test cases afterwards. */
static bool have_icd(const char *dir)
{
	struct dirent *e;
	bool found = false;
	DIR *d = opendir(dir);

	if (!d)
		return false;
	while (!found && (e = readdir(d))) {
		size_t n = strlen(e->d_name);

		found = n > 4 && !strcmp(e->d_name + n - 4, ".icd");
	}
	closedir(d);
	return found;
}

/* The loader and a vendor's ICD are installed; whether a device answers, open says. */
static int ocl_probe(void)
{
	const char *vendors = getenv("OCL_ICD_VENDORS");

	if (!have_opencl())
		return -ENODEV;
	if (vendors && *vendors)
		return access(vendors, R_OK) ? -ENODEV : 0;
	return have_icd("/etc/OpenCL/vendors") ? 0 : -ENODEV;
}

static int errno_of(cl_int err)
{
	switch (err) {
	case CL_SUCCESS:
		return 0;
	case CL_OUT_OF_HOST_MEMORY:
	case CL_OUT_OF_RESOURCES:
	case CL_MEM_OBJECT_ALLOCATION_FAILURE:
		return -ENOMEM;
	case CL_INVALID_VALUE:
	case CL_INVALID_BUFFER_SIZE:
		return -EINVAL;
	case CL_DEVICE_NOT_FOUND:
	case CL_DEVICE_NOT_AVAILABLE:
		return -ENODEV;
	}
	return -EIO;
}

static unsigned index_param(const struct hmm_device_config *cfg, const char *key)
{
	const char *v = hmm_device_config_get(cfg, key);

	return v ? (unsigned)strtoul(v, NULL, 10) : 0;
}

static int find_device(unsigned pi, unsigned di, cl_device_id *ret)
{
	cl_platform_id platforms[16];
	cl_device_id devices[64];
	cl_uint np = 0, nd = 0;

	if (cl.GetPlatformIDs(16, platforms, &np) != CL_SUCCESS || pi >= np)
		return -ENODEV;
	if (cl.GetDeviceIDs(platforms[pi], CL_DEVICE_TYPE_ALL, 64, devices, &nd) != CL_SUCCESS ||
	    di >= nd)
		return -ENODEV;
	*ret = devices[di];
	return 0;
}

/* Device memory: buffers no larger than the device allows, on 2 MiB boundaries. */
static int make_chunks(struct ocl_device *o, cl_device_id id, bool cpu)
{
	cl_ulong max_alloc = 0;
	uint64_t left = o->dev.mem_bytes;
	cl_int err = CL_SUCCESS;

	cl.GetDeviceInfo(id, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof(max_alloc), &max_alloc, NULL);
	o->chunk_bytes = max_alloc >= CHUNK_ALIGN ? max_alloc / CHUNK_ALIGN * CHUNK_ALIGN : PAGE;
	if (o->chunk_bytes > o->dev.mem_bytes)
		o->chunk_bytes = o->dev.mem_bytes;
	if ((o->dev.mem_bytes + o->chunk_bytes - 1) / o->chunk_bytes > MAX_CHUNKS)
		return -EINVAL; /* more memory than this device can give in MAX_CHUNKS buffers */
	if (cpu) {
		/* Raw mmap: memory of the device's, never the application's. */
		o->backing_len = o->dev.mem_bytes;
		o->backing = (void *)syscall(SYS_mmap, NULL, o->backing_len, PROT_READ | PROT_WRITE,
					     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (o->backing == MAP_FAILED) {
			o->backing = NULL;
			return -ENOMEM;
		}
		syscall(SYS_madvise, o->backing, o->backing_len, MADV_DONTFORK);
	}
	while (left && err == CL_SUCCESS) {
		uint64_t len = left < o->chunk_bytes ? left : o->chunk_bytes;
		void *host = o->backing ? (char *)o->backing + (o->dev.mem_bytes - left) : NULL;

		o->chunks[o->nchunks] = cl.CreateBuffer(o->ctx,
						       CL_MEM_READ_WRITE | (host ? CL_MEM_USE_HOST_PTR : 0),
						       len, host, &err);
		if (err == CL_SUCCESS)
			o->nchunks++;
		left -= len;
	}
	return errno_of(err);
}

static void ocl_free(struct ocl_device *o)
{
	for (unsigned i = 0; i < o->nchunks; i++)
		cl.ReleaseMemObject(o->chunks[i]);
	if (o->queue)
		cl.ReleaseCommandQueue(o->queue);
	if (o->ctx)
		cl.ReleaseContext(o->ctx);
	if (o->backing)
		syscall(SYS_munmap, o->backing, o->backing_len);
	pthread_mutex_destroy(&o->atomic_lock);
	free(o);
}

static int ocl_open(const struct hmm_device_config *cfg, struct hmm_device **ret_dev)
{
	cl_device_type type = 0;
	struct ocl_device *o;
	cl_device_id id;
	cl_int cerr;
	int err;

	if (!have_opencl() || atomic_load(&orphaned))
		return -ENODEV;
	atomic_store(&driver_started, true);
	err = find_device(index_param(cfg, "platform"), index_param(cfg, "device"), &id);
	if (err)
		return err;
	o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	pthread_mutex_init(&o->atomic_lock, NULL);
	o->dev.size = sizeof(o->dev);
	snprintf(o->dev.name, sizeof(o->dev.name), "opencl%d", atomic_fetch_add(&ocl_count, 1));
	snprintf(o->dev.kind, sizeof(o->dev.kind), "opencl");
	o->dev.mem_bytes = cfg->mem_bytes;
	o->dev.caps = 0; /* device-private, reachable through the queue only */
	o->ctx = cl.CreateContext(NULL, 1, &id, NULL, NULL, &cerr);
	if (cerr == CL_SUCCESS)
		o->queue = cl.CreateCommandQueueWithProperties(o->ctx, id, NULL, &cerr);
	err = errno_of(cerr);
	cl.GetDeviceInfo(id, CL_DEVICE_TYPE, sizeof(type), &type, NULL);
	if (!err)
		err = make_chunks(o, id, type & CL_DEVICE_TYPE_CPU);
	o->direct = o->backing && !hmm_device_config_has(cfg, "queue");
	if (err) {
		ocl_free(o);
		return err;
	}
	*ret_dev = &o->dev;
	return 0;
}

static void ocl_close(struct hmm_device *dev)
{
	struct ocl_device *o = to_ocl(dev);

	cl.Finish(o->queue);
	ocl_free(o);
}

/* The buffer holding byte offset off of device memory, and the offset in it. */
static cl_mem locate(struct ocl_device *o, uint64_t off, size_t *ret_at, size_t *ret_room)
{
	unsigned i = (unsigned)(off / o->chunk_bytes);

	*ret_at = (size_t)(off % o->chunk_bytes);
	*ret_room = (size_t)(o->chunk_bytes - *ret_at);
	return o->chunks[i];
}

/* One descriptor as commands (a run may cross a buffer boundary); events into ev. */
static cl_int enqueue(struct ocl_device *o, const struct hmm_dma_desc *d, cl_event *ev,
		      unsigned *nev)
{
	uint64_t off = d->slot * PAGE, end = off + (uint64_t)d->npages * PAGE;
	char *host = d->host;
	cl_int err = CL_SUCCESS;

	while (off < end && err == CL_SUCCESS) {
		size_t at, room, len;
		cl_mem m = locate(o, off, &at, &room);

		len = (size_t)(end - off) < room ? (size_t)(end - off) : room;
		if (d->dir == HMM_DMA_TO_HOST)
			err = cl.EnqueueReadBuffer(o->queue, m, CL_FALSE, at, len, host, 0, NULL,
						  &ev[*nev]);
		else if (host)
			err = cl.EnqueueWriteBuffer(o->queue, m, CL_FALSE, at, len, host, 0, NULL,
						   &ev[*nev]);
		else
			err = cl.EnqueueFillBuffer(o->queue, m, &zero_pattern, sizeof(zero_pattern), at,
						   len, 0, NULL, &ev[*nev]);
		if (err == CL_SUCCESS)
			(*nev)++;
		if (host)
			host += len;
		off += len;
	}
	return err;
}

/* A CPU device: the copy itself, on the thread that asks. */
static int copy_direct(struct ocl_device *o, struct hmm_dma_desc *d)
{
	char *mem = (char *)o->backing + d->slot * PAGE;
	size_t len = (size_t)d->npages * PAGE;

	if (d->dir == HMM_DMA_TO_HOST)
		memcpy(d->host, mem, len);
	else if (d->host)
		memcpy(mem, d->host, len);
	else
		memset(mem, 0, len);
	return 0;
}

static bool failed(cl_event *ev, unsigned n)
{
	bool bad = false;

	for (unsigned i = 0; i < n; i++) {
		cl_int st = CL_COMPLETE;

		cl.GetEventInfo(ev[i], CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof(st), &st, NULL);
		bad |= st < 0;
		cl.ReleaseEvent(ev[i]);
	}
	return bad;
}

/*
 * The DMA engine: every descriptor enqueued without blocking, then one
 * wait for all of them; each descriptor's status from its own commands.
 */
static int ocl_dma(struct hmm_device *dev, struct hmm_dma_desc *descs, unsigned n)
{
	struct ocl_device *o = to_ocl(dev);
	int first_err = 0;

	for (unsigned i = 0; i < n;) {
		enum { MAX_EVENTS = 256 };
		cl_event ev[MAX_EVENTS];
		unsigned nev = 0, from = i, per[MAX_EVENTS];

		/* As many descriptors as fit in one wait (a run crosses at most nchunks boundaries). */
		for (; i < n && i - from < MAX_EVENTS && nev + o->nchunks + 1 < MAX_EVENTS; i++) {
			struct hmm_dma_desc *d = &descs[i];
			bool to_dev = d->dir == HMM_DMA_TO_DEVICE;
			unsigned before = nev;

			d->done = 0;
			d->status = 0;
			if (d->slot * PAGE + (uint64_t)d->npages * PAGE > dev->mem_bytes)
				d->status = -EINVAL;
			else if (hmm_fault_should_fail(to_dev ? "dma_to_device" : "dma_to_host"))
				d->status = -EIO;
			else if (o->direct)
				d->status = copy_direct(o, d);
			else if (enqueue(o, d, ev, &nev) != CL_SUCCESS)
				d->status = -EIO;
			per[i - from] = nev - before;
		}
		if (nev)
			cl.WaitForEvents(nev, ev);
		for (unsigned k = from, e = 0; k < i; k++) {
			struct hmm_dma_desc *d = &descs[k];

			if (failed(ev + e, per[k - from]) && !d->status)
				d->status = -EIO;
			e += per[k - from];
			d->done = d->status ? 0 : d->npages;
			if (d->status && !first_err)
				first_err = d->status;
		}
	}
	return first_err;
}

static int ocl_mem_access(struct hmm_device *dev, uint64_t slot, size_t offset, void *buf,
			  size_t len, bool write)
{
	struct ocl_device *o = to_ocl(dev);
	size_t at, room;
	cl_mem m;
	cl_int err;

	if (offset + len > PAGE || (slot + 1) * PAGE > dev->mem_bytes)
		return -EINVAL;
	if (o->direct) {
		char *p = (char *)o->backing + slot * PAGE + offset;

		memcpy(write ? p : buf, write ? buf : p, len);
		return 0;
	}
	m = locate(o, slot * PAGE + offset, &at, &room);
	if (write)
		err = cl.EnqueueWriteBuffer(o->queue, m, CL_TRUE, at, len, buf, 0, NULL, NULL);
	else
		err = cl.EnqueueReadBuffer(o->queue, m, CL_TRUE, at, len, buf, 0, NULL, NULL);
	return err == CL_SUCCESS ? 0 : -EIO;
}

/*
 * Atomic with respect to every other device atomic: nothing else writes a
 * resident page's words while the runtime pins it for this access.
 */
static int ocl_mem_atomic_add(struct hmm_device *dev, uint64_t slot, size_t offset,
			      uint64_t value, uint64_t *ret_old)
{
	struct ocl_device *o = to_ocl(dev);
	uint64_t old, sum;
	int err;

	if (offset & 7 || offset >= PAGE || (slot + 1) * PAGE > dev->mem_bytes)
		return -EINVAL;
	if (o->direct) {
		*ret_old = __atomic_fetch_add((uint64_t *)((char *)o->backing + slot * PAGE + offset),
					      value, __ATOMIC_SEQ_CST);
		return 0;
	}
	pthread_mutex_lock(&o->atomic_lock);
	err = ocl_mem_access(dev, slot, offset, &old, sizeof(old), false);
	if (!err) {
		sum = old + value;
		err = ocl_mem_access(dev, slot, offset, &sum, sizeof(sum), true);
	}
	pthread_mutex_unlock(&o->atomic_lock);
	if (!err)
		*ret_old = old;
	return err;
}

const struct hmm_device_ops hmm_opencl_ops = {
	.size = sizeof(struct hmm_device_ops),
	.version = HMM_DEVICE_OPS_VERSION,
	.kind = "opencl",
	.description = "OpenCL device memory through the ocl-icd loader (DMA-only)",
	.params = ocl_params,
	.probe = ocl_probe,
	.open = ocl_open,
	.close = ocl_close,
	.dma = ocl_dma,
	.mem_access = ocl_mem_access,
	.mem_atomic_add = ocl_mem_atomic_add,
	.place = hmm_device_place_in_place,
	.variants = ocl_variants,
	/* A read on the fault thread would wait on the driver: faults queue. */
	.fetch = hmm_device_fetch_queued,
	.release = hmm_device_release_nop,
	.health = hmm_device_health_whole,
};
