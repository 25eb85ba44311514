// SPDX-License-Identifier: MIT
/*
 * The fault thread. It reads userfaultfd messages in batches and serves
 * them in order: CPU faults on managed pages (bring a page home, install a
 * zero page, lift a write protection) and events (munmap, madvise, mremap),
 * which are our invalidation signals for memory that changed behind the
 * interposed wrappers' back.
 *
 * It never waits for another thread. A fault on a page that a migration owns
 * is parked: the faulting thread stays asleep in the kernel, and when the
 * migration clears the page it kicks us and we wake the thread, which faults
 * again. A parked fault is never served again from what it said when it was
 * parked: by the time its page is free, the thread may already be running
 * (the job that owned the page woke it), and the page may have moved on.
 * The kernel's migration entries work the same way: wait, then retry the
 * fault from the start.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "internal.h"
#include "kernel-compat.h"

#define BATCH 64
#define MAX_PARKED 4096
#define MAX_INTERNAL 64
#define MAX_ZAPS 64
#define BACKLOG 1024

/* A faulting thread asleep until its page is free: we wake it, it faults again. */
struct parked {
	uintptr_t addr;
	pid_t tid;
	bool retry;        /* EAGAIN (an event was pending), not a busy page */
};

static struct {
	pthread_t thread;
	bool running;
	_Atomic bool stop;
	int kick_fd;
	pid_t tid;

	/* barrier: batches read vs. batches processed */
	pthread_mutex_t barrier_lock;
	pthread_cond_t barrier_cond;
	uint64_t started, done;

	/* fork: read but not processed (barrier_lock for the flags) */
	bool pause_req, paused;
	struct uffd_msg backlog[BACKLOG];
	unsigned nbacklog;

	/* fault thread only */
	struct parked parked[MAX_PARKED];
	unsigned nparked;

	pthread_mutex_t zap_lock;
	struct { uintptr_t start, end; } zaps[MAX_ZAPS];
	unsigned nzaps;
} h = {
	.kick_fd = -1,
	.barrier_lock = PTHREAD_MUTEX_INITIALIZER,
	.barrier_cond = PTHREAD_COND_INITIALIZER,
	.zap_lock = PTHREAD_MUTEX_INITIALIZER,
};

static _Atomic pid_t internal_tids[MAX_INTERNAL];

void internal_thread_enter(void)
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

void internal_thread_leave(void)
{
	pid_t tid = sys_gettid();

	for (int i = 0; i < MAX_INTERNAL; i++) {
		pid_t t = tid;

		if (atomic_compare_exchange_strong(&internal_tids[i], &t, 0))
			return;
	}
}

static bool is_internal(pid_t tid)
{
	if (!tid)
		return false;
	for (int i = 0; i < MAX_INTERNAL; i++)
		if (atomic_load_explicit(&internal_tids[i], memory_order_relaxed) == tid)
			return true;
	return false;
}

bool handler_running(void)
{
	return h.running;
}

void handler_kick(void)
{
	uint64_t one = 1;

	if (h.kick_fd >= 0 && write(h.kick_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_warn_ratelimited("cannot wake the fault thread: %d", errno);
}

void handler_barrier(void)
{
	uint64_t target;

	if (!h.running || pthread_equal(pthread_self(), h.thread))
		return;
	pthread_mutex_lock(&h.barrier_lock);
	target = h.started;
	while (h.done < target && h.running)
		pthread_cond_wait(&h.barrier_cond, &h.barrier_lock);
	pthread_mutex_unlock(&h.barrier_lock);
}

void handler_pause(void)
{
	if (!h.running || pthread_equal(pthread_self(), h.thread))
		return;
	pthread_mutex_lock(&h.barrier_lock);
	h.pause_req = true;
	handler_kick();
	while (!h.paused && h.running)
		pthread_cond_wait(&h.barrier_cond, &h.barrier_lock);
	pthread_mutex_unlock(&h.barrier_lock);
}

void handler_resume(void)
{
	pthread_mutex_lock(&h.barrier_lock);
	h.pause_req = false;
	pthread_mutex_unlock(&h.barrier_lock);
	handler_kick();
}

void handler_own_zap(uintptr_t start, uintptr_t end, bool add)
{
	pthread_mutex_lock(&h.zap_lock);
	if (add) {
		if (h.nzaps < MAX_ZAPS)
			h.zaps[h.nzaps++] = (typeof(h.zaps[0])){ start, end };
	} else {
		for (unsigned i = 0; i < h.nzaps; i++) {
			if (h.zaps[i].start == start && h.zaps[i].end == end) {
				h.zaps[i] = h.zaps[--h.nzaps];
				break;
			}
		}
	}
	pthread_mutex_unlock(&h.zap_lock);
}

/* Is this REMOVE event one of our own migrations zapping pages it copied? */
static bool consume_own_zap(uintptr_t start, uintptr_t end)
{
	bool ours = false;

	pthread_mutex_lock(&h.zap_lock);
	for (unsigned i = 0; i < h.nzaps; i++) {
		if (h.zaps[i].start == start && h.zaps[i].end == end) {
			h.zaps[i] = h.zaps[--h.nzaps];
			ours = true;
			break;
		}
	}
	pthread_mutex_unlock(&h.zap_lock);
	return ours;
}

/* Registered memory that is not (or no longer) in the registry. */
static void serve_unknown(uintptr_t addr, uint64_t flags)
{
	long n;

	if (flags & UFFD_PAGEFAULT_FLAG_WP) {
		uffd_protect(addr, PAGE_SIZE, false, true);
		return;
	}
	n = uffd_zero(addr, PAGE_SIZE, 0);
	if (n < 0 && n != -EAGAIN)
		uffd_wake(addr, PAGE_SIZE);
}

static void park(uintptr_t addr, pid_t tid, bool retry)
{
	for (unsigned i = 0; i < h.nparked; i++) {
		if (h.parked[i].addr == addr && h.parked[i].tid == tid) {
			h.parked[i].retry |= retry;
			return;
		}
	}
	if (h.nparked == MAX_PARKED) {
		/* Never lose a sleeper: let it fault again later. */
		log_warn_ratelimited("too many parked faults; waking one to retry");
		uffd_wake(addr, PAGE_SIZE);
		return;
	}
	h.parked[h.nparked++] = (struct parked){ addr, tid, retry };
	STAT_ADD(parked_faults, 1);
}

static enum fault_result serve(uintptr_t addr, uint64_t flags, pid_t tid)
{
	enum fault_result res = FAULT_DONE;
	struct range *r;
	uint64_t *w;

	reg_lock();
	w = reg_word(addr, &r);
	if (!w)
		serve_unknown(addr, flags);
	else if (flags & UFFD_PAGEFAULT_FLAG_WP)
		res = mig_fault_wp(r, addr);
	else
		res = mig_fault_in(r, addr, flags & UFFD_PAGEFAULT_FLAG_WRITE, tid, is_internal(tid));
	if (res == FAULT_PARK)
		*w |= PW_PARKED;
	reg_unlock();
	return res;
}

static void on_fault(const struct uffd_msg *m)
{
	uintptr_t addr = ALIGN_DOWN((uintptr_t)m->arg.pagefault.address, PAGE_SIZE);
	uint64_t t0 = now_ns();
	enum fault_result res;

	/* Counted before serving: the faulting thread may look as soon as it wakes. */
	STAT_ADD(cpu_faults, 1);
	res = serve(addr, m->arg.pagefault.flags, (pid_t)m->arg.pagefault.feat.ptid);
	if (res != FAULT_DONE)
		park(addr, (pid_t)m->arg.pagefault.feat.ptid, res == FAULT_RETRY);
	STAT_ADD(fault_ns, now_ns() - t0);
}

/*
 * reg.lock held: a page a migration still owns keeps its sleepers; it is
 * marked again, since the owner that kicked us may have cleared the mark
 * and another owner may have taken the page since.
 */
static bool still_busy(uintptr_t addr)
{
	uint64_t *w = reg_word(addr, NULL);

	if (!w || !(*w & PW_BUSY))
		return false;
	*w |= PW_PARKED;
	return true;
}

/*
 * Wake the threads whose page is no longer busy, and those that waited for
 * an event we have read since: each faults again, and its new fault is
 * served from the page's state as it is now.
 */
static void unpark(void)
{
	reg_lock();
	for (unsigned i = 0; i < h.nparked;) {
		struct parked *p = &h.parked[i];

		if (!p->retry && still_busy(p->addr)) {
			i++;
			continue;
		}
		uffd_wake(p->addr, PAGE_SIZE);
		*p = h.parked[--h.nparked];
	}
	reg_unlock();
}

static bool have_retries(void)
{
	for (unsigned i = 0; i < h.nparked; i++)
		if (h.parked[i].retry)
			return true;
	return false;
}

static void on_event(const struct uffd_msg *m)
{
	uintptr_t s, e;

	switch (m->event) {
	case UFFD_EVENT_UNMAP:
		s = m->arg.remove.start;
		e = m->arg.remove.end;
		reg_lock();
		mig_discard(s, e, true);
		mirrors_invalidate(s, e, NULL, false);
		reg_unlock();
		break;
	case UFFD_EVENT_REMOVE:
		s = m->arg.remove.start;
		e = m->arg.remove.end;
		if (consume_own_zap(s, e))
			break;
		reg_lock();
		mig_discard(s, e, false);
		mirrors_invalidate(s, e, NULL, false);
		reg_unlock();
		break;
	case UFFD_EVENT_REMAP:
		reg_lock();
		mirrors_invalidate(m->arg.remap.from, m->arg.remap.from + m->arg.remap.len, NULL, false);
		mig_remapped(m->arg.remap.from, m->arg.remap.to, m->arg.remap.len);
		reg_unlock();
		break;
	default:
		log_warn_ratelimited("unexpected userfaultfd event 0x%x", m->event);
	}
}

static void process(const struct uffd_msg *msgs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (msgs[i].event == UFFD_EVENT_PAGEFAULT)
			on_fault(&msgs[i]);
		else
			on_event(&msgs[i]);
	}
}

/*
 * Paused (fork in progress): keep reading, so that a thread blocked in the
 * kernel until its event is read (madvise, munmap) can go on and release
 * what the forking thread may be waiting for; process nothing. Returns
 * whether we are paused.
 */
static bool paused_round(void)
{
	bool paused;

	pthread_mutex_lock(&h.barrier_lock);
	if (h.pause_req != h.paused) {
		h.paused = h.pause_req;
		pthread_cond_broadcast(&h.barrier_cond);
	}
	paused = h.paused;
	pthread_mutex_unlock(&h.barrier_lock);
	if (paused && h.nbacklog < BACKLOG) {
		ssize_t n = read(uffd.fd, h.backlog + h.nbacklog,
				 (BACKLOG - h.nbacklog) * sizeof(h.backlog[0]));

		if (n > 0)
			h.nbacklog += (unsigned)(n / (ssize_t)sizeof(h.backlog[0]));
	}
	return paused;
}

static void *loop(void *arg)
{
	struct uffd_msg msgs[BATCH];
	sigset_t all;

	(void)arg;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	h.tid = sys_gettid();
	internal_thread_enter();
	while (!atomic_load(&h.stop)) {
		struct pollfd p[2] = { { h.kick_fd, POLLIN, 0 }, { uffd.fd, POLLIN, 0 } };
		bool full = h.paused && h.nbacklog == BACKLOG;
		ssize_t n;
		int read_err;

		if (poll(p, full ? 1 : 2, have_retries() && !h.paused ? 1 : -1) < 0 && errno != EINTR)
			break;
		if (p[0].revents & POLLIN) {
			uint64_t v;

			if (read(h.kick_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
				break;
		}
		if (paused_round())
			continue;
		pthread_mutex_lock(&h.barrier_lock);
		h.started++;
		pthread_mutex_unlock(&h.barrier_lock);

		/* Messages read while paused come first: order matters. */
		process(h.backlog, h.nbacklog);
		h.nbacklog = 0;
		n = read(uffd.fd, msgs, sizeof(msgs));
		read_err = n < 0 ? errno : 0;
		if (n > 0)
			process(msgs, (size_t)n / sizeof(msgs[0]));
		if (h.nparked)
			unpark();
		reg_lock();
		heap_sync_registry();
		reg_unlock();

		pthread_mutex_lock(&h.barrier_lock);
		h.done = h.started;
		pthread_cond_broadcast(&h.barrier_cond);
		pthread_mutex_unlock(&h.barrier_lock);
		if (n < 0 && read_err != EAGAIN && read_err != EINTR) {
			log_err("reading userfaultfd failed: %d", read_err);
			break;
		}
	}
	/* Nobody may stay asleep on a fault we will never serve. */
	for (unsigned i = 0; i < h.nparked; i++)
		uffd_wake(h.parked[i].addr, PAGE_SIZE);
	h.nparked = 0;
	internal_thread_leave();
	return NULL;
}

int handler_start(void)
{
	pthread_attr_t attr;
	int err;

	if (h.running)
		return 0;
	h.kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (h.kick_fd < 0)
		return -errno;
	atomic_store(&h.stop, false);
	h.started = h.done = 0;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	err = -pthread_create(&h.thread, &attr, loop, NULL);
	pthread_attr_destroy(&attr);
	if (err) {
		close(h.kick_fd);
		h.kick_fd = -1;
		return err;
	}
	h.running = true;
	return 0;
}

void handler_stop(void)
{
	if (!h.running)
		return;
	atomic_store(&h.stop, true);
	handler_kick();
	pthread_join(h.thread, NULL);
	pthread_mutex_lock(&h.barrier_lock);
	h.running = false;
	pthread_cond_broadcast(&h.barrier_cond);
	pthread_mutex_unlock(&h.barrier_lock);
	close(h.kick_fd);
	h.kick_fd = -1;
}

/* The child of fork has no fault thread; everything here is the parent's. */
void handler_fork_child(void)
{
	if (h.kick_fd >= 0)
		close(h.kick_fd);
	h.kick_fd = -1;
	h.running = false;
	h.nparked = 0;
	h.nzaps = 0;
	h.nbacklog = 0;
	h.pause_req = h.paused = false;
	h.started = h.done = 0;
	pthread_mutex_init(&h.barrier_lock, NULL);
	pthread_cond_init(&h.barrier_cond, NULL);
	pthread_mutex_init(&h.zap_lock, NULL);
	for (int i = 0; i < MAX_INTERNAL; i++)
		atomic_store(&internal_tids[i], 0);
}
