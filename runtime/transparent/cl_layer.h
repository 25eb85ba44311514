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

/* ---- cl_complete.c: completion seen through events ----------------------- */

cl_int CL_API_CALL cl_get_event_info(cl_event ev, cl_event_info name, size_t size, void *value,
				     size_t *size_ret);
cl_int CL_API_CALL cl_set_event_callback(cl_event ev, cl_int type,
					 void(CL_CALLBACK *fn)(cl_event, cl_int, void *),
					 void *data);

#endif /* UHMM_CL_LAYER_H */
