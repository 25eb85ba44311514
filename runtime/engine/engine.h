/* SPDX-License-Identifier: MIT */
/*
 * Layer 4, engine: what moves pages, and when. The fault thread and the CPU
 * faults it serves, the reactions to mapping changes (munmap, madvise,
 * mremap), migration in batches in both directions, read duplication and
 * exclusive access, the device's side of HMM (device faults, reads, writes,
 * atomics), snapshots, advice and prefetch, and the policies that move pages
 * on their own: the host-memory limit and chaos. Every change of a page's
 * state is a transition of the page-state machine (state/pagestate.c).
 */
#ifndef UHMM_ENGINE_H
#define UHMM_ENGINE_H

#include "state.h"

/* ---- batch.c: pages in flight, and the runs a DMA queue moves -------------- */

/* What became of one page of a batch. */
enum bpage_status {
	BP_DONE = 0,            /* moved or copied */
	BP_PENDING = 1,         /* not attempted (yet), or released */
	BP_RETRY_COPY = 2,      /* a move could not be done; the copy path may */
	BP_DROPPED = 3,         /* out of the batch (protection failed) */
	/* negative: -errno, the copy failed */
};

struct bpage {
	uintptr_t addr;
	uint64_t slot;
	int status;             /* enum bpage_status or -errno */
	bool present;           /* the CPU page is populated (else copies as zeros) */
	bool clean;             /* its copy on the device is still good: nothing to copy */
};

struct batch {
	struct hmm_device_core *c;
	struct bpage *p;
	size_t n;
	struct dma_run *runs;
	unsigned nruns;
};

/* Addresses a migration call remembers along the way. */
struct addr_set {
	uintptr_t *v;
	size_t n, cap;
};

struct mig_result {
	size_t placed;      /* pages on the target afterwards */
	bool enoent;        /* some page cannot be placed */
	bool enomem;        /* device memory ran out */
	bool enospc;        /* the device's backing store is full (a storage tier) */
	bool eio;           /* a copy failed */
};

int batch_init(struct batch *b, struct hmm_device_core *c, size_t max);
void batch_fini(struct batch *b, size_t max);
/* Runs of pages consecutive in address and slot, among those keep() accepts. */
void batch_build_runs(struct batch *b, bool (*keep)(const struct bpage *p), bool by_presence);
/* Every run through c's queue as one job, then each run's result to its pages. */
void batch_run(struct hmm_device_core *c, struct batch *b, enum dma_op op);
void batch_scatter_status(struct batch *b);
void batch_wake(const struct batch *b);
static inline bool bpage_done(const struct bpage *p)
{
	return p->status == BP_DONE;
}
bool addr_set_has(const struct addr_set *s, uintptr_t addr);
void addr_set_add(struct addr_set *s, uintptr_t addr);
void addr_set_free(struct addr_set *s);
/*
 * Write-protect the runs of bt for the copy path; pages whose protection
 * fails are released (copying them unprotected could lose a concurrent
 * write) and leave bt. Returns whether anything is left.
 */
bool batch_protect(struct batch *bt, struct addr_set *failed, struct mig_result *res);
/* reg.lock held: give up on a page: its slot goes back, its claim ends. */
void batch_release_page(struct hmm_device_core *c, const struct bpage *p, bool slot_stale);

/* ---- migrate.c: placing pages (hmm_migrate, prefetch, eviction, chaos) ----- */

/* Place every page of [start, end) that can be placed on dst (NULL: the host). */
int mig_range(uintptr_t start, uintptr_t end, struct hmm_device_core *dst, struct mig_result *res);

/* ---- fileprivate.c: the written pages of private file mappings ------------ */

/*
 * The runs of [start, end) (one VMA, flags vflags) that a private file
 * mapping holds as anonymous copies become managed anonymous memory with
 * the same bytes. Whether anything was replaced (the VMAs changed).
 */
bool mig_replace_copied(uintptr_t start, uintptr_t end, unsigned vflags);

/* ---- home.c: bringing pages home ------------------------------------------ */

/* Bring every page of [start, end) on a device (any device if c is NULL) home. */
int mig_home(uintptr_t start, uintptr_t end, struct hmm_device_core *c, struct mig_result *res);
int mig_home_everything(struct hmm_device_core *c);
/* Spans advised ACCESSED_BY for any device, home. */
int mig_home_accessed_by(struct mig_result *res);
/* One batch of [a, b) home, per device; -EAGAIN: look again. */
struct home_set;
struct home_set *home_set_new(size_t max);
void home_set_free(struct home_set *hs, size_t max);
int home_batch(uintptr_t a, uintptr_t b, struct hmm_device_core *only, unsigned vflags,
	       struct home_set *hs, struct mig_result *res);

/* ---- dup.c: read-only duplicates (READ_MOSTLY) ------------------------------ */

int dup_make(struct hmm_device_core *c, uintptr_t start, uintptr_t end);
/* reg.lock held; -EAGAIN: an event is pending, try again. */
int dup_collapse(uintptr_t addr, uint64_t *w);

/* ---- exclusive.c: device-exclusive access ---------------------------------- */

int excl_grant(struct hmm_device_core *c, uintptr_t start, uintptr_t end, struct hmm_access *ret);
/* reg.lock held: revoke, bringing the page back; -EBUSY (device using it), -EAGAIN. */
int excl_revoke(uintptr_t addr, uint64_t *w);
/* reg.lock held: exclusive pages and duplicates of [a, b) (of device only, if
 * set) become plain pages again, ready to move; -EAGAIN: try later. */
int unshare_pages(uintptr_t a, uintptr_t b, struct hmm_device_core *only);

/* ---- fault.c: CPU faults on managed pages, on the fault thread ------------- */

enum fault_result {
	FAULT_DONE,     /* served: the thread is awake, or the job serving it wakes it */
	FAULT_PARK,     /* the page is busy: wake the thread to fault again when its owner kicks */
	FAULT_RETRY,    /* an event is pending (EAGAIN): wake it to fault again after reading it */
	FAULT_THROTTLE, /* past the host limit: wake it to fault again once there is room */
};

/* reg.lock held: a MISSING fault on a managed page; internal: a runtime thread's. */
enum fault_result fault_missing(struct range *r, uintptr_t addr, pid_t tid, bool internal);
/* reg.lock held: a write-protect fault. */
enum fault_result fault_wp(struct range *r, uintptr_t addr);

/* ---- events.c: the CPU's mapping changed (userfaultfd events) -------------- */

/* reg.lock held: [start, end) was unmapped, or emptied by madvise. */
void event_discard(uintptr_t start, uintptr_t end, bool unmapped);
/* reg.lock held: mremap moved [from, from + len) to to. */
void event_remapped(uintptr_t from, uintptr_t to, size_t len);

/* ---- handler.c: the fault thread ------------------------------------------- */

int handler_start(void);
void handler_stop(void);
void handler_fork_child(void);
void handler_barrier(void);         /* events read so far are processed */
/*
 * fork: the fault thread keeps reading (so that nobody blocks in the kernel
 * on an event it has not read) but processes nothing until resumed.
 */
void handler_pause(void);
void handler_resume(void);          /* reg.lock held: applies the events read meanwhile */
/* A migration's own MADV_DONTNEED of [start, end): its REMOVE event is ours. */
void handler_own_zap(uintptr_t start, uintptr_t end, bool add);
/* Fault thread: faults read with the one being served, still to come after it. */
unsigned handler_faults_behind(void);

/* ---- access.c: the device's side (read, write, atomics) --------------------- */

/* A device fault round over [start, end): map_only installs what is there. */
int acc_fault_round(struct hmm_device_core *c, uintptr_t start, uintptr_t end, bool write,
		    bool map_only);
int acc_copy(struct hmm_device_core *c, uintptr_t addr, size_t len, void *buf, bool write,
	     struct hmm_access *ret);
int acc_atomic_add(struct hmm_device_core *c, uint64_t *addr, uint64_t value, uint64_t *ret_old);
/* First page of [start, end) the device cannot access with need, or end. */
uintptr_t acc_first_unmapped(struct hmm_device_core *c, uintptr_t start, uintptr_t end,
			     uint8_t need);
/* The page is this device's to touch in place (its memory, its duplicate, held for it). */
bool acc_local(const struct hmm_device_core *c, uint64_t w, bool write);

/* ---- snapshot.c ------------------------------------------------------------ */

int snap_take(struct hmm_device_core *c, uintptr_t start, size_t npages, uint8_t *out);
int snap_residency(uintptr_t start, size_t npages, int *out);

/* ---- policy.c: advice and queued prefetch ---------------------------------- */

int policy_advise(uintptr_t start, uintptr_t end, int advice, struct hmm_device_core *c);
/* Wait for queued prefetches to c (NULL: all); never with the gate held. */
void policy_wait(const struct hmm_device_core *c);
void policy_stop(void);
void policy_fork_child(void);
void policy_forget_device(struct hmm_device_core *c);

/* ---- pager.c: the host-memory limit ---------------------------------------- */

/* UHMM_HOST_LIMIT, on the agent thread; urgent: pager_take_urgent() said so. */
void pager_tick(bool urgent);
void pager_note_fault(uintptr_t addr, bool from_device);   /* fault thread */
/* Any thread, no lock needed: host residency is past the limit and its slack. */
bool pager_over_limit(void);
/* The fault thread, before it adds a host page: over the limit, so wait (and wake the agent). */
bool pager_throttle(void);
bool pager_has_room(size_t pages);  /* read-ahead of that many pages stays under the limit */
bool pager_take_urgent(void);       /* a throttled fault waits: the agent runs a round now */
void pager_set_wake(void (*fn)(void));  /* how pager_throttle wakes the agent */
/* What the agent is doing, for pager_stalled: it says so when it changes. */
enum agent_phase {
	AGENT_IDLE,                 /* asleep until its next round: it will come */
	AGENT_AT_GATE,              /* waiting to hold the gate for a round (rt_hold) */
	AGENT_ROUND,                /* in a round */
};
void pager_agent_phase(enum agent_phase phase);
/* Any thread: a fault throttled at since waits in vain (the agent is stuck); logs nothing. */
bool pager_stalled(uint64_t since, uint64_t now);
/* The limit cannot be held now (why: for the one log line): no throttling for a while. */
void pager_give_up(const char *why);
void pager_fork_child(void);

/* ---- chaos.c --------------------------------------------------------------- */

void chaos_tick(void);              /* UHMM_CHAOS, on the agent thread */

#endif /* UHMM_ENGINE_H */
