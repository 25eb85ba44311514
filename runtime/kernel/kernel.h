/* SPDX-License-Identifier: MIT */
/*
 * Layer 2, kernel: the kernel interfaces the runtime is built on, and
 * nothing of the runtime's own: the userfaultfd file and its ioctls, the
 * CPU's mappings (PROCMAP_QUERY or /proc/self/maps) and page-table state
 * (/proc/self/pagemap, PAGEMAP_SCAN). Features are detected at run time;
 * kernel-compat.h carries the uapi numbers newer than the installed headers
 * (mimalloc's prim/, liburing's syscall.h).
 */
#ifndef UHMM_KERNEL_H
#define UHMM_KERNEL_H

#include "base.h"
#include "kernel-compat.h"

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
/*
 * UHMM_KERNEL_HIDE names this feature (a uhmm-info name: MOVE, PAGEMAP_SCAN):
 * act as if the kernel lacked it, so that tests run an older kernel's
 * fallbacks on this one.
 */
bool kernel_hides(const char *feature);

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
bool vma_have_procmap_query(void);
void vma_reset(void);          /* fork child: /proc/self now names another process */
/* A /proc/self file opened once and cached in *slot; pagemap.c shares it. */
int proc_self_fd(_Atomic int *slot, const char *path);
void proc_self_close(_Atomic int *slot);

/* ---- pagemap.c: page-table state, read without faulting ------------------- */

int pagemap_read(uintptr_t start, size_t npages, uint64_t *ret);
/*
 * PAGE_IS_* categories per page: PAGEMAP_SCAN's, or without it what pagemap
 * entries tell (no PAGE_IS_HUGE; PAGE_IS_PFNZERO if pagemap_knows_zero()).
 */
int pagemap_categories(uintptr_t start, size_t npages, uint8_t *ret);
/* Runs of pages whose /proc/self/pagemap entries match(). */
int pagemap_entry_runs(uintptr_t start, uintptr_t end, bool (*match)(uint64_t e, void *ctx),
		       void *ctx, int (*fn)(uintptr_t s, uintptr_t e, void *arg), void *arg);
/*
 * Runs of pages PAGEMAP_SCAN finds in query's categories (its masks; the
 * range and vector are set here). -EOPNOTSUPP without PAGEMAP_SCAN.
 */
int pagemap_scan_runs(uintptr_t start, uintptr_t end, const struct pm_scan_arg *query,
		      int (*fn)(uintptr_t s, uintptr_t e, void *arg), void *arg);
/* Runs of pages with host memory of their own (present, not the zero page). */
int pagemap_resident_runs(uintptr_t start, uintptr_t end,
			  int (*fn)(uintptr_t s, uintptr_t e, void *arg), void *arg);
bool pagemap_have_scan(void);
bool pagemap_knows_zero(void); /* PAGEMAP_SCAN, or frame numbers (CAP_SYS_ADMIN) */
void pagemap_reset(void);      /* fork child */

/* ---- replace.c: anonymous memory in place of a private file mapping ------ */

struct replace {
	uintptr_t start;
	size_t len;             /* bytes held from start: all, or what the pipe takes */
	void *stage;            /* the anonymous memory, until it moves to start */
	int pipe[2];            /* references to the old pages, then their bytes */
};
/* Runs of [start, end), a private file mapping, that are anonymous copies. */
int replace_copied_runs(uintptr_t start, uintptr_t end,
			int (*fn)(uintptr_t s, uintptr_t e, void *arg), void *arg);
/*
 * Hold the old pages of [start, start + len), all anonymous copies, and map
 * the stage (vflags: the mapping's VMA_* protections). -EAGAIN: some page
 * is not (or no longer) the process's own anonymous page.
 */
int replace_begin(struct replace *rp, uintptr_t start, size_t len, unsigned vflags);
/* Put the stage, pages and all (none), over [start, start + len): one mremap. */
int replace_commit(struct replace *rp);
/* The old pages' bytes, in order, once replace_commit has returned. */
int replace_read(struct replace *rp, void *buf, size_t len);
void replace_end(struct replace *rp);   /* the pipe, and the stage if it did not move */

/* ---- wtrack.c: which pages of foreign memory were written (WP_ASYNC) ------ */

bool wtrack_available(void);   /* WP_ASYNC and PAGEMAP_SCAN (6.7) */
int wtrack_register(uintptr_t start, size_t len);
int wtrack_reset(uintptr_t start, size_t len);  /* from here on, writes are noted */
/* Runs written since the reset, or no longer present (they read as zeros now). */
int wtrack_changed(uintptr_t start, uintptr_t end,
		   int (*fn)(uintptr_t s, uintptr_t e, void *arg), void *arg);
void wtrack_reset_after_fork(void);

#endif /* UHMM_KERNEL_H */
