// SPDX-License-Identifier: MIT
/*
 * Threads that a driver starts on the runtime's behalf belong to the
 * runtime. PoCL starts its worker threads while our OpenCL backend sets up
 * a device; they copy pages for our DMA queue, and what they allocate (a
 * buffer's storage, a command's bookkeeping) must never be managed memory:
 * the runtime could migrate it into the very device whose queue needs it
 * to bring it back. So a thread created from runtime context (a runtime
 * thread, or inside an API call) allocates from the unmanaged pool for its
 * whole life, as its creator did.
 */
#include <dlfcn.h>
#include <errno.h>

#include "transparent.h"

#ifndef UHMM_SANITIZED

typedef int (*create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

static _Atomic create_fn real_create;

struct runtime_child {
	void *(*fn)(void *);
	void *arg;
};

static void *runtime_child_main(void *p)
{
	struct runtime_child rc = *(struct runtime_child *)p;

	meta_free(p, sizeof(rc));
	rt_self.meta_only++;
	return rc.fn(rc.arg);
}

UHMM_INTERPOSE int pthread_create(pthread_t *thread, const pthread_attr_t *attr,
				  void *(*fn)(void *), void *arg)
{
	create_fn create = atomic_load_explicit(&real_create, memory_order_acquire);
	struct runtime_child *rc;
	int err;

	if (!create) {
		create = (create_fn)dlsym(RTLD_NEXT, "pthread_create");
		if (!create)
			return EAGAIN;
		atomic_store_explicit(&real_create, create, memory_order_release);
	}
	if (!rt_self_internal())
		return create(thread, attr, fn, arg);
	rc = meta_alloc(sizeof(*rc));
	if (!rc)
		return EAGAIN;
	*rc = (struct runtime_child){ fn, arg };
	err = create(thread, attr, runtime_child_main, rc);
	if (err)
		meta_free(rc, sizeof(*rc));
	return err;
}

#endif /* UHMM_SANITIZED */
