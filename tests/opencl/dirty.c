// SPDX-License-Identifier: MIT
/*
 * Coarse mode sends the device only the pages the host changed. Run under
 * uhmm with the discrete-device layer (discrete.c), which counts the bytes
 * the device receives: an 8 MiB array goes over once, whole; after a launch
 * the host writes three pages of it and discards a fourth (MADV_DONTNEED:
 * it reads as zeros now), and the next launch must see all four changes and
 * cost the device only about those pages. The array's values are checked
 * after every launch. Skipped (77) where the kernel cannot track writes
 * without faults (WP_ASYNC and PAGEMAP_SCAN, 6.7): whole regions move there.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <uhmm.h>

#include "clprog.h"

#define N (2u << 20)            /* floats: 8 MiB */
#define PAGE 4096u
#define PER_PAGE (PAGE / sizeof(float))

static const char source[] =
	"kernel void inc(global float *a) { a[get_global_id(0)] += 1.0f; }\n";

static unsigned long long (*bytes_to_device)(void);

/* The layer is loaded already (OPENCL_LAYERS is a list: find it in there). */
static void find_counter(void)
{
	char *layers = strdup(getenv("OPENCL_LAYERS") ? getenv("OPENCL_LAYERS") : ""), *save;

	for (char *path = strtok_r(layers, ":", &save); path && !bytes_to_device;
	     path = strtok_r(NULL, ":", &save)) {
		void *layer = dlopen(path, RTLD_NOW | RTLD_NOLOAD);

		if (layer)
			bytes_to_device = (unsigned long long (*)(void))dlsym(
				layer, "discrete_bytes_to_device");
	}
	free(layers);
	if (!bytes_to_device) {
		fprintf(stderr, "dirty: needs the discrete test layer in OPENCL_LAYERS\n");
		exit(1);
	}
}

static bool kernel_has(const char *name)
{
	struct hmm_kernel_feature f = { .size = sizeof(f) };

	for (int i = 0; !hmm_kernel_feature(i, &f); i++)
		if (!strcmp(f.name, name))
			return f.present;
	return false;
}

static void launch(struct cl *c, cl_kernel k, float *a)
{
	size_t global = N;

	CL_CHECK(clSetKernelArgSVMPointer(k, 0, a));
	CL_CHECK(clEnqueueNDRangeKernel(c->queue, k, 1, NULL, &global, NULL, 0, NULL, NULL));
	CL_CHECK(clFinish(c->queue));
}

static void check(const float *a, const float *want, const char *when)
{
	for (size_t i = 0; i < N; i++)
		if (a[i] != want[i]) {
			fprintf(stderr, "dirty: %s: a[%zu] = %g, want %g\n", when, i, a[i], want[i]);
			exit(1);
		}
}

int main(void)
{
	struct cl c;
	cl_kernel k;
	float *a = malloc(N * sizeof(float));
	/* Outside the heap: the expected values are not the device's business. */
	float *want = mmap(NULL, N * sizeof(float), PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	size_t written[3] = { 5 * PER_PAGE + 3, 6 * PER_PAGE, 1000 * PER_PAGE + 17 };
	float *discard;
	unsigned long long before, moved;

	if (!a || want == MAP_FAILED)
		return 1;
	if (!kernel_has("WP_ASYNC") || !kernel_has("PAGEMAP_SCAN")) {
		printf("dirty: skipped: this kernel cannot track writes without faults\n");
		return 77;
	}
	cl_setup(&c, source);
	k = cl_kernel_named(&c, "inc");
	find_counter();
	for (size_t i = 0; i < N; i++)
		a[i] = want[i] = (float)i;

	launch(&c, k, a);
	for (size_t i = 0; i < N; i++)
		want[i] += 1.0f;
	check(a, want, "first launch");

	/* The host changes four pages: three written, one discarded. */
	before = bytes_to_device();
	for (unsigned i = 0; i < 3; i++)
		a[written[i]] = want[written[i]] = -1.0f;
	discard = (float *)(((uintptr_t)(a + 300 * PER_PAGE) + PAGE - 1) & ~(uintptr_t)(PAGE - 1));
	if (madvise(discard, PAGE, MADV_DONTNEED))
		return perror("madvise"), 1;
	memset(want + (discard - a), 0, PAGE);

	launch(&c, k, a);
	moved = bytes_to_device() - before;
	for (size_t i = 0; i < N; i++)
		want[i] += 1.0f;
	check(a, want, "second launch");

	printf("dirty: %llu bytes to the device for 4 changed pages of %u\n", moved,
	       (unsigned)(N * sizeof(float) / PAGE));
	/* The four pages, and a little of the allocator's own bookkeeping. */
	if (moved < 4 * PAGE || moved > 32 * PAGE) {
		fprintf(stderr, "dirty: %llu bytes went to the device, want 4 to 32 pages\n", moved);
		return 1;
	}
	clReleaseKernel(k);
	return 0;
}
