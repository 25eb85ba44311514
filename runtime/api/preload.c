// SPDX-License-Identifier: MIT
/*
 * Transparent mode: libuhmm.so in LD_PRELOAD. The heap became ours at the
 * first malloc (malloc.c); this constructor starts the rest with the process
 * (userfaultfd, the fault thread, the devices of UHMM_DEVICES, the agent),
 * so that a host limit or chaos applies from the start. When the runtime
 * cannot work, one line says so and the program runs unmanaged.
 *
 * A child of fork starts without any of that; it restarts on the first
 * allocation of its first thread (heap.c unbinds the thread in the child).
 */
#include <errno.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "api.h"

static struct {
	bool active;
} pl;

static void start(void)
{
	int err = hmm_init();

	if (err == -EPERM || err == -ENOSYS || err == -EACCES)
		log_err("userfaultfd is not available (%s): the program runs unmanaged",
			strerror(-err));
	else if (err)
		log_err("cannot start (%s): the program runs unmanaged", strerror(-err));
	else if (!uffd.kernel_faults)
		log_warn("userfaultfd serves user-mode faults only here (vm.unprivileged_userfaultfd=0): "
			 "managed memory stays on the host");
}

__attribute__((constructor)) static void preload_init(void)
{
	if (!heap_managed())
		return;
	pl.active = true;
	heap_set_restart(start);
	cl_layer_register();
	start();
}

/* The child starts the runtime again on its first allocation (heap.c). */
void preload_fork_child(void)
{
	if (pl.active)
		heap_request_restart();
}

__attribute__((destructor)) static void preload_fini(void)
{
	stats_summary();
}

/*
 * Programs that end with _exit (dash does, and most children of fork) run
 * no destructors: the summary is printed on the way out here instead.
 */
UHMM_INTERPOSE void _exit(int status)
{
	if (pl.active)
		stats_summary();
	for (;;)
		syscall(SYS_exit_group, status);
}

UHMM_INTERPOSE void _Exit(int status)
{
	_exit(status);
}
