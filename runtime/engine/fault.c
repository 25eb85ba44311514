// SPDX-License-Identifier: MIT
/*
 * CPU faults and CPU-side mapping changes, as they reach a managed page.
 * Everything here runs with reg.lock held, most of it on the fault thread,
 * so nothing here waits: a page that is busy or pinned makes the fault park.
 *
 * A CPU touch of a page whose data is on a device brings it home "just as if
 * the page was swapped out": with UFFDIO_MOVE straight out of device memory
 * when that memory is movable (zero copy, and it wakes the faulting thread),
 * with UFFDIO_COPY when it is only host-mapped, and through the device's DMA
 * queue otherwise. When accesses look sequential, neighbours come along.
 */
#include <errno.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "engine.h"

/* One page of zeros, for a page that must read as zero now. */
static enum fault_result zero_fill_one(uintptr_t addr)
{
	long n = uffd_zero(addr, PAGE_SIZE, 0);

	if (n == -EAGAIN)
		return FAULT_RETRY;
	if (n < 0)
		uffd_wake(addr, PAGE_SIZE); /* already there, or the mapping is gone */
	else
		STAT_ADD(zero_fills, 1);
	return FAULT_DONE;
}

/*
 * A first touch: the page, and up to opt.zero_around untouched host pages
 * after it, get the shared zero page (a write then copies it in the kernel,
 * without another trip through us). Pages elsewhere or claimed stay out.
 */
static enum fault_result zero_fill(struct range *r, uintptr_t addr)
{
	size_t i = range_index(r, addr), n = 1;
	long done;

	while (n < opt.zero_around && addr + n * PAGE_SIZE < r->end &&
	       !(r->pages[i + n] & ~PW_ADVICE))
		n++;
	done = uffd_zero(addr, n * PAGE_SIZE, 0);
	if (done == -ENOENT && n > 1) /* the window crossed into another mapping */
		done = uffd_zero(addr, PAGE_SIZE, 0);
	if (done == -EAGAIN)
		return FAULT_RETRY;
	if (done < 0) {
		uffd_wake(addr, PAGE_SIZE); /* already there, or the mapping is gone */
	} else {
		STAT_ADD(zero_fills, (uint64_t)done / PAGE_SIZE);
		pager_note_fault(addr, false);
	}
	return FAULT_DONE;
}

/* The pages from addr (at most max) on the same device in consecutive slots, free to move. */
static size_t device_run(struct range *r, uintptr_t addr, size_t max)
{
	size_t i = range_index(r, addr);
	uint64_t w0 = r->pages[i];
	size_t n = 1;

	while (n < max && addr + n * PAGE_SIZE < r->end) {
		uint64_t w = r->pages[i + n];

		if (w & (PW_BUSY | PW_UNMAPPED | PW_EXCL | PW_DUP | PW_POISONED))
			break;
		if (pw_loc(w) != pw_loc(w0) || pw_slot(w) != pw_slot(w0) + n)
			break;
		n++;
	}
	return n;
}

/* How many of the n pages from addr the device is not writing right now (pinned). */
static size_t unpinned_pages(struct hmm_device_core *c, uintptr_t addr, size_t n)
{
	uintptr_t pinned;

	mirror_lock(&c->mirror);
	pinned = mirror_first_pinned(&c->mirror, addr, addr + n * PAGE_SIZE);
	mirror_unlock(&c->mirror);
	return (pinned - addr) / PAGE_SIZE;
}

/*
 * How many pages from addr come home with it: the run of pages on the same
 * device in consecutive slots, no longer than the sequential window, which
 * doubles while faults arrive in address order and resets otherwise.
 */
static size_t fault_window(struct hmm_device_core *c, struct range *r, uintptr_t addr, size_t cap)
{
	if (addr == c->last_fault_end && c->window)
		c->window = MIN(c->window * 2, opt.fault_around);
	else
		c->window = 1;
	return device_run(r, addr, MIN(c->window, cap));
}

/* The access cannot be served: SIGBUS for the faulting thread, data kept. */
static void fail_access(struct hmm_device_core *c, uintptr_t addr, uint64_t *w, pid_t tid,
			long err)
{
	log_err("cannot bring page 0x%lx home from %s (error %ld): the access gets SIGBUS",
		(unsigned long)addr, c->dev->name, -err);
	STAT_ADD(migrations_failed, 1);
	if (!uffd_poison(addr, PAGE_SIZE)) {
		page_poison(w);
		return;
	}
	if (tid)
		syscall(SYS_tgkill, getpid(), tid, SIGBUS);
	uffd_wake(addr, PAGE_SIZE);
}

/*
 * Below this many pages a fault-back copies rather than moves: a move must
 * flush the device page's TLB entry, which costs an IPI to every CPU running
 * this process (several microseconds in a VM), more than copying a few pages.
 */
#define MOVE_MIN_PAGES 16

/* Device memory the runtime can read: move or copy straight from it. */
static enum fault_result fault_in_inline(struct hmm_device_core *c, struct range *r,
					 uintptr_t addr, size_t n, pid_t tid)
{
	uint64_t *w = range_word(r, addr);
	uintptr_t src = (uintptr_t)dev_slot_addr(c, pw_slot(*w));
	/*
	 * The thread may run on as soon as its page is in: everything it can
	 * look at (residency, snapshots, the device's view of the page) waits
	 * for reg.lock, which we hold until the commit is done. Only a mapping
	 * that ACCESSED_BY advice adds at the commit is visible without it: on
	 * ranges with advice, the thread wakes after the commit, so that its
	 * next device access finds the mapping (one ioctl more).
	 */
	bool wake_after = r->nattrs != 0;
	uint64_t move_mode = wake_after ? UFFDIO_MOVE_MODE_DONTWAKE : 0;
	uint64_t copy_mode = wake_after ? UFFDIO_COPY_MODE_DONTWAKE : 0;
	long done = -EIO;

	for (unsigned attempt = 0; attempt < opt.fault_retries; attempt++) {
		if (inject_fire(INJ_DMA_TO_HOST)) {
			done = -EIO;
			n = 1;
			continue;
		}
		done = -EINVAL;
		if (dev_movable(c) && n >= MOVE_MIN_PAGES)
			done = uffd_move(addr, src, n * PAGE_SIZE,
					 UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES | move_mode);
		if (done > 0) {
			pages_commit_to_host(c, r, addr, (size_t)done / PAGE_SIZE, false, true);
			break;
		}
		/* Small windows, and read-only or locked mappings, copy. */
		if (done == -EINVAL)
			done = uffd_copy(addr, (void *)src, n * PAGE_SIZE, copy_mode);
		if (done > 0) {
			pages_commit_to_host(c, r, addr, (size_t)done / PAGE_SIZE, true, false);
			break;
		}
		if (done == -EAGAIN)
			return FAULT_RETRY;
		if (done == -ENOENT) {
			/* The mapping went away under us; its UNMAP event follows. */
			uffd_wake(addr, PAGE_SIZE);
			return FAULT_DONE;
		}
		n = 1;
	}
	if (done > 0) {
		if (wake_after)
			uffd_wake(addr, (size_t)done);
		c->last_fault_end = addr + (size_t)done;
		return FAULT_DONE;
	}
	fail_access(c, addr, w, tid, done);
	return FAULT_DONE;
}

/*
 * Whether pages coming home from c keep their copy there, clean (swap
 * cache): where c offers it, and while c is less than half full, as the
 * kernel frees a swap slot on swap-in once swap is half full
 * (vm_swap_full): kept copies must not crowd out evictions. Not on ranges
 * with advice, whose pages are mapped for other devices at the commit.
 */
static bool keeps_clean(struct hmm_device_core *c, struct range *r)
{
	return dev_keep_clean(c) && !r->nattrs && devmem_used(&c->mem) < c->mem.nslots / 2;
}

/* The pages came home: as clean duplicates where c keeps its copy. */
static void commit_home(struct hmm_device_core *c, struct range *r, uintptr_t addr, size_t n,
			bool clean)
{
	if (clean)
		pages_commit_to_host_clean(c, r, addr, n);
	else
		pages_commit_to_host(c, r, addr, n, false, true);
}

/*
 * Device memory only the device can read, a few pages of it: the backend
 * copies them here and now (ops->fetch), and one UFFDIO_COPY installs them
 * and wakes the thread: one hand-off (kernel to fault thread and back), as
 * a raw userfaultfd handler has. false: the backend would wait, so the
 * caller queues the copy instead.
 */
#define FETCH_MAX_PAGES 16

static bool fault_in_fetch(struct hmm_device_core *c, struct range *r, uintptr_t addr, size_t n,
			   pid_t tid, enum fault_result *ret)
{
	/* reg.lock held: one fault at a time uses it. */
	static char bounce[FETCH_MAX_PAGES * PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
	uint64_t *w = range_word(r, addr);
	bool wake_after = r->nattrs != 0; /* as fault_in_inline */
	bool clean = keeps_clean(c, r);
	long done = -EIO;

	n = MIN(n, FETCH_MAX_PAGES);
	for (unsigned attempt = 0; attempt < opt.fault_retries; attempt++) {
		int err = dev_fetch(c, pw_slot(*w), (uint32_t)n, bounce);

		if (err == -EWOULDBLOCK && !attempt)
			return false;
		if (err) {
			done = err;
			continue;
		}
		done = uffd_copy(addr, bounce, n * PAGE_SIZE,
				 (wake_after ? UFFDIO_COPY_MODE_DONTWAKE : 0) |
					 (clean ? UFFDIO_COPY_MODE_WP : 0));
		if (done > 0) {
			commit_home(c, r, addr, (size_t)done / PAGE_SIZE, clean);
			if (wake_after)
				uffd_wake(addr, (size_t)done);
			c->last_fault_end = addr + (size_t)done;
			*ret = FAULT_DONE;
			return true;
		}
		if (done == -EAGAIN) {
			*ret = FAULT_RETRY;
			return true;
		}
		if (done == -ENOENT) {
			uffd_wake(addr, PAGE_SIZE); /* unmapped under us: its event follows */
			*ret = FAULT_DONE;
			return true;
		}
		n = 1;
	}
	fail_access(c, addr, w, tid, done);
	*ret = FAULT_DONE;
	return true;
}

struct async_fault {
	struct dma_job job;
	struct dma_run run;
	struct hmm_device_core *c;
	pid_t tid;
	unsigned attempts;
	bool readahead;     /* nobody waits for it: a failure only leaves the pages where they are */
	bool clean;         /* the device keeps its copy: the pages come home as duplicates */
};

/*
 * Queue thread: the copy home finished; commit, then wake the faulter.
 *
 * A page emptied while it came home (MADV_DONTNEED, a freed block an
 * allocator purged) was not installed, or was emptied by the kernel after
 * it was (dmaq.c installs under reg.lock, which the fault thread applies
 * events under): it reads as zero, and its claim ends here with nothing
 * to keep. A clean copy was installed write-protected, so that a write
 * parks (fault_wp) until the commit makes it a duplicate to collapse.
 */
static void async_done(struct dma_job *job)
{
	struct async_fault *af = container_of(job, struct async_fault, job);
	struct dma_run *run = &af->run;
	size_t done = run->d.done;
	struct range *r;

	reg_lock();
	r = reg_lookup(run->addr);
	for (size_t i = 0, k; r && i < done; i += k) {
		uintptr_t at = run->addr + i * PAGE_SIZE;

		for (k = 0; i + k < done && !(*range_word(r, at + k * PAGE_SIZE) & PW_DISCARD); k++)
			;
		if (!k) {
			pages_release(r, at, 1);
			k = 1;
			continue;
		}
		commit_home(af->c, r, at, k, af->clean);
	}
	if (r && done < run->d.npages) {
		uintptr_t rest = run->addr + done * PAGE_SIZE;
		uint64_t *w = range_word(r, rest);
		/* -ENOENT: unmapped under us (its event follows), not a failed copy. */
		bool failed = !done && !af->readahead && run->d.status != -ENOENT;

		if (failed && ++af->attempts < opt.fault_retries) {
			reg_unlock();
			dmaq_submit(&af->c->q, job);
			return;
		}
		if (failed)
			fail_access(af->c, rest, w, af->tid, run->d.status);
		pages_release(r, rest, run->d.npages - done);
	}
	/*
	 * The faulting thread is ours to wake, whatever happened: it was not
	 * parked. Unmapped in flight, it wakes to find the mapping gone.
	 */
	uffd_wake(run->addr, (size_t)run->d.npages * PAGE_SIZE);
	reg_unlock();
	meta_free(af, sizeof(*af));
}

/*
 * Device memory only the device can read: a DMA job, whose completion wakes
 * the faulting thread (so the fault is not parked). With readahead, nobody
 * faulted there (yet).
 */
static bool fault_in_async(struct hmm_device_core *c, struct range *r, uintptr_t addr, size_t n,
			   pid_t tid, bool readahead)
{
	struct async_fault *af = meta_alloc(sizeof(*af));
	uint64_t *w = range_word(r, addr);

	if (!af)
		return false;
	af->c = c;
	af->tid = tid;
	af->readahead = readahead;
	af->run.addr = addr;
	af->run.d.npages = (uint32_t)n;
	af->run.d.slot = pw_slot(*w);
	af->job.op = DMA_COPY_OUT;
	af->job.runs = &af->run;
	af->job.nruns = 1;
	af->job.complete = async_done;
	af->job.dontwake = true;
	af->job.urgent = true;
	af->clean = keeps_clean(c, r);
	af->job.wp = af->clean;
	for (size_t i = 0; i < n; i++)
		page_claim(&w[i]);
	c->last_fault_end = addr + n * PAGE_SIZE;
	dmaq_submit(&c->q, &af->job);
	return true;
}

/* The pages from addr on c that read-ahead may take: none busy, pinned or elsewhere. */
static size_t readahead_run(struct hmm_device_core *c, struct range *r, uintptr_t addr, size_t max)
{
	uint64_t w;

	if (addr < r->start || addr >= r->end)
		return 0;
	w = *range_word(r, addr);
	if (!pw_on(w, c) || (w & (PW_BUSY | PW_UNMAPPED | PW_EXCL | PW_DUP | PW_POISONED)))
		return 0;
	return unpinned_pages(c, addr, device_run(r, addr, max));
}

/*
 * Read-ahead, as the kernel's for swap and files: once faults have come in
 * address order long enough for the window to reach its largest, the next
 * windows are read too, in the same trip through the queue (it gathers
 * them into one dma call, all in flight at once), and installed without
 * waking anyone. The stream's next fault comes where read-ahead stopped.
 */
#define READAHEAD_WINDOWS 3

static void readahead(struct hmm_device_core *c, struct range *r, uintptr_t from, size_t window)
{
	for (unsigned i = 0; i < READAHEAD_WINDOWS; i++) {
		size_t n = readahead_run(c, r, from, window);

		if (!n || !pager_has_room(n) || !fault_in_async(c, r, from, n, 0, true))
			return;
		from += n * PAGE_SIZE;
	}
}

enum fault_result fault_missing(struct range *r, uintptr_t addr, pid_t tid, bool internal)
{
	uint64_t *w = range_word(r, addr);
	struct hmm_device_core *c;
	enum fault_result res;
	size_t n;

	if (*w & PW_BUSY) {
		/*
		 * A migration's own copy read a page that vanished under it
		 * (discarded by the application): its contents are zero. Parking
		 * would deadlock the migration on itself.
		 */
		return internal ? zero_fill_one(addr) : FAULT_PARK;
	}
	if (*w & PW_EXCL) {
		int err = excl_revoke(addr, w);

		if (err == -EBUSY)
			return FAULT_PARK;
		if (err == -EAGAIN)
			return FAULT_RETRY;
		if (err)
			uffd_wake(addr, PAGE_SIZE);
		return FAULT_DONE;
	}
	if (*w & PW_POISONED) {
		/* A stale fault: a poisoned page raises SIGBUS, not userfaults. */
		uffd_wake(addr, PAGE_SIZE);
		return FAULT_DONE;
	}
	if (*w & PW_DUP) /* the host copy was reclaimed (MADV_FREE): zero */
		page_drop(addr, w);
	/* A page is about to join the host: past the limit, room first (pager.c). */
	if (!internal && pager_throttle())
		return FAULT_THROTTLE;
	if (!pw_loc(*w))
		return zero_fill(r, addr);
	c = dev_by_loc(pw_loc(*w));
	if (dev_coherent(c))
		return zero_fill_one(addr); /* never populated; stays in device memory */
	pager_note_fault(addr, true);

	n = fault_window(c, r, addr, dev_host_mapped(c) ? opt.fault_around : PMD_PAGES);
	n = unpinned_pages(c, addr, n);
	if (!n)
		return FAULT_PARK; /* the device is writing it right now */
	if (dev_host_mapped(c))
		return fault_in_inline(c, r, addr, n, tid);
	/*
	 * Alone, served here and now. With other faults waiting, or some in
	 * the queue (their completions wait for reg.lock, which we hold),
	 * queued: the queue has them all in flight at once.
	 */
	if (n <= FETCH_MAX_PAGES && !handler_faults_behind() && dmaq_urgent_idle(&c->q) &&
	    fault_in_fetch(c, r, addr, n, tid, &res))
		return res;
	if (!fault_in_async(c, r, addr, n, tid, false))
		return FAULT_RETRY;
	if (n > FETCH_MAX_PAGES && n == MIN(opt.fault_around, PMD_PAGES))
		readahead(c, r, addr + n * PAGE_SIZE, n); /* a stream */
	return FAULT_DONE;
}

enum fault_result fault_wp(struct range *r, uintptr_t addr)
{
	uint64_t *w = range_word(r, addr);
	int err;

	if ((*w & (PW_BUSY | PW_ZAPPING)) == (PW_BUSY | PW_ZAPPING))
		return FAULT_PARK;
	/* A clean copy a queued fault-in installed, not committed yet (async_done): wait. */
	if ((*w & PW_BUSY) && pw_loc(*w))
		return FAULT_PARK;
	if (*w & PW_BUSY)
		page_mark_aborted(w); /* the CPU wins; the copy in flight is dropped */
	else if (*w & PW_DUP)
		return dup_collapse(addr, w) == -EAGAIN ? FAULT_RETRY : FAULT_DONE;
	err = uffd_protect(addr, PAGE_SIZE, false, true);
	if (err == -EAGAIN)
		return FAULT_RETRY;
	return FAULT_DONE;
}
