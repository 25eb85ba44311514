// SPDX-License-Identifier: MIT
/*
 * What follows when a run of managed pages changes place: the state words,
 * the device memory they held, every device's page table, the accessed-by
 * mappings, the counters, and the faults parked on them. Callers hold
 * reg.lock; mirror locks nest inside it.
 */
#include "internal.h"

void free_slots(struct hmm_device_core *c, uint64_t first, size_t n, bool stale)
{

	devmem_free(&c->mem, first, n, stale && dev_movable(c));
}

void mirrors_invalidate(uintptr_t start, uintptr_t end, struct hmm_device_core *except, bool wait)
{
	for (int i = 0; i < MAX_DEVICES; i++) {
		struct hmm_device_core *d = dev_table[i];

		if (!d || d == except)
			continue;
		mirror_lock(&d->mirror);
		mirror_invalidate(&d->mirror, start, end);
		if (wait)
			mirror_wait_idle(&d->mirror, start, end);
		mirror_unlock(&d->mirror);
	}
}

static void set_entries(struct hmm_device_core *d, uintptr_t addr, size_t n, uint8_t bits)
{
	for (size_t i = 0; i < n; i++)
		if (mirror_set(&d->mirror, addr + i * PAGE_SIZE, bits))
			break; /* out of memory: the device will fault instead */
}

/*
 * Devices advised ACCESSED_BY keep a mapping wherever the pages live, as
 * long as they can reach them: host memory and coherent device memory in
 * place, their own memory locally, another device's private memory not.
 */
void map_accessed_by(struct range *r, uintptr_t addr, size_t n, bool writable)
{
	uint32_t mask = 0;

	for (uintptr_t a = addr; a < addr + n * PAGE_SIZE; a += PAGE_SIZE)
		mask |= attr_accessed_by(r, a);
	for (int i = 0; mask && i < MAX_DEVICES; i++) {
		struct hmm_device_core *d = dev_table[i];

		if (!d || !(mask & (1u << i)))
			continue;
		mirror_lock(&d->mirror);
		for (size_t p = 0; p < n; p++) {
			uintptr_t a = addr + p * PAGE_SIZE;
			uint64_t w = r->pages[range_index(r, a)];
			unsigned loc = pw_loc(w);
			uint8_t bits = MIR_READ | (writable ? MIR_WRITE : 0);

			if (!(attr_accessed_by(r, a) & (1u << i)) || (w & PW_EXCL))
				continue;
			if (loc == (unsigned)d->index + 1 && !dev_coherent(d))
				bits |= MIR_LOCAL;
			else if (loc && !dev_coherent(dev_by_loc(loc)))
				continue;
			mirror_set(&d->mirror, a, bits);
		}
		mirror_unlock(&d->mirror);
	}
}

/* Clear the transient flags; wake parked faults. */
void run_unbusy(struct range *r, uintptr_t addr, size_t n)
{
	bool parked = false;

	for (size_t i = 0; i < n; i++) {
		uint64_t *w = &r->pages[range_index(r, addr) + i];

		parked |= *w & PW_PARKED;
		*w &= ~(PW_BUSY | PW_PARKED | PW_ABORT | PW_ZAPPING);
	}
	if (parked)
		handler_kick();
	reg_broadcast();
}

void run_to_device(struct hmm_device_core *c, struct range *r, uintptr_t addr, size_t n,
		   uint64_t slot0, bool writable)
{
	uintptr_t end = addr + n * PAGE_SIZE;
	uint8_t bits = MIR_READ | (writable ? MIR_WRITE : 0);
	bool parked = false;

	range_note_offhost(r, addr, end);
	for (size_t i = 0; i < n; i++) {
		uint64_t *w = &r->pages[range_index(r, addr) + i];

		parked |= *w & PW_PARKED;
		*w = pw_set_loc(*w & PW_ADVICE, (unsigned)c->index + 1, slot0 + i);
	}
	atomic_fetch_add(&c->resident, n);
	STAT_ADD(pages_to_device, n);
	/* Every device's view of these pages changed... */
	mirrors_invalidate(addr, end, c, false);
	/* ...and the new owner maps them, as dmirror_migrate_finalize_and_map does. */
	mirror_lock(&c->mirror);
	mirror_invalidate(&c->mirror, addr, end);
	set_entries(c, addr, n, dev_coherent(c) ? bits : (uint8_t)(bits | MIR_LOCAL));
	mirror_unlock(&c->mirror);
	map_accessed_by(r, addr, n, writable);
	if (parked)
		handler_kick();
	reg_broadcast();
}

void run_to_host(struct hmm_device_core *c, struct range *r, uintptr_t addr, size_t n,
		 bool slots_stale, bool writable)
{
	uintptr_t end = addr + n * PAGE_SIZE;
	uint64_t first = 0;
	size_t run = 0;
	bool parked = false;

	for (size_t i = 0; i < n; i++) {
		uint64_t *w = &r->pages[range_index(r, addr) + i];
		uint64_t slot = pw_slot(*w);

		/* Give back device memory in contiguous runs. */
		if (run && slot != first + run) {
			free_slots(c, first, run, slots_stale);
			run = 0;
		}
		if (!run)
			first = slot;
		run++;
		parked |= *w & PW_PARKED;
		*w &= PW_ADVICE;
	}
	if (run)
		free_slots(c, first, run, slots_stale);
	atomic_fetch_sub(&c->resident, n);
	STAT_ADD(pages_to_host, n);
	/* Only the owner could map a device-private page; coherent ones, anyone. */
	if (dev_coherent(c)) {
		mirrors_invalidate(addr, end, NULL, false);
	} else {
		mirror_lock(&c->mirror);
		mirror_invalidate(&c->mirror, addr, end);
		mirror_unlock(&c->mirror);
	}
	map_accessed_by(r, addr, n, writable);
	if (parked)
		handler_kick();
	reg_broadcast();
}

/* Release what a page holds on devices; its contents become zero. */
void page_drop(uintptr_t addr, uint64_t *w)
{
	unsigned loc = pw_loc(*w);
	struct hmm_device_core *d;

	if (loc && (d = dev_by_loc(loc))) {
		free_slots(d, pw_slot(*w), 1, true);
		atomic_fetch_sub(&d->resident, 1);
		mirror_lock(&d->mirror);
		mirror_invalidate(&d->mirror, addr, addr + PAGE_SIZE);
		mirror_unlock(&d->mirror);
	}
	if ((*w & (PW_EXCL | PW_DUP)) && (d = dev_by_loc(pw_aux(*w)))) {
		if (*w & PW_EXCL)
			holding_free(pw_slot(*w), true);
		else
			free_slots(d, pw_slot(*w), 1, true);
		mirror_lock(&d->mirror);
		mirror_invalidate(&d->mirror, addr, addr + PAGE_SIZE);
		mirror_unlock(&d->mirror);
	}
	*w &= PW_ADVICE;
}
