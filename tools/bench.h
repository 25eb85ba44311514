/* SPDX-License-Identifier: MIT */
/* What uhmm-bench's parts share. */
#ifndef UHMM_TOOLS_BENCH_H
#define UHMM_TOOLS_BENCH_H

double now(void);
void report(const char *name, double value, const char *unit, double baseline, const char *what);
/* Runs argv (with one more environment variable, or none) and reads the number it prints; 0 on failure. */
double bench_figure(char *const argv[], const char *extra_env);

/*
 * The transparent-mode figures: real programs run natively and under
 * uhmm-run, found in dir (uhmm-bench's own directory). quick: fewer runs.
 */
void bench_preload(const char *dir, bool quick);

/* OpenCL: uhmm-bench-opencl's saxpy and launches, natively and under uhmm-run. */
void bench_opencl(const char *dir, bool quick);

#endif
