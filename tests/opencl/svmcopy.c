// SPDX-License-Identifier: MIT
/*
 * SVM commands on ordinary memory, in order with kernels on one queue: a
 * kernel writes c, clEnqueueSVMMemcpy copies c to d and clEnqueueSVMMemFill
 * refills a without the host waiting in between, a second kernel reads d
 * and a; then a blocking copy of c into e is read at once, with no
 * clFinish; and a copy out of clSVMAlloc'd memory a kernel wrote. The CPU
 * rewrites the inputs each round. Prints sums; they must be the same
 * natively and under uhmm.
 */
#include <string.h>

#include "clprog.h"

static const char *source =
	"__kernel void twice(__global const int *a, __global int *c)\n"
	"{ size_t i = get_global_id(0); c[i] = 2 * a[i]; }\n"
	"__kernel void add(__global const int *d, __global const int *a, __global int *c)\n"
	"{ size_t i = get_global_id(0); c[i] = d[i] + a[i]; }\n";

static long sum_of(const int *v, size_t n)
{
	long s = 0;

	for (size_t i = 0; i < n; i++)
		s += v[i];
	return s;
}

int main(int argc, char **argv)
{
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 0) : (1u << 20), bytes = n * sizeof(int);
	int *a = malloc(bytes), *c = malloc(bytes), *d = malloc(bytes), *e = malloc(bytes);
	int *f = malloc(bytes), seven = 7, ok = 1;
	struct cl cl;
	cl_kernel twice, add;
	int *s;

	if (!a || !c || !d || !e || !f)
		return 1;
	cl_setup(&cl, source);
	twice = cl_kernel_named(&cl, "twice");
	add = cl_kernel_named(&cl, "add");
	s = clSVMAlloc(cl.ctx, CL_MEM_READ_WRITE, bytes, 0);
	if (!s) {
		fprintf(stderr, "clSVMAlloc failed\n");
		return 1;
	}
	for (int round = 0; round < 4; round++) {
		long base = 0, want_c, got_c, got_d, got_e, got_f;
		cl_event copied;

		for (size_t i = 0; i < n; i++)
			a[i] = (int)(i % 1000) + round;
		base = sum_of(a, n);
		memset(d, 0, bytes);
		CL_CHECK(clSetKernelArgSVMPointer(twice, 0, a));
		CL_CHECK(clSetKernelArgSVMPointer(twice, 1, c));
		CL_CHECK(clEnqueueNDRangeKernel(cl.queue, twice, 1, NULL, &n, NULL, 0, NULL, NULL));
		CL_CHECK(clEnqueueSVMMemcpy(cl.queue, CL_FALSE, d, c, bytes, 0, NULL, &copied));
		CL_CHECK(clEnqueueSVMMemFill(cl.queue, a, &seven, sizeof(seven), bytes, 1, &copied,
					     NULL));
		CL_CHECK(clSetKernelArgSVMPointer(add, 0, d));
		CL_CHECK(clSetKernelArgSVMPointer(add, 1, a));
		CL_CHECK(clSetKernelArgSVMPointer(add, 2, c));
		CL_CHECK(clEnqueueNDRangeKernel(cl.queue, add, 1, NULL, &n, NULL, 0, NULL, NULL));
		/* Blocking: e holds c when it returns. */
		CL_CHECK(clEnqueueSVMMemcpy(cl.queue, CL_TRUE, e, c, bytes, 0, NULL, NULL));
		got_e = sum_of(e, n);
		CL_CHECK(clReleaseEvent(copied));

		/* Out of the driver's own SVM memory, written by a kernel. */
		CL_CHECK(clSetKernelArgSVMPointer(twice, 0, e));
		CL_CHECK(clSetKernelArgSVMPointer(twice, 1, s));
		CL_CHECK(clEnqueueNDRangeKernel(cl.queue, twice, 1, NULL, &n, NULL, 0, NULL, NULL));
		CL_CHECK(clEnqueueSVMMemcpy(cl.queue, CL_TRUE, f, s, bytes, 0, NULL, NULL));
		got_f = sum_of(f, n);
		CL_CHECK(clFinish(cl.queue));
		got_c = sum_of(c, n), got_d = sum_of(d, n);
		want_c = 2 * base + 7 * (long)n;
		printf("svmcopy: round %d: c=%ld d=%ld e=%ld f=%ld %s\n", round, got_c, got_d, got_e,
		       got_f,
		       got_c == want_c && got_d == 2 * base && got_e == want_c && got_f == 2 * want_c &&
				       sum_of(a, n) == 7 * (long)n
			       ? "ok"
			       : "WRONG");
		ok &= got_c == want_c && got_d == 2 * base && got_e == want_c && got_f == 2 * want_c;
	}
	clSVMFree(cl.ctx, s);
	clReleaseKernel(twice);
	clReleaseKernel(add);
	cl_teardown(&cl);
	free(a), free(c), free(d), free(e), free(f);
	return ok ? 0 : 1;
}
