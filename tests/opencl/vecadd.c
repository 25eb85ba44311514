// SPDX-License-Identifier: MIT
/*
 * Vector add and a reduction on malloc'd arrays passed to kernels as
 * ordinary pointers (clSetKernelArgSVMPointer), launched many times on the
 * same memory with CPU writes between launches. Prints a checksum; the
 * result must be the same natively and under uhmm.
 */
#include <stdint.h>
#include <string.h>

#include "clprog.h"

static const char *source =
	"__kernel void add(__global const int *a, __global const int *b, __global int *c)\n"
	"{ size_t i = get_global_id(0); c[i] = a[i] + b[i]; }\n"
	"__kernel void sum(__global const int *c, __global long *part, int chunk)\n"
	"{ size_t g = get_global_id(0); long s = 0;\n"
	"  for (int i = 0; i < chunk; i++) s += c[g * chunk + i];\n"
	"  part[g] = s; }\n";

int main(int argc, char **argv)
{
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 0) : (4u << 20), chunk = 1024;
	size_t groups = n / chunk;
	int *a = malloc(n * sizeof(int)), *b = malloc(n * sizeof(int)), *c = malloc(n * sizeof(int));
	long *part = malloc(groups * sizeof(long));
	long total = 0, want = 0;
	struct cl cl;
	cl_kernel add, sum;

	if (!a || !b || !c || !part)
		return 1;
	cl_setup(&cl, source);
	add = cl_kernel_named(&cl, "add");
	sum = cl_kernel_named(&cl, "sum");
	for (int round = 0; round < 8; round++) {
		int chunk_arg = (int)chunk;

		/* The CPU writes between launches. */
		for (size_t i = 0; i < n; i++) {
			a[i] = (int)(i % 1000) + round;
			b[i] = (int)(i % 7) * round;
		}
		CL_CHECK(clSetKernelArgSVMPointer(add, 0, a));
		CL_CHECK(clSetKernelArgSVMPointer(add, 1, b));
		CL_CHECK(clSetKernelArgSVMPointer(add, 2, c));
		CL_CHECK(clEnqueueNDRangeKernel(cl.queue, add, 1, NULL, &n, NULL, 0, NULL, NULL));
		CL_CHECK(clSetKernelArgSVMPointer(sum, 0, c));
		CL_CHECK(clSetKernelArgSVMPointer(sum, 1, part));
		CL_CHECK(clSetKernelArg(sum, 2, sizeof(chunk_arg), &chunk_arg));
		CL_CHECK(clEnqueueNDRangeKernel(cl.queue, sum, 1, NULL, &groups, NULL, 0, NULL, NULL));
		CL_CHECK(clFinish(cl.queue));
		for (size_t g = 0; g < groups; g++)
			total += part[g];
		for (size_t i = 0; i < groups * chunk; i++)
			want += (long)(i % 1000) + round + (long)(i % 7) * round;
	}
	printf("vecadd: n=%zu total=%ld %s\n", n, total, total == want ? "ok" : "WRONG");
	clReleaseKernel(add);
	clReleaseKernel(sum);
	cl_teardown(&cl);
	free(a), free(b), free(c), free(part);
	return total == want ? 0 : 1;
}
