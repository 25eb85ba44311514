// SPDX-License-Identifier: MIT
/*
 * The device's side of HMM: what hmm_device_read/write and the atomics do.
 *
 * A device reads and writes process memory through its own page table. A
 * page with no entry (or a read-only entry, for a write) takes a device
 * fault round over everything from that page to the end of the request, as
 * dmirror_fault does: check the CPU's protections, bring pages that are
 * private to another device home, fault the CPU pages in, then install
 * entries unless an invalidation raced (sequence retry). The copy itself
 * runs outside every lock, registered as an interval: an invalidation that
 * overlaps it makes the chunk run again, and a chunk of device-local pages
 * pins them against migration while it runs.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "engine.h"

#define CHUNK_PAGES 512

struct pieces {
	struct {
		uintptr_t start, end;
		unsigned flags;
	} v[64];
	unsigned n;
	bool write;
	int err;
};

static int check_piece(const struct vma *v, uintptr_t s, uintptr_t e, void *arg)
{
	struct pieces *ps = arg;

	if (!v || !(v->flags & VMA_READ))
		return -EFAULT;
	if (ps->write && !(v->flags & VMA_WRITE))
		ps->err = -EPERM; /* keep walking: a hole later still says -EFAULT */
	if (ps->n < ARRAY_SIZE(ps->v))
		ps->v[ps->n++] = (typeof(ps->v[0])){ s, e, v->flags };
	return 0;
}

static unsigned flags_at(const struct pieces *ps, uintptr_t a)
{
	for (unsigned i = 0; i < ps->n; i++)
		if (ps->v[i].start <= a && a < ps->v[i].end)
			return ps->v[i].flags;
	return VMA_READ; /* beyond what we recorded: assume the least */
}

bool acc_local(const struct hmm_device_core *c, uint64_t w, bool write)
{
	if ((w & PW_EXCL) && pw_aux(w) == dev_loc(c))
		return true;
	if ((w & PW_DUP) && pw_aux(w) == dev_loc(c) && !write)
		return true;
	return pw_on(w, c) && !dev_coherent(c);
}

enum plan {
	PLAN_HOME = 1 << 0,      /* pages private to another device */
	PLAN_MIGRATE = 1 << 1,   /* preferred location is this device */
	PLAN_DUP = 1 << 2,       /* read-mostly: duplicate */
};

/* reg.lock held: what has to happen before this device can map [start, end). */
static int plan_round(struct hmm_device_core *c, uintptr_t start, uintptr_t end, bool write,
		      bool map_only, unsigned *ret_plan)
{
	unsigned plan = 0;

	for (uintptr_t p = start; p < end; p += PAGE_SIZE) {
		struct range *r;
		uint64_t *w = reg_word(p, &r);
		unsigned loc;
		int err = 0;

		if (!w || (*w & PW_BUSY))
			continue;
		if ((*w & PW_EXCL) && pw_aux(*w) != dev_loc(c))
			err = excl_revoke(p, w);
		else if ((*w & PW_DUP) && (write || pw_aux(*w) != dev_loc(c)))
			err = write ? dup_collapse(p, w) : 0;
		if (err == -EBUSY || err == -EAGAIN)
			return -EAGAIN;
		loc = pw_loc(*w);
		if (loc && loc != dev_loc(c) && !dev_coherent(dev_by_loc(loc)))
			plan |= PLAN_HOME;
		if (loc || map_only || (*w & (PW_PIN_HOST | PW_EXCL | PW_DUP)))
			continue;
		if (attr_preferred(r, p) == c->index && !dev_coherent(c) && uffd.kernel_faults)
			plan |= PLAN_MIGRATE;
		else if ((*w & PW_READ_MOSTLY) && !write && !dev_coherent(c) && reg.registered)
			plan |= PLAN_DUP;
	}
	*ret_plan = plan;
	return 0;
}

/* Fault the CPU side in, skipping the pages the device holds itself. */
static int populate(struct hmm_device_core *c, uintptr_t start, uintptr_t end, bool write)
{
	for (uintptr_t a = start; a < end;) {
		uintptr_t b = a;
		int err;

		reg_lock();
		while (a < end) {
			uint64_t *w = reg_word(a, NULL);

			if (!w || !acc_local(c, *w, write))
				break;
			a += PAGE_SIZE;
		}
		b = a;
		while (b < end) {
			uint64_t *w = reg_word(b, NULL);

			if (w && acc_local(c, *w, write))
				break;
			b += PAGE_SIZE;
		}
		reg_unlock();
		if (a == b)
			continue;
		err = sys_madvise((void *)a, b - a, write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ);
		if (err) {
			err = -errno;
			/* I/O or PFN mappings a device cannot mirror; hardware poison */
			if (err == -EINVAL || err == -EHWPOISON)
				err = -EFAULT;
			if (err == -EFAULT && !write) {
				/* POPULATE_READ refuses PROT_NONE: that is ours to report */
				return -EFAULT;
			}
			return err;
		}
		a = b;
	}
	return 0;
}

/* Present host pages (map_only must not fault anything in). */
static bool host_present(uintptr_t a)
{
	uint64_t e;

	return !pagemap_read(a, 1, &e) && (e & PM_PRESENT);
}

static void install(struct hmm_device_core *c, const struct pieces *ps, uintptr_t start,
		    uintptr_t end, bool write, bool map_only)
{
	for (uintptr_t p = start; p < end; p += PAGE_SIZE) {
		uint64_t *w = reg_word(p, NULL);
		unsigned vflags = flags_at(ps, p);
		uint8_t bits;

		if (w && (*w & PW_BUSY))
			continue;
		if (w && (*w & PW_EXCL) && pw_aux(*w) == dev_loc(c))
			bits = MIR_LOCAL | MIR_ATOMIC | MIR_READ | MIR_WRITE;
		else if (w && acc_local(c, *w, false) && pw_loc(*w))
			bits = MIR_LOCAL | MIR_READ | ((vflags & VMA_WRITE) ? MIR_WRITE : 0);
		else if (w && (*w & PW_DUP) && acc_local(c, *w, write))
			bits = MIR_LOCAL | MIR_READ;
		else if (w && pw_loc(*w) && !dev_coherent(dev_by_loc(pw_loc(*w))))
			continue; /* private to another device: raced; fault again */
		else if (map_only && !host_present(p))
			continue;
		else
			bits = MIR_READ | (write ? MIR_WRITE : 0);
		mirror_set(&c->mirror, p, bits);
	}
}

/*
 * Whether a retry loop gives up with -EBUSY: its deadline (UHMM_RETRY_MS)
 * has passed and it has lost at least MIN_LOSSES times. On an overloaded
 * machine one round can outlast the whole deadline (its thread waits for a
 * CPU fault, which waits for a DMA copy); losing a single race after that
 * is no reason to fail the access.
 */
#define MIN_LOSSES 8

static bool give_up(uint64_t deadline, unsigned losses)
{
	return losses >= MIN_LOSSES && now_ns() > deadline;
}

/*
 * One device fault over [start, end). The read-retry window (a watch
 * interval) opens before the CPU's protections are read and closes when the
 * entries are installed; a CPU change in progress is waited out before it
 * opens, as mmu_interval_read_begin waits out an odd sequence number.
 *
 * A round that lost to an invalidation is retried; from then on, a round
 * with nothing left to move fences the range, so that migrations wait for
 * it instead of starving it (a tight loop of hmm_migrate over the range
 * could otherwise make every round stale until the deadline). The fence is
 * dropped before anything that waits: a change in progress, the round's own
 * migrations and the back-off all run without it.
 */
int acc_fault_round(struct hmm_device_core *c, uintptr_t start, uintptr_t end, bool write,
		    bool map_only)
{
	uint64_t deadline = now_ns() + (uint64_t)opt.retry_ms * 1000000;
	unsigned losses = 0;
	struct fence hold;
	struct pieces ps;
	int err;

	for (;;) {
		struct mirror_interval watch = { .start = start, .end = end, .watch = true };
		bool stale, installed, holding = false;
		unsigned plan = 0;

		if (!cpu_change_wait(start, end, deadline)) {
			if (give_up(deadline, ++losses))
				return -EBUSY;
			nap();
			continue;
		}
		mirror_lock(&c->mirror);
		mirror_interval_begin(&c->mirror, &watch);
		mirror_unlock(&c->mirror);

		memset(&ps, 0, sizeof(ps));
		ps.write = write;
		err = vma_walk(start, end, check_piece, &ps);
		if (!err)
			err = ps.err;
		if (!err) {
			reg_lock();
			err = plan_round(c, start, end, write, map_only, &plan);
			if (!err && !plan && losses) {
				reg_fence_add(&hold, start, end);
				holding = true;
			}
			reg_unlock();
		}
		if (!err && (plan & PLAN_HOME)) {
			struct mig_result res;

			for (int i = 0; i < MAX_DEVICES; i++)
				if (dev_table[i] && dev_table[i] != c)
					mig_home(start, end, dev_table[i], &res);
		}
		if (!err && (plan & PLAN_MIGRATE)) {
			struct mig_result res;

			/* Best effort: pages that do not fit are mapped where they are. */
			mig_range(start, end, c, &res);
		}
		if (!err && (plan & PLAN_DUP))
			dup_make(c, start, end);
		if (!err && !map_only)
			err = populate(c, start, end, write);
		reg_lock();
		mirror_lock(&c->mirror);
		stale = mirror_interval_end(&c->mirror, &watch);
		installed = !err && !stale && !cpu_change_pending(start, end);
		if (installed)
			install(c, &ps, start, end, write, map_only);
		mirror_unlock(&c->mirror);
		if (holding)
			reg_fence_remove(&hold);
		reg_unlock();
		if (installed)
			break;
		if (err && err != -EAGAIN)
			return err;
		/* Lost: pages mid-transition, an invalidation, or a change begun. */
		if (give_up(deadline, ++losses))
			return -EBUSY;
		if (err == -EAGAIN)
			nap(); /* let the pages' owner finish */
	}
	if (!map_only)
		STAT_ADD(device_faults, 1);
	return 0;
}

uintptr_t acc_first_unmapped(struct hmm_device_core *c, uintptr_t start, uintptr_t end,
				uint8_t need)
{
	uintptr_t a = start;

	mirror_lock(&c->mirror);
	while (a < end) {
		uint8_t first;
		size_t n = mirror_run(&c->mirror, a, (end - a) / PAGE_SIZE, need, &first);

		if (!n)
			break;
		a += n * PAGE_SIZE;
	}
	mirror_unlock(&c->mirror);
	return a;
}

/*
 * Where the device finds a page it holds: in its host-mapped memory, in the
 * holding area, or (NULL with *ret_slot) only through the backend.
 */
static bool locate(struct hmm_device_core *c, uintptr_t p, char **ret_addr, uint64_t *ret_slot,
		   bool write)
{
	uint64_t *w = reg_word(p, NULL);

	if (!w || (*w & PW_BUSY) || !acc_local(c, *w, write))
		return false;
	*ret_slot = pw_slot(*w);
	if (*w & PW_EXCL)
		*ret_addr = holding_addr(pw_slot(*w));
	else
		*ret_addr = dev_host_mapped(c) ? dev_slot_addr(c, pw_slot(*w)) : NULL;
	return true;
}

static int copy_local(struct hmm_device_core *c, uintptr_t chunk, size_t n, uintptr_t addr,
		      size_t len, char *buf, bool write)
{
	char *where[CHUNK_PAGES];
	uint64_t slots[CHUNK_PAGES];
	bool ok = true;

	reg_lock();
	for (size_t i = 0; i < n && ok; i++)
		ok = locate(c, chunk + i * PAGE_SIZE, &where[i], &slots[i], write);
	reg_unlock();
	if (!ok)
		return -EAGAIN; /* the registry moved on since the entry was made */
	for (size_t i = 0; i < n; i++) {
		uintptr_t ps = chunk + i * PAGE_SIZE;
		uintptr_t s = MAX(ps, addr), e = MIN(ps + PAGE_SIZE, addr + len);
		char *b = buf + (s - addr);
		size_t off = s - ps;
		int err;

		if (s >= e)
			continue;
		if (where[i]) {
			if (write)
				memcpy(where[i] + off, b, e - s);
			else
				memcpy(b, where[i] + off, e - s);
			continue;
		}
		err = c->dev->ops->mem_access(c->dev, slots[i], off, b, e - s, write);
		if (err)
			return err;
	}
	return 0;
}

/*
 * A page the device entry points at is mid-migration (the registry says
 * BUSY before the migration's commit clears the entry): wait for it to
 * land, as a CPU fault parks. Our own pin on it has ended, so nothing the
 * migration waits for is ours.
 */
static void wait_landed(uintptr_t start, uintptr_t end)
{
	reg_lock();
	reg_wait_quiet(start, end, true);
	reg_unlock();
}

int acc_copy(struct hmm_device_core *c, uintptr_t addr, size_t len, void *buf, bool write,
	     struct hmm_access *ret)
{
	uintptr_t start = ALIGN_DOWN(addr, PAGE_SIZE), end = ALIGN_UP(addr + len, PAGE_SIZE);
	uint8_t need = MIR_READ | (write ? MIR_WRITE : 0);
	uint64_t deadline = now_ns() + (uint64_t)opt.retry_ms * 1000000;
	unsigned losses = 0;
	uint64_t faults = 0;
	uintptr_t cur, miss;
	int err;

	/* Fault everything in before touching buf: errors leave it untouched. */
	miss = acc_first_unmapped(c, start, end, need);
	if (miss < end) {
		err = acc_fault_round(c, miss, end, write, false);
		if (err)
			return err;
		faults++;
	}
	for (cur = start; cur < end;) {
		struct mirror_interval iv;
		uint8_t first;
		size_t n;
		bool stale;

		mirror_lock(&c->mirror);
		n = mirror_run(&c->mirror, cur, MIN(CHUNK_PAGES, (end - cur) / PAGE_SIZE), need, &first);
		if (!n) {
			mirror_unlock(&c->mirror);
			err = acc_fault_round(c, cur, end, write, false);
			if (err)
				return err;
			faults++;
			continue;
		}
		iv = (struct mirror_interval){ .start = cur, .end = cur + n * PAGE_SIZE,
					       .local = first & MIR_LOCAL };
		mirror_interval_begin(&c->mirror, &iv);
		mirror_unlock(&c->mirror);

		if (iv.local) {
			err = copy_local(c, cur, n, addr, len, buf, write);
		} else {
			uintptr_t s = MAX(cur, addr), e = MIN(iv.end, addr + len);

			if (write)
				memcpy((void *)s, (char *)buf + (s - addr), e - s);
			else
				memcpy((char *)buf + (s - addr), (void *)s, e - s);
			err = 0;
		}
		mirror_lock(&c->mirror);
		stale = mirror_interval_end(&c->mirror, &iv);
		mirror_unlock(&c->mirror);
		if (iv.local)
			kick(); /* faults may have parked on our pins */
		if (err && err != -EAGAIN)
			return err;
		if (stale || err) {
			if (give_up(deadline, ++losses))
				return -EBUSY;
			if (err)
				wait_landed(cur, iv.end);
			continue; /* the same chunk again, with fresh entries */
		}
		cur = iv.end;
	}
	ret->pages = (end - start) / PAGE_SIZE;
	ret->faults = faults;
	return 0;
}

int acc_atomic_add(struct hmm_device_core *c, uint64_t *addr, uint64_t value, uint64_t *ret_old)
{
	uintptr_t page = ALIGN_DOWN((uintptr_t)addr, PAGE_SIZE);
	uint64_t deadline = now_ns() + (uint64_t)opt.retry_ms * 1000000;
	unsigned losses = 0;

	for (;;) {
		struct mirror_interval iv = { .start = page, .end = page + PAGE_SIZE };
		uint8_t e;
		int err = 0;

		mirror_lock(&c->mirror);
		e = mirror_get(&c->mirror, page);
		if (!(e & MIR_WRITE)) {
			mirror_unlock(&c->mirror);
			err = acc_fault_round(c, page, page + PAGE_SIZE, true, false);
			if (err)
				return err;
			continue;
		}
		iv.local = e & MIR_LOCAL;
		mirror_interval_begin(&c->mirror, &iv);
		mirror_unlock(&c->mirror);
		if (iv.local) {
			char *where;
			uint64_t slot;
			bool ok;

			reg_lock();
			ok = locate(c, page, &where, &slot, true);
			reg_unlock();
			if (!ok)
				err = -EAGAIN;
			else if (where)
				*ret_old = __atomic_fetch_add(
					(uint64_t *)(where + ((uintptr_t)addr - page)), value,
					__ATOMIC_SEQ_CST);
			else
				err = c->dev->ops->mem_atomic_add(c->dev, slot, (uintptr_t)addr - page,
								  value, ret_old);
		} else {
			/* Host or coherent memory: a system-scope atomic on the address. */
			*ret_old = __atomic_fetch_add(addr, value, __ATOMIC_SEQ_CST);
		}
		mirror_lock(&c->mirror);
		mirror_interval_end(&c->mirror, &iv);
		mirror_unlock(&c->mirror);
		if (iv.local)
			kick();
		/* Once applied, an atomic is never replayed. */
		if (err != -EAGAIN)
			return err;
		if (give_up(deadline, ++losses))
			return -EBUSY;
		wait_landed(page, page + PAGE_SIZE);
	}
}
