// SPDX-License-Identifier: MIT
/*
 * The page-state machine. Every managed page has one 64-bit state word
 * (layout in state.h); this file is the only one that writes it, and each
 * write is a named transition, triggered by one event, that also does what
 * must follow: device memory given back, every device's page table (mirror)
 * brought up to date, residency counted, parked faults kicked. Callers hold
 * reg.lock; mirror and devmem locks nest inside it.
 *
 * States (loc: where the data is; aux: which device shares the page):
 *
 *   UNMAPPED   a hole in a range: not managed. The word is PW_UNMAPPED.
 *   HOST       data in host memory, or never populated (loc 0, slot 0).
 *   DEVICE(k)  data in device k's memory at slot (loc k+1). May be POISONED:
 *              a fault-back failed and the CPU page holds a SIGBUS marker.
 *   EXCL(k)    data in the holding area at slot; device k has exclusive
 *              (atomic) access and the CPU has none (aux k+1).
 *   DUP(k)     data in host memory, write-protected, and a read-only copy in
 *              device k's memory at slot (aux k+1).
 * Advice bits (PIN_HOST, READ_MOSTLY) ride along with every mapped state.
 * HOST and DEVICE pages may be claimed (BUSY) by one migration, or by a
 * fault-in through a DMA queue, while their data is in flight; a claimed
 * page collects marks: PARKED (a CPU fault waits), ABORT (the CPU wrote
 * during a copy), ZAPPING (the copy is done, the CPU page is going),
 * DISCARD (unmapped or emptied meanwhile). Faults on a claimed page park;
 * other migrations wait until it is released.
 *
 *                  page_adopt                      page_grant_exclusive
 *     UNMAPPED ----------------> HOST <------------------------------> EXCL(k)
 *        ^        page_unmap      |  ^                page_end_exclusive
 *        +------------------------+  |
 *                                 |  | page_collapse_dup
 *                      page_claim |  +---------------------------- DUP(k)
 *                                 v                                  ^
 *                             HOST+BUSY --- page_commit_dup ---------+
 *                               |   ^
 *     pages_commit_to_device    |   | pages_release (the copy failed, the
 *                               v   |  CPU wrote, the page was discarded)
 *                            DEVICE(k)
 *                               |   ^
 *                    page_claim |   | pages_release
 *                               v   |
 *                          DEVICE(k)+BUSY --- pages_commit_to_host --> HOST
 *
 * pages_commit_to_host also takes an unclaimed DEVICE page home (a CPU fault
 * served on the fault thread); on a device that keeps clean copies
 * (HMM_DEVCAP_KEEP_CLEAN) pages_commit_to_host_clean takes it to DUP(k)
 * instead, and page_claim_clean claims a DUP(k) page for eviction to k with
 * its slot (nothing to copy); page_drop takes any unclaimed page to HOST
 * when its contents are gone (munmap, MADV_DONTNEED, a reclaimed duplicate);
 * page_move_out hands a word to its new address after mremap.
 *
 * With debug checks (meson -Ddebug_checks=true) every transition asserts
 * reg.lock is held, its starting state, and that the word it leaves is one
 * of the states above (pw_valid).
 */
#include "state.h"

#define PW_KNOWN (PW_SLOT_MASK | (0xffull << PW_LOC_SHIFT) | (0xffull << PW_AUX_SHIFT) | \
		  PW_TRANSIENT | PW_EXCL | PW_DUP | PW_ADVICE | PW_UNMAPPED | PW_POISONED)

bool pw_valid(uint64_t w)
{
	unsigned loc = pw_loc(w), aux = pw_aux(w);
	bool shared = w & (PW_EXCL | PW_DUP);

	if (w & ~PW_KNOWN)
		return false;
	if (w & PW_UNMAPPED)
		return w == PW_UNMAPPED;
	if (loc > MAX_DEVICES || aux > MAX_DEVICES)
		return false;
	if ((w & PW_EXCL) && (w & PW_DUP))
		return false;
	/* Shared pages have their data at home and a device in aux; others neither. */
	if (shared ? loc || !aux || (w & PW_BUSY) : aux != 0)
		return false;
	if (!loc && !shared && pw_slot(w))
		return false;
	/* Marks of a claim exist only while it lasts. */
	if ((w & (PW_ABORT | PW_ZAPPING | PW_DISCARD)) && !(w & PW_BUSY))
		return false;
	if ((w & PW_ZAPPING) && loc)
		return false;
	return !(w & PW_POISONED) || loc;
}

/* Every write ends here: the word must be a state the machine knows. */
static inline void set_word(uint64_t *w, uint64_t v)
{
	reg_assert_locked();
	rt_assert(pw_valid(v));
	*w = v;
}

static uint64_t with_loc(uint64_t w, unsigned loc, uint64_t slot)
{
	w &= ~((0xffull << PW_LOC_SHIFT) | PW_SLOT_MASK);
	return w | ((uint64_t)loc << PW_LOC_SHIFT) | (slot & PW_SLOT_MASK);
}

static uint64_t with_aux(uint64_t w, unsigned aux, uint64_t slot)
{
	w &= ~((0xffull << PW_AUX_SHIFT) | PW_SLOT_MASK);
	return w | ((uint64_t)aux << PW_AUX_SHIFT) | (slot & PW_SLOT_MASK);
}

/* ---- single pages -------------------------------------------------------- */

/*
 * A migration collects the page, or a CPU fault starts bringing it home
 * through a DMA queue: from now on faults on it park and other migrations
 * wait, until pages_commit_* or pages_release.
 */
void page_claim(uint64_t *w)
{
	rt_assert(!(*w & (PW_BUSY | PW_UNMAPPED | PW_EXCL | PW_DUP)));
	set_word(w, *w | PW_BUSY);
}

/* A CPU fault waits for this page: whoever frees it kicks the fault thread. */
void page_mark_parked(uint64_t *w)
{
	rt_assert(!(*w & PW_UNMAPPED));
	set_word(w, *w | PW_PARKED);
}

/* The CPU wrote the page while a copy of it was in flight: the copy is void. */
void page_mark_aborted(uint64_t *w)
{
	rt_assert(*w & PW_BUSY);
	set_word(w, *w | PW_ABORT);
}

/* The copy made it; the migration now removes the CPU's page. */
void page_mark_zapping(uint64_t *w)
{
	rt_assert((*w & PW_BUSY) && !(*w & (PW_ABORT | PW_DISCARD)) && !pw_loc(*w));
	set_word(w, *w | PW_ZAPPING);
}

/* munmap or madvise emptied the page while a migration owned it. */
void page_mark_discarded(uint64_t *w)
{
	rt_assert(*w & PW_BUSY);
	set_word(w, *w | PW_DISCARD);
}

/* A fault-back failed for good: the CPU page holds a SIGBUS marker now. */
void page_poison(uint64_t *w)
{
	rt_assert(pw_loc(*w));
	set_word(w, *w | PW_POISONED);
}

/* hmm_advise: per-page advice bits. */
void page_set_advice(uint64_t *w, uint64_t set, uint64_t clear)
{
	rt_assert(!((set | clear) & ~PW_ADVICE));
	if (!(*w & PW_UNMAPPED))
		set_word(w, (*w & ~clear) | set);
}

/* The page's contents are gone (unmapped, emptied, a reclaimed duplicate). */
void page_drop(uintptr_t addr, uint64_t *w)
{
	unsigned loc = pw_loc(*w);
	struct hmm_device_core *d;

	rt_assert(!(*w & (PW_BUSY | PW_UNMAPPED)));
	if (loc && (d = dev_by_loc(loc))) {
		dev_free_slots(d, pw_slot(*w), 1, true);
		atomic_fetch_sub(&d->resident, 1);
		mirror_lock(&d->mirror);
		mirror_invalidate(&d->mirror, addr, addr + PAGE_SIZE);
		mirror_unlock(&d->mirror);
	}
	if ((*w & (PW_EXCL | PW_DUP)) && (d = dev_by_loc(pw_aux(*w)))) {
		if (*w & PW_EXCL)
			holding_free(pw_slot(*w), true);
		else
			dev_free_slots(d, pw_slot(*w), 1, true);
		mirror_lock(&d->mirror);
		mirror_invalidate(&d->mirror, addr, addr + PAGE_SIZE);
		mirror_unlock(&d->mirror);
	}
	set_word(w, *w & PW_ADVICE);
}

/*
 * hmm_device_exclusive moved the page out of the CPU's page table into the
 * holding area: only device c may touch it now.
 */
void page_grant_exclusive(struct hmm_device_core *c, struct range *r, uintptr_t addr,
			  uint64_t slot)
{
	uint64_t *w = range_word(r, addr);

	rt_assert(!pw_loc(*w) && !(*w & (PW_BUSY | PW_EXCL | PW_DUP | PW_UNMAPPED)));
	set_word(w, with_aux(*w | PW_EXCL, dev_loc(c), slot));
	range_note_offhost(r, addr, addr + PAGE_SIZE);
	dev_invalidate_all(addr, addr + PAGE_SIZE, c, false);
	mirror_lock(&c->mirror);
	mirror_set(&c->mirror, addr, MIR_LOCAL | MIR_ATOMIC | MIR_READ | MIR_WRITE);
	mirror_unlock(&c->mirror);
}

/*
 * A CPU access or a migration revoked exclusive access; the page is back in
 * the CPU's page table (the caller moved it, after the device let go).
 */
void page_end_exclusive(uint64_t *w, bool holding_stale)
{
	rt_assert(*w & PW_EXCL);
	holding_free(pw_slot(*w), holding_stale);
	set_word(w, with_aux(*w & ~PW_EXCL, 0, 0));
}

/*
 * A read-mostly page was copied to device c (its host copy stays, write-
 * protected): c maps its own copy, and the claim ends.
 */
void page_commit_dup(struct hmm_device_core *c, struct range *r, uintptr_t addr, uint64_t slot)
{
	uint64_t *w = range_word(r, addr);
	bool parked = *w & PW_PARKED;

	rt_assert((*w & PW_BUSY) && !pw_loc(*w) && !(*w & (PW_ABORT | PW_DISCARD | PW_DUP)));
	set_word(w, with_aux(*w & ~PW_TRANSIENT, dev_loc(c), slot) | PW_DUP);
	range_note_offhost(r, addr, addr + PAGE_SIZE);
	mirror_lock(&c->mirror);
	mirror_set(&c->mirror, addr, MIR_READ | MIR_LOCAL);
	mirror_unlock(&c->mirror);
	if (parked)
		kick();
	reg_broadcast();
}

/*
 * A run of pages on device c came home, and c keeps its copy
 * (HMM_DEVCAP_KEEP_CLEAN, as the swap cache keeps a swapped-in page's
 * slot): installed write-protected, they become DUP(c) with their slots,
 * so that evicting them again while clean writes nothing. The first CPU
 * write collapses the duplicate (page_collapse_dup), which frees the slot.
 */
void pages_commit_to_host_clean(struct hmm_device_core *c, struct range *r, uintptr_t addr,
				size_t n)
{
	uintptr_t end = addr + n * PAGE_SIZE;
	bool parked = false;

	for (size_t i = 0; i < n; i++) {
		uint64_t *w = range_word(r, addr + i * PAGE_SIZE);

		rt_assert(pw_on(*w, c) && !(*w & PW_DISCARD));
		parked |= *w & PW_PARKED;
		set_word(w, with_aux(*w & PW_ADVICE, dev_loc(c), pw_slot(*w)) | PW_DUP);
	}
	atomic_fetch_sub(&c->resident, n);
	STAT_ADD(pages_to_host, n);
	range_note_offhost(r, addr, end);
	mirror_lock(&c->mirror);
	mirror_invalidate(&c->mirror, addr, end);
	for (uintptr_t a = addr; a < end; a += PAGE_SIZE)
		mirror_set(&c->mirror, a, MIR_READ | MIR_LOCAL);
	mirror_unlock(&c->mirror);
	if (parked)
		kick();
	reg_broadcast();
}

/*
 * A clean duplicate goes back to its device (an eviction): the copy there
 * is still good, so the page is claimed as a host page to migrate (still
 * write-protected: a CPU write aborts it) but keeps its slot, returned for
 * the commit. The device stops mapping its copy meanwhile.
 */
uint64_t page_claim_clean(struct hmm_device_core *c, uintptr_t addr, uint64_t *w)
{
	uint64_t slot = pw_slot(*w);

	rt_assert((*w & PW_DUP) && pw_aux(*w) == dev_loc(c) && !(*w & PW_BUSY));
	mirror_lock(&c->mirror);
	mirror_invalidate(&c->mirror, addr, addr + PAGE_SIZE);
	mirror_unlock(&c->mirror);
	set_word(w, with_aux(*w & ~PW_DUP, 0, 0) | PW_BUSY);
	return slot;
}

/*
 * A CPU write (or unset advice, or a migration) collapses a duplicate: the
 * device stops reading its copy before the CPU may write the host's.
 */
void page_collapse_dup(uintptr_t addr, uint64_t *w)
{
	struct hmm_device_core *d = dev_by_loc(pw_aux(*w));

	rt_assert(*w & PW_DUP);
	if (d) {
		dev_free_slots(d, pw_slot(*w), 1, true);
		mirror_lock(&d->mirror);
		mirror_invalidate(&d->mirror, addr, addr + PAGE_SIZE);
		mirror_unlock(&d->mirror);
	}
	set_word(w, with_aux(*w & ~PW_DUP, 0, 0));
}

/*
 * mremap moved the page: its data, and any device copy, now belong to the
 * word returned, which the registry adopts at the new address. A claimed
 * page cannot follow (its migration holds the old address): it is
 * discarded, and only its advice moves.
 */
uint64_t page_move_out(uint64_t *w)
{
	uint64_t moved;

	rt_assert(!(*w & PW_UNMAPPED));
	if (*w & PW_BUSY) {
		set_word(w, *w | PW_DISCARD);
		return *w & PW_ADVICE;
	}
	moved = *w & ~PW_PARKED;
	set_word(w, *w & PW_ADVICE);
	return moved;
}

/*
 * A word page_move_out handed out found no page to land on: its new address
 * was unmapped before the fault thread applied the mremap (a raw mremap(2)
 * returns once its events are read, not applied). Its data went with that
 * mapping: its device memory is given back, as page_drop does.
 */
void page_drop_moved(uintptr_t addr, uint64_t word)
{
	uint64_t w = word;

	page_drop(addr, &w);
}

/* The page becomes managed (again): manage, mmap, or the target of mremap. */
void page_adopt(uint64_t *w, uint64_t word)
{
	rt_assert(*w == PW_UNMAPPED && !(word & (PW_TRANSIENT | PW_UNMAPPED)));
	set_word(w, word);
}

/*
 * The page stops being managed (munmap, hmm_unmanage). Its device resources
 * were released first, unless a migration owns it: that one finds the hole
 * and gives back what it allocated.
 */
void page_unmap(uint64_t *w)
{
	rt_assert((*w & PW_BUSY) || !pw_off_host(*w));
	set_word(w, PW_UNMAPPED);
}

/* The child of fork: its memory is all home, and it has no devices. */
void page_fork_child(uint64_t *w)
{
	*w &= PW_UNMAPPED | PW_ADVICE; /* no lock in the child yet: nobody else runs */
}

/*
 * Words of a range being created or grown, not yet anyone's: the state each
 * page brings along (mremap), or host pages never populated. A word born
 * of the allocator is zero, a host page, already.
 */
void pages_init(uint64_t *words, const uint64_t *from, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t v = from ? from[i] : 0;

		rt_assert(!(v & (PW_TRANSIENT | PW_UNMAPPED)));
		set_word(&words[i], v);
	}
}

/*
 * A page claimed on its way home from c was unmapped meanwhile (its word is
 * a hole now): whatever came home left with the mapping, the slot its data
 * used goes back, and c holds one page less.
 */
void page_unmapped_in_flight(struct hmm_device_core *c, uint64_t slot, bool stale)
{
	reg_assert_locked();
	dev_free_slots(c, slot, 1, stale);
	atomic_fetch_sub(&c->resident, 1);
}

/* ---- runs of pages: the consequences ------------------------------------ */

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
void pages_map_accessed_by(struct range *r, uintptr_t addr, size_t n, bool writable)
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
			uint64_t w = *range_word(r, a);
			unsigned loc = pw_loc(w);
			uint8_t bits = MIR_READ | (writable ? MIR_WRITE : 0);

			if (!(attr_accessed_by(r, a) & (1u << i)) || (w & PW_EXCL))
				continue;
			if (loc == dev_loc(d) && !dev_coherent(d))
				bits |= MIR_LOCAL;
			else if (loc && !dev_coherent(dev_by_loc(loc)))
				continue;
			mirror_set(&d->mirror, a, bits);
		}
		mirror_unlock(&d->mirror);
	}
}

/*
 * The migration is over for these pages and they stay where they are: the
 * copy failed, the CPU wrote during it, or the job was only a claim. A page
 * discarded meanwhile had its contents dropped: what it held goes too.
 * Waiters wake.
 */
void pages_release(struct range *r, uintptr_t addr, size_t n)
{
	bool parked = false;

	for (size_t i = 0; i < n; i++) {
		uintptr_t a = addr + i * PAGE_SIZE;
		uint64_t *w = range_word(r, a);
		bool discarded = *w & PW_DISCARD;

		rt_assert(*w & PW_BUSY);
		parked |= *w & PW_PARKED;
		set_word(w, *w & ~PW_TRANSIENT);
		if (discarded)
			page_drop(a, w);
	}
	if (parked)
		kick();
	reg_broadcast();
}

/*
 * The copy or move to device c completed for a run of claimed pages, in
 * slots slot0...: every device's view changes, and c maps them itself, as
 * dmirror_migrate_finalize_and_map does.
 */
void pages_commit_to_device(struct hmm_device_core *c, struct range *r, uintptr_t addr,
			    size_t n, uint64_t slot0, bool writable)
{
	uintptr_t end = addr + n * PAGE_SIZE;
	uint8_t bits = MIR_READ | (writable ? MIR_WRITE : 0);
	bool parked = false;

	range_note_offhost(r, addr, end);
	for (size_t i = 0; i < n; i++) {
		uint64_t *w = range_word(r, addr + i * PAGE_SIZE);

		rt_assert((*w & PW_BUSY) && !pw_loc(*w) && !(*w & (PW_DISCARD | PW_ABORT)));
		parked |= *w & PW_PARKED;
		set_word(w, with_loc(*w & PW_ADVICE, dev_loc(c), slot0 + i));
	}
	atomic_fetch_add(&c->resident, n);
	STAT_ADD(pages_to_device, n);
	dev_invalidate_all(addr, end, c, false);
	mirror_lock(&c->mirror);
	mirror_invalidate(&c->mirror, addr, end);
	set_entries(c, addr, n, dev_coherent(c) ? bits : (uint8_t)(bits | MIR_LOCAL));
	mirror_unlock(&c->mirror);
	pages_map_accessed_by(r, addr, n, writable);
	if (parked)
		kick();
	reg_broadcast();
}

/*
 * A run of pages on device c came home (a CPU fault, a migration): their
 * slots go back in contiguous runs, stale when the data was copied out
 * rather than moved.
 */
void pages_commit_to_host(struct hmm_device_core *c, struct range *r, uintptr_t addr, size_t n,
			  bool slots_stale, bool writable)
{
	uintptr_t end = addr + n * PAGE_SIZE;
	uint64_t first = 0;
	size_t run = 0;
	bool parked = false;

	for (size_t i = 0; i < n; i++) {
		uint64_t *w = range_word(r, addr + i * PAGE_SIZE);
		uint64_t slot = pw_slot(*w);

		/* Discarded in flight is allowed: the caller empties the page after. */
		rt_assert(pw_on(*w, c));
		if (run && slot != first + run) {
			dev_free_slots(c, first, run, slots_stale);
			run = 0;
		}
		if (!run)
			first = slot;
		run++;
		parked |= *w & PW_PARKED;
		set_word(w, *w & PW_ADVICE);
	}
	if (run)
		dev_free_slots(c, first, run, slots_stale);
	atomic_fetch_sub(&c->resident, n);
	STAT_ADD(pages_to_host, n);
	/* Only the owner could map a device-private page; coherent ones, anyone. */
	if (dev_coherent(c)) {
		dev_invalidate_all(addr, end, NULL, false);
	} else {
		mirror_lock(&c->mirror);
		mirror_invalidate(&c->mirror, addr, end);
		mirror_unlock(&c->mirror);
	}
	pages_map_accessed_by(r, addr, n, writable);
	if (parked)
		kick();
	reg_broadcast();
}
