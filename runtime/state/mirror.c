// SPDX-License-Identifier: MIT
/*
 * A device's page table: a four-level radix tree over the 48-bit virtual
 * address space, one byte of MIR_* bits per page, like the table a real
 * device MMU walks. Every CPU-side change to a mapping erases the entries it
 * covers (mirror_invalidate) and marks the intervals over them stale, so a
 * device fault that raced with it installs nothing and retries: the hmm_range_fault / mmu_interval
 * read-retry protocol. Accesses in flight register an interval; an
 * invalidation marks the overlapping ones stale, and callers that must not
 * proceed while the device is touching memory (munmap of it, migration of a
 * device-local page) wait for them to end. A device fault registers a
 * watch interval over what it will install: only invalidations of that
 * range make it retry (as with an mmu_interval_notifier per range), so a
 * steady stream of migrations elsewhere on the device cannot starve it.
 * Nobody waits for a watch: the fault itself may be waiting for a CPU
 * change to finish.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "state.h"

static struct {
	pthread_mutex_t lock;
	pthread_cond_t done;
	struct cpu_change *list;
} changes = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL };

void cpu_change_begin(struct cpu_change *ch, uintptr_t start, uintptr_t end)
{
	ch->start = start;
	ch->end = end;
	lock_acquired(LOCK_CPU_CHANGE);
	pthread_mutex_lock(&changes.lock);
	ch->next = changes.list;
	changes.list = ch;
	pthread_mutex_unlock(&changes.lock);
	lock_released(LOCK_CPU_CHANGE);
}

void cpu_change_end(struct cpu_change *ch)
{
	lock_acquired(LOCK_CPU_CHANGE);
	pthread_mutex_lock(&changes.lock);
	for (struct cpu_change **p = &changes.list; *p; p = &(*p)->next) {
		if (*p == ch) {
			*p = ch->next;
			break;
		}
	}
	pthread_cond_broadcast(&changes.done);
	pthread_mutex_unlock(&changes.lock);
	lock_released(LOCK_CPU_CHANGE);
}

static bool overlapping(uintptr_t start, uintptr_t end)
{
	for (struct cpu_change *ch = changes.list; ch; ch = ch->next)
		if (ch->start < end && ch->end > start)
			return true;
	return false;
}

bool cpu_change_pending(uintptr_t start, uintptr_t end)
{
	bool pending;

	lock_acquired(LOCK_CPU_CHANGE);
	pthread_mutex_lock(&changes.lock);
	pending = overlapping(start, end);
	pthread_mutex_unlock(&changes.lock);
	lock_released(LOCK_CPU_CHANGE);
	return pending;
}

bool cpu_change_wait(uintptr_t start, uintptr_t end, uint64_t deadline_ns)
{
	struct timespec ts = { (time_t)(deadline_ns / 1000000000u), (long)(deadline_ns % 1000000000u) };
	bool ok = true;

	lock_acquired(LOCK_CPU_CHANGE);
	pthread_mutex_lock(&changes.lock);
	while (ok && overlapping(start, end))
		ok = !pthread_cond_clockwait(&changes.done, &changes.lock, CLOCK_MONOTONIC, &ts);
	pthread_mutex_unlock(&changes.lock);
	lock_released(LOCK_CPU_CHANGE);
	return ok;
}

#define LEVEL_BITS 9
#define FANOUT (1u << LEVEL_BITS)

struct leaf {
	unsigned count;          /* non-zero entries */
	uint8_t e[FANOUT];
};

static inline unsigned idx(uintptr_t addr, int level)
{
	/* level 0 is the root, level 3 indexes the leaf */
	return (unsigned)(addr >> (PAGE_SHIFT + LEVEL_BITS * (3 - level))) & (FANOUT - 1);
}

int mirror_init(struct mirror *m)
{
	memset(m, 0, sizeof(*m));
	pthread_mutex_init(&m->lock, NULL);
	pthread_cond_init(&m->idle, NULL);
	m->root = meta_alloc(FANOUT * sizeof(void *));
	if (!m->root)
		return -ENOMEM;
	m->bytes = FANOUT * sizeof(void *);
	return 0;
}

static void free_level(struct mirror *m, void **node, int level)
{
	if (!node)
		return;
	for (unsigned i = 0; i < FANOUT; i++) {
		if (!node[i])
			continue;
		if (level == 2)
			meta_free(node[i], sizeof(struct leaf));
		else
			free_level(m, node[i], level + 1);
	}
	meta_free(node, FANOUT * sizeof(void *));
}

void mirror_destroy(struct mirror *m)
{
	free_level(m, m->root, 0);
	m->root = NULL;
	m->bytes = 0;
}

void mirror_lock(struct mirror *m)
{
	lock_acquired(LOCK_MIRROR);
	pthread_mutex_lock(&m->lock);
}

void mirror_unlock(struct mirror *m)
{
	pthread_mutex_unlock(&m->lock);
	lock_released(LOCK_MIRROR);
}

static struct leaf *leaf_of(struct mirror *m, uintptr_t addr, bool create)
{
	void **node = m->root;

	for (int level = 0; level < 3; level++) {
		void **slot = &node[idx(addr, level)];

		if (!*slot) {
			size_t size = level == 2 ? sizeof(struct leaf) : FANOUT * sizeof(void *);

			if (!create || !(*slot = meta_alloc(size)))
				return NULL;
			m->bytes += size;
		}
		node = *slot;
	}
	return (struct leaf *)node;
}

uint8_t mirror_get(struct mirror *m, uintptr_t addr)
{
	struct leaf *l = leaf_of(m, addr, false);

	return l ? l->e[idx(addr, 3)] : 0;
}

/*
 * Pages from addr whose entries all have need and the same MIR_LOCAL bit as
 * the first, so a run is copied one way only.
 */
size_t mirror_run(struct mirror *m, uintptr_t addr, size_t max, uint8_t need, uint8_t *ret_first)
{
	size_t n = 0;
	uint8_t first = mirror_get(m, addr);

	*ret_first = first;
	if (!first || (first & need) != need)
		return 0;
	while (n < max) {
		struct leaf *l = leaf_of(m, addr, false);
		unsigned i = idx(addr, 3);

		if (!l)
			break;
		for (; i < FANOUT && n < max; i++, n++, addr += PAGE_SIZE) {
			uint8_t e = l->e[i];

			if (!e || (e & need) != need || ((e ^ first) & MIR_LOCAL))
				return n;
		}
	}
	return n;
}

int mirror_set(struct mirror *m, uintptr_t addr, uint8_t bits)
{
	struct leaf *l;
	uint8_t *e;

	rt_assert_held(LOCK_MIRROR);
	l = leaf_of(m, addr, bits != 0);
	if (!l)
		return bits ? -ENOMEM : 0;
	e = &l->e[idx(addr, 3)];
	if (!*e && bits)
		l->count++;
	else if (*e && !bits)
		l->count--;
	*e = bits;
	return 0;
}

/* Span of addresses one entry of a node at this level covers. */
static inline uintptr_t span(int level)
{
	return PAGE_SIZE << (LEVEL_BITS * (3 - level));
}

/* Clear [start, end) below node, skipping subtrees that were never built. */
static void clear_level(void **node, int level, uintptr_t base, uintptr_t start, uintptr_t end)
{
	uintptr_t step = span(level);
	unsigned first = start > base ? (unsigned)((start - base) / step) : 0;

	for (unsigned i = first; i < FANOUT; i++) {
		uintptr_t lo = base + i * step, hi = lo + step;

		if (lo >= end)
			break;
		if (!node[i])
			continue;
		if (level == 2) {
			struct leaf *l = node[i];

			for (uintptr_t a = MAX(lo, start); a < MIN(hi, end) && l->count; a += PAGE_SIZE) {
				uint8_t *e = &l->e[idx(a, 3)];

				if (*e) {
					*e = 0;
					l->count--;
				}
			}
		} else {
			clear_level(node[i], level + 1, lo, start, end);
		}
	}
}

void mirror_invalidate(struct mirror *m, uintptr_t start, uintptr_t end)
{
	rt_assert_held(LOCK_MIRROR);
	if (m->root && start < end)
		clear_level(m->root, 0, 0, start, end);
	for (struct mirror_interval *iv = m->active; iv; iv = iv->next)
		if (iv->start < end && iv->end > start)
			iv->stale = true;
}

bool mirror_any(struct mirror *m, uintptr_t start, uintptr_t end, uint8_t bits)
{
	for (uintptr_t a = start; a < end; a += PAGE_SIZE)
		if (mirror_get(m, a) & bits)
			return true;
	return false;
}

void mirror_interval_begin(struct mirror *m, struct mirror_interval *iv)
{
	iv->stale = false;
	iv->next = m->active;
	m->active = iv;
}

bool mirror_interval_end(struct mirror *m, struct mirror_interval *iv)
{
	for (struct mirror_interval **p = &m->active; *p; p = &(*p)->next) {
		if (*p == iv) {
			*p = iv->next;
			break;
		}
	}
	pthread_cond_broadcast(&m->idle);
	return iv->stale;
}

static bool busy(struct mirror *m, uintptr_t start, uintptr_t end, bool local_only)
{
	for (struct mirror_interval *iv = m->active; iv; iv = iv->next)
		if (!iv->watch && (iv->local || !local_only) && iv->start < end && iv->end > start)
			return true;
	return false;
}

bool mirror_pinned(struct mirror *m, uintptr_t start, uintptr_t end)
{
	return busy(m, start, end, true);
}

/* Lowest address of [start, end) that a device-local access pins, or end. */
uintptr_t mirror_first_pinned(struct mirror *m, uintptr_t start, uintptr_t end)
{
	uintptr_t first = end;

	for (struct mirror_interval *iv = m->active; iv; iv = iv->next)
		if (iv->local && iv->start < end && iv->end > start)
			first = MIN(first, MAX(iv->start, start));
	return first;
}

void mirror_wait_unpinned(struct mirror *m, uintptr_t start, uintptr_t end)
{
	while (busy(m, start, end, true))
		pthread_cond_wait(&m->idle, &m->lock);
}

void mirror_wait_idle(struct mirror *m, uintptr_t start, uintptr_t end)
{
	while (busy(m, start, end, false))
		pthread_cond_wait(&m->idle, &m->lock);
}
