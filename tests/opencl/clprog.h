/* SPDX-License-Identifier: MIT */
/*
 * What the OpenCL test programs share: the first device of the first
 * platform, a context and queue on it, and a program built from source.
 * These are ordinary OpenCL programs: nothing here knows about uhmm.
 */
#ifndef CLPROG_H
#define CLPROG_H

#define CL_TARGET_OPENCL_VERSION 300
#include <CL/cl.h>
#include <stdio.h>
#include <stdlib.h>

struct cl {
	cl_platform_id platform;
	cl_device_id device;
	cl_context ctx;
	cl_command_queue queue;
	cl_program program;
};

#define CL_CHECK(call)                                                              \
	do {                                                                        \
		cl_int e_ = (call);                                                 \
		if (e_ != CL_SUCCESS) {                                             \
			fprintf(stderr, "%s:%d: %s: %d\n", __FILE__, __LINE__, #call, e_); \
			exit(1);                                                    \
		}                                                                   \
	} while (0)

static inline void cl_setup(struct cl *c, const char *source)
{
	cl_int err;

	CL_CHECK(clGetPlatformIDs(1, &c->platform, NULL));
	CL_CHECK(clGetDeviceIDs(c->platform, CL_DEVICE_TYPE_ALL, 1, &c->device, NULL));
	c->ctx = clCreateContext(NULL, 1, &c->device, NULL, NULL, &err);
	CL_CHECK(err);
	c->queue = clCreateCommandQueueWithProperties(c->ctx, c->device, NULL, &err);
	CL_CHECK(err);
	c->program = clCreateProgramWithSource(c->ctx, 1, &source, NULL, &err);
	CL_CHECK(err);
	err = clBuildProgram(c->program, 1, &c->device, NULL, NULL, NULL);
	if (err != CL_SUCCESS) {
		char log[4096] = "";

		clGetProgramBuildInfo(c->program, c->device, CL_PROGRAM_BUILD_LOG, sizeof(log), log,
				      NULL);
		fprintf(stderr, "build failed (%d): %s\n", err, log);
		exit(1);
	}
}

static inline cl_kernel cl_kernel_named(struct cl *c, const char *name)
{
	cl_int err;
	cl_kernel k = clCreateKernel(c->program, name, &err);

	CL_CHECK(err);
	return k;
}

static inline void cl_teardown(struct cl *c)
{
	clReleaseProgram(c->program);
	clReleaseCommandQueue(c->queue);
	clReleaseContext(c->ctx);
}

#endif
