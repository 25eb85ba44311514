/* SPDX-License-Identifier: MIT */
/*
 * The OpenCL layer's parts (cl_layer.c: what kernels are given and their
 * launches; cl_complete.c: when the host learns that they ended).
 */
#ifndef UHMM_CL_LAYER_H
#define UHMM_CL_LAYER_H

#define CL_TARGET_OPENCL_VERSION 300
#include <CL/cl_layer.h>

#include "transparent.h"

/* The entries of the layer below us (or the driver's), which we call. */
extern struct _cl_icd_dispatch cl_driver;

/*
 * Buffer and coarse modes: kernels that have ended may hold writes that
 * the host has not seen yet (their stand-in buffers). cl_settle_ended()
 * copies those back; it waits for the device (a blocking read), so never
 * call it on a thread the driver runs callbacks on. cl_pending() says
 * whether any launch still holds stand-ins.
 */
void cl_settle_ended(void);
bool cl_pending(void);
/* Copy back everything stand-ins hold; everything on queue q. Both wait. */
void cl_settle_all(void);
void cl_settle_queue(cl_command_queue q);
/* A command on q returned with err; when it was blocking, q's stand-ins come back. */
cl_int cl_blocking_done(cl_command_queue q, cl_bool blocking, cl_int err);
/* The device behind q reads host memory in place (system mode). */
bool cl_queue_reads_host(cl_command_queue q);
/* Device d is served in coarse mode. */
bool cl_device_coarse(cl_device_id d);

/* ---- cl_wrap.c: the program's calls into the driver run as the runtime's -- */

/* Each of the first entries of table becomes a wrapper calling what it held. */
void cl_wrap_table(struct _cl_icd_dispatch *table, size_t entries);
/* A wrapper for an extension entry the driver hands out (fn itself when none is left). */
void *cl_wrap_extension(void *fn);

/* ---- cl_complete.c: completion seen through events ----------------------- */

cl_int CL_API_CALL cl_get_event_info(cl_event ev, cl_event_info name, size_t size, void *value,
				     size_t *size_ret);
cl_int CL_API_CALL cl_set_event_callback(cl_event ev, cl_int type,
					 void(CL_CALLBACK *fn)(cl_event, cl_int, void *),
					 void *data);

/* ---- cl_coarse.c: the heap in a coarse-grain SVM device's memory --------- */

/* At start, in a program linked with OpenCL: serve the heap from SVM if coarse. */
void cl_coarse_start(void);
bool cl_coarse_context(cl_context ctx);       /* the context the heap lives in */
bool cl_coarse_kernel(cl_kernel k);           /* a kernel of that context */
bool cl_coarse_owns(const void *p);           /* p lies in the shared heap */
unsigned cl_coarse_regions(const void **ret, unsigned max);
/* Ownership of the heap's regions: to the device ahead of a launch on q, back after. */
cl_int cl_coarse_hand_over(cl_command_queue q);
void cl_coarse_take_back(cl_command_queue q);
cl_context CL_API_CALL cl_create_context(const cl_context_properties *props, cl_uint n,
					 const cl_device_id *devices,
					 void(CL_CALLBACK *notify)(const char *, const void *,
								   size_t, void *),
					 void *data, cl_int *ret_err);
cl_context CL_API_CALL cl_create_context_from_type(const cl_context_properties *props,
						   cl_device_type type,
						   void(CL_CALLBACK *notify)(const char *,
									     const void *, size_t,
									     void *),
						   void *data, cl_int *ret_err);
/* clSVMAlloc and clSVMFree in the shared context: false where ctx is another. */
bool cl_coarse_svm_alloc(cl_context ctx, size_t size, cl_uint align, void **ret);
bool cl_coarse_svm_free(cl_context ctx, void *p);

/* ---- cl_svm.c: SVM allocations, and SVM commands on ordinary memory ------ */

void *CL_API_CALL cl_svm_alloc(cl_context ctx, cl_svm_mem_flags flags, size_t size,
			       cl_uint align);
void CL_API_CALL cl_svm_free(cl_context ctx, void *p);
cl_int CL_API_CALL cl_enqueue_svm_free(cl_command_queue q, cl_uint n, void *ptrs[],
				       void(CL_CALLBACK *fn)(cl_command_queue, cl_uint, void *[],
							     void *),
				       void *data, cl_uint nwait, const cl_event *wait,
				       cl_event *ev);
/* [p, p + len) lies in one of the driver's own SVM allocations; the one holding p. */
bool cl_svm_driver_owns(const void *p, size_t len);
int cl_svm_extent(const void *p, uintptr_t *ret_start, size_t *ret_len);
cl_int CL_API_CALL cl_svm_memcpy(cl_command_queue q, cl_bool blocking, void *dst, const void *src,
				 size_t size, cl_uint nwait, const cl_event *wait, cl_event *ev);
cl_int CL_API_CALL cl_svm_memfill(cl_command_queue q, void *p, const void *pattern,
				  size_t pattern_size, size_t size, cl_uint nwait,
				  const cl_event *wait, cl_event *ev);
cl_int CL_API_CALL cl_svm_map(cl_command_queue q, cl_bool blocking, cl_map_flags flags, void *p,
			      size_t size, cl_uint nwait, const cl_event *wait, cl_event *ev);
cl_int CL_API_CALL cl_svm_unmap(cl_command_queue q, void *p, cl_uint nwait, const cl_event *wait,
				cl_event *ev);
cl_int CL_API_CALL cl_svm_migrate(cl_command_queue q, cl_uint n, const void **ptrs,
				  const size_t *sizes, cl_mem_migration_flags flags, cl_uint nwait,
				  const cl_event *wait, cl_event *ev);

#endif /* UHMM_CL_LAYER_H */
