// SPDX-License-Identifier: MIT
/*
 * The host learns that a kernel ended without clFinish: from a callback set
 * on its event (CL_COMPLETE) that reads the results right there, by polling
 * the event's status, and from a callback on a marker enqueued after it.
 * The kernels get malloc'd pointers; the CPU rewrites the inputs between
 * rounds. An extension entry (clIcdGetPlatformIDsKHR, where the driver
 * has it) is called through the pointer the loader hands out. Prints the
 * sums; they must be the same natively and under uhmm.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "clprog.h"

static const char *source =
	"__kernel void add(__global const int *a, __global const int *b, __global int *c)\n"
	"{ size_t i = get_global_id(0); c[i] = a[i] + b[i]; }\n";

static size_t n;
static int *a, *b, *c;

struct seen {
	atomic_int done;
	long sum;
};

static long sum_of(const int *v)
{
	long s = 0;

	for (size_t i = 0; i < n; i++)
		s += v[i];
	return s;
}

/* Reads what the kernel wrote from inside the callback, as programs do. */
static void CL_CALLBACK on_complete(cl_event ev, cl_int status, void *arg)
{
	struct seen *seen = arg;

	(void)ev;
	seen->sum = status == CL_COMPLETE ? sum_of(c) : -1;
	atomic_store(&seen->done, 1);
}

static void wait_for(struct seen *seen, const char *how)
{
	struct timespec tick = { 0, 1000000 };

	for (int i = 0; i < 60000 && !atomic_load(&seen->done); i++)
		nanosleep(&tick, NULL);
	if (!atomic_load(&seen->done)) {
		fprintf(stderr, "events: %s: the callback never came\n", how);
		exit(1);
	}
}

typedef cl_int(CL_API_CALL *icd_platforms_fn)(cl_uint, cl_platform_id *, cl_uint *);

/* An extension entry, called through the pointer the loader hands out. */
static void extension_entry(struct cl *cl)
{
	icd_platforms_fn fn = (icd_platforms_fn)clGetExtensionFunctionAddressForPlatform(
		cl->platform, "clIcdGetPlatformIDsKHR");
	cl_uint n = 0;

	if (!fn)
		return;
	CL_CHECK(fn(0, NULL, &n));
	printf("events: extension entry called: %u platform(s)\n", n);
}

static void launch(struct cl *cl, cl_kernel add, cl_event *ev)
{
	CL_CHECK(clSetKernelArgSVMPointer(add, 0, a));
	CL_CHECK(clSetKernelArgSVMPointer(add, 1, b));
	CL_CHECK(clSetKernelArgSVMPointer(add, 2, c));
	CL_CHECK(clEnqueueNDRangeKernel(cl->queue, add, 1, NULL, &n, NULL, 0, NULL, ev));
	CL_CHECK(clFlush(cl->queue));
}

int main(int argc, char **argv)
{
	struct cl cl;
	cl_kernel add;
	bool ok = true;

	n = argc > 1 ? strtoul(argv[1], NULL, 0) : (1u << 20);
	a = malloc(n * sizeof(int)), b = malloc(n * sizeof(int)), c = malloc(n * sizeof(int));
	if (!a || !b || !c)
		return 1;
	cl_setup(&cl, source);
	add = cl_kernel_named(&cl, "add");
	extension_entry(&cl);
	for (int round = 0; round < 6; round++) {
		struct seen seen = { 0 };
		const char *how = round % 3 == 0 ? "callback" : round % 3 == 1 ? "polling" : "marker";
		cl_event ev, marker;
		long want;

		for (size_t i = 0; i < n; i++) {
			a[i] = (int)(i % 1000) + round;
			b[i] = (int)(i % 7) * (round + 1);
		}
		want = sum_of(a) + sum_of(b);
		memset(c, 0, n * sizeof(int));
		if (round % 3 == 0) {
			launch(&cl, add, &ev);
			CL_CHECK(clSetEventCallback(ev, CL_COMPLETE, on_complete, &seen));
			wait_for(&seen, how);
		} else if (round % 3 == 1) {
			cl_int status = CL_QUEUED;

			launch(&cl, add, &ev);
			while (status > CL_COMPLETE)
				CL_CHECK(clGetEventInfo(ev, CL_EVENT_COMMAND_EXECUTION_STATUS,
							sizeof(status), &status, NULL));
			seen.sum = status == CL_COMPLETE ? sum_of(c) : -1;
		} else {
			launch(&cl, add, NULL);
			CL_CHECK(clEnqueueMarkerWithWaitList(cl.queue, 0, NULL, &marker));
			CL_CHECK(clSetEventCallback(marker, CL_COMPLETE, on_complete, &seen));
			CL_CHECK(clFlush(cl.queue));
			wait_for(&seen, how);
			ev = marker;
		}
		printf("events: round %d (%s): sum=%ld %s\n", round, how, seen.sum,
		       seen.sum == want ? "ok" : "WRONG");
		ok &= seen.sum == want;
		CL_CHECK(clReleaseEvent(ev));
	}
	CL_CHECK(clFinish(cl.queue));
	clReleaseKernel(add);
	cl_teardown(&cl);
	free(a), free(b), free(c);
	return ok ? 0 : 1;
}
