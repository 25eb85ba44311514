// SPDX-License-Identifier: MIT
/*
 * The managed heap (transparent mode): jemalloc arenas whose extents come
 * from address space we reserve, through jemalloc's extent hooks.
 *
 * Two pools, each a few large reservations (PROT_NONE until committed):
 *   app   the program's allocations. Committed chunks join the registry, so
 *         every heap pointer can go to a device; a few large ranges, not one
 *         per allocation.
 *   meta  the runtime's own allocations, and whatever libc allocates on its
 *         behalf (rt_self_internal()). Never managed: the fault thread, and
 *         anyone holding reg.lock, must never fault on memory that only the
 *         fault thread could bring home.
 * free() tells the pools' pointers from glibc's by address alone.
 *
 * Arenas are created with jemalloc's default hooks and then switched to
 * ours, so jemalloc's own metadata (base blocks, tcache stacks) keeps coming
 * from plain mmap and never lands in managed memory. jemalloc never writes
 * into freed user memory, so malloc and free do not fault pages home.
 *
 * The hooks run inside jemalloc with its locks held, so they take no lock of
 * the runtime's: committing a chunk only publishes its new end, and the
 * registry catches up in sync_registry() (installed as reg_catch_up), called
 * by the fault thread (kicked by the hook), the agent and the statistics. Memory is
 * never returned to a pool (dalloc refuses, so jemalloc retains it); purging
 * is MADV_DONTNEED, which for managed memory raises a userfaultfd REMOVE
 * event that drops any device copy.
 */
#include <dlfcn.h>
#include <errno.h>
#include <jemalloc/jemalloc.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "transparent.h"

#define MAX_REGIONS 32
#define MAX_APP_ARENAS 16

struct region {
	uintptr_t start, end;         /* the reservation */
	uintptr_t bump;               /* pool lock */
	_Atomic uintptr_t committed;  /* readable and writable up to here */
	uintptr_t synced;             /* reg.lock: in the registry up to here */
};

struct pool {
	extent_hooks_t hooks;         /* first: jemalloc hands it back to us */
	const char *name;
	bool managed;
	/* Where reservations come from: mmap, or (shared pool) a device. */
	void *(*provide)(size_t len, void *arg);
	void *provide_arg;
	size_t reserve;               /* size of a reservation */
	size_t chunk;                 /* commit granularity */
	pthread_mutex_t lock;
	struct region regions[MAX_REGIONS];
	_Atomic unsigned nregions;    /* regions[i] is immutable once counted, but for bump/committed */
};

static void *hook_alloc(extent_hooks_t *h, void *new_addr, size_t size, size_t align,
			bool *zero, bool *commit, unsigned arena);
static bool hook_dalloc(extent_hooks_t *h, void *addr, size_t size, bool committed,
			unsigned arena);
static void hook_destroy(extent_hooks_t *h, void *addr, size_t size, bool committed,
			 unsigned arena);
static bool hook_purge(extent_hooks_t *h, void *addr, size_t size, size_t offset, size_t length,
		       unsigned arena);
static bool hook_split(extent_hooks_t *h, void *addr, size_t size, size_t size_a, size_t size_b,
		       bool committed, unsigned arena);
static bool hook_merge(extent_hooks_t *h, void *addr_a, size_t size_a, void *addr_b,
		       size_t size_b, bool committed, unsigned arena);

#define POOL_HOOKS {                     \
	.alloc = hook_alloc,             \
	.dalloc = hook_dalloc,           \
	.destroy = hook_destroy,         \
	.purge_forced = hook_purge,      \
	.split = hook_split,             \
	.merge = hook_merge,             \
}

static struct pool app_pool = {
	.hooks = POOL_HOOKS,
	.name = "heap",
	.managed = true,
	.reserve = 64ull << 30,
	.chunk = 32ull << 20,
	.lock = PTHREAD_MUTEX_INITIALIZER,
};

static struct pool meta_pool = {
	.hooks = POOL_HOOKS,
	.name = "runtime heap",
	.reserve = 4ull << 30,
	.chunk = 4ull << 20,
	.lock = PTHREAD_MUTEX_INITIALIZER,
};

/*
 * The program's allocations once heap_serve_from() is called: memory a
 * device provides (its shared virtual memory), all of it usable at once,
 * and not managed (the device's driver decides where it lives).
 */
static struct pool shared_pool = {
	.hooks = POOL_HOOKS,
	.name = "device-shared heap",
	.lock = PTHREAD_MUTEX_INITIALIZER,
};

static struct {
	bool ready;
	unsigned meta_arena;
	_Atomic unsigned app_arenas[MAX_APP_ARENAS];
	unsigned napp;
	_Atomic unsigned next_app;
} heap;

/* Bumped when the app arenas change: threads bound before bind again. */
_Atomic unsigned heap_generation = 1;

/* jemalloc options: few automatic arenas (we bind every thread ourselves). */
UHMM_INTERPOSE const char *malloc_conf = "narenas:1,background_thread:false";

static bool in_pool(struct pool *pl, uintptr_t p)
{
	unsigned n = atomic_load_explicit(&pl->nregions, memory_order_acquire);

	for (unsigned i = 0; i < n; i++)
		if (p - pl->regions[i].start < pl->regions[i].end - pl->regions[i].start)
			return true;
	return false;
}

/* The first app reservation (64 GiB) holds nearly every pointer: free() checks it first. */
uintptr_t heap_app_first_start, heap_app_first_len;

bool heap_app_owns_slow(const void *p)
{
	return in_pool(&app_pool, (uintptr_t)p) || in_pool(&shared_pool, (uintptr_t)p);
}

bool heap_meta_owns(const void *p)
{
	return in_pool(&meta_pool, (uintptr_t)p);
}

/*
 * pool lock held: a region from the pool's provider, usable as it comes.
 * It may be called inside jemalloc (an extent hook): the provider's own
 * allocations are the runtime's (meta_only), which jemalloc serves
 * reentrantly.
 */
static struct region *provided_region(struct pool *pl, unsigned n, size_t need)
{
	size_t len = MAX(pl->reserve, need);
	struct region *r = &pl->regions[n];
	void *p;

	/* A page more: extents are page-aligned, and a driver aligns to 128 bytes at most. */
	rt_self.meta_only++;
	p = pl->provide(len + PAGE_SIZE, pl->provide_arg);
	rt_self.meta_only--;
	if (!p) {
		log_warn("cannot get %zu MiB more for the %s", len >> 20, pl->name);
		return NULL;
	}
	r->start = ALIGN_UP((uintptr_t)p, PAGE_SIZE);
	r->end = r->start + len;
	r->bump = r->start;
	r->synced = r->end;
	atomic_store_explicit(&r->committed, r->end, memory_order_relaxed);
	atomic_store_explicit(&pl->nregions, n + 1, memory_order_release);
	log_info("%s: %zu MiB at %p", pl->name, len >> 20, p);
	return r;
}

/* pool lock held */
static struct region *new_region(struct pool *pl, size_t need)
{
	unsigned n = atomic_load_explicit(&pl->nregions, memory_order_relaxed);
	size_t len = MAX(pl->reserve, ALIGN_UP(need, PMD_SIZE));
	struct region *r;
	void *p = MAP_FAILED;

	if (n == MAX_REGIONS)
		return NULL;
	if (pl->provide)
		return provided_region(pl, n, ALIGN_UP(need, PMD_SIZE));
	/* 2 MiB aligned, so the kernel can back it with huge pages. */
	for (; len >= need && p == MAP_FAILED; len /= 2) {
		p = sys_mmap(NULL, len + PMD_SIZE, PROT_NONE,
			     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p != MAP_FAILED)
			break;
	}
	if (p == MAP_FAILED) {
		log_warn("cannot reserve %zu MiB for the %s", need >> 20, pl->name);
		return NULL;
	}
	r = &pl->regions[n];
	r->start = ALIGN_UP((uintptr_t)p, PMD_SIZE);
	r->end = r->start + len;
	if (r->start > (uintptr_t)p)
		sys_munmap(p, r->start - (uintptr_t)p);
	sys_munmap((void *)r->end, (uintptr_t)p + len + PMD_SIZE - r->end);
	r->bump = r->start;
	r->synced = r->start;
	atomic_store_explicit(&r->committed, r->start, memory_order_relaxed);
	if (pl == &app_pool && n == 0) {
		heap_app_first_start = r->start;
		heap_app_first_len = r->end - r->start;
	}
	atomic_store_explicit(&pl->nregions, n + 1, memory_order_release);
	return r;
}

/* pool lock held: make [committed, need) usable, a chunk at a time. */
static int commit_to(struct pool *pl, struct region *r, uintptr_t need)
{
	uintptr_t from = atomic_load_explicit(&r->committed, memory_order_relaxed);
	uintptr_t to = MIN(r->end, ALIGN_UP(need, pl->chunk));

	if (sys_mprotect((void *)from, to - from, PROT_READ | PROT_WRITE))
		return -errno;
	atomic_store_explicit(&r->committed, to, memory_order_release);
	if (pl->managed)
		kick(); /* the registry catches up */
	return 0;
}

/* pool lock held */
static void *carve(struct pool *pl, uintptr_t new_addr, size_t size, size_t align)
{
	unsigned n = atomic_load_explicit(&pl->nregions, memory_order_relaxed);
	struct region *r = n ? &pl->regions[n - 1] : NULL;
	uintptr_t at;

	align = MAX(align, PAGE_SIZE);
	if (new_addr) {
		/* Growing an extent in place: only at the end of what we handed out. */
		if (!r || new_addr != r->bump || size > r->end - r->bump)
			return NULL;
		at = new_addr;
	} else {
		at = r ? ALIGN_UP(r->bump, align) : 0;
		if (!r || at < r->bump || at > r->end || size > r->end - at) {
			if (size > SIZE_MAX - align || !(r = new_region(pl, size + align)))
				return NULL;
			at = ALIGN_UP(r->bump, align);
		}
	}
	if (at + size > atomic_load_explicit(&r->committed, memory_order_relaxed) &&
	    commit_to(pl, r, at + size))
		return NULL;
	r->bump = at + size;
	return (void *)at;
}

static void *hook_alloc(extent_hooks_t *h, void *new_addr, size_t size, size_t align,
			bool *zero, bool *commit, unsigned arena)
{
	struct pool *pl = (struct pool *)h;
	void *p;

	(void)arena;
	rt_self.meta_only++;
	pthread_mutex_lock(&pl->lock);
	p = carve(pl, (uintptr_t)new_addr, size, align);
	pthread_mutex_unlock(&pl->lock);
	rt_self.meta_only--;
	if (p) {
		/*
		 * Never handed out before, so never touched: zero; but memory a
		 * device provides holds what it holds.
		 */
		*zero = !pl->provide;
		*commit = true;
	}
	return p;
}

/* Refuse: jemalloc keeps the extent ("retained") and reuses it. */
static bool hook_dalloc(extent_hooks_t *h, void *addr, size_t size, bool committed,
			unsigned arena)
{
	(void)h, (void)addr, (void)size, (void)committed, (void)arena;
	return true;
}

static void hook_destroy(extent_hooks_t *h, void *addr, size_t size, bool committed,
			 unsigned arena)
{
	(void)h, (void)addr, (void)size, (void)committed, (void)arena;
}

/*
 * Raw madvise, not our interposed one: this runs under jemalloc's locks. For
 * managed memory the kernel reports the removal to the fault thread, which
 * drops device copies; the call returns once that report has been read.
 */
static bool hook_purge(extent_hooks_t *h, void *addr, size_t size, size_t offset, size_t length,
		       unsigned arena)
{
	int saved = errno; /* free() must leave errno alone, and may purge */
	bool failed;

	(void)h, (void)size, (void)arena;
	failed = sys_madvise((char *)addr + offset, length, MADV_DONTNEED) != 0;
	errno = saved;
	return failed;
}

static bool hook_split(extent_hooks_t *h, void *addr, size_t size, size_t size_a, size_t size_b,
		       bool committed, unsigned arena)
{
	(void)h, (void)addr, (void)size, (void)size_a, (void)size_b, (void)committed, (void)arena;
	return false;
}

/* Extents merge only within one reservation. */
static bool hook_merge(extent_hooks_t *h, void *addr_a, size_t size_a, void *addr_b,
		       size_t size_b, bool committed, unsigned arena)
{
	struct pool *pl = (struct pool *)h;
	unsigned n = atomic_load_explicit(&pl->nregions, memory_order_acquire);
	uintptr_t a = (uintptr_t)addr_a, b = (uintptr_t)addr_b;

	(void)size_a, (void)size_b, (void)committed, (void)arena;
	for (unsigned i = 0; i < n; i++)
		if (a - pl->regions[i].start < pl->regions[i].end - pl->regions[i].start)
			return b - pl->regions[i].start >= pl->regions[i].end - pl->regions[i].start;
	return true;
}

static int create_arena(struct pool *pl, unsigned *ret)
{
	extent_hooks_t *hooks = &pl->hooks;
	size_t sz = sizeof(*ret);
	char name[48];
	int err;

	err = mallctl("arenas.create", ret, &sz, NULL, 0);
	if (err)
		return -err;
	snprintf(name, sizeof(name), "arena.%u.extent_hooks", *ret);
	return -mallctl(name, NULL, NULL, &hooks, sizeof(hooks));
}

static unsigned cpu_count(void)
{
	cpu_set_t set;

	if (sched_getaffinity(0, sizeof(set), &set))
		return 1;
	return (unsigned)CPU_COUNT(&set);
}

void *(*heap_je_malloc)(size_t size);
void (*heap_je_free)(void *p);

static void *meta_calloc(size_t size);
static void meta_free_block(void *p);
static void sync_registry(void);

/* Our malloc and free shadow jemalloc's (it exports unprefixed names). */
static void find_jemalloc_entry_points(void)
{
	Dl_info info;
	void *lib;

	if (!dladdr((void *)mallocx, &info) || !info.dli_fname)
		return;
	lib = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);
	if (!lib)
		return;
	heap_je_malloc = (void *(*)(size_t))dlsym(lib, "malloc");
	heap_je_free = (void (*)(void *))dlsym(lib, "free");
	if (!heap_je_malloc || !heap_je_free || heap_je_malloc == malloc)
		heap_je_malloc = NULL, heap_je_free = NULL;
	dlclose(lib); /* NOLOAD: only a reference to drop; we stay linked to it */
}

/* The runtime's pool and a device's shared heap are never managed memory. */
static bool heap_foreign(uintptr_t start, uintptr_t end)
{
	struct pool *pools[] = { &meta_pool, &shared_pool };

	for (size_t p = 0; p < ARRAY_SIZE(pools); p++) {
		unsigned n = atomic_load_explicit(&pools[p]->nregions, memory_order_acquire);

		for (unsigned i = 0; i < n; i++)
			if (start < pools[p]->regions[i].end && pools[p]->regions[i].start < end)
				return true;
	}
	return false;
}

int heap_init(void)
{
	int err;

	if (heap.ready)
		return 0;
	rt_self.in_alloc++;
	err = create_arena(&meta_pool, &heap.meta_arena);
	heap.napp = MIN(MAX(cpu_count(), 1u), MAX_APP_ARENAS);
	for (unsigned i = 0; !err && i < heap.napp; i++) {
		unsigned ind;

		err = create_arena(&app_pool, &ind);
		atomic_store_explicit(&heap.app_arenas[i], ind, memory_order_relaxed);
	}
	if (!err)
		find_jemalloc_entry_points();
	rt_self.in_alloc--;
	if (err)
		return err;
	heap.ready = true;
	meta_set_allocator(meta_calloc, meta_free_block);
	reg_set_foreign(heap_foreign);
	reg_set_catch_up(sync_registry);
	return 0;
}

int heap_meta_flags(void)
{
	return MALLOCX_ARENA(heap.meta_arena) | MALLOCX_TCACHE_NONE;
}

static struct {
	void (*start)(void);
	_Atomic bool requested;
} restart;

void heap_set_restart(void (*start)(void))
{
	restart.start = start;
}

void heap_request_restart(void)
{
	if (restart.start)
		atomic_store(&restart.requested, true);
}

void heap_restart_if_requested(void)
{
	if (unlikely(atomic_load_explicit(&restart.requested, memory_order_relaxed)) &&
	    atomic_exchange(&restart.requested, false))
		restart.start();
}

/* Threads share the app arenas round robin, as jemalloc's own do. */
void heap_bind_thread(void)
{
	unsigned gen = atomic_load_explicit(&heap_generation, memory_order_acquire);
	unsigned ind = atomic_load_explicit(
		&heap.app_arenas[atomic_fetch_add(&heap.next_app, 1) % heap.napp],
		memory_order_relaxed);

	rt_self.in_alloc++;
	mallctl("thread.arena", NULL, NULL, &ind, sizeof(ind));
	/* Its cache may hold memory of the arena it used before. */
	mallctl("thread.tcache.flush", NULL, NULL, NULL, 0);
	rt_self.in_alloc--;
	rt_self.bound = gen;
	heap_restart_if_requested();
}

int heap_serve_from(void *(*provide)(size_t len, void *arg), void *arg, size_t reserve)
{
	unsigned arenas[MAX_APP_ARENAS];
	int err = 0;

	if (!heap.ready || shared_pool.provide)
		return -EINVAL;
	pthread_mutex_lock(&shared_pool.lock);
	shared_pool.provide = provide;
	shared_pool.provide_arg = arg;
	shared_pool.reserve = reserve;
	shared_pool.chunk = PAGE_SIZE;
	/* One region now, outside jemalloc: most programs never need a second. */
	if (!new_region(&shared_pool, PAGE_SIZE))
		err = -ENOMEM;
	pthread_mutex_unlock(&shared_pool.lock);
	rt_self.in_alloc++;
	for (unsigned i = 0; !err && i < heap.napp; i++)
		err = create_arena(&shared_pool, &arenas[i]);
	rt_self.in_alloc--;
	if (err)
		return err;
	for (unsigned i = 0; i < heap.napp; i++)
		atomic_store_explicit(&heap.app_arenas[i], arenas[i], memory_order_relaxed);
	atomic_fetch_add_explicit(&heap_generation, 1, memory_order_release);
	return 0;
}

int heap_shared_region(const void *p, uintptr_t *ret_start, size_t *ret_len)
{
	unsigned n = atomic_load_explicit(&shared_pool.nregions, memory_order_acquire);

	for (unsigned i = 0; i < n; i++) {
		const struct region *r = &shared_pool.regions[i];

		if ((uintptr_t)p - r->start < r->end - r->start) {
			*ret_start = r->start;
			*ret_len = r->end - r->start;
			return 0;
		}
	}
	return -ENOENT;
}

unsigned heap_shared_regions(uintptr_t *starts, size_t *lens, unsigned max)
{
	unsigned n = atomic_load_explicit(&shared_pool.nregions, memory_order_acquire);

	for (unsigned i = 0; i < MIN(n, max); i++) {
		starts[i] = shared_pool.regions[i].start;
		lens[i] = shared_pool.regions[i].end - shared_pool.regions[i].start;
	}
	return MIN(n, max);
}

/* The runtime's small blocks (meta.c), once the heap is ours. */
static void *meta_calloc(size_t size)
{
	void *p;

	if (!heap.ready)
		return calloc(1, size);
	rt_self.in_alloc++;
	p = mallocx(size ? size : 1, heap_meta_flags() | MALLOCX_ZERO);
	rt_self.in_alloc--;
	return p;
}

static void meta_free_block(void *p)
{
	if (!heap.ready || !heap_meta_owns(p)) {
		free(p);
		return;
	}
	rt_self.in_alloc++;
	dallocx(p, MALLOCX_TCACHE_NONE);
	rt_self.in_alloc--;
}

/*
 * The allocation of the managed heap that starts at p, or (small ones) the
 * size class holding p: [*ret_start, *ret_start + *ret_len). jemalloc knows
 * large allocations by their first and last pages only, so an interior
 * pointer into one gives -ENOENT, as any pointer outside the heap does.
 */
int heap_extent(const void *p, uintptr_t *ret_start, size_t *ret_len)
{
	unsigned arena;
	size_t sz = sizeof(arena), len;
	int err;

	if (!heap.ready || !heap_app_owns(p))
		return -ENOENT;
	rt_self.in_alloc++;
	err = mallctl("arenas.lookup", &arena, &sz, &p, sizeof(p));
	len = err ? 0 : sallocx((void *)p, 0);
	rt_self.in_alloc--;
	if (err || !len)
		return -ENOENT;
	*ret_start = (uintptr_t)p;
	*ret_len = len;
	return 0;
}

/* reg.lock held: committed heap chunks join the registry. */
static void sync_registry(void)
{
	unsigned n = atomic_load_explicit(&app_pool.nregions, memory_order_acquire);

	for (unsigned i = 0; i < n; i++) {
		struct region *r = &app_pool.regions[i];
		uintptr_t to = atomic_load_explicit(&r->committed, memory_order_acquire);
		int err;

		if (to <= r->synced)
			continue;
		err = r->synced == r->start ? reg_add_lazy(r->start, to) : reg_extend(r->synced, to);
		if (err)
			log_warn_ratelimited("heap memory 0x%lx-0x%lx stays unmanaged: %d",
					     (unsigned long)r->synced, (unsigned long)to, err);
		r->synced = to;
	}
}

void heap_fork_child(void)
{
	pthread_mutex_init(&app_pool.lock, NULL);
	pthread_mutex_init(&meta_pool.lock, NULL);
	pthread_mutex_init(&shared_pool.lock, NULL);
	/* The child's thread binds again on its next allocation. */
	rt_self.bound = 0;
}
