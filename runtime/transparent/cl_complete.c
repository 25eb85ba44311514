// SPDX-License-Identifier: MIT
/*
 * When the host learns that a kernel ended without clFinish or
 * clWaitForEvents: it polls the event's status, or the driver calls a
 * callback the program set on it. Either way the program may read what
 * the kernel wrote right then, so in buffer and coarse modes the writes
 * that stand-in buffers hold must be back in host memory first.
 *
 * Polling: a status of CL_COMPLETE (or an error) settles every launch that
 * has ended, before the program sees it.
 *
 * Callbacks: the driver calls them on a thread of its own, where nothing
 * may wait for the device (the OpenCL spec makes blocking calls there
 * undefined; PoCL runs them on the thread that would have to serve the
 * wait). So while stand-ins are pending, a completion callback is handed
 * to a thread of ours, which settles what has ended and then calls the
 * program's function: the program sees its callback a little later, from
 * another thread, which the spec allows (callbacks run on threads the
 * implementation picks). With nothing pending, the callback is called
 * where the driver calls it, as before.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "cl_layer.h"

#ifndef UHMM_SANITIZED

typedef void(CL_CALLBACK *event_fn)(cl_event, cl_int, void *);

/* A program's callback, as the driver will call it. */
struct callback {
	struct callback *next;
	event_fn fn;
	void *data;
	bool defer;                   /* settle first, on our thread */
	cl_event event;               /* retained while handed over */
	cl_int status;
};

static struct {
	pthread_mutex_t lock;         /* all of the below */
	pthread_cond_t work;
	struct callback *head, **tail;
	pid_t started_in;             /* the process that has the thread (0: none) */
} later = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.work = PTHREAD_COND_INITIALIZER,
	.tail = &later.head,
};

/* Callbacks run on driver threads: a status read there must not settle. */
static __thread bool on_driver_callback;

cl_int CL_API_CALL cl_get_event_info(cl_event ev, cl_event_info name, size_t size, void *value,
				     size_t *size_ret)
{
	cl_int err = cl_driver.clGetEventInfo(ev, name, size, value, size_ret);

	if (err == CL_SUCCESS && name == CL_EVENT_COMMAND_EXECUTION_STATUS && value &&
	    size >= sizeof(cl_int) && *(const cl_int *)value <= CL_COMPLETE && !on_driver_callback)
		cl_settle_ended();
	return err;
}

static void *callback_thread(void *arg)
{
	(void)arg;
	/* The program's code runs here: its memory is the program's (cl_wrap.c started us). */
	rt_self.meta_only = 0;
	for (;;) {
		struct callback *cb;

		pthread_mutex_lock(&later.lock);
		while (!later.head)
			pthread_cond_wait(&later.work, &later.lock);
		cb = later.head;
		later.head = cb->next;
		if (!later.head)
			later.tail = &later.head;
		pthread_mutex_unlock(&later.lock);

		cl_settle_ended();
		cb->fn(cb->event, cb->status, cb->data);
		cl_driver.clReleaseEvent(cb->event);
		meta_free(cb, sizeof(*cb));
	}
	return NULL;
}

/* later.lock held. The thread is started when first needed (again in a child of fork). */
static int start_thread(void)
{
	pthread_t t;
	int err;

	if (later.started_in == getpid())
		return 0;
	/* Not internal: it runs the program's code, which may touch any memory. */
	err = thread_spawn(&t, callback_thread, NULL, false);
	if (err)
		return err;
	pthread_detach(t);
	later.started_in = getpid();
	return 0;
}

static void CL_CALLBACK on_event(cl_event ev, cl_int status, void *arg)
{
	struct callback *cb = arg;

	if (!cb->defer) {
		on_driver_callback = true;
		cb->fn(ev, status, cb->data);
		on_driver_callback = false;
		meta_free(cb, sizeof(*cb));
		return;
	}
	cl_driver.clRetainEvent(ev); /* the driver may let it go when we return */
	cb->event = ev;
	cb->status = status;
	cb->next = NULL;
	pthread_mutex_lock(&later.lock);
	*later.tail = cb;
	later.tail = &cb->next;
	pthread_cond_signal(&later.work);
	pthread_mutex_unlock(&later.lock);
}

cl_int CL_API_CALL cl_set_event_callback(cl_event ev, cl_int type, event_fn fn, void *data)
{
	struct callback *cb;
	cl_int err;

	if (!fn)
		return cl_driver.clSetEventCallback(ev, type, fn, data); /* the driver's error */
	cb = meta_alloc(sizeof(*cb));
	if (!cb)
		return CL_OUT_OF_HOST_MEMORY;
	*cb = (struct callback){ .fn = fn, .data = data };
	/* Only the end of a command can make a kernel's writes due. */
	if (type == CL_COMPLETE && cl_pending()) {
		pthread_mutex_lock(&later.lock);
		cb->defer = start_thread() == 0;
		pthread_mutex_unlock(&later.lock);
		if (!cb->defer)
			log_warn_ratelimited("opencl: no thread for event callbacks: a callback may "
					     "run before a kernel's writes are back in host memory");
	}
	err = cl_driver.clSetEventCallback(ev, type, on_event, cb);
	if (err != CL_SUCCESS)
		meta_free(cb, sizeof(*cb));
	return err;
}

#endif /* UHMM_SANITIZED */
