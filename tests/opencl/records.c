// SPDX-License-Identifier: MIT
/*
 * The seeds' motivating case: data structures built with malloc whose
 * nodes point at other allocations, walked by kernels. Linked lists (one
 * per work-item), a binary search tree, and records holding pointers to
 * separately allocated arrays. The kernels follow pointers the program
 * never names to OpenCL (fine-grain system SVM, as the exec info says).
 * Prints checksums; the output must be the same natively and under uhmm.
 */
#include <stdint.h>
#include <string.h>

#include "clprog.h"

struct node {
	long value;
	struct node *next;
};

struct tree {
	long key;
	struct tree *left, *right;
};

struct record {
	int n;
	int *items;     /* a separate allocation */
	long total;     /* written by the kernel */
};

static const char *source =
	"struct node { long value; __global struct node *next; };\n"
	"struct tree { long key; __global struct tree *left, *right; };\n"
	"struct record { int n; __global int *items; long total; };\n"
	"__kernel void walk(__global struct node *__global *heads, __global long *out)\n"
	"{ size_t g = get_global_id(0); long s = 0;\n"
	"  for (__global struct node *p = heads[g]; p; p = p->next) s += p->value;\n"
	"  out[g] = s; }\n"
	"__kernel void depth(__global struct tree *root, __global const long *keys, __global int *out)\n"
	"{ size_t g = get_global_id(0); int d = 0; __global struct tree *t = root;\n"
	"  while (t && t->key != keys[g]) { t = keys[g] < t->key ? t->left : t->right; d++; }\n"
	"  out[g] = t ? d : -1; }\n"
	"__kernel void sum_records(__global struct record *r)\n"
	"{ size_t g = get_global_id(0); long s = 0;\n"
	"  for (int i = 0; i < r[g].n; i++) s += r[g].items[i];\n"
	"  r[g].total = s; }\n";

static struct tree *insert(struct tree *t, long key)
{
	if (!t) {
		t = calloc(1, sizeof(*t));
		t->key = key;
		return t;
	}
	if (key < t->key)
		t->left = insert(t->left, key);
	else
		t->right = insert(t->right, key);
	return t;
}

static int host_depth(const struct tree *t, long key)
{
	int d = 0;

	while (t && t->key != key) {
		t = key < t->key ? t->left : t->right;
		d++;
	}
	return t ? d : -1;
}

static void exec_info_system(cl_kernel k)
{
	cl_bool yes = CL_TRUE;

	CL_CHECK(clSetKernelExecInfo(k, CL_KERNEL_EXEC_INFO_SVM_FINE_GRAIN_SYSTEM, sizeof(yes), &yes));
}

int main(int argc, char **argv)
{
	size_t lists = 64, per_list = argc > 1 ? strtoul(argv[1], NULL, 0) : 2000;
	size_t nkeys = 4096, nrec = 256;
	struct node **heads = malloc(lists * sizeof(*heads));
	long *walked = malloc(lists * sizeof(long)), list_sum = 0, want_sum = 0;
	long *keys = malloc(nkeys * sizeof(long));
	int *depths = malloc(nkeys * sizeof(int));
	struct record *recs = malloc(nrec * sizeof(*recs));
	struct tree *root = NULL;
	unsigned seed = 12345;
	int bad = 0;
	struct cl cl;
	cl_kernel walk, depth, sumr;

	cl_setup(&cl, source);
	walk = cl_kernel_named(&cl, "walk");
	depth = cl_kernel_named(&cl, "depth");
	sumr = cl_kernel_named(&cl, "sum_records");
	exec_info_system(walk);
	exec_info_system(depth);
	exec_info_system(sumr);

	/* Lists whose nodes interleave with each other in the heap. */
	memset(heads, 0, lists * sizeof(*heads));
	for (size_t i = 0; i < per_list; i++) {
		for (size_t l = 0; l < lists; l++) {
			struct node *n = malloc(sizeof(*n));

			n->value = (long)(i * 31 + l);
			n->next = heads[l];
			heads[l] = n;
			want_sum += n->value;
		}
	}
	for (size_t k = 0; k < nkeys; k++) {
		seed = seed * 1103515245 + 12345;
		keys[k] = (long)(seed >> 8) % 1000000;
		root = insert(root, keys[k]);
	}
	for (size_t r = 0; r < nrec; r++) {
		recs[r].n = (int)(100 + r);
		recs[r].items = malloc((size_t)recs[r].n * sizeof(int));
		for (int i = 0; i < recs[r].n; i++)
			recs[r].items[i] = (int)(r * i % 97);
	}

	for (int round = 0; round < 4; round++) {
		CL_CHECK(clSetKernelArgSVMPointer(walk, 0, heads));
		CL_CHECK(clSetKernelArgSVMPointer(walk, 1, walked));
		CL_CHECK(clEnqueueNDRangeKernel(cl.queue, walk, 1, NULL, &lists, NULL, 0, NULL, NULL));
		CL_CHECK(clSetKernelArgSVMPointer(depth, 0, root));
		CL_CHECK(clSetKernelArgSVMPointer(depth, 1, keys));
		CL_CHECK(clSetKernelArgSVMPointer(depth, 2, depths));
		CL_CHECK(clEnqueueNDRangeKernel(cl.queue, depth, 1, NULL, &nkeys, NULL, 0, NULL, NULL));
		CL_CHECK(clSetKernelArgSVMPointer(sumr, 0, recs));
		CL_CHECK(clEnqueueNDRangeKernel(cl.queue, sumr, 1, NULL, &nrec, NULL, 0, NULL, NULL));
		CL_CHECK(clFinish(cl.queue));
		list_sum = 0;
		for (size_t l = 0; l < lists; l++)
			list_sum += walked[l];
		bad += list_sum != want_sum;
		for (size_t k = 0; k < nkeys; k++)
			bad += depths[k] != host_depth(root, keys[k]);
		for (size_t r = 0; r < nrec; r++) {
			long s = 0;

			for (int i = 0; i < recs[r].n; i++)
				s += recs[r].items[i];
			bad += recs[r].total != s;
			recs[r].items[r % (size_t)recs[r].n] += 1; /* the CPU writes between launches */
		}
	}
	printf("records: lists %ld, tree %zu keys, %zu records: %s\n", list_sum, nkeys, nrec,
	       bad ? "WRONG" : "ok");
	clReleaseKernel(walk);
	clReleaseKernel(depth);
	clReleaseKernel(sumr);
	cl_teardown(&cl);
	return bad ? 1 : 0;
}
