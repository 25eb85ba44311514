// SPDX-License-Identifier: MIT
/*
 * uhmm-bench-opencl: the OpenCL workloads uhmm-bench times, run by it
 * natively and under uhmm-run. It links nothing of uhmm's: it is an
 * ordinary OpenCL program. Each mode prints one number on stdout.
 *
 *   saxpy-buffers BYTES   y = a * x + y over BYTES of data (x and y half
 *                         each), the way OpenCL programs do it without
 *                         shared memory: buffers written, the kernel,
 *                         y read back. Prints seconds, best of a few runs.
 *   saxpy-pointers BYTES  the same computation on malloc'd x and y handed
 *                         to the kernel as plain pointers. Seconds.
 *   launch COUNT          an empty kernel with four pointer arguments,
 *                         COUNT launches. Prints ns per launch.
 */
#define CL_TARGET_OPENCL_VERSION 300
#include <CL/cl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *source =
	"__kernel void saxpy(float a, __global const float *x, __global float *y)\n"
	"{ size_t i = get_global_id(0); y[i] = a * x[i] + y[i]; }\n"
	"__kernel void empty(__global int *a, __global int *b, __global int *c, __global int *d)\n"
	"{ }\n";

static cl_context ctx;
static cl_command_queue queue;
static cl_program program;
static cl_device_id device;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void check(cl_int err, const char *what)
{
	if (err != CL_SUCCESS) {
		fprintf(stderr, "uhmm-bench-opencl: %s: %d\n", what, err);
		exit(1);
	}
}

static void setup(void)
{
	cl_platform_id platform;
	cl_int err;

	check(clGetPlatformIDs(1, &platform, NULL), "clGetPlatformIDs");
	check(clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, 1, &device, NULL), "clGetDeviceIDs");
	ctx = clCreateContext(NULL, 1, &device, NULL, NULL, &err);
	check(err, "clCreateContext");
	queue = clCreateCommandQueueWithProperties(ctx, device, NULL, &err);
	check(err, "clCreateCommandQueue");
	program = clCreateProgramWithSource(ctx, 1, &source, NULL, &err);
	check(err, "clCreateProgramWithSource");
	check(clBuildProgram(program, 1, &device, NULL, NULL, NULL), "clBuildProgram");
}

static void fill(float *x, float *y, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		x[i] = (float)(i % 100);
		y[i] = 1.0f;
	}
}

static double saxpy_buffers(size_t n)
{
	float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float)), a = 2.0f;
	cl_kernel k = clCreateKernel(program, "saxpy", NULL);
	cl_mem bx, by;
	cl_int err;
	double t0, t;

	fill(x, y, n);
	t0 = now();
	bx = clCreateBuffer(ctx, CL_MEM_READ_ONLY, n * sizeof(float), NULL, &err);
	check(err, "clCreateBuffer");
	by = clCreateBuffer(ctx, CL_MEM_READ_WRITE, n * sizeof(float), NULL, &err);
	check(err, "clCreateBuffer");
	check(clEnqueueWriteBuffer(queue, bx, CL_FALSE, 0, n * sizeof(float), x, 0, NULL, NULL), "write");
	check(clEnqueueWriteBuffer(queue, by, CL_FALSE, 0, n * sizeof(float), y, 0, NULL, NULL), "write");
	clSetKernelArg(k, 0, sizeof(a), &a);
	clSetKernelArg(k, 1, sizeof(bx), &bx);
	clSetKernelArg(k, 2, sizeof(by), &by);
	check(clEnqueueNDRangeKernel(queue, k, 1, NULL, &n, NULL, 0, NULL, NULL), "launch");
	check(clEnqueueReadBuffer(queue, by, CL_TRUE, 0, n * sizeof(float), y, 0, NULL, NULL), "read");
	t = now() - t0;
	if (y[n - 1] != 2.0f * (float)((n - 1) % 100) + 1.0f)
		check(-9999, "wrong result");
	clReleaseMemObject(bx);
	clReleaseMemObject(by);
	clReleaseKernel(k);
	free(x);
	free(y);
	return t;
}

static double saxpy_pointers(size_t n)
{
	float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float)), a = 2.0f;
	cl_kernel k = clCreateKernel(program, "saxpy", NULL);
	double t0, t;

	fill(x, y, n);
	t0 = now();
	clSetKernelArg(k, 0, sizeof(a), &a);
	check(clSetKernelArgSVMPointer(k, 1, x), "clSetKernelArgSVMPointer");
	check(clSetKernelArgSVMPointer(k, 2, y), "clSetKernelArgSVMPointer");
	check(clEnqueueNDRangeKernel(queue, k, 1, NULL, &n, NULL, 0, NULL, NULL), "launch");
	check(clFinish(queue), "clFinish");
	t = now() - t0;
	if (y[n - 1] != 2.0f * (float)((n - 1) % 100) + 1.0f)
		check(-9999, "wrong result");
	clReleaseKernel(k);
	free(x);
	free(y);
	return t;
}

static double launches(size_t count)
{
	int *p[4];
	cl_kernel k = clCreateKernel(program, "empty", NULL);
	size_t one = 1;
	double t0;

	for (int i = 0; i < 4; i++) {
		p[i] = calloc(1024, sizeof(int));
		check(clSetKernelArgSVMPointer(k, (cl_uint)i, p[i]), "clSetKernelArgSVMPointer");
	}
	check(clEnqueueNDRangeKernel(queue, k, 1, NULL, &one, NULL, 0, NULL, NULL), "warm-up");
	check(clFinish(queue), "clFinish");
	t0 = now();
	for (size_t i = 0; i < count; i++) {
		check(clEnqueueNDRangeKernel(queue, k, 1, NULL, &one, NULL, 0, NULL, NULL), "launch");
		check(clFinish(queue), "clFinish");
	}
	return (now() - t0) / (double)count * 1e9;
}

int main(int argc, char **argv)
{
	size_t arg = argc > 2 ? strtoull(argv[2], NULL, 0) : 0;
	double best = 0;

	if (argc != 3 || !arg) {
		fprintf(stderr, "usage: uhmm-bench-opencl saxpy-buffers|saxpy-pointers BYTES | "
				"launch COUNT\n");
		return 2;
	}
	setup();
	if (!strcmp(argv[1], "launch")) {
		printf("%.0f\n", launches(arg));
		return 0;
	}
	for (int run = 0; run < 3; run++) {
		size_t n = arg / 2 / sizeof(float);
		double t;

		if (!strcmp(argv[1], "saxpy-buffers"))
			t = saxpy_buffers(n);
		else if (!strcmp(argv[1], "saxpy-pointers"))
			t = saxpy_pointers(n);
		else
			return 2;
		if (!best || t < best)
			best = t;
	}
	printf("%.6f\n", best);
	return 0;
}
