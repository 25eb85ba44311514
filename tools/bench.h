/* SPDX-License-Identifier: MIT */
/* What uhmm-bench's parts share. */
#ifndef UHMM_TOOLS_BENCH_H
#define UHMM_TOOLS_BENCH_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

double now(void);
void report(const char *name, double value, const char *unit, double baseline, const char *what);
/* Median of v[0..n) (sorts v). */
double median(double *v, unsigned n);
/* Private anonymous memory; exits on failure. */
void *map(size_t len);
/* A pause before a timed fault: the threads that made its page missing asleep again. */
void settle(void);
/* One raw userfaultfd MISSING + UFFDIO_COPY round trip on raw page i (< --samples), ns. */
double raw_fault_once(unsigned i);
/*
 * Starts n threads, fn(args + i * arg_size) each, which wait on *start
 * before their work (the args point at it); times from their release
 * until the last one ends, in seconds.
 */
double run_released(unsigned n, void *(*fn)(void *), void *args, size_t arg_size,
		    pthread_barrier_t *start);
/* A sequential CPU read of len bytes at p, GB/s. */
double stream_gbps(const char *p, size_t len);
/* Runs argv (with one more environment variable, or none) and reads the number it prints; 0 on failure. */
double bench_figure(char *const argv[], const char *extra_env);

/*
 * The transparent-mode figures: real programs run natively and under
 * uhmm-run, found in dir (uhmm-bench's own directory). quick: fewer runs.
 */
void bench_preload(const char *dir, bool quick);

/* OpenCL: uhmm-bench-opencl's saxpy and launches, natively and under uhmm-run. */
void bench_opencl(const char *dir, bool quick);

/*
 * The storage tier, built with the uring device (liburing) only.
 *
 * bench_swap: kernel swap against the tier, uhmm-bench-spill (from dir) in
 * a memory cgroup with a swapfile, and under uhmm-run --device uring
 * --host-limit. Needs root; left out with the reason otherwise.
 *
 * bench_uring: the uring device against raw io_uring O_DIRECT I/O on the
 * same file system. raw_fault_once() must be ready (raw_setup).
 */
#if UHMM_BENCH_HAVE_URING
void bench_swap(const char *dir, bool quick);
void bench_uring(size_t size, unsigned samples, bool quick);
#else
static inline void bench_swap(const char *dir, bool quick)
{
	(void)dir;
	(void)quick;
	fprintf(stderr, "uhmm-bench: built without the uring device: spill_vs_swap left out\n");
}

static inline void bench_uring(size_t size, unsigned samples, bool quick)
{
	(void)size;
	(void)samples;
	(void)quick;
	fprintf(stderr, "uhmm-bench: built without the uring device: uring_* left out\n");
}
#endif

/*
 * Remote memory, built with the fabric device only: the device against raw
 * libfabric RMA to memory nodes (uhmm-memnode from dir) it starts on
 * loopback. raw_fault_once() must be ready (raw_setup).
 */
#if UHMM_BENCH_HAVE_FABRIC
void bench_fabric(const char *dir, size_t size, unsigned samples, bool quick);
#else
static inline void bench_fabric(const char *dir, size_t size, unsigned samples, bool quick)
{
	(void)dir;
	(void)size;
	(void)samples;
	(void)quick;
	fprintf(stderr, "uhmm-bench: built without the fabric device: fabric_* left out\n");
}
#endif

#endif
