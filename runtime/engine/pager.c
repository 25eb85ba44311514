// SPDX-License-Identifier: MIT
/*
 * The host-memory limit (UHMM_HOST_LIMIT): managed memory resident on the
 * host is kept under the limit by evicting cold pages, a 2 MiB block at a
 * time, to the first device; they fault back on access like swapped pages.
 *
 * Residency is measured with PAGEMAP_SCAN (present pages that are not the
 * shared zero page). Between measurements it is estimated from above: every
 * page that can become resident arrives through our fault thread (a first
 * touch, or a page coming home), so a new measurement is due only when the
 * estimate passes the limit.
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

	/* agent only */
	struct block *blocks;       /* open addressing on the block number */
	size_t cap, used;
	uintptr_t hand;
	uint64_t measured_pages;
	uint64_t measured_ns;
	uint64_t arrivals_at_measure;
	bool warned_full;

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

/* Pages that may have become resident since the last measurement. */
static uint64_t arrivals(void)
{
	return atomic_load(&stats.zero_fills) + atomic_load(&stats.pages_to_host);
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

uint64_t pager_resident_bytes(void)
{
	return pager.measured_pages * PAGE_SIZE;
}

/* ---- evicting ------------------------------------------------------------- */

static struct hmm_device_core *first_device(void)
{
	for (int i = 0; i < MAX_DEVICES; i++)
		if (dev_table[i] && !dev_table[i]->closing)
			return dev_table[i];
	return NULL;
}

/* Move one block's resident runs to c; returns the pages moved. */
static size_t evict(struct hmm_device_core *c, const struct resident *res, bool *full)
{
	size_t moved = 0;

	for (size_t i = 0; i < res->nruns; i++) {
		const struct span *run = &pager.runs[res->first_run + i];
		struct mig_result mr;

		if (mig_range(run->start, run->end, c, &mr))
			continue; /* unmapped or changed since we looked: nothing to do */
		moved += mr.placed;
		if (mr.enomem) {
			*full = true;
			break;
		}
	}
	return moved;
}

/* The CLOCK sweep: evict unreferenced, unpinned blocks until need pages left. */
static size_t sweep(struct hmm_device_core *c, size_t need, uint64_t now)
{
	size_t start = 0, moved = 0;
	bool full = false;

	if (!pager.nres)
		return 0;
	while (start < pager.nres && pager.res[start].block < pager.hand)
		start++;
	/* Two turns: the first may only clear reference bits. */
	for (size_t k = 0; k < 2 * pager.nres && moved < need && !full; k++) {
		const struct resident *res = &pager.res[(start + k) % pager.nres];
		struct block *b = get(res->block, now);

		pager.hand = res->block + BLOCK_SIZE;
		if (!b || b->pinned_until_ns > now || b->evicted_ns == now)
			continue; /* pinned, or already evicted on the first turn */
		if (b->ref) {
			b->ref = 0;
			continue;
		}
		moved += evict(c, res, &full);
		b->evicted_ns = now;
	}
	if (full && !pager.warned_full) {
		log_warn("host limit: %s is full; managed memory stays above the limit",
			 c->dev->name);
		pager.warned_full = true;
	}
	return moved;
}

void pager_tick(void)
{
	uint64_t now = now_ns(), limit_pages = opt.host_limit / PAGE_SIZE, low, estimate;
	struct hmm_device_core *c;
	size_t moved;

	if (!opt.host_limit)
		return;
	drain_notes(now);
	estimate = pager.measured_pages + (arrivals() - pager.arrivals_at_measure);
	if (estimate <= limit_pages && now - pager.measured_ns < RESCAN_NS)
		return;
	if (measure(now))
		return;
	if (pager.measured_pages <= limit_pages || !(c = first_device()))
		return;
	/* Down to a low watermark, so the next eviction is not due at once. */
	low = limit_pages - MIN(limit_pages / 16 + BLOCK_SIZE / PAGE_SIZE, limit_pages / 2);
	moved = sweep(c, pager.measured_pages - low, now);
	STAT_ADD(evictions, moved);
	pager.measured_pages -= MIN(moved, pager.measured_pages);
}

void pager_fork_child(void)
{
	atomic_store(&pager.head, 0);
	atomic_store(&pager.tail, 0);
	pager.measured_pages = 0;
	pager.measured_ns = 0;
}
