/* SPDX-License-Identifier: MIT */
/*
 * Layer 1, base: what every other layer stands on. Raw system calls, the
 * log, the UHMM_* options, the runtime's own memory, fault injection, the
 * runtime's threads and the kick that wakes the fault thread, the gate that
 * API calls hold against fork and hmm_fini, the counters, and the debug
 * checks. Nothing here knows about pages, devices or userfaultfd.
 *
 * Grouped by source file, as every layer header is. A layer includes its own
 * header and those of the layers below it; the build gives it no path to the
 * ones above (runtime/README.md).
 */
#ifndef UHMM_BASE_H
#define UHMM_BASE_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <uhmm.h>

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

#ifndef container_of
#define container_of(ptr, type, member) \
	((type *)((char *)(ptr) - __builtin_offsetof(type, member)))
#endif

/* ---- check.c: debug checks (meson -Ddebug_checks=true) -------------------- */

/*
 * The runtime's locks, in the only order in which one thread may hold them
 * (runtime/README.md explains each). With debug checks, taking a lock while
 * holding one that comes later in this list, or taking one twice, aborts
 * with both names: the kernel's lockdep in miniature.
 */
enum lock_class {
	LOCK_GATE,          /* gate.c: API calls against fork and hmm_fini (read side) */
	LOCK_REG,           /* registry.c: ranges and page words */
	LOCK_MIRROR,        /* mirror.c: one device's page table */
	LOCK_CPU_CHANGE,    /* mirror.c: mapping changes in progress */
	LOCK_DMAQ,          /* dmaq.c: one device's queue */
	LOCK_DEVMEM,        /* devmem.c: one device's slot bitmap */
	LOCK_NR,
};

#if UHMM_DEBUG_CHECKS
#define UHMM_HAVE_DEBUG_CHECKS 1
void rt_assert_fail(const char *what, const char *file, int line, const char *func)
	__attribute__((noreturn, cold));
#define rt_assert(cond) \
	(likely(cond) ? (void)0 : rt_assert_fail(#cond, __FILE__, __LINE__, __func__))
void lock_acquired(enum lock_class c);
void lock_released(enum lock_class c);
bool lock_held(enum lock_class c);
void lock_fork_child(void);
#define rt_assert_held(c) rt_assert(lock_held(c))
#else
#define UHMM_HAVE_DEBUG_CHECKS 0
/* Not evaluated, but still compiled: a check that stops compiling is noticed. */
#define rt_assert(cond) ((void)sizeof(!(cond)))
static inline void lock_acquired(enum lock_class c) { (void)c; }
static inline void lock_released(enum lock_class c) { (void)c; }
static inline void lock_fork_child(void) {}
#define rt_assert_held(c) ((void)(c))
#endif

/* ---- sys.c: raw system calls (never our own interposed wrappers) --------- */

void *sys_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int sys_munmap(void *addr, size_t len);
void *sys_mremap(void *old, size_t old_len, size_t new_len, int flags, void *new_addr);
int sys_mprotect(void *addr, size_t len, int prot);
int sys_madvise(void *addr, size_t len, int advice);
pid_t sys_gettid(void);

/* ---- options.c: UHMM_* environment variables ---------------------------- */

enum uffd_mode { UFFD_MODE_AUTO, UFFD_MODE_KERNEL, UFFD_MODE_USER };

struct rt_options {
	const char *devices;        /* UHMM_DEVICES */
	uint64_t device_mem;        /* UHMM_DEVICE_MEM */
	unsigned log_level;         /* UHMM_LOG */
	const char *fault;          /* UHMM_FAULT */
	unsigned fault_around;      /* UHMM_FAULT_AROUND, pages */
	unsigned dma_batch;         /* UHMM_DMA_BATCH, pages */
	unsigned retry_ms;          /* UHMM_RETRY_MS */
	unsigned fault_retries;     /* UHMM_FAULT_RETRIES */
	uint64_t exclusive_mem;     /* UHMM_EXCLUSIVE_MEM */
	unsigned uffd_mode;         /* UHMM_USERFAULTFD: enum uffd_mode */
	unsigned zero_around;       /* UHMM_ZERO_AROUND, pages */
	uint64_t host_limit;        /* UHMM_HOST_LIMIT, bytes; 0: none */
	unsigned thrash_ms;         /* UHMM_THRASH_MS */
	unsigned chaos_ms;          /* UHMM_CHAOS; 0: off */
	bool stats_summary;         /* UHMM_STATS */
	unsigned stats_pid;         /* UHMM_STATS_PID; 0: any process */
	const char *stats_file;     /* UHMM_STATS_FILE */
	const char *kernel_hide;    /* UHMM_KERNEL_HIDE: a test aid, see kernel_hides() */
};

extern struct rt_options opt;
void opt_load(void);        /* once per process; later calls do nothing */
int parse_size(const char *s, uint64_t *ret);
int parse_uint(const char *s, uint64_t max, uint64_t *ret);

/* ---- log.c: quiet by default; never allocates ---------------------------- */

enum { LOG_ERR, LOG_WARN, LOG_INFO, LOG_DEBUG };

void log_write(unsigned level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

struct log_ratelimit {
	_Atomic uint64_t next_ns;
	uint64_t interval_ns;       /* 0: a second */
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
void nap(void);     /* 50 us: the back-off of retry loops that must not spin */

/* ---- meta.c: the runtime's own memory, never managed --------------------- */

void *meta_alloc(size_t size);   /* zeroed, NULL on failure */
void *meta_realloc(void *p, size_t old_size, size_t new_size);
void meta_free(void *p, size_t size);
uint64_t meta_bytes(void);
/*
 * Where small blocks come from: calloc and free until the transparent
 * mode's heap installs its unmanaged pool (heap.c). free_fn must accept
 * blocks from every allocator installed before it.
 */
void meta_set_allocator(void *(*calloc_fn)(size_t size), void (*free_fn)(void *p));

/* ---- inject.c: fault injection (UHMM_FAULT, hmm_fault_inject) ----------- */

enum inject_point {
	INJ_DEVMEM_ALLOC,
	INJ_DEVMEM_ALLOC_HUGE,
	INJ_DMA_TO_DEVICE,
	INJ_DMA_TO_HOST,
	INJ_URING_SHORT_IO,         /* the uring backend's: a transfer cut to half */
	INJ_NR,
};

bool inject_fire(enum inject_point p);
int inject_configure(const char *spec);

/* ---- thread.c: runtime threads, per-thread state, the kick --------------- */

/*
 * Per-thread state, initial-exec TLS so that reading it never allocates
 * (the malloc wrappers read it on every call).
 */
struct rt_thread {
	unsigned depth;         /* gate holds in progress (rt_hold, rt_enter) */
	unsigned meta_only;     /* allocations here must not be managed memory */
	bool internal;          /* a runtime thread */
	unsigned in_alloc;      /* inside jemalloc: its mmap calls are its own */
	unsigned bound;         /* heap.c: bound to an app arena of this generation (0: not) */
	bool in_boot;           /* heap.c: the heap is being set up by this thread */
#if UHMM_DEBUG_CHECKS
	uint8_t locks[LOCK_NR]; /* check.c: locks this thread holds, by class */
#endif
};

extern __thread struct rt_thread rt_self __attribute__((tls_model("initial-exec")));

/* Runtime context: memory allocated here must never be managed. */
static inline bool rt_self_internal(void)
{
	return rt_self.depth || rt_self.meta_only || rt_self.internal;
}

/*
 * Start a runtime thread: every signal blocked from its first instruction
 * (signals are the application's), a small stack, and, when internal, its
 * faults recognised as ours (thread_is_internal) and its allocations kept
 * out of managed memory.
 */
int thread_spawn(pthread_t *ret, void *(*fn)(void *), void *arg, bool internal);
bool thread_is_internal(pid_t tid);
/*
 * An application thread inside an API call reads pages it has claimed
 * (exclusive access without UFFDIO_MOVE): for that while its faults are
 * served as a runtime thread's, never parked behind its own claim.
 */
void thread_enter_internal(void);
void thread_leave_internal(void);
void thread_fork_child(void);

/*
 * The kick: a nonblocking eventfd that the fault thread polls. Anyone who
 * frees what a parked fault waits for (a busy page, a pinned page, a fence)
 * kicks; it never blocks and never fails in a way the kicker must handle.
 */
int kick_open(void);
void kick_close(void);
int kick_fd(void);
void kick(void);
void kick_drain(void);

/* ---- gate.c: API calls held against fork and hmm_fini --------------------- */

bool rt_active(void);
/* Hold the runtime if it is running, without starting it; false if not. */
bool rt_hold(void);
bool rt_try_hold(void);     /* the same, but false while a quiesce waits */
void rt_leave(void);
/* Fork prepare, hmm_fini, device close: wait until no call is in flight. */
int rt_quiesce(void);
void rt_unquiesce(void);
/* Lifetime (api/init.c): open or close the gate, the quiesced side held. */
void rt_set_active(bool on);
void rt_gate_fork_child(void);

/* ---- counters.c: what the runtime counts (hmm_stats_get) ------------------ */

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
void stats_reset(void);

#endif /* UHMM_BASE_H */
