// SPDX-License-Identifier: MIT
/*
 * A kernel given memory from mmap(2), not from malloc: fine where the
 * device reads host memory (system mode) or gets a buffer copy (buffer
 * mode); in coarse mode it lies outside the device's shared virtual memory,
 * which only the heap is served from, and the launch must be refused with
 * a line naming the pointer, never run on the wrong memory.
 */
#include <sys/mman.h>

#include "clprog.h"

static const char *source =
	"__kernel void twice(__global int *v) { size_t i = get_global_id(0); v[i] *= 2; }\n";

int main(int argc, char **argv)
{
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 0) : (2u << 20), bytes = n * sizeof(int);
	int *v = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	long sum = 0, want = 0;
	struct cl cl;
	cl_kernel twice;

	if (v == MAP_FAILED)
		return 1;
	cl_setup(&cl, source);
	twice = cl_kernel_named(&cl, "twice");
	for (size_t i = 0; i < n; i++) {
		v[i] = (int)(i % 1234);
		want += 2 * (long)(i % 1234);
	}
	CL_CHECK(clSetKernelArgSVMPointer(twice, 0, v));
	CL_CHECK(clEnqueueNDRangeKernel(cl.queue, twice, 1, NULL, &n, NULL, 0, NULL, NULL));
	CL_CHECK(clFinish(cl.queue));
	for (size_t i = 0; i < n; i++)
		sum += v[i];
	printf("outside: n=%zu sum=%ld %s\n", n, sum, sum == want ? "ok" : "WRONG");
	clReleaseKernel(twice);
	cl_teardown(&cl);
	munmap(v, bytes);
	return sum == want ? 0 : 1;
}
