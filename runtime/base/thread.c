// SPDX-License-Identifier: MIT
/*
 * The runtime's own threads (the fault thread, one DMA engine per device,
 * the prefetch worker, the agent) and what tells them apart from the
 * application's: per-thread state, the list of internal thread ids that the
 * fault thread consults (a runtime thread's fault must never wait for a
 * migration, which may be waiting for that very thread), and the kick.
 */
#include <errno.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "base.h"

#define MAX_INTERNAL 64
#define THREAD_STACK (256 * 1024)

__thread struct rt_thread rt_self;

static _Atomic pid_t internal_tids[MAX_INTERNAL];
static _Atomic int kick_efd = -1;

static void mark_internal(void)
{
	pid_t tid = sys_gettid();

	rt_self.internal = true;
	for (int i = 0; i < MAX_INTERNAL; i++) {
		pid_t zero = 0;

		if (atomic_compare_exchange_strong(&internal_tids[i], &zero, tid))
			return;
	}
	log_warn("too many runtime threads to track");
}

static void unmark_internal(void)
{
	pid_t tid = sys_gettid();

	for (int i = 0; i < MAX_INTERNAL; i++) {
		pid_t t = tid;

		if (atomic_compare_exchange_strong(&internal_tids[i], &t, 0))
			return;
	}
}

void thread_enter_internal(void)
{
	mark_internal();
}

void thread_leave_internal(void)
{
	unmark_internal();
	rt_self.internal = false;
}

bool thread_is_internal(pid_t tid)
{
	if (!tid)
		return false;
	for (int i = 0; i < MAX_INTERNAL; i++)
		if (atomic_load_explicit(&internal_tids[i], memory_order_relaxed) == tid)
			return true;
	return false;
}

struct start {
	void *(*fn)(void *);
	void *arg;
};

static void *internal_main(void *p)
{
	struct start st = *(struct start *)p;
	void *ret;

	meta_free(p, sizeof(st));
	mark_internal();
	ret = st.fn(st.arg);
	unmark_internal();
	return ret;
}

int thread_spawn(pthread_t *ret, void *(*fn)(void *), void *arg, bool internal)
{
	struct start *st = NULL;
	sigset_t all, old;
	pthread_attr_t attr;
	int err;

	if (internal) {
		st = meta_alloc(sizeof(*st));
		if (!st)
			return -ENOMEM;
		*st = (struct start){ fn, arg };
	}
	/* A new thread starts with its creator's mask: block, create, restore. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, THREAD_STACK);
	err = -pthread_create(ret, &attr, internal ? internal_main : fn, internal ? st : arg);
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err)
		meta_free(st, sizeof(*st));
	return err;
}

/* The child of fork has none of our threads. */
void thread_fork_child(void)
{
	for (int i = 0; i < MAX_INTERNAL; i++)
		atomic_store(&internal_tids[i], 0);
	kick_close();
}

int kick_open(void)
{
	int fd;

	if (atomic_load(&kick_efd) >= 0)
		return 0;
	fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (fd < 0)
		return -errno;
	atomic_store(&kick_efd, fd);
	return 0;
}

void kick_close(void)
{
	int fd = atomic_exchange(&kick_efd, -1);

	if (fd >= 0)
		close(fd);
}

int kick_fd(void)
{
	return atomic_load(&kick_efd);
}

void kick(void)
{
	uint64_t one = 1;
	int fd = atomic_load_explicit(&kick_efd, memory_order_relaxed);

	/* EAGAIN: the counter is saturated, so a wakeup is pending anyway. */
	if (fd >= 0 && write(fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_warn_ratelimited("cannot wake the fault thread: %d", errno);
}

void kick_drain(void)
{
	uint64_t v;
	int fd = atomic_load(&kick_efd);

	if (fd >= 0 && read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_warn_ratelimited("cannot read the fault thread's kick: %d", errno);
}
