/* SPDX-License-Identifier: MIT */
/*
 * Layer 3, state: what is where. The managed ranges and the state word of
 * every managed page, whose every change goes through the page-state
 * machine (pagestate.c); interval advice; and the devices: their table,
 * memory slots, page tables (mirrors), DMA queues, and the holding area of
 * pages under exclusive device access. This layer records where pages are
 * and keeps every view of it consistent; the engine above decides what
 * moves, and when.
 */
#ifndef UHMM_STATE_H
#define UHMM_STATE_H

#include <uhmm/device.h>

#include "kernel.h"

struct range;
struct hmm_device_core;

/* ---- devmem.c: pages of device memory (slots) --------------------------- */

struct devmem {
	pthread_mutex_t lock;
	uint64_t nslots;
	uint64_t *used;             /* bitmap */
	uint64_t *stale;            /* free, but the slot's memory still holds a page */
	uint64_t nused;
	uint64_t nstale;
	uint64_t cursor;
	bool track_stale;
};

int devmem_init(struct devmem *m, uint64_t nslots, bool track_stale);
void devmem_destroy(struct devmem *m);
/*
 * Allocate one contiguous run of up to max slots; when align > 1 the run
 * starts on a multiple of align if one is free. With clean, only slots that
 * hold no page. Returns the run length (0: full) and its first slot.
 */
size_t devmem_alloc(struct devmem *m, size_t max, size_t align, bool clean, uint64_t *ret_first);
void devmem_free(struct devmem *m, uint64_t first, size_t n, bool stale);
/* Reserve a run of stale slots so the caller can empty them. */
size_t devmem_take_stale(struct devmem *m, size_t max, uint64_t *ret_first);
uint64_t devmem_used(struct devmem *m);

/* ---- mirror.c: a device's page table, and CPU-side changes in progress ---- */

#define MIR_READ 0x01
#define MIR_WRITE 0x02
#define MIR_ATOMIC 0x04     /* exclusive (atomic) access */
#define MIR_LOCAL 0x08      /* data in this device's memory or the holding area */

/* A device access in flight; lives on the accessor's stack. */
struct mirror_interval {
	struct mirror_interval *next;
	uintptr_t start, end;
	bool local;                 /* pins device-local pages against migration */
	bool watch;                 /* a fault's read-retry: marked stale, never waited for */
	bool stale;                 /* an invalidation overlapped it */
};

struct mirror {
	pthread_mutex_t lock;
	pthread_cond_t idle;        /* an interval ended */
	void **root;
	size_t bytes;
	struct mirror_interval *active;
};

/*
 * A CPU-side mapping change in progress (munmap, mprotect...): from before
 * the mirrors are invalidated until after the system call, no device fault
 * may install entries over it (mmu_interval's odd sequence number).
 */
struct cpu_change {
	struct cpu_change *next;
	uintptr_t start, end;
};

void cpu_change_begin(struct cpu_change *ch, uintptr_t start, uintptr_t end);
void cpu_change_end(struct cpu_change *ch);
bool cpu_change_pending(uintptr_t start, uintptr_t end);
/* Wait until no change overlaps [start, end); false if the deadline passed. */
bool cpu_change_wait(uintptr_t start, uintptr_t end, uint64_t deadline_ns);

int mirror_init(struct mirror *m);
void mirror_destroy(struct mirror *m);
void mirror_lock(struct mirror *m);
void mirror_unlock(struct mirror *m);
/* The rest with the mirror's lock held: */
uint8_t mirror_get(struct mirror *m, uintptr_t addr);
size_t mirror_run(struct mirror *m, uintptr_t addr, size_t max, uint8_t need, uint8_t *ret_first);
int mirror_set(struct mirror *m, uintptr_t addr, uint8_t bits);
void mirror_invalidate(struct mirror *m, uintptr_t start, uintptr_t end);
bool mirror_any(struct mirror *m, uintptr_t start, uintptr_t end, uint8_t bits);
void mirror_interval_begin(struct mirror *m, struct mirror_interval *iv);
bool mirror_interval_end(struct mirror *m, struct mirror_interval *iv);
bool mirror_pinned(struct mirror *m, uintptr_t start, uintptr_t end);
uintptr_t mirror_first_pinned(struct mirror *m, uintptr_t start, uintptr_t end);
void mirror_wait_unpinned(struct mirror *m, uintptr_t start, uintptr_t end);
void mirror_wait_idle(struct mirror *m, uintptr_t start, uintptr_t end);

/* ---- holding.c: where exclusive pages wait while a device owns them ------- */

int holding_reserve(void);
void *holding_addr(uint64_t slot);
int holding_alloc(uint64_t *ret_slot);       /* -ENOMEM when full */
void holding_free(uint64_t slot, bool stale);
void holding_fork_child(void);
void holding_release(void);

/* ---- dmaq.c: a device's DMA queue ---------------------------------------- */

enum dma_op {
	DMA_MOVE_IN,        /* UFFDIO_MOVE host page -> device memory (MOVABLE) */
	DMA_MOVE_OUT,       /* UFFDIO_MOVE device memory -> host address (MOVABLE) */
	DMA_COPY_IN,        /* backend copy host -> device */
	DMA_COPY_OUT,       /* device -> host address: UFFDIO_COPY from device memory
			       (HOST_MAPPED) or backend copy into a bounce buffer
			       followed by UFFDIO_COPY */
};

struct dma_run {
	uintptr_t addr;             /* host address of the first page */
	struct hmm_dma_desc d;      /* d.host is filled by the queue for COPY_OUT */
};

struct dma_job {
	struct dma_job *next;
	enum dma_op op;
	struct dma_run *runs;
	unsigned nruns;
	void (*complete)(struct dma_job *job);  /* queue thread; NULL: dmaq_wait */
	void *arg;
	bool dontwake;      /* MOVE_OUT, COPY_OUT: the submitter wakes waiters after committing */
	bool urgent;        /* a CPU fault waits for it: ahead of the bulk jobs queued */
	bool wp;            /* COPY_OUT: install write-protected (a clean copy stays on the device) */
	bool done;
};

struct dmaq {
	pthread_mutex_t lock;
	pthread_cond_t work, done;
	struct dma_job *head, *tail;
	struct dma_job *urgent_tail;    /* the last urgent job queued (they come first) */
	_Atomic unsigned urgent;        /* urgent jobs queued or running */
	unsigned queued;
	bool stop;
	pthread_t thread;
	bool started;
	struct hmm_device_core *core;
	void *bounce;               /* BOUNCE_PAGES of unmanaged memory for COPY_OUT */
	struct hmm_dma_desc *descs; /* GATHER_DESCS: a group of jobs' runs, one dma call */
};

#define GATHER_DESCS 256
/* A stream's fault and its read-ahead (fault.c) gather into one trip. */
#define BOUNCE_PAGES (4 * PMD_PAGES)

int dmaq_start(struct dmaq *q, struct hmm_device_core *core);
void dmaq_stop(struct dmaq *q);
void dmaq_submit(struct dmaq *q, struct dma_job *job);
void dmaq_wait(struct dmaq *q, struct dma_job *job);
void dmaq_drain(struct dmaq *q);
bool dmaq_urgent_idle(struct dmaq *q);  /* a hint: no urgent job queued or running now */

/* ---- device.c: open devices ---------------------------------------------- */

struct hmm_device_core {
	struct hmm_device *dev;
	int index;                      /* its place in dev_table */
	bool from_env;
	bool closing;
	struct devmem mem;
	struct mirror mirror;
	struct dmaq q;
	_Atomic uint64_t resident;      /* pages whose data is here */
	_Atomic bool full;              /* its store said ENOSPC; said once, until a copy works */
	/* fault-around state, fault thread only */
	uintptr_t last_fault_end;
	unsigned window;
};

/* reg.lock for changes; readers of a page word may use it under reg.lock. */
extern struct hmm_device_core *dev_table[MAX_DEVICES];

/* What a page word calls a device: its index plus one, 0 being the host. */
static inline unsigned dev_loc(const struct hmm_device_core *c)
{
	return (unsigned)c->index + 1;
}
static inline bool dev_coherent(const struct hmm_device_core *c)
{
	return c->dev->caps & HMM_DEVCAP_COHERENT;
}
static inline bool dev_movable(const struct hmm_device_core *c)
{
	return (c->dev->caps & HMM_DEVCAP_MOVABLE) && uffd.can_move;
}
static inline bool dev_host_mapped(const struct hmm_device_core *c)
{
	return c->dev->caps & (HMM_DEVCAP_HOST_MAPPED | HMM_DEVCAP_MOVABLE);
}
static inline bool dev_keep_clean(const struct hmm_device_core *c)
{
	return (c->dev->caps & HMM_DEVCAP_KEEP_CLEAN) && !dev_host_mapped(c);
}
static inline void *dev_slot_addr(const struct hmm_device_core *c, uint64_t slot)
{
	return (char *)c->dev->mem_base + slot * PAGE_SIZE;
}

struct hmm_device_core *dev_from_handle(struct hmm_device *dev);   /* NULL if not open */
/* ops->fetch where the backend's table has it (version 3), else -EWOULDBLOCK. */
int dev_fetch(struct hmm_device_core *c, uint64_t slot, uint32_t npages, void *host);
/* ops->health where the backend's table has it (version 5), else zeros. */
void dev_health(struct hmm_device_core *c, struct hmm_device_health *ret);
struct hmm_device_core *dev_by_loc(unsigned loc);                  /* dev_loc() inverse */
/* The runtime's side of a device: parse, probe, open, then slots, mirror, queue. */
int dev_open(const char *spec, bool from_env, struct hmm_device_core **ret);
/* The device's pages must all be home and its queue idle (api.c sees to it). */
void dev_close(struct hmm_device_core *c);
struct hmm_device_core *dev_env(int index);                        /* UHMM_DEVICES order */
int dev_env_count(void);
void dev_fork_child(void);
const struct hmm_device_ops *const *dev_backends(size_t *ret_n);
/* Give back n slots from first; stale: they may still hold a page. */
void dev_free_slots(struct hmm_device_core *c, uint64_t first, size_t n, bool stale);
/*
 * Every device but except forgets [start, end); with wait, device accesses
 * in flight end first (never with reg.lock held: they may need it).
 */
void dev_invalidate_all(uintptr_t start, uintptr_t end, struct hmm_device_core *except, bool wait);

/* ---- registry.c: managed ranges ------------------------------------------- */

#define PREF_NONE (-3)      /* attr.preferred: no preferred location */
#define PREF_HOST (-1)      /* attr.preferred: host memory; >= 0: a device index */

/* Advice that applies to intervals rather than single pages (attr.c). */
struct attr {
	uintptr_t start, end;
	int preferred;              /* PREF_NONE, PREF_HOST or a device index */
	uint32_t accessed_by;       /* device index bits */
};

enum { RANGE_ALLOCATED = 1u << 0 };

struct range {
	uintptr_t start, end;
	uint64_t *pages;            /* one state word per page of [start, end) */
	uint64_t *pages_base;       /* allocation (pages may point past trimmed holes) */
	size_t pages_bytes;
	unsigned flags;
	bool armed;                 /* registered with userfaultfd (else lazy) */
	uintptr_t map_start;        /* RANGE_ALLOCATED: the mapping hmm_free unmaps */
	size_t map_len;
	struct attr *attrs;
	unsigned nattrs;
	/* Pages outside [off_lo, off_hi) are all in host memory (a hint, kept wide). */
	uintptr_t off_lo, off_hi;
};

/* A span whose mapping is about to change; migrations keep out of it. */
struct fence {
	struct fence *next;
	uintptr_t start, end;
};

struct registry {
	pthread_mutex_t lock;
	struct fence *fences;
	pthread_cond_t changed;     /* broadcast whenever PW_BUSY clears */
	struct range **v;           /* sorted by start, disjoint */
	size_t n, cap;
	uint64_t managed_pages;
	bool registered;            /* ranges are registered with uffd.fd */
};

extern struct registry reg;

void reg_lock(void);
void reg_unlock(void);
#define reg_assert_locked() rt_assert_held(LOCK_REG)
void reg_wait_changed(void);      /* locked; waits for a BUSY page to clear */
void reg_broadcast(void);         /* locked */
struct range *reg_lookup(uintptr_t addr);
/* Word of a managed, mapped page, or NULL. *ret_r is set when non-NULL. */
uint64_t *reg_word(uintptr_t addr, struct range **ret_r);
static inline size_t range_index(const struct range *r, uintptr_t addr)
{
	return (addr - r->start) >> PAGE_SHIFT;
}
static inline uint64_t *range_word(struct range *r, uintptr_t addr)
{
	return &r->pages[range_index(r, addr)];
}
/* Pages of [start, end) may leave host memory. */
static inline void range_note_offhost(struct range *r, uintptr_t start, uintptr_t end)
{
	if (r->off_lo == r->off_hi) {
		r->off_lo = start;
		r->off_hi = end;
	} else {
		r->off_lo = MIN(r->off_lo, start);
		r->off_hi = MAX(r->off_hi, end);
	}
}
/* Managed pieces of [start, end): calls fn for each maximal run in one range. */
int reg_for_each(uintptr_t start, uintptr_t end,
		 int (*fn)(struct range *r, uintptr_t s, uintptr_t e, void *arg), void *arg);
bool reg_overlaps(uintptr_t start, uintptr_t end);
bool reg_covers(uintptr_t start, uintptr_t end);
/* Manage [start, end) (private anonymous memory), armed; already managed parts stay. */
int reg_add(uintptr_t start, uintptr_t end, struct range **ret);
/* The same, lazily: registered with userfaultfd only once reg_arm() says so (armed under a host limit). */
int reg_add_lazy(uintptr_t start, uintptr_t end);
/* The same, before anonymous memory is moved there (see registry.c). */
int reg_add_ahead(uintptr_t start, uintptr_t end);
/* Pages of [start, end) are about to leave the host: arm their ranges, whole. */
void reg_arm(uintptr_t start, uintptr_t end);
/* The CPU mapping of [start, end) went away: lazy ranges learn it here. */
void reg_forget_lazy(uintptr_t start, uintptr_t end);
bool reg_lazy(uintptr_t start, uintptr_t end);   /* some of it is lazy */
/* Stop managing [start, end); pages must be home. */
int reg_remove(uintptr_t start, uintptr_t end);
/* Structural updates for unmap/remap; page resources were released by the caller. */
void reg_mark_unmapped(uintptr_t start, uintptr_t end);
int reg_insert_words(uintptr_t start, const uint64_t *words, size_t npages,
		     const struct attr *attrs, unsigned nattrs);
int reg_extend(uintptr_t old_end, uintptr_t new_end);
int reg_register_all(void);       /* with a freshly opened uffd */
void reg_forget_registration(void);
void reg_fence_add(struct fence *f, uintptr_t start, uintptr_t end);
void reg_fence_remove(struct fence *f);
/* Wait (reg.lock held) until no page of [start, end) is BUSY or fenced. */
void reg_wait_quiet(uintptr_t start, uintptr_t end, bool ignore_fences);
void reg_fork_child(void);
struct span {
	uintptr_t start, end;
};
/* locked: a copy of the ranges' extents (meta_free(*ret, n * sizeof(**ret))) */
int reg_snapshot(struct span **ret, size_t *ret_n);
/*
 * Memory that becomes managed behind the registry's back (the transparent
 * mode's heap grows without taking reg.lock) joins it in reg_catch_up(),
 * which the fault thread, the agent and the statistics call, reg.lock held.
 * The heap installs the hook when it starts.
 */
void reg_set_catch_up(void (*fn)(void));
void reg_catch_up(void);
/*
 * Private anonymous memory that is not the runtime's to manage although it
 * looks like it (the transparent mode's own pools, a device's shared heap):
 * reg_add refuses it, and hmm_migrate and hmm_advise pass it by. The heap
 * installs the test when it starts.
 */
void reg_set_foreign(bool (*fn)(uintptr_t start, uintptr_t end));
bool reg_foreign(uintptr_t start, uintptr_t end);

/* ---- attr.c: interval advice (preferred location, accessed-by) ------------ */

/* One change of interval advice; fields left 0 change nothing. */
struct attr_change {
	bool set_preferred;
	int preferred;              /* with set_preferred */
	uint32_t accessed_by_set;
	uint32_t accessed_by_clear;
};

int attr_apply(struct range *r, uintptr_t start, uintptr_t end, const struct attr_change *ch);
/* What [start, end) loses when it stops being managed: all its advice. */
int attr_clear(struct range *r, uintptr_t start, uintptr_t end);
const struct attr *attr_at(const struct range *r, uintptr_t addr);
int attr_preferred(const struct range *r, uintptr_t addr);
uint32_t attr_accessed_by(const struct range *r, uintptr_t addr);
void attr_copy_out(const struct range *r, uintptr_t start, uintptr_t end, struct attr **ret,
		   unsigned *ret_n);
void attr_fork_child(struct range *r);

/* ---- pagestate.c: the page-state machine ---------------------------------- */

/*
 * The state word of a managed page; pagestate.c draws the states and their
 * transitions. Readers may look at a word under reg.lock; only the
 * functions below write one.
 *   slot   device page (loc != 0), duplicate page (PW_DUP) or holding page
 *          (PW_EXCL)
 *   loc    0: data in host memory; dev_loc(c): data on device c
 *   aux    dev_loc(c): device c holds a read-only duplicate (PW_DUP) or
 *          exclusive access (PW_EXCL)
 */
#define PW_SLOT_MASK 0xffffffffull
#define PW_LOC_SHIFT 32
#define PW_AUX_SHIFT 40
#define PW_BUSY (1ull << 48)        /* claimed: a migration owns the page; faults park */
#define PW_PARKED (1ull << 49)      /* a CPU fault waits: kick when the page is free */
#define PW_ABORT (1ull << 50)       /* the CPU wrote during a copy-path migration */
#define PW_ZAPPING (1ull << 51)     /* the migration is removing the CPU page */
#define PW_DISCARD (1ull << 52)     /* unmapped or emptied while claimed */
#define PW_EXCL (1ull << 53)        /* device-exclusive; data in the holding area */
#define PW_DUP (1ull << 54)         /* read-mostly duplicate; host copy is write-protected */
#define PW_PIN_HOST (1ull << 55)    /* advice: never migrate off host */
#define PW_READ_MOSTLY (1ull << 56) /* advice: duplicate on device read faults */
#define PW_UNMAPPED (1ull << 57)    /* hole inside a range */
#define PW_POISONED (1ull << 58)    /* a failed fault-back left a SIGBUS marker */
#define PW_ADVICE (PW_PIN_HOST | PW_READ_MOSTLY)
#define PW_TRANSIENT (PW_BUSY | PW_PARKED | PW_ABORT | PW_ZAPPING | PW_DISCARD)

static inline unsigned pw_loc(uint64_t w) { return (w >> PW_LOC_SHIFT) & 0xff; }
static inline unsigned pw_aux(uint64_t w) { return (w >> PW_AUX_SHIFT) & 0xff; }
static inline uint64_t pw_slot(uint64_t w) { return w & PW_SLOT_MASK; }
/* Data or a copy of it is off the host: what fork and hmm_fini must bring home. */
static inline bool pw_off_host(uint64_t w)
{
	return pw_loc(w) || (w & (PW_EXCL | PW_DUP));
}
/* The page's data is in device c's memory. */
static inline bool pw_on(uint64_t w, const struct hmm_device_core *c)
{
	return pw_loc(w) == dev_loc(c);
}
bool pw_valid(uint64_t w);

/* Single pages; reg.lock held. Each names the event that triggers it. */
void page_claim(uint64_t *w);
void page_mark_parked(uint64_t *w);
void page_mark_aborted(uint64_t *w);
void page_mark_zapping(uint64_t *w);
void page_mark_discarded(uint64_t *w);
void page_poison(uint64_t *w);
void page_set_advice(uint64_t *w, uint64_t set, uint64_t clear);
void page_drop(uintptr_t addr, uint64_t *w);
void page_grant_exclusive(struct hmm_device_core *c, struct range *r, uintptr_t addr,
			  uint64_t slot);
void page_end_exclusive(uint64_t *w, bool holding_stale);
void page_commit_dup(struct hmm_device_core *c, struct range *r, uintptr_t addr, uint64_t slot);
void pages_commit_to_host_clean(struct hmm_device_core *c, struct range *r, uintptr_t addr,
				size_t n);
uint64_t page_claim_clean(struct hmm_device_core *c, uintptr_t addr, uint64_t *w);
void page_collapse_dup(uintptr_t addr, uint64_t *w);
uint64_t page_move_out(uint64_t *w);
void page_drop_moved(uintptr_t addr, uint64_t word);
void page_adopt(uint64_t *w, uint64_t word);
void page_unmap(uint64_t *w);
void page_fork_child(uint64_t *w);
void page_unmapped_in_flight(struct hmm_device_core *c, uint64_t slot, bool stale);
void pages_init(uint64_t *words, const uint64_t *from, size_t n);

/* Runs of pages [addr, addr + n pages) in range r; reg.lock held. */
void pages_commit_to_device(struct hmm_device_core *c, struct range *r, uintptr_t addr,
			    size_t n, uint64_t slot0, bool writable);
void pages_commit_to_host(struct hmm_device_core *c, struct range *r, uintptr_t addr, size_t n,
			  bool slots_stale, bool writable);
void pages_release(struct range *r, uintptr_t addr, size_t n);
/* Devices advised ACCESSED_BY map [addr, addr + n pages) wherever the data is. */
void pages_map_accessed_by(struct range *r, uintptr_t addr, size_t n, bool writable);

#endif /* UHMM_STATE_H */
