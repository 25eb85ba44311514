/* SPDX-License-Identifier: MIT */
/*
 * The runtime's one internal header, grouped by source file.
 *
 * Threads and the rules that keep them from deadlocking:
 * - The fault thread (handler.c) reads userfaultfd messages and serves them.
 *   It never waits for another thread: a fault it cannot serve yet is parked
 *   and served again when the page's owner kicks it. It never touches managed
 *   memory and never calls munmap/madvise/mremap on registered ranges (those
 *   raise events that only it can read).
 * - reg.lock (registry.c) is held only for short sections. Its holders may
 *   issue UFFDIO_MOVE/COPY/ZEROPAGE/WRITEPROTECT/WAKE (none of which waits
 *   for the fault thread), but never touch managed memory, never call
 *   madvise/mmap/munmap/mprotect, and never retry EAGAIN while holding it.
 * - A migration marks pages PW_BUSY while their data is in flight outside
 *   reg.lock; faults on BUSY pages park, other migrations wait on reg.changed.
 * - Device accesses pin the device-local pages they copy with a mirror
 *   interval (mirror.c); local pins never depend on the fault thread.
 * Lock order: quiesce (init.c) -> reg.lock -> mirror.lock -> devmem.lock.
 */
#ifndef UHMM_INTERNAL_H
#define UHMM_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <uhmm.h>
#include <uhmm/device.h>

#define PAGE_SHIFT 12
#define PAGE_SIZE 4096ul
#define PMD_PAGES 512ul
#define PMD_SIZE (PMD_PAGES * PAGE_SIZE)
#define MAX_DEVICES HMM_STATS_MAX_DEVICES

/*
 * libc functions we define for the whole process (malloc, mmap...). They
 * carry no symbol version, so that references to glibc's versions bind here.
 */
#define UHMM_INTERPOSE __attribute__((visibility("default")))

#define ALIGN_DOWN(x, a) ((x) & ~((uintptr_t)(a) - 1))
#define ALIGN_UP(x, a) ALIGN_DOWN((x) + (a) - 1, a)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define unlikely(x) __builtin_expect(!!(x), 0)
#define likely(x) __builtin_expect(!!(x), 1)

/* ---- options.c: UHMM_* environment variables ---------------------------- */

enum uffd_mode { UFFD_MODE_AUTO, UFFD_MODE_KERNEL, UFFD_MODE_USER };

struct rt_options {
	const char *devices;        /* UHMM_DEVICES */
	uint64_t device_mem;        /* UHMM_DEVICE_MEM */
	int log_level;              /* UHMM_LOG */
	const char *fault;          /* UHMM_FAULT */
	unsigned fault_around;      /* UHMM_FAULT_AROUND, pages */
	unsigned dma_batch;         /* UHMM_DMA_BATCH, pages */
	unsigned retry_ms;          /* UHMM_RETRY_MS */
	unsigned fault_retries;     /* UHMM_FAULT_RETRIES */
	uint64_t exclusive_mem;     /* UHMM_EXCLUSIVE_MEM */
	enum uffd_mode uffd_mode;   /* UHMM_USERFAULTFD */
	unsigned zero_around;       /* UHMM_ZERO_AROUND, pages */
	uint64_t host_limit;        /* UHMM_HOST_LIMIT, bytes; 0: none */
	unsigned thrash_ms;         /* UHMM_THRASH_MS */
	unsigned chaos_ms;          /* UHMM_CHAOS; 0: off */
	bool stats_summary;         /* UHMM_STATS */
	int stats_pid;              /* UHMM_STATS_PID; 0: any process */
	const char *stats_file;     /* UHMM_STATS_FILE */
};

struct opt_desc {
	const char *name;
	const char *def;
	const char *help;
};

extern struct rt_options opt;
void opt_load(void);
const struct opt_desc *opt_descs(size_t *ret_n);
int parse_size(const char *s, uint64_t *ret);
int parse_uint(const char *s, uint64_t max, uint64_t *ret);

/* ---- log.c: quiet by default; never allocates ---------------------------- */

enum { LOG_ERR, LOG_WARN, LOG_INFO, LOG_DEBUG };

void log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

struct log_ratelimit {
	_Atomic uint64_t next_ns;
};
bool log_ratelimit_ok(struct log_ratelimit *rl);

#define log_err(...) log_write(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_write(LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                  \
	do {                                            \
		if (unlikely(opt.log_level >= LOG_DEBUG)) \
			log_write(LOG_DEBUG, __VA_ARGS__); \
	} while (0)
#define log_warn_ratelimited(...)                        \
	do {                                             \
		static struct log_ratelimit rl_;         \
		if (log_ratelimit_ok(&rl_))              \
			log_write(LOG_WARN, __VA_ARGS__); \
	} while (0)

uint64_t now_ns(void);

/* ---- sys.c: raw system calls (never our own interposed wrappers) --------- */

void *sys_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int sys_munmap(void *addr, size_t len);
void *sys_mremap(void *old, size_t old_len, size_t new_len, int flags, void *new_addr);
int sys_mprotect(void *addr, size_t len, int prot);
int sys_madvise(void *addr, size_t len, int advice);
pid_t sys_gettid(void);

/* ---- meta.c: the runtime's own memory, never managed --------------------- */

void *meta_alloc(size_t size);   /* zeroed, NULL on failure */
void *meta_realloc(void *p, size_t old_size, size_t new_size);
void meta_free(void *p, size_t size);
uint64_t meta_bytes(void);

/* ---- heap.c, malloc.c: the managed heap (transparent mode) --------------- */

bool heap_managed(void);            /* malloc serves managed memory (decides once) */
int heap_init(void);
bool heap_ready(void);
bool heap_app_owns_slow(const void *p);
extern uintptr_t heap_app_first_start, heap_app_first_len;
static inline bool heap_app_owns(const void *p)
{
	return (uintptr_t)p - heap_app_first_start < heap_app_first_len || heap_app_owns_slow(p);
}
/*
 * jemalloc's own malloc and free, for bound application threads: their fast
 * paths (thread cache, no flags to decode) cost half of mallocx/dallocx.
 * NULL until heap_init() found them.
 */
extern void *(*heap_je_malloc)(size_t size);
extern void (*heap_je_free)(void *p);
bool heap_meta_owns(const void *p);
int heap_meta_flags(void);          /* mallocx flags of the unmanaged pool */
void heap_bind_thread(void);
void *heap_meta_calloc(size_t size);
void heap_meta_free(void *p);
void heap_sync_registry(void);      /* reg.lock held */
uint64_t heap_committed_bytes(void);
void heap_fork_child(void);

/* ---- faultinj.c: UHMM_FAULT -------------------------------------------- */

enum fault_point {
	FP_DEVMEM_ALLOC,
	FP_DEVMEM_ALLOC_HUGE,
	FP_DMA_TO_DEVICE,
	FP_DMA_TO_HOST,
	FP_NR,
};

bool fault_fire(enum fault_point p);
int fault_configure(const char *spec);

/* ---- uffd.c: the userfaultfd file and its ioctls -------------------------- */

struct uffd_state {
	int fd;                 /* -1 while closed */
	uint64_t features;      /* enabled on fd */
	bool kernel_faults;     /* kernel-mode accesses are served (no USER_MODE_ONLY) */
	bool can_move;          /* UFFDIO_MOVE */
	bool can_poison;        /* UFFDIO_POISON */
	bool forked;            /* a child of fork: see uffd_forget() */
	const char *origin;     /* how fd was obtained, for uhmm-info and logs */
};

struct uffd_probe {
	uint64_t features;      /* what the kernel offers */
	uint64_t ioctls;
	bool kernel_faults;
	const char *origin;
	int error;              /* -errno when no userfaultfd at all */
};

extern struct uffd_state uffd;
int uffd_open(void);
void uffd_close(void);
void uffd_forget(void);         /* fork child: drop the parent's fd */
void uffd_probe(struct uffd_probe *ret);
int uffd_register(uintptr_t start, size_t len, uint64_t mode);
int uffd_unregister(uintptr_t start, size_t len);
/* These return the bytes done (> 0) or -errno when nothing was done. */
long uffd_move(uintptr_t dst, uintptr_t src, size_t len, uint64_t mode);
long uffd_copy(uintptr_t dst, const void *src, size_t len, uint64_t mode);
long uffd_zero(uintptr_t dst, size_t len, uint64_t mode);
int uffd_protect(uintptr_t start, size_t len, bool protect, bool wake);
int uffd_wake(uintptr_t start, size_t len);
int uffd_poison(uintptr_t start, size_t len);

/* ---- vma.c: the CPU's mappings, read without faulting --------------------- */

enum {
	VMA_READ = 1u << 0,
	VMA_WRITE = 1u << 1,
	VMA_EXEC = 1u << 2,
	VMA_SHARED = 1u << 3,
	VMA_FILE = 1u << 4,     /* file-backed, including shmem and MAP_SHARED anon */
	VMA_HUGETLB = 1u << 5,
};

struct vma {
	uintptr_t start, end;
	unsigned flags;
	uint64_t page_size;
};

int vma_query(uintptr_t addr, struct vma *ret);          /* -ENOENT: hole */
bool vma_private_anon(const struct vma *v);
/*
 * Walk [start, end) piece by piece; fn sees each VMA clipped to the range,
 * and holes with v == NULL. A non-zero return from fn stops the walk.
 */
int vma_walk(uintptr_t start, uintptr_t end,
	     int (*fn)(const struct vma *v, uintptr_t s, uintptr_t e, void *arg), void *arg);
int vma_locked(uintptr_t start, uintptr_t end, bool *ret_locked);
int pagemap_read(uintptr_t start, size_t npages, uint64_t *ret);
/* PAGE_IS_* categories per page (PAGEMAP_SCAN); -EOPNOTSUPP without it */
int pagemap_categories(uintptr_t start, size_t npages, uint8_t *ret);
/* Runs of pages with host memory of their own (present, not the zero page). */
int pagemap_resident_runs(uintptr_t start, uintptr_t end,
			  int (*fn)(uintptr_t s, uintptr_t e, void *arg), void *arg);
bool vma_have_procmap_query(void);
bool vma_have_pagemap_scan(void);
void vma_reset(void);          /* fork child: /proc/self now names another process */

/* ---- registry.c: managed ranges and per-page state ----------------------- */

/*
 * The state word of a managed page.
 *   slot   device page (loc != 0), duplicate page (PW_DUP) or holding page
 *          (PW_EXCL)
 *   loc    0: data in host memory; k + 1: data on device index k
 *   aux    k + 1: device k holds a read-only duplicate (PW_DUP) or
 *          exclusive access (PW_EXCL)
 */
#define PW_SLOT_MASK 0xffffffffull
#define PW_LOC_SHIFT 32
#define PW_AUX_SHIFT 40
#define PW_BUSY (1ull << 48)        /* a migration owns the page; faults park */
#define PW_PARKED (1ull << 49)      /* a CPU fault waits for BUSY to clear */
#define PW_ABORT (1ull << 50)       /* the CPU wrote during a copy-path migration */
#define PW_ZAPPING (1ull << 51)     /* the migration is removing the CPU page */
#define PW_DISCARD (1ull << 52)     /* unmapped or discarded while BUSY */
#define PW_EXCL (1ull << 53)        /* device-exclusive; data in the holding area */
#define PW_DUP (1ull << 54)         /* read-mostly duplicate; host copy is write-protected */
#define PW_PIN_HOST (1ull << 55)    /* advice: never migrate off host */
#define PW_READ_MOSTLY (1ull << 56) /* advice: duplicate on device read faults */
#define PW_UNMAPPED (1ull << 57)    /* hole inside a range */
#define PW_POISONED (1ull << 58)    /* a failed fault-back left a SIGBUS marker */
#define PW_ADVICE (PW_PIN_HOST | PW_READ_MOSTLY)

static inline unsigned pw_loc(uint64_t w) { return (w >> PW_LOC_SHIFT) & 0xff; }
static inline unsigned pw_aux(uint64_t w) { return (w >> PW_AUX_SHIFT) & 0xff; }
static inline uint64_t pw_slot(uint64_t w) { return w & PW_SLOT_MASK; }
static inline uint64_t pw_set_loc(uint64_t w, unsigned loc, uint64_t slot)
{
	w &= ~((0xffull << PW_LOC_SHIFT) | PW_SLOT_MASK);
	return w | ((uint64_t)loc << PW_LOC_SHIFT) | (slot & PW_SLOT_MASK);
}
static inline uint64_t pw_set_aux(uint64_t w, unsigned aux, uint64_t slot)
{
	w &= ~((0xffull << PW_AUX_SHIFT) | PW_SLOT_MASK);
	return w | ((uint64_t)aux << PW_AUX_SHIFT) | (slot & PW_SLOT_MASK);
}

#define PREF_NONE (-3)
#define PREF_HOST (-1)

/* Advice that applies to intervals rather than single pages. */
struct attr {
	uintptr_t start, end;
	int preferred;              /* PREF_NONE, PREF_HOST or a device index */
	uint32_t accessed_by;       /* device index bits */
};

enum { RANGE_ALLOCATED = 1u << 0 };

struct range {
	uintptr_t start, end;
	uint64_t *pages;            /* one word per page of [start, end) */
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
void reg_wait_changed(void);      /* locked; waits for a BUSY page to clear */
void reg_broadcast(void);         /* locked */
struct range *reg_lookup(uintptr_t addr);
/* Word of a managed, mapped page, or NULL. *ret_r is set when non-NULL. */
uint64_t *reg_word(uintptr_t addr, struct range **ret_r);
static inline size_t range_index(const struct range *r, uintptr_t addr)
{
	return (addr - r->start) >> PAGE_SHIFT;
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
/* The same, lazily: registered with userfaultfd only once reg_arm() says so. */
int reg_add_lazy(uintptr_t start, uintptr_t end);
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
void reg_fence_add(struct fence *f, uintptr_t start, uintptr_t end);
void reg_fence_remove(struct fence *f);
bool reg_fenced(uintptr_t start, uintptr_t end);
/* Wait (reg.lock held) until no page of [start, end) is BUSY or fenced. */
void reg_wait_quiet(uintptr_t start, uintptr_t end, bool ignore_fences);
void reg_forget_registration(void);
/* Interval advice. */
int attr_set(struct range *r, uintptr_t start, uintptr_t end, int set_preferred, int preferred,
	     uint32_t ab_set, uint32_t ab_clear);
const struct attr *attr_at(const struct range *r, uintptr_t addr);
int attr_preferred(const struct range *r, uintptr_t addr);
uint32_t attr_accessed_by(const struct range *r, uintptr_t addr);
void attr_copy_out(const struct range *r, uintptr_t start, uintptr_t end, struct attr **ret,
		   unsigned *ret_n);
void reg_fork_child(void);
struct span {
	uintptr_t start, end;
};
/* locked: a copy of the ranges' extents (meta_free(*ret, n * sizeof(**ret))) */
int reg_snapshot(struct span **ret, size_t *ret_n);

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

/* ---- mirror.c: a device's page table ------------------------------------ */

#define MIR_READ 0x01
#define MIR_WRITE 0x02
#define MIR_ATOMIC 0x04     /* exclusive (atomic) access */
#define MIR_LOCAL 0x08      /* data in this device's memory or the holding area */

/* A device access in flight; lives on the accessor's stack. */
struct mirror_interval {
	struct mirror_interval *next;
	uintptr_t start, end;
	bool local;                 /* pins device-local pages against migration */
	bool stale;                 /* an invalidation overlapped it */
};

struct mirror {
	pthread_mutex_t lock;
	pthread_cond_t idle;        /* an interval ended */
	uint64_t seq;               /* bumped by every invalidation */
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
/* locked: */
uint8_t mirror_get(struct mirror *m, uintptr_t addr);
size_t mirror_run(struct mirror *m, uintptr_t addr, size_t max, uint8_t need, uint8_t *ret_first);
int mirror_set(struct mirror *m, uintptr_t addr, uint8_t bits);
void mirror_clear(struct mirror *m, uintptr_t start, uintptr_t end);
void mirror_invalidate(struct mirror *m, uintptr_t start, uintptr_t end);
bool mirror_any(struct mirror *m, uintptr_t start, uintptr_t end, uint8_t bits);
void mirror_interval_begin(struct mirror *m, struct mirror_interval *iv);
bool mirror_interval_end(struct mirror *m, struct mirror_interval *iv);
bool mirror_pinned(struct mirror *m, uintptr_t start, uintptr_t end);
uintptr_t mirror_first_pinned(struct mirror *m, uintptr_t start, uintptr_t end);
void mirror_wait_unpinned(struct mirror *m, uintptr_t start, uintptr_t end);
void mirror_wait_idle(struct mirror *m, uintptr_t start, uintptr_t end);

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
	bool dontwake;      /* COPY_OUT: the completion wakes waiters after committing */
	bool done;
};

struct hmm_device_core;

struct dmaq {
	pthread_mutex_t lock;
	pthread_cond_t work, done;
	struct dma_job *head, *tail;
	unsigned queued;
	bool stop;
	pthread_t thread;
	bool started;
	struct hmm_device_core *core;
	void *bounce;               /* PMD_SIZE of unmanaged memory for COPY_OUT */
};

int dmaq_start(struct dmaq *q, struct hmm_device_core *core);
void dmaq_stop(struct dmaq *q);
void dmaq_submit(struct dmaq *q, struct dma_job *job);
void dmaq_wait(struct dmaq *q, struct dma_job *job);
void dmaq_drain(struct dmaq *q);

/* ---- device.c: open devices --------------------------------------------- */

struct hmm_device_core {
	struct hmm_device *dev;
	int index;
	bool from_env;
	bool closing;
	struct devmem mem;
	struct mirror mirror;
	struct dmaq q;
	_Atomic uint64_t resident;      /* pages whose data is here */
	/* fault-around state, fault thread only */
	uintptr_t last_fault_end;
	unsigned window;
};

extern struct hmm_device_core *dev_table[MAX_DEVICES];

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
static inline void *dev_slot_addr(const struct hmm_device_core *c, uint64_t slot)
{
	return (char *)c->dev->mem_base + slot * PAGE_SIZE;
}

struct hmm_device_core *dev_from_handle(struct hmm_device *dev);   /* NULL if not open */
struct hmm_device_core *dev_by_loc(unsigned loc);                  /* loc = index + 1 */
int dev_open(const char *spec, bool from_env, struct hmm_device_core **ret);
int dev_close(struct hmm_device_core *c);
int dev_open_env(void);
void dev_close_all(void);
void dev_fork_child(void);
const struct hmm_device_ops *const *dev_backends(size_t *ret_n);
int dev_parse_spec(const char *spec, const struct hmm_device_ops **ret_ops,
		   struct hmm_device_config *cfg, char *buf, size_t buflen);

/* ---- holding.c: where exclusive pages wait while the device owns them ---- */

int holding_reserve(void);
void *holding_addr(uint64_t slot);
int holding_alloc(uint64_t *ret_slot);       /* -ENOMEM when full */
void holding_free(uint64_t slot, bool stale);
void holding_fork_child(void);
void holding_release(void);

/* ---- handler.c: the fault thread ----------------------------------------- */

int handler_start(void);
void handler_stop(void);
void handler_fork_child(void);
void handler_kick(void);            /* parked faults may proceed */
void handler_barrier(void);         /* events read so far are processed */
/*
 * fork: the fault thread keeps reading (so that nobody blocks in the kernel
 * on an event it has not read) but processes nothing until resumed.
 */
void handler_pause(void);
void handler_resume(void);
bool handler_running(void);
void handler_own_zap(uintptr_t start, uintptr_t end, bool add);
void internal_thread_enter(void);   /* runtime thread: its faults never park */
void internal_thread_leave(void);

/* ---- migrate.c: moving pages between host and devices -------------------- */

struct mig_result {
	size_t placed;      /* pages on the target afterwards */
	bool enoent;        /* some page cannot be placed */
	bool enomem;        /* device memory ran out */
	bool eio;           /* a copy failed */
};

int mig_range(uintptr_t start, uintptr_t end, struct hmm_device_core *dst, struct mig_result *res);
/* Bring every page of [start, end) on a device (any device if c is NULL) home. */
int mig_home(uintptr_t start, uintptr_t end, struct hmm_device_core *c, struct mig_result *res);
int mig_home_everything(struct hmm_device_core *c);
enum fault_result {
	FAULT_DONE,     /* served: the thread is awake, or the job serving it wakes it */
	FAULT_PARK,     /* the page is busy: wake the thread to fault again when its owner kicks */
	FAULT_RETRY,    /* an event is pending (EAGAIN): wake it to fault again after reading it */
};

/* Fault thread, reg.lock held: serve a MISSING fault on a managed page. */
enum fault_result mig_fault_in(struct range *r, uintptr_t addr, bool write, pid_t tid,
			       bool internal);
/* Fault thread, reg.lock held: serve a write-protect fault. */
enum fault_result mig_fault_wp(struct range *r, uintptr_t addr);
/* reg.lock held: the CPU mapping of [start, end) went away (unmap) or was emptied. */
void mig_discard(uintptr_t start, uintptr_t end, bool unmapped);
void mig_remapped(uintptr_t from, uintptr_t to, size_t len);
/* reg.lock held: drop device resources of one page word (not BUSY). */
void mig_drop_word(uintptr_t addr, uint64_t *w);
/* reg.lock held: revoke device-exclusive access, bringing the page home. */
int mig_revoke_exclusive(uintptr_t addr, uint64_t *w);
int mig_collapse_dup(uintptr_t addr, uint64_t *w);
void mig_after_host_change(uintptr_t start, uintptr_t end);
int mig_make_dup(struct hmm_device_core *c, uintptr_t start, uintptr_t end);

/* ---- page.c: what follows when a run of pages changes place ------------- */

/* All with reg.lock held; [addr, addr + n pages) lies in range r. */
void run_to_device(struct hmm_device_core *c, struct range *r, uintptr_t addr, size_t n,
		   uint64_t slot0, bool writable);
void run_to_host(struct hmm_device_core *c, struct range *r, uintptr_t addr, size_t n,
		 bool slots_stale, bool writable);
void run_unbusy(struct range *r, uintptr_t addr, size_t n);
void page_drop(uintptr_t addr, uint64_t *w);
/* Every device but except forgets [start, end); with wait, accesses in flight end
 * first (never with reg.lock held). */
void mirrors_invalidate(uintptr_t start, uintptr_t end, struct hmm_device_core *except, bool wait);
void map_accessed_by(struct range *r, uintptr_t addr, size_t n, bool writable);
void free_slots(struct hmm_device_core *c, uint64_t first, size_t n, bool stale);

/* ---- access.c: the device's side (read, write, atomics, exclusive) ------- */

int acc_fault_round(struct hmm_device_core *c, uintptr_t start, uintptr_t end, bool write,
		    bool map_only);
int acc_copy(struct hmm_device_core *c, uintptr_t addr, size_t len, void *buf, bool write,
	     struct hmm_access *ret);
int acc_atomic_add(struct hmm_device_core *c, uint64_t *addr, uint64_t value, uint64_t *ret_old);
int acc_exclusive(struct hmm_device_core *c, uintptr_t start, uintptr_t end, struct hmm_access *ret);
void acc_map_resident(struct hmm_device_core *c, uintptr_t start, uintptr_t end);

/* ---- snapshot.c ---------------------------------------------------------- */

int snap_take(struct hmm_device_core *c, uintptr_t start, size_t npages, uint8_t *out);
int snap_residency(uintptr_t start, size_t npages, int *out);

/* ---- policy.c: advice and queued prefetch -------------------------------- */

int policy_advise(uintptr_t start, uintptr_t end, int advice, struct hmm_device_core *c);
int policy_sync(struct hmm_device_core *c);
void policy_stop(void);
void policy_fork_child(void);
void policy_forget_device(struct hmm_device_core *c);

/* ---- intercept.c: CPU-side mapping changes we must see first -------------- */

int icpt_munmap(void *addr, size_t len);   /* munmap, whichever munmap others see */

/* ---- fork.c ------------------------------------------------------------- */

int fork_hooks_install(void);

/* ---- stats.c ------------------------------------------------------------- */

struct rt_stats {
	_Atomic uint64_t cpu_faults;
	_Atomic uint64_t device_faults;
	_Atomic uint64_t pages_to_device;
	_Atomic uint64_t pages_to_host;
	_Atomic uint64_t migrations_failed;
	_Atomic uint64_t evictions;
	_Atomic uint64_t thrash_events;
	_Atomic uint64_t fault_ns;
	_Atomic uint64_t zero_fills;
	_Atomic uint64_t parked_faults;
};

extern struct rt_stats stats;
#define STAT_ADD(field, n) atomic_fetch_add_explicit(&stats.field, (n), memory_order_relaxed)

int stats_region_open(void);        /* the live region uhmm-stat reads */
void stats_keep_stderr(void);       /* at start: where the summary will go */
void stats_publish(void);           /* runtime held */
void stats_fork_child(void);
void stats_summary(void);           /* UHMM_STATS, at exit */

/* ---- agent.c, pager.c, chaos.c: periodic work ------------------------------ */

int agent_start(void);
void agent_stop(void);              /* not with the runtime quiesced */
void agent_fork_child(void);
void pager_tick(void);              /* UHMM_HOST_LIMIT */
void pager_note_fault(uintptr_t addr, bool from_device);   /* fault thread */
uint64_t pager_resident_bytes(void);
void pager_fork_child(void);
void chaos_tick(void);              /* UHMM_CHAOS */

/* ---- preload.c: transparent mode ------------------------------------------ */

void preload_thread_started(void);  /* a thread's first managed allocation */
void preload_fork_child(void);

/* ---- init.c: lifetime ---------------------------------------------------- */

/*
 * Per-thread state, initial-exec TLS so that reading it never allocates
 * (the malloc wrappers read it on every call).
 */
struct rt_thread {
	unsigned depth;         /* runtime calls in progress (rt_enter, rt_hold) */
	unsigned meta_only;     /* allocations here must not be managed memory */
	bool internal;          /* a runtime thread */
	unsigned in_alloc;      /* inside jemalloc: its mmap calls are its own */
	bool bound;             /* heap.c: bound to a managed arena */
	bool in_boot;           /* heap.c: the heap is being set up by this thread */
};

extern __thread struct rt_thread rt_self __attribute__((tls_model("initial-exec")));

/* Runtime context: memory allocated here must never be managed. */
static inline bool rt_self_internal(void)
{
	return rt_self.depth || rt_self.meta_only || rt_self.internal;
}

/* Start the runtime if needed and hold it against fork/fini. */
int rt_enter(void);
void rt_leave(void);
bool rt_active(void);
/* Hold the runtime if it is running, without starting it; false if not. */
bool rt_hold(void);
int rt_quiesce(void);           /* fork prepare, fini: no API call in flight */
void rt_unquiesce(void);
void rt_reset_after_fork(void);

#endif /* UHMM_INTERNAL_H */
