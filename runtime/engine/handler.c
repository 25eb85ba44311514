// SPDX-License-Identifier: MIT
/*
 * The fault thread. It reads userfaultfd messages in batches and serves
 * them in order: CPU faults on managed pages (bring a page home, install a
 * zero page, lift a write protection; fault.c) and events (munmap, madvise,
 * mremap; events.c), which are our invalidation signals for memory that
 * changed behind the interposed wrappers' back.
 *
 * It never waits for another thread. A fault on a page that a migration owns
 * is parked: the faulting thread stays asleep in the kernel, and when the
 * migration clears the page it kicks us and we wake the thread, which faults
 * again. A parked fault is never served again from what it said when it was
 * parked: by the time its page is free, the thread may already be running
 * (the job that owned the page woke it), and the page may have moved on.
 * The kernel's migration entries work the same way: wait, then retry the
 * fault from the start. A fault that would take host memory past the host
 * limit waits the same way, until the agent has made room (pager.c).
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"

#define BATCH 64
#define MAX_PARKED 4096
#define MAX_ZAPS 64
#define BACKLOG 1024

/* A faulting thread asleep until its page is free: we wake it, it faults again. */
struct parked {
	uintptr_t addr;
	pid_t tid;
	bool retry;        /* EAGAIN (an event was pending), not a busy page */
	uint64_t throttled_ns;  /* waits for room under the host limit, since then; else 0 */
};

static struct {
	pthread_t thread;
	bool running;
	_Atomic bool stop;

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
	unsigned faults_behind;     /* in the batch being processed, after this one */

	/* migrations' own zaps, whose REMOVE events are not the application's */
	pthread_mutex_t zap_lock;
	struct { uintptr_t start, end; } zaps[MAX_ZAPS];
	unsigned nzaps;
} ft = {
	.barrier_lock = PTHREAD_MUTEX_INITIALIZER,
	.barrier_cond = PTHREAD_COND_INITIALIZER,
	.zap_lock = PTHREAD_MUTEX_INITIALIZER,
};

static void apply_events(const struct uffd_msg *msgs, size_t n);

static bool on_fault_thread(void)
{
	return pthread_equal(pthread_self(), ft.thread);
}

void handler_barrier(void)
{
	uint64_t target;

	if (!ft.running || on_fault_thread())
		return;
	pthread_mutex_lock(&ft.barrier_lock);
	target = ft.started;
	while (ft.done < target && ft.running)
		pthread_cond_wait(&ft.barrier_cond, &ft.barrier_lock);
	pthread_mutex_unlock(&ft.barrier_lock);
}

void handler_pause(void)
{
	if (!ft.running || on_fault_thread())
		return;
	pthread_mutex_lock(&ft.barrier_lock);
	ft.pause_req = true;
	kick();
	while (!ft.paused && ft.running)
		pthread_cond_wait(&ft.barrier_cond, &ft.barrier_lock);
	pthread_mutex_unlock(&ft.barrier_lock);
}

/*
 * reg.lock held (the fork's). The events read while paused are applied
 * now, before reg.lock is let go: the kernel has gone on with them, and
 * a page installed before they were applied could keep stale data (see
 * apply_events). Their faults wait for the fault thread.
 */
void handler_resume(void)
{
	/* reg.lock held: one fork at a time. */
	static struct uffd_msg events[BACKLOG];
	unsigned k = 0, nevents = 0;

	pthread_mutex_lock(&ft.barrier_lock);
	ft.pause_req = false;
	for (unsigned i = 0; i < ft.nbacklog; i++) {
		if (ft.backlog[i].event == UFFD_EVENT_PAGEFAULT)
			ft.backlog[k++] = ft.backlog[i];
		else
			events[nevents++] = ft.backlog[i];
	}
	ft.nbacklog = k;
	pthread_mutex_unlock(&ft.barrier_lock);
	/* The fault thread, unpaused, waits for reg.lock before it reads or serves anything. */
	apply_events(events, nevents);
	kick();
}

void handler_own_zap(uintptr_t start, uintptr_t end, bool add)
{
	pthread_mutex_lock(&ft.zap_lock);
	if (add) {
		if (ft.nzaps < MAX_ZAPS)
			ft.zaps[ft.nzaps++] = (typeof(ft.zaps[0])){ start, end };
	} else {
		for (unsigned i = 0; i < ft.nzaps; i++) {
			if (ft.zaps[i].start == start && ft.zaps[i].end == end) {
				ft.zaps[i] = ft.zaps[--ft.nzaps];
				break;
			}
		}
	}
	pthread_mutex_unlock(&ft.zap_lock);
}

/* Is this REMOVE event one of our own migrations zapping pages it copied? */
static bool consume_own_zap(uintptr_t start, uintptr_t end)
{
	bool ours = false;

	pthread_mutex_lock(&ft.zap_lock);
	for (unsigned i = 0; i < ft.nzaps; i++) {
		if (ft.zaps[i].start == start && ft.zaps[i].end == end) {
			ft.zaps[i] = ft.zaps[--ft.nzaps];
			ours = true;
			break;
		}
	}
	pthread_mutex_unlock(&ft.zap_lock);
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

static void park(uintptr_t addr, pid_t tid, enum fault_result why)
{
	bool retry = why == FAULT_RETRY;

	for (unsigned i = 0; i < ft.nparked; i++) {
		if (ft.parked[i].addr == addr && ft.parked[i].tid == tid) {
			ft.parked[i].retry |= retry;
			return;
		}
	}
	if (ft.nparked == MAX_PARKED) {
		/* Never lose a sleeper: let it fault again later. */
		log_warn_ratelimited("too many parked faults; waking one to retry");
		uffd_wake(addr, PAGE_SIZE);
		return;
	}
	ft.parked[ft.nparked++] = (struct parked){ addr, tid, retry,
						   why == FAULT_THROTTLE ? now_ns() : 0 };
	if (why != FAULT_THROTTLE)
		STAT_ADD(parked_faults, 1);
}

/*
 * The faulting thread may run on as soon as its page is in, before we
 * leave: what it can read of this fault (page state, counters) is final
 * before reg.lock goes, since readers of counters take it too.
 */
static enum fault_result serve(uintptr_t addr, uint64_t flags, pid_t tid)
{
	enum fault_result res = FAULT_DONE;
	uint64_t t0 = now_ns();
	struct range *r;
	uint64_t *w;

	STAT_ADD(cpu_faults, 1);
	reg_lock();
	w = reg_word(addr, &r);
	if (!w)
		serve_unknown(addr, flags);
	else if (flags & UFFD_PAGEFAULT_FLAG_WP)
		res = fault_wp(r, addr);
	else
		res = fault_missing(r, addr, tid, thread_is_internal(tid));
	if (res == FAULT_PARK)
		page_mark_parked(w);
	STAT_ADD(fault_ns, now_ns() - t0);
	reg_unlock();
	return res;
}

static void on_fault(const struct uffd_msg *m)
{
	uintptr_t addr = ALIGN_DOWN((uintptr_t)m->arg.pagefault.address, PAGE_SIZE);
	pid_t tid = (pid_t)m->arg.pagefault.feat.ptid;
	enum fault_result res = serve(addr, m->arg.pagefault.flags, tid);

	if (res != FAULT_DONE)
		park(addr, tid, res);
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
	page_mark_parked(w);
	return true;
}

/*
 * A throttled fault waits while host memory is past the limit and the agent
 * can make room, however slowly; not once it is stuck: behind a fork that
 * the sleeper's own thread may hold up (it may hold the gate).
 */
static bool still_throttled(const struct parked *p, uint64_t now)
{
	if (!pager_over_limit())
		return false;
	if (!pager_stalled(p->throttled_ns, now))
		return true;
	pager_give_up("the agent cannot make room for a waiting fault");
	return false;
}

/*
 * Wake the threads whose page is no longer busy, those that waited for an
 * event we have read since, and those that waited for room that is there
 * now: each faults again, and its new fault is served from the page's
 * state as it is now.
 */
static void unpark(void)
{
	uint64_t now = now_ns();

	reg_lock();
	for (unsigned i = 0; i < ft.nparked;) {
		struct parked *p = &ft.parked[i];

		if (p->throttled_ns ? still_throttled(p, now) : !p->retry && still_busy(p->addr)) {
			i++;
			continue;
		}
		uffd_wake(p->addr, PAGE_SIZE);
		*p = ft.parked[--ft.nparked];
	}
	reg_unlock();
}

/* Sleepers that no kick is sure to be sent for: look again every millisecond. */
static bool have_retries(void)
{
	for (unsigned i = 0; i < ft.nparked; i++)
		if (ft.parked[i].retry || ft.parked[i].throttled_ns)
			return true;
	return false;
}

/*
 * reg.lock held, as it was when the event was read: see apply_events.
 */
static void on_event(const struct uffd_msg *m)
{
	uintptr_t s, e;

	switch (m->event) {
	case UFFD_EVENT_UNMAP:
		s = m->arg.remove.start;
		e = m->arg.remove.end;
		event_discard(s, e, true);
		dev_invalidate_all(s, e, NULL, false);
		break;
	case UFFD_EVENT_REMOVE:
		s = m->arg.remove.start;
		e = m->arg.remove.end;
		if (consume_own_zap(s, e))
			break;
		event_discard(s, e, false);
		dev_invalidate_all(s, e, NULL, false);
		break;
	case UFFD_EVENT_REMAP:
		dev_invalidate_all(m->arg.remap.from, m->arg.remap.from + m->arg.remap.len, NULL, false);
		event_remapped(m->arg.remap.from, m->arg.remap.to, m->arg.remap.len);
		break;
	default:
		log_warn_ratelimited("unexpected userfaultfd event 0x%x", m->event);
	}
}

/*
 * Events are applied under the reg.lock hold they were read in. Once an
 * event is read, the kernel goes on to empty or move the memory, and a
 * page another thread installed after that, not knowing of the event,
 * would keep stale data where the program reads zeros (dmaq.c installs
 * under reg.lock for this). So events go before the faults read with
 * them: a fault that raced a discard of its own page then finds it
 * discarded, as it could have anyway.
 */
static void apply_events(const struct uffd_msg *msgs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
			on_event(&msgs[i]);
}

/*
 * A fault that other faults are queued behind is better handed to the
 * device's queue than served here and now: the queue can have them all in
 * flight at once (fault.c).
 */
unsigned handler_faults_behind(void)
{
	return ft.faults_behind;
}

/* The faults of a batch whose events were applied (apply_events). */
static void process_faults(const struct uffd_msg *msgs, size_t n)
{
	size_t faults = 0;

	for (size_t i = 0; i < n; i++)
		faults += msgs[i].event == UFFD_EVENT_PAGEFAULT;
	for (size_t i = 0; i < n; i++) {
		if (msgs[i].event == UFFD_EVENT_PAGEFAULT) {
			ft.faults_behind = (unsigned)--faults;
			on_fault(&msgs[i]);
		}
	}
	ft.faults_behind = 0;
}

/*
 * Paused (fork in progress): keep reading, so that a thread blocked in the
 * kernel until its event is read (madvise, munmap) can go on and release
 * what the forking thread may be waiting for; process nothing. Returns
 * whether we are paused.
 *
 * The read is under barrier_lock, so that once handler_resume has taken it
 * no event goes to the backlog: migrations start again right after the
 * resume, and the REMOVE event of their own zap, read here, would get past
 * their handler_barrier (a paused read starts no batch) and be processed
 * only after they forgot the zap, as the application's discard: the pages
 * they had just copied to the device dropped, reading zero.
 */
static bool paused_round(void)
{
	bool paused;

	pthread_mutex_lock(&ft.barrier_lock);
	if (ft.pause_req != ft.paused) {
		ft.paused = ft.pause_req;
		pthread_cond_broadcast(&ft.barrier_cond);
	}
	paused = ft.paused;
	if (paused && ft.nbacklog < BACKLOG) {
		ssize_t n = read(uffd.fd, ft.backlog + ft.nbacklog,
				 (BACKLOG - ft.nbacklog) * sizeof(ft.backlog[0]));

		if (n > 0)
			ft.nbacklog += (unsigned)(n / (ssize_t)sizeof(ft.backlog[0]));
	}
	pthread_mutex_unlock(&ft.barrier_lock);
	return paused;
}

static void *fault_thread_main(void *arg)
{
	struct uffd_msg msgs[BATCH];

	(void)arg;
	while (!atomic_load(&ft.stop)) {
		struct pollfd p[2] = { { kick_fd(), POLLIN, 0 }, { uffd.fd, POLLIN, 0 } };
		bool full = ft.paused && ft.nbacklog == BACKLOG;
		ssize_t n;
		int read_err;

		if (poll(p, full ? 1 : 2, have_retries() && !ft.paused ? 1 : -1) < 0 && errno != EINTR)
			break;
		if (p[0].revents & POLLIN)
			kick_drain();
		if (paused_round())
			continue;
		pthread_mutex_lock(&ft.barrier_lock);
		ft.started++;
		pthread_mutex_unlock(&ft.barrier_lock);

		/* Faults read while paused come first (their events were applied at the resume). */
		process_faults(ft.backlog, ft.nbacklog);
		ft.nbacklog = 0;
		reg_lock();
		n = read(uffd.fd, msgs, sizeof(msgs));
		read_err = n < 0 ? errno : 0;
		if (n > 0)
			apply_events(msgs, (size_t)n / sizeof(msgs[0]));
		reg_unlock();
		if (n > 0)
			process_faults(msgs, (size_t)n / sizeof(msgs[0]));
		if (ft.nparked)
			unpark();
		reg_lock();
		reg_catch_up();
		reg_unlock();

		pthread_mutex_lock(&ft.barrier_lock);
		ft.done = ft.started;
		pthread_cond_broadcast(&ft.barrier_cond);
		pthread_mutex_unlock(&ft.barrier_lock);
		if (n < 0 && read_err != EAGAIN && read_err != EINTR) {
			log_err("reading userfaultfd failed: %d", read_err);
			break;
		}
	}
	/* Nobody may stay asleep on a fault we will never serve. */
	for (unsigned i = 0; i < ft.nparked; i++)
		uffd_wake(ft.parked[i].addr, PAGE_SIZE);
	ft.nparked = 0;
	return NULL;
}

int handler_start(void)
{
	int err;

	if (ft.running)
		return 0;
	err = kick_open();
	if (err)
		return err;
	atomic_store(&ft.stop, false);
	ft.started = ft.done = 0;
	err = thread_spawn(&ft.thread, fault_thread_main, NULL, true);
	if (err)
		return err;
	ft.running = true;
	return 0;
}

void handler_stop(void)
{
	if (!ft.running)
		return;
	atomic_store(&ft.stop, true);
	kick();
	pthread_join(ft.thread, NULL);
	pthread_mutex_lock(&ft.barrier_lock);
	ft.running = false;
	pthread_cond_broadcast(&ft.barrier_cond);
	pthread_mutex_unlock(&ft.barrier_lock);
	/*
	 * The kick stays open: the heap kicks from any thread, at any time,
	 * and a closed descriptor's number may belong to someone else by then.
	 */
}

/* The child of fork has no fault thread; everything here is the parent's. */
void handler_fork_child(void)
{
	ft.running = false;
	ft.nparked = 0;
	ft.nzaps = 0;
	ft.nbacklog = 0;
	ft.pause_req = ft.paused = false;
	ft.started = ft.done = 0;
	pthread_mutex_init(&ft.barrier_lock, NULL);
	pthread_cond_init(&ft.barrier_cond, NULL);
	pthread_mutex_init(&ft.zap_lock, NULL);
}
