// SPDX-License-Identifier: MIT
/*
 * The host-memory limit (UHMM_HOST_LIMIT): managed memory resident on the
 * host is kept under the limit by evicting cold pages, a 2 MiB block at a
 * time, to the first device; they fault back on access like swapped pages.
 *
 * Residency is measured with PAGEMAP_SCAN (present pages that are not the
 * shared zero page). Between measurements it is estimated from above: under
 * a limit every managed range is armed from the start (registry.c), so every
 * page that can become resident arrives through our fault thread (a first
 * touch, or a page coming home), and a new measurement is due only when the
 * estimate passes the limit.
 *
 * The limit holds the way the kernel's direct reclaim makes it hold: a fault
 * that would add a page while the estimate is past the limit by more than a
 * little slack is throttled (the faulting thread stays asleep in the kernel,
 * handler.c) and the agent is woken to evict at once; the thread faults again
 * once there is room. The fault thread itself never evicts: it may not wait.
 * Each block evicted makes room at once (a sleeper need not wait for the end
 * of the round), and a throttled fault waits as long as eviction makes
 * progress, however slow the device: the limit holds against any allocator.
 * When nothing can be evicted (the device is full, every block is pinned),
 * when the agent has waited STALL_NS at the gate while a fault waits (held
 * behind a fork the sleeper's own thread may hold up), or when no eviction
 * has completed for IDLE_MAX_NS while a fault waits (stuck where we cannot
 * see), the throttle is off, with one log line: the limit is exceeded
 * rather than the program stopped. It is on again as soon as an eviction
 * completes, or after STUCK_NS at the latest. A device
 * whose store is full (ENOSPC) is left alone for a while, a second, twice as
 * long each time it is still full, or until a block's worth of its pages
 * has left it: every try would write a batch only to have it fail.
 *
 * Coldness is a CLOCK over blocks: the fault thread sets a block's reference
 * bit whenever it serves a fault there; the hand clears bits and evicts
 * blocks whose bit is already clear. Hot pages that never fault look cold to
 * this, so they may leave once; thrashing detection in the manner of NVIDIA
 * UVM corrects that: a block faulted back within UHMM_THRASH_MS of its
 * eviction twice in a row is pinned to the host, for twice as long each time.
 *
 * Faults reach us through a ring the fault thread fills without waiting;
 * everything else runs on the agent thread.
 */
#include <errno.h>
#include <string.h>

#include "engine.h"

#define BLOCK_SHIFT 21
#define BLOCK_SIZE (1ul << BLOCK_SHIFT)
#define RING_SIZE 4096
#define THRASH_BOUNCES 2
#define MAX_PIN_SHIFT 4
#define RESCAN_NS 1000000000ull     /* measure at least this often */
#define STUCK_NS 1000000000ull      /* no throttling for this long after a failed reclaim */
#define STALL_NS 200000000ull       /* a throttled fault waits this long with the agent at the gate */
#define IDLE_MAX_NS 5000000000ull   /* ... or this long with no eviction done, whatever the agent does */
#define FULL_NS 1000000000ull       /* no eviction to a full store for this long at first */
#define MAX_FULL_SHIFT 4

struct block {
	uintptr_t addr;             /* 0: free slot */
	uint64_t evicted_ns;
	uint64_t pinned_until_ns;
	uint8_t ref;
	uint8_t bounces;
	uint8_t pins;
};

struct note {
	uintptr_t addr;
	bool from_device;
};

/* Resident pages of one block, from a measurement. */
struct resident {
	uintptr_t block;
	size_t pages;
	size_t first_run, nruns;    /* into pager.runs */
};

static struct {
	/* fault thread -> agent */
	struct note ring[RING_SIZE];
	_Atomic uint32_t head, tail;
	_Atomic bool urgent;        /* throttled faults wait: evict now */
	void (*_Atomic wake)(void); /* wakes the agent (installed by it) */

	/* agent -> fault thread: residency as it can be estimated anywhere */
	_Atomic int64_t base;       /* resident pages minus arrivals(), at the last look */
	_Atomic bool can_evict;     /* a device to evict to */
	_Atomic uint64_t stuck_until_ns;
	_Atomic uint64_t progress_ns;   /* when an eviction last completed */
	_Atomic uint64_t agent;         /* enum agent_phase | the time it began (ns, low bits off) */
	_Atomic bool warned_stuck;

	/* agent only */
	struct block *blocks;       /* open addressing on the block number */
	size_t cap, used;
	uintptr_t hand;
	uint64_t measured_pages;
	uint64_t measured_ns;
	uint64_t arrivals_at_measure;
	bool warned_full;
	struct hmm_device_core *full;   /* said ENOSPC: left alone until full_until_ns */
	uint64_t full_until_ns;
	uint64_t full_resident;         /* its pages then */
	unsigned full_backoffs;         /* in a row */

	struct span *runs;          /* resident runs of the last measurement */
	size_t nruns, runs_cap;
	struct resident *res;
	size_t nres, res_cap;
} pager;

void pager_note_fault(uintptr_t addr, bool from_device)
{
	uint32_t head, tail;

	if (!opt.host_limit)
		return;
	head = atomic_load_explicit(&pager.head, memory_order_relaxed);
	tail = atomic_load_explicit(&pager.tail, memory_order_acquire);
	if (head - tail >= RING_SIZE)
		return; /* a lost hint, no more */
	pager.ring[head % RING_SIZE] = (struct note){ addr, from_device };
	atomic_store_explicit(&pager.head, head + 1, memory_order_release);
}

/* Pages that may have become resident since the last measurement. */
static uint64_t arrivals(void)
{
	return atomic_load(&stats.zero_fills) + atomic_load(&stats.pages_to_host);
}

static uint64_t limit_pages(void)
{
	return opt.host_limit / PAGE_SIZE;
}

/* How far past the limit a fault may take residency before it waits. */
static uint64_t slack_pages(void)
{
	return MAX(limit_pages() / 32, 2 * opt.zero_around);
}

bool pager_over_limit(void)
{
	int64_t estimate;

	if (!opt.host_limit || !atomic_load_explicit(&pager.can_evict, memory_order_relaxed))
		return false;
	estimate = atomic_load_explicit(&pager.base, memory_order_relaxed) + (int64_t)arrivals();
	if (estimate <= (int64_t)(limit_pages() + slack_pages()))
		return false;
	return now_ns() >= atomic_load_explicit(&pager.stuck_until_ns, memory_order_relaxed);
}

bool pager_throttle(void)
{
	void (*wake)(void);

	if (!pager_over_limit())
		return false;
	if (!atomic_exchange(&pager.urgent, true) &&
	    (wake = atomic_load_explicit(&pager.wake, memory_order_acquire)))
		wake();
	return true;
}

bool pager_take_urgent(void)
{
	return atomic_load_explicit(&pager.urgent, memory_order_relaxed) &&
	       atomic_exchange(&pager.urgent, false);
}

void pager_set_wake(void (*fn)(void))
{
	atomic_store_explicit(&pager.wake, fn, memory_order_release);
	if (!fn) /* nobody left to make room: nobody may wait for it */
		atomic_store(&pager.can_evict, false);
}

void pager_agent_phase(enum agent_phase phase)
{
	atomic_store_explicit(&pager.agent, (now_ns() & ~3ull) | phase, memory_order_relaxed);
}

/*
 * Has a fault that was throttled at since waited in vain? Not while the
 * agent can work: a slow device is no reason to let the limit go (an
 * O_DIRECT write per run, a storage tier's DMA thread busy punching
 * released slots for a second while the agent waits for it), nor is a
 * process that was not given a CPU for a while (every thread of it, the
 * agent too: wall time alone would call that stuck). The agent is stuck
 * when it has waited at the gate for STALL_NS: a fork or hmm_fini waits
 * for every call in flight to leave, and one of those may be the thread
 * that sleeps here. Anything else that could hold it (it never waits for
 * an application thread otherwise: the copies into a device fault on the
 * DMA thread, an internal one) is caught by IDLE_MAX_NS without an
 * eviction, so that no fault waits forever.
 */
bool pager_stalled(uint64_t since, uint64_t now)
{
	uint64_t agent = atomic_load_explicit(&pager.agent, memory_order_relaxed);
	uint64_t last = MAX(since, atomic_load_explicit(&pager.progress_ns, memory_order_relaxed));
	uint64_t at = agent & ~3ull;

	if (now <= last)
		return false;
	if ((agent & 3) == AGENT_AT_GATE && now - last >= STALL_NS && now > at &&
	    now - at >= STALL_NS)
		return true;
	return now - last >= IDLE_MAX_NS;
}

/* Stop throttling for a while: the limit cannot be held right now. */
void pager_give_up(const char *why)
{
	atomic_store(&pager.stuck_until_ns, now_ns() + STUCK_NS);
	if (!atomic_exchange(&pager.warned_stuck, true))
		log_warn("host limit: %s; managed memory goes above the limit for now", why);
}

/* ---- block table ---------------------------------------------------------- */

static size_t slot_of(uintptr_t block, size_t cap)
{
	return (size_t)(((block >> BLOCK_SHIFT) * 0x9e3779b97f4a7c15ull) >> 20) & (cap - 1);
}

static struct block *find(uintptr_t block)
{
	if (!pager.cap)
		return NULL;
	for (size_t i = slot_of(block, pager.cap);; i = (i + 1) & (pager.cap - 1)) {
		if (pager.blocks[i].addr == block)
			return &pager.blocks[i];
		if (!pager.blocks[i].addr)
			return NULL;
	}
}

static void put(struct block *v, size_t cap, const struct block *b)
{
	size_t i = slot_of(b->addr, cap);

	while (v[i].addr)
		i = (i + 1) & (cap - 1);
	v[i] = *b;
}

/* Grow the table, keeping only blocks whose history still matters. */
static int grow(uint64_t now)
{
	size_t cap = pager.cap ? pager.cap * 2 : 1024;
	struct block *v = meta_alloc(cap * sizeof(*v));
	size_t used = 0;

	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < pager.cap; i++) {
		struct block *b = &pager.blocks[i];

		if (!b->addr)
			continue;
		if (!b->ref && b->pinned_until_ns < now && now - b->evicted_ns > 8 * opt.thrash_ms * 1000000ull)
			continue;
		put(v, cap, b);
		used++;
	}
	meta_free(pager.blocks, pager.cap * sizeof(*pager.blocks));
	pager.blocks = v;
	pager.cap = cap;
	pager.used = used;
	return 0;
}

static struct block *get(uintptr_t block, uint64_t now)
{
	struct block *b = find(block);

	if (b)
		return b;
	if ((pager.used + 1) * 2 > pager.cap && grow(now))
		return NULL;
	put(pager.blocks, pager.cap, &(struct block){ .addr = block, .ref = 1 });
	pager.used++;
	return find(block);
}

/* ---- faults: reference bits and thrashing --------------------------------- */

static void drain_notes(uint64_t now)
{
	uint32_t tail = atomic_load_explicit(&pager.tail, memory_order_relaxed);
	uint32_t head = atomic_load_explicit(&pager.head, memory_order_acquire);
	uint64_t window = opt.thrash_ms * 1000000ull;

	for (; tail != head; tail++) {
		struct note n = pager.ring[tail % RING_SIZE];
		struct block *b = get(ALIGN_DOWN(n.addr, BLOCK_SIZE), now);

		if (!b)
			continue;
		b->ref = 1;
		if (!n.from_device || !b->evicted_ns)
			continue;
		if (now - b->evicted_ns > window) {
			b->bounces = 0;
			continue;
		}
		STAT_ADD(thrash_events, 1);
		if (++b->bounces < THRASH_BOUNCES)
			continue;
		/* It keeps coming back: leave it on the host for a while. */
		b->bounces = 0;
		b->pinned_until_ns = now + (window << MIN(b->pins, MAX_PIN_SHIFT));
		b->pins++;
		b->evicted_ns = 0;
		log_debug("host limit: block 0x%lx is thrashing; pinned for %llu ms",
			  (unsigned long)b->addr,
			  (unsigned long long)((b->pinned_until_ns - now) / 1000000));
	}
	atomic_store_explicit(&pager.tail, tail, memory_order_release);
}

/* ---- measuring ------------------------------------------------------------ */

static int add_run(uintptr_t s, uintptr_t e, void *arg)
{
	(void)arg;
	/* Split at block boundaries, so each run belongs to one block. */
	while (s < e) {
		uintptr_t block = ALIGN_DOWN(s, BLOCK_SIZE), stop = MIN(e, block + BLOCK_SIZE);
		struct resident *last = pager.nres ? &pager.res[pager.nres - 1] : NULL;

		if (pager.nruns == pager.runs_cap) {
			size_t cap = pager.runs_cap ? pager.runs_cap * 2 : 256;
			struct span *v = meta_realloc(pager.runs, pager.runs_cap * sizeof(*v),
						      cap * sizeof(*v));

			if (!v)
				return -ENOMEM;
			pager.runs = v;
			pager.runs_cap = cap;
		}
		if (!last || last->block != block) {
			if (pager.nres == pager.res_cap) {
				size_t cap = pager.res_cap ? pager.res_cap * 2 : 256;
				struct resident *v = meta_realloc(pager.res, pager.res_cap * sizeof(*v),
								  cap * sizeof(*v));

				if (!v)
					return -ENOMEM;
				pager.res = v;
				pager.res_cap = cap;
			}
			last = &pager.res[pager.nres++];
			*last = (struct resident){ .block = block, .first_run = pager.nruns };
		}
		pager.runs[pager.nruns++] = (struct span){ s, stop };
		last->pages += (stop - s) >> PAGE_SHIFT;
		last->nruns++;
		s = stop;
	}
	return 0;
}

static int measure(uint64_t now)
{
	struct span *spans;
	size_t n;
	uint64_t total = 0;
	int err;

	reg_lock();
	err = reg_snapshot(&spans, &n);
	reg_unlock();
	if (err)
		return err;
	pager.nruns = pager.nres = 0;
	pager.arrivals_at_measure = arrivals();
	for (size_t i = 0; i < n && !err; i++)
		err = pagemap_resident_runs(spans[i].start, spans[i].end, add_run, NULL);
	meta_free(spans, n * sizeof(*spans));
	for (size_t i = 0; i < pager.nres; i++)
		total += pager.res[i].pages;
	pager.measured_pages = total;
	pager.measured_ns = now;
	return err;
}

/* ---- evicting ------------------------------------------------------------- */

static struct hmm_device_core *first_device(void)
{
	for (int i = 0; i < MAX_DEVICES; i++)
		if (dev_table[i] && !dev_table[i]->closing)
			return dev_table[i];
	return NULL;
}

/*
 * Pages have left the host: a throttled fault may find room now, without
 * waiting for the round to end, and a limit that gave way holds again.
 */
static void made_room(size_t pages)
{
	atomic_fetch_sub(&pager.base, (int64_t)pages);
	atomic_store(&pager.progress_ns, now_ns());
	atomic_store(&pager.stuck_until_ns, 0);
}

/* Move one block's resident runs to c; returns the pages moved. */
static size_t evict(struct hmm_device_core *c, const struct resident *res, bool *full,
		    bool *nospace)
{
	size_t moved = 0;

	for (size_t i = 0; i < res->nruns; i++) {
		const struct span *run = &pager.runs[res->first_run + i];
		struct mig_result mr;

		if (mig_range(run->start, run->end, c, &mr))
			continue; /* unmapped or changed since we looked: nothing to do */
		if (mr.placed)
			made_room(mr.placed);
		moved += mr.placed;
		if (mr.enomem || mr.enospc) {
			*full = mr.enomem;
			*nospace = mr.enospc;
			break;
		}
	}
	return moved;
}

/* c's store is full: leave it alone for a while (migrate.c has said so). */
static void back_off(struct hmm_device_core *c, uint64_t now)
{
	uint64_t ns = FULL_NS << MIN(pager.full_backoffs, MAX_FULL_SHIFT);

	pager.full = c;
	pager.full_until_ns = now + ns;
	pager.full_resident = atomic_load(&c->resident);
	pager.full_backoffs++;
	log_debug("host limit: %s is full; no eviction to it for %llu ms", c->dev->name,
		  (unsigned long long)(ns / 1000000));
}

/*
 * Is c left alone? Until the time is up, its pages made room by leaving, or
 * a copy to it worked (c->full, migrate.c).
 */
static bool backing_off(struct hmm_device_core *c, uint64_t now)
{
	if (!c || pager.full != c)
		return false;
	if (now < pager.full_until_ns && atomic_load(&c->full) &&
	    atomic_load(&c->resident) + BLOCK_SIZE / PAGE_SIZE > pager.full_resident)
		return true;
	pager.full = NULL;
	return false;
}

/*
 * The CLOCK sweep: evict unreferenced, unpinned blocks until need pages have
 * left; if they were too few to bring residency down by must pages (to the
 * limit), pinned and referenced blocks too. A pin keeps a thrashing block
 * home while the limit leaves room for it, no longer: a program that scans
 * more than the limit over and over pins a block after another, and pins
 * that filled the limit would stop it.
 */
static size_t sweep(struct hmm_device_core *c, size_t need, size_t must, uint64_t now)
{
	size_t start = 0, moved = 0;
	bool full = false, nospace = false;

	if (!pager.nres)
		return 0;
	while (start < pager.nres && pager.res[start].block < pager.hand)
		start++;
	/* Two turns: the first may only clear reference bits. A third if must says so. */
	for (size_t k = 0; k < 3 * pager.nres && !full && !nospace; k++) {
		const struct resident *res = &pager.res[(start + k) % pager.nres];
		bool forced = k >= 2 * pager.nres;
		struct block *b;

		if (moved >= (forced ? must : need))
			break;
		b = get(res->block, now);
		pager.hand = res->block + BLOCK_SIZE;
		if (!b || b->evicted_ns == now)
			continue; /* already evicted on an earlier turn */
		if (!forced && b->pinned_until_ns > now)
			continue;
		if (!forced && b->ref) {
			b->ref = 0;
			continue;
		}
		if (forced && b->pinned_until_ns > now) {
			log_debug("host limit: block 0x%lx leaves though pinned: no room for it",
				  (unsigned long)b->addr);
			b->pinned_until_ns = 0;
		}
		moved += evict(c, res, &full, &nospace);
		b->evicted_ns = now;
	}
	if (nospace)
		back_off(c, now);
	else if (moved)
		pager.full_backoffs = 0;
	if (full && !pager.warned_full) {
		log_warn("host limit: %s is full; managed memory stays above the limit",
			 c->dev->name);
		pager.warned_full = true;
	}
	return moved;
}

/* What the fault thread estimates from: this look, and what arrives after it. */
static void publish(struct hmm_device_core *c)
{
	atomic_store(&pager.base, (int64_t)pager.measured_pages - (int64_t)pager.arrivals_at_measure);
	atomic_store(&pager.can_evict, c != NULL);
}

/*
 * A round: on the agent's timer, or at once when a fault waits for room.
 * Either way the fault thread is kicked at the end, so that throttled
 * faults look at the limit again.
 */
void pager_tick(bool urgent)
{
	uint64_t now = now_ns(), limit = limit_pages(), low, estimate;
	struct hmm_device_core *c = NULL;
	size_t moved;

	if (!opt.host_limit)
		return;
	drain_notes(now);
	estimate = pager.measured_pages + (arrivals() - pager.arrivals_at_measure);
	if (!urgent && estimate <= limit && now - pager.measured_ns < RESCAN_NS)
		return;
	if (backing_off(first_device(), now)) {
		/* Nothing to measure for: nothing will be evicted, and nobody may wait for it. */
		if (estimate > limit + slack_pages())
			pager_give_up("the device to evict to is full");
		goto out;
	}
	if (measure(now)) {
		pager_give_up("cannot measure host residency");
		goto out;
	}
	c = first_device();
	if (pager.measured_pages <= limit || !c)
		goto out;
	/* Down to a low watermark, so the next eviction is not due at once. */
	low = limit - MIN(limit / 16 + BLOCK_SIZE / PAGE_SIZE, limit / 2);
	moved = sweep(c, pager.measured_pages - low, pager.measured_pages - limit, now);
	STAT_ADD(evictions, moved);
	pager.measured_pages -= MIN(moved, pager.measured_pages);
	/* A round that moved some may be followed by one that moves more. */
	if (!moved && pager.measured_pages > limit + slack_pages())
		pager_give_up("nothing more can be evicted");
out:
	publish(c);
	if (urgent)
		kick();
}

void pager_fork_child(void)
{
	atomic_store(&pager.head, 0);
	atomic_store(&pager.tail, 0);
	atomic_store(&pager.urgent, false);
	atomic_store(&pager.can_evict, false);
	atomic_store(&pager.wake, NULL);
	atomic_store(&pager.agent, AGENT_IDLE);
	pager.measured_pages = 0;
	pager.measured_ns = 0;
	pager.full = NULL;
	pager.full_backoffs = 0;
}

/*
 * Whether pages more can come home without a fault asking for them (fault
 * read-ahead): with no limit, or while the estimate stays under it. They
 * are not throttled, so they must not be what pushes residency past it.
 */
bool pager_has_room(size_t pages)
{
	if (!opt.host_limit)
		return true;
	return atomic_load_explicit(&pager.base, memory_order_relaxed) + (int64_t)arrivals() +
		       (int64_t)pages <= (int64_t)limit_pages();
}
