// SPDX-License-Identifier: MIT
/*
 * System mode fetches what a kernel will read before the launch, in
 * batches, even when the kernel is not handed it as a pointer: a list the
 * program advised ACCESSED_BY and walks through a head kept in a buffer,
 * and an array behind a CL_MEM_USE_HOST_PTR buffer. Both are sent to the
 * device (hmm_migrate) first; the launch must bring them home without the
 * kernel faulting on a single page (the runtime's cpu_faults stay put),
 * and the sums must be right. Runs under uhmm-run --device opencl.
 */
#include <string.h>
#include <uhmm.h>

#include "clprog.h"

struct node {
	long value;
	struct node *next;
};

static const char *source =
	"struct node { long value; __global struct node *next; };\n"
	"__kernel void walk(__global struct node *__global *head, __global long *out)\n"
	"{ long s = 0; for (__global struct node *p = *head; p; p = p->next) s += p->value;\n"
	"  *out = s; }\n"
	"__kernel void sum(__global const long *v, int n, __global long *out)\n"
	"{ long s = 0; for (int i = 0; i < n; i++) s += v[i]; *out = s; }\n";

static uint64_t cpu_faults(void)
{
	struct hmm_stats st = { .size = sizeof(st) };

	return hmm_stats_get(&st) ? 0 : st.cpu_faults;
}

static int failed;

/* One work-item of k, to its end; the CPU faults the runtime served meanwhile. */
static uint64_t launch_counting_faults(struct cl *cl, cl_kernel k)
{
	size_t one = 1;
	uint64_t before = cpu_faults();

	CL_CHECK(clEnqueueNDRangeKernel(cl->queue, k, 1, NULL, &one, NULL, 0, NULL, NULL));
	CL_CHECK(clFinish(cl->queue));
	return cpu_faults() - before;
}

static void expect(const char *what, long got, long want, uint64_t faults)
{
	printf("prefetch: %s: sum=%ld (want %ld), %llu CPU faults during the launch\n", what, got,
	       want, (unsigned long long)faults);
	if (got != want || faults) {
		printf("prefetch: %s: FAILED\n", what);
		failed = 1;
	}
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 65536;
	struct hmm_device *dev = hmm_device_get(0);
	struct node *pool = malloc((size_t)n * sizeof(*pool));
	long *values = malloc((size_t)n * sizeof(*values)), *out = malloc(sizeof(*out)), want = 0;
	size_t pages;
	cl_kernel walk, sum;
	cl_mem head, data;
	uint64_t faults;
	struct cl cl;
	cl_int err;

	if (!dev || !pool || !values || !out) {
		fprintf(stderr, "prefetch: run me under uhmm-run --device ...\n");
		return 1;
	}
	cl_setup(&cl, source);
	walk = cl_kernel_named(&cl, "walk");
	sum = cl_kernel_named(&cl, "sum");
	for (int i = 0; i < n; i++) {
		pool[i] = (struct node){ i % 1000, i + 1 < n ? &pool[i + 1] : NULL };
		values[i] = i % 777;
		want += i % 1000;
	}
	*out = 0; /* touched: the kernel's write does not fault it in */

	/* A list reached only through a pointer stored in a buffer. */
	head = clCreateBuffer(cl.ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof(pool), &pool,
			      &err);
	CL_CHECK(err);
	CL_CHECK(hmm_advise(pool, (size_t)n * sizeof(*pool), HMM_ADVISE_ACCESSED_BY, dev));
	CL_CHECK(hmm_migrate(pool, (size_t)n * sizeof(*pool), dev, 0, &pages));
	CL_CHECK(clSetKernelExecInfo(walk, CL_KERNEL_EXEC_INFO_SVM_FINE_GRAIN_SYSTEM,
				     sizeof(cl_bool), &(cl_bool){ CL_TRUE }));
	CL_CHECK(clSetKernelArg(walk, 0, sizeof(head), &head));
	CL_CHECK(clSetKernelArgSVMPointer(walk, 1, out));
	faults = launch_counting_faults(&cl, walk);
	expect("list advised ACCESSED_BY", *out, want, faults);

	/* An array behind a buffer created over it. */
	want = 0;
	for (int i = 0; i < n; i++)
		want += i % 777;
	data = clCreateBuffer(cl.ctx, CL_MEM_READ_ONLY | CL_MEM_USE_HOST_PTR,
			      (size_t)n * sizeof(*values), values, &err);
	CL_CHECK(err);
	CL_CHECK(hmm_migrate(values, (size_t)n * sizeof(*values), dev, 0, &pages));
	CL_CHECK(clSetKernelArg(sum, 0, sizeof(data), &data));
	CL_CHECK(clSetKernelArg(sum, 1, sizeof(n), &n));
	CL_CHECK(clSetKernelArgSVMPointer(sum, 2, out));
	faults = launch_counting_faults(&cl, sum);
	expect("array behind CL_MEM_USE_HOST_PTR", *out, want, faults);

	clReleaseMemObject(head);
	clReleaseMemObject(data);
	clReleaseKernel(walk);
	clReleaseKernel(sum);
	cl_teardown(&cl);
	return failed;
}
