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
/* The device behind q reads host memory in place (system mode). */
bool cl_queue_reads_host(cl_command_queue q);

/* ---- cl_complete.c: completion seen through events ----------------------- */

cl_int CL_API_CALL cl_get_event_info(cl_event ev, cl_event_info name, size_t size, void *value,
				     size_t *size_ret);
cl_int CL_API_CALL cl_set_event_callback(cl_event ev, cl_int type,
					 void(CL_CALLBACK *fn)(cl_event, cl_int, void *),
					 void *data);

/* ---- cl_svm.c: SVM allocations, and SVM commands on ordinary memory ------ */

void *CL_API_CALL cl_svm_alloc(cl_context ctx, cl_svm_mem_flags flags, size_t size,
			       cl_uint align);
void CL_API_CALL cl_svm_free(cl_context ctx, void *p);
cl_int CL_API_CALL cl_enqueue_svm_free(cl_command_queue q, cl_uint n, void *ptrs[],
				       void(CL_CALLBACK *fn)(cl_command_queue, cl_uint, void *[],
							     void *),
				       void *data, cl_uint nwait, const cl_event *wait,
				       cl_event *ev);
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
