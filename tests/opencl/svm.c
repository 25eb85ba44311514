// SPDX-License-Identifier: MIT
/*
 * Coarse-grain SVM used the way programs written for fine-grain SVM use it:
 * clSVMAlloc'd arrays written and read by the host with no map or unmap,
 * kernels on two queues taking turns, and, where the program runs under
 * uhmm, an hmm_advise prefetch of the arrays before each launch (found
 * with dlsym, so the program needs nothing of uhmm's to run natively).
 * Prints a checksum; the output must be the same natively and under uhmm.
 */
#include <dlfcn.h>
#include <string.h>

#include "clprog.h"

static const char *source =
	"__kernel void scale(__global int *v, int by) { size_t i = get_global_id(0); v[i] *= by; }\n"
	"__kernel void shift(__global int *v, __global const int *w)\n"
	"{ size_t i = get_global_id(0); v[i] += w[i]; }\n";

#define HMM_ADVISE_PREFETCH 7   /* uhmm.h's value; this program does not include it */

int main(int argc, char **argv)
{
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 0) : (1u << 20);
	int (*advise)(void *, size_t, int, void *) =
		(int (*)(void *, size_t, int, void *))dlsym(RTLD_DEFAULT, "hmm_advise");
	cl_command_queue q2;
	struct cl cl;
	cl_kernel scale, shift;
	cl_int err;
	long sum = 0, want = 0;
	int *v, *w;

	cl_setup(&cl, source);
	q2 = clCreateCommandQueueWithProperties(cl.ctx, cl.device, NULL, &err);
	CL_CHECK(err);
	v = clSVMAlloc(cl.ctx, CL_MEM_READ_WRITE, n * sizeof(int), 0);
	w = clSVMAlloc(cl.ctx, CL_MEM_READ_WRITE, n * sizeof(int), 0);
	if (!v || !w) {
		fprintf(stderr, "clSVMAlloc failed\n");
		return 1;
	}
	scale = cl_kernel_named(&cl, "scale");
	shift = cl_kernel_named(&cl, "shift");
	for (int round = 0; round < 6; round++) {
		int by = 1 + round % 3;
		cl_command_queue q = round % 2 ? q2 : cl.queue;

		/* The host writes and reads SVM memory directly: no map, no unmap. */
		for (size_t i = 0; i < n; i++) {
			v[i] = (int)(i % 977) + round;
			w[i] = (int)(i % 13);
		}
		if (advise) {
			advise(v, n * sizeof(int), HMM_ADVISE_PREFETCH, NULL);
			advise(w, n * sizeof(int), HMM_ADVISE_PREFETCH, NULL);
		}
		CL_CHECK(clSetKernelArgSVMPointer(scale, 0, v));
		CL_CHECK(clSetKernelArg(scale, 1, sizeof(by), &by));
		CL_CHECK(clEnqueueNDRangeKernel(q, scale, 1, NULL, &n, NULL, 0, NULL, NULL));
		CL_CHECK(clSetKernelArgSVMPointer(shift, 0, v));
		CL_CHECK(clSetKernelArgSVMPointer(shift, 1, w));
		CL_CHECK(clEnqueueNDRangeKernel(q, shift, 1, NULL, &n, NULL, 0, NULL, NULL));
		CL_CHECK(clFinish(q));
		for (size_t i = 0; i < n; i++) {
			sum += v[i];
			want += ((long)(i % 977) + round) * by + (long)(i % 13);
		}
	}
	printf("svm: n=%zu sum=%ld %s\n", n, sum, sum == want ? "ok" : "WRONG");
	clSVMFree(cl.ctx, v);
	clSVMFree(cl.ctx, w);
	clReleaseKernel(scale);
	clReleaseKernel(shift);
	clReleaseCommandQueue(q2);
	cl_teardown(&cl);
	return sum == want ? 0 : 1;
}
