/* SPDX-License-Identifier: MIT */
/*
 * uhmm: the semantics of Linux HMM (shared virtual memory between the CPU
 * and devices) for any process, without kernel changes.
 *
 * Conventions (liburing's): every function returns 0 or a non-negative count
 * on success and -errno on failure, and never touches errno. ret_ out-
 * parameters are written only on success unless a function says otherwise.
 * Addresses and lengths are bytes; a range covers every page it touches.
 * Unknown flags or enum values give -EINVAL. Every function is thread-safe.
 * Structs with a leading size field are passed with size set to the sizeof
 * the caller was compiled with; the library fills what both sides know.
 */
#ifndef UHMM_H
#define UHMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#pragma GCC visibility push(default)

#define UHMM_VERSION_MAJOR 0
#define UHMM_VERSION_MINOR 2
#define UHMM_VERSION_PATCH 0

/* ---- lifetime ----------------------------------------------------------- */

/**
 * hmm_init() - start the runtime (userfaultfd, fault thread, UHMM_DEVICES).
 *
 * Idempotent. Every other function starts the runtime on first use, so
 * calling it is only needed to learn early whether the runtime can work.
 * Returns 0, or -errno when userfaultfd cannot be used at all.
 */
int hmm_init(void);

/**
 * hmm_fini() - bring every device-resident page home and close all devices.
 *
 * Managed memory stays valid and managed; hmm_init() (or any call) starts
 * the runtime again.
 */
void hmm_fini(void);

/* ---- devices ------------------------------------------------------------ */

struct hmm_device;

/* What a device's memory is to the CPU: how pages placed there behave. */
enum hmm_memory_model {
	/* Device-private (HMM's DEVICE_PRIVATE): a CPU access brings the page
	 * home; the runtime reaches the memory directly (it is mapped). */
	HMM_MEMORY_PRIVATE = 0,
	/* Device-private, reachable only through the device's DMA queue (a
	 * discrete card): every transfer is a copy the device makes. */
	HMM_MEMORY_DMA_ONLY = 1,
	/* Device-coherent (DEVICE_COHERENT, CDM): the CPU accesses placed pages
	 * in place, without faults; hmm_migrate(..., NULL) brings them home. */
	HMM_MEMORY_COHERENT = 2,
};

struct hmm_device_info {
	size_t size;          /* sizeof(struct hmm_device_info) of the caller */
	char name[64];        /* e.g. "sim0" */
	char kind[16];        /* e.g. "sim" */
	int index;            /* unique among open devices; what hmm_residency reports */
	uint64_t mem_total;   /* bytes of device memory */
	uint64_t mem_used;    /* bytes of device memory holding process pages */
	bool coherent;        /* the CPU accesses this device's memory in place */
	int memory_model;     /* enum hmm_memory_model */
	char detail[96];      /* how the backend runs it, e.g. "O_DIRECT on /var/tmp (ext4)" */
	/*
	 * A page the CPU reads home from here keeps its copy here (counted in
	 * mem_used) until it is written, so that evicting it again writes
	 * nothing: a storage tier, like the kernel's swap cache. Only while
	 * the device is less than half full.
	 */
	bool keeps_clean;
	/*
	 * Memory spread over parts that fail on their own (the fabric
	 * device's memory nodes); zeros for memory in one piece.
	 */
	uint32_t parts_total;     /* memory nodes */
	uint32_t parts_alive;     /* not declared dead */
	uint64_t pages_degraded;  /* with fewer copies than wanted, being restored */
	uint64_t pages_lost;      /* reads that found no good copy (each failed an access) */
	uint64_t pages_restored;  /* copies made again after a loss */
	uint64_t pages_tampered;  /* copies that failed their seal */
};

/**
 * hmm_device_open() - open a device from a spec "kind[:option[,option...]]".
 *
 * Options are key=value or bare flags. Common key: mem=SIZE (K/M/G suffixes).
 * Kinds: "sim" (device-private memory), "sim:coherent" (memory the CPU
 * accesses in place), "sim:copy" (device-private memory reachable only
 * through the DMA queue, like a discrete card).
 * Returns -EINVAL for an unknown kind, key or bad value, -ENODEV when the
 * backend is not built or its hardware is absent.
 */
int hmm_device_open(const char *spec, struct hmm_device **ret_dev);

/** hmm_device_close() - bring the device's pages home, then close it. */
int hmm_device_close(struct hmm_device *dev);

/** hmm_device_count() - number of devices opened from UHMM_DEVICES. */
int hmm_device_count(void);

/** hmm_device_get() - the index-th device opened from UHMM_DEVICES, or NULL. */
struct hmm_device *hmm_device_get(int index);

int hmm_device_info(struct hmm_device *dev, struct hmm_device_info *ret_info);

/* ---- managed memory ----------------------------------------------------- */

/** hmm_alloc() - page-aligned managed memory; NULL with errno on failure. */
void *hmm_alloc(size_t size);
/** hmm_free() - release memory from hmm_alloc(); NULL is ignored. */
void hmm_free(void *ptr);
/**
 * hmm_manage() - adopt private anonymous memory so it can migrate.
 * Already managed pages are left as they are. -EINVAL for holes, shared or
 * file-backed mappings.
 */
int hmm_manage(void *addr, size_t len);
/** hmm_unmanage() - bring pages home and stop managing (-EINVAL if not managed). */
int hmm_unmanage(void *addr, size_t len);

/* ---- placement ---------------------------------------------------------- */

/**
 * hmm_migrate() - place every page of the range that can be placed on dst.
 * @dst: a device, or NULL for host memory.
 * @flags: must be 0.
 * @ret_pages: pages resident on dst afterwards (also written on -ENOENT,
 *             -ENOMEM and -EIO).
 *
 * Synchronous. Pages already on dst count and stay; pages on another device
 * move across; untouched pages migrate as zero pages; read-only pages stay
 * read-only. Returns -EINVAL if the range has a hole or a PROT_NONE page or
 * wraps, -ENOENT if some page cannot be placed (shared, file-backed,
 * mlock'ed, pinned by advice), -ENOMEM if the device ran out of memory,
 * -EIO if a copy failed (the pages that did not move stay intact),
 * -EPERM if only user-mode userfaults are allowed (private devices only).
 */
int hmm_migrate(void *addr, size_t len, struct hmm_device *dst, unsigned flags,
		size_t *ret_pages);

enum hmm_advice {
	HMM_ADVISE_PREFERRED_LOCATION = 1,   /* dev NULL = host */
	HMM_ADVISE_UNSET_PREFERRED_LOCATION,
	HMM_ADVISE_ACCESSED_BY,              /* keep dev mapped wherever pages live */
	HMM_ADVISE_UNSET_ACCESSED_BY,
	HMM_ADVISE_READ_MOSTLY,              /* read faults duplicate pages read-only */
	HMM_ADVISE_UNSET_READ_MOSTLY,
	HMM_ADVISE_PREFETCH,                 /* asynchronous migration to dev (NULL = host) */
	HMM_ADVISE_PIN_HOST,                 /* never migrate off host */
	HMM_ADVISE_UNPIN_HOST,
};

int hmm_advise(void *addr, size_t len, int advice, struct hmm_device *dev);

/** hmm_sync() - wait for queued work (prefetches, DMA) on dev; NULL = all. */
int hmm_sync(struct hmm_device *dev);

#define HMM_LOC_HOST (-1)      /* in host memory */
#define HMM_LOC_NONE (-2)      /* never populated */
#define HMM_LOC_UNMAPPED (-3)  /* no mapping at this address */

/** hmm_residency() - where each page lives: one int per page into ret_loc. */
int hmm_residency(const void *addr, size_t len, int *ret_loc);

/* ---- device access: the device's side of HMM ---------------------------- */

struct hmm_access {
	uint64_t pages;   /* pages accessed */
	uint64_t faults;  /* device fault rounds */
};

/*
 * Reads of PROT_NONE pages or holes give -EFAULT and leave dst untouched;
 * writes to pages the CPU maps read-only give -EPERM and leave memory
 * untouched. On error *ret is not written.
 */
int hmm_device_read(struct hmm_device *dev, const void *addr, size_t len, void *dst,
		    struct hmm_access *ret);
int hmm_device_write(struct hmm_device *dev, void *addr, size_t len, const void *src,
		     struct hmm_access *ret);

#define HMM_SNAP_NONE 0x00
#define HMM_SNAP_READ 0x01
#define HMM_SNAP_WRITE 0x02
#define HMM_SNAP_HUGE 0x04
#define HMM_SNAP_GIANT 0x08
#define HMM_SNAP_ZERO 0x10
#define HMM_SNAP_DEV_PRIVATE 0x20
#define HMM_SNAP_DEV_COHERENT 0x40
#define HMM_SNAP_DEV_COHERENT_REMOTE 0x50
#define HMM_SNAP_ERROR 0xFF

/** hmm_device_snapshot() - one byte per page describing its mapping; never faults. */
int hmm_device_snapshot(struct hmm_device *dev, const void *addr, size_t len,
			uint8_t *ret_flags);
/** hmm_device_exclusive() - exclusive (atomic) device access; CPU access revokes it. */
int hmm_device_exclusive(struct hmm_device *dev, void *addr, size_t len,
			 struct hmm_access *ret);
/** hmm_device_check_exclusive() - -EPERM while any page is still exclusive, else 0. */
int hmm_device_check_exclusive(struct hmm_device *dev, const void *addr, size_t len);
/** hmm_device_atomic_add() - device atomic add on an aligned 64-bit word. */
int hmm_device_atomic_add(struct hmm_device *dev, uint64_t *addr, uint64_t value,
			  uint64_t *ret_old);
/** hmm_device_release() - evict all of the device's memory home, intact. */
int hmm_device_release(struct hmm_device *dev);

/* ---- statistics --------------------------------------------------------- */

#define HMM_STATS_MAX_DEVICES 32

struct hmm_stats {
	uint64_t size;                 /* sizeof(struct hmm_stats) of the caller */
	uint64_t cpu_faults;           /* CPU faults served by the runtime */
	uint64_t device_faults;        /* device fault rounds */
	uint64_t pages_to_device;
	uint64_t bytes_to_device;
	uint64_t pages_to_host;
	uint64_t bytes_to_host;
	uint64_t migrations_failed;    /* pages whose copy failed (they stayed intact) */
	uint64_t evictions;            /* pages evicted by memory pressure */
	uint64_t thrash_events;        /* pages that bounced back within the thrash window */
	uint64_t managed_bytes;
	uint64_t host_resident_bytes;  /* managed bytes whose data is in host memory */
	uint64_t device_resident_bytes[HMM_STATS_MAX_DEVICES]; /* by device index */
	uint64_t metadata_bytes;       /* runtime metadata (page state, mirrors, allocators) */
	uint64_t fault_ns;             /* time the fault thread spent serving faults */
	uint64_t zero_fills;           /* CPU faults served with a zero page */
	uint64_t parked_faults;        /* CPU faults that waited for a migration */
};

int hmm_stats_get(struct hmm_stats *ret);

/*
 * The live stats region of a process: a memfd named HMM_STATS_REGION_NAME
 * that the runtime maps shared and refreshes about ten times a second, and
 * that hmm_stats_read() (uhmm-stat) finds through /proc/PID/fd, which only
 * the same user (or root) may open. A writer makes seq odd before and even
 * after an update; a reader copies, and copies again if seq moved.
 */
#define HMM_STATS_REGION_NAME "uhmm-stats"
#define HMM_STATS_REGION_MAGIC 0x53484d55u    /* "UMHS" */
#define HMM_STATS_REGION_VERSION 1

struct hmm_stats_region {
	uint32_t magic;                 /* HMM_STATS_REGION_MAGIC */
	uint32_t version;               /* HMM_STATS_REGION_VERSION */
	int32_t pid;
	uint32_t ndevices;              /* device_names[0, ndevices) may be set */
	uint64_t seq;
	uint64_t updated_ns;            /* CLOCK_MONOTONIC */
	uint64_t host_limit;            /* bytes; 0: none */
	uint64_t chaos_ms;
	uint64_t host_present_bytes;    /* managed pages with host memory of their own */
	struct hmm_stats s;
	char device_names[HMM_STATS_MAX_DEVICES][64];   /* by device index; "" if closed */
};

/**
 * hmm_stats_read() - a consistent copy of the live stats of process pid.
 *
 * Needs no runtime in the caller. Returns 0, -ENOENT when the process runs
 * without uhmm (no region), -ESRCH when there is no such process, -EACCES
 * when it is another user's, -EPROTO for a region of another version,
 * -EAGAIN when the counters kept changing under the reader.
 */
int hmm_stats_read(pid_t pid, struct hmm_stats_region *ret_region);

enum hmm_stats_format {
	HMM_STATS_FORMAT_KV = 0,        /* key=value lines (uhmm-run --stats=FILE) */
	HMM_STATS_FORMAT_TEXT = 1,      /* a few lines for people (uhmm-stat) */
};

/**
 * hmm_stats_format() - a stats region as text, NUL-terminated in buf.
 *
 * Returns the length written (at most len - 1; longer text is cut), or
 * -EINVAL for an unknown format or a NULL argument.
 */
int hmm_stats_format(const struct hmm_stats_region *region, int format, char *buf, size_t len);

/* ---- introspection: what uhmm-info shows ---------------------------------- */

/*
 * Indexed lists (options, backends, kernel features): index 0, 1, ... until
 * -ENOENT. Strings are static: valid for the life of the library.
 */

struct hmm_option_info {
	size_t size;               /* sizeof(struct hmm_option_info) of the caller */
	const char *name;          /* "UHMM_HOST_LIMIT" */
	const char *type;          /* "size", "number", "boolean", "choice" or "string" */
	const char *default_value; /* "" when unset by default */
	const char *value;         /* in this process's environment now; NULL if unset */
	const char *help;          /* one line */
};

/** hmm_option_info() - one UHMM_* environment variable the runtime reads. */
int hmm_option_info(int index, struct hmm_option_info *ret_info);

/**
 * hmm_option_check() - would the runtime accept value for variable name?
 *
 * The same parser the runtime uses at start. Returns 0, -EINVAL for a value
 * it would reject (and warn about), -ENOENT for a name it does not read.
 */
int hmm_option_check(const char *name, const char *value);

enum hmm_param_type {
	HMM_PARAM_FLAG,    /* bare word: "coherent" */
	HMM_PARAM_SIZE,    /* number with optional K/M/G suffix */
	HMM_PARAM_UINT,
	HMM_PARAM_STRING,
	HMM_PARAM_STRING_LIST, /* a string, given once or more: "node=a,node=b" */
};

/* One option a backend accepts in its spec; tables end with key == NULL. */
struct hmm_device_param {
	const char *key;
	enum hmm_param_type type;
	const char *help;
	const char *env;           /* NULL, or a variable that gives its default */
};

/*
 * A configuration a backend is tested in: the HMM behaviour suite opens
 * spec and expects the memory model. Tables end with spec == NULL.
 */
struct hmm_device_variant {
	const char *spec;          /* "sim:copy" */
	int memory_model;          /* enum hmm_memory_model */
};

struct hmm_backend_info {
	size_t size;               /* sizeof(struct hmm_backend_info) of the caller */
	const char *kind;          /* spec prefix: "sim" */
	const char *description;   /* one line */
	int present;               /* 0, or -errno from its probe (-ENODEV: absent here) */
	const struct hmm_device_param *params;       /* its options besides mem= */
	const struct hmm_device_variant *variants;   /* what it is tested in */
};

/** hmm_backend_info() - one device backend built into this library. */
int hmm_backend_info(int index, struct hmm_backend_info *ret_info);

struct hmm_kernel_feature {
	size_t size;               /* sizeof(struct hmm_kernel_feature) of the caller */
	const char *group;         /* "userfaultfd" or "page tables" */
	const char *name;          /* "MOVE", "PAGEMAP_SCAN" */
	bool present;              /* this kernel offers it */
	const char *use;           /* what the runtime does with it, or "unused" */
};

/** hmm_kernel_feature() - one kernel feature the runtime looks for. */
int hmm_kernel_feature(int index, struct hmm_kernel_feature *ret_feature);

struct hmm_kernel_info {
	size_t size;               /* sizeof(struct hmm_kernel_info) of the caller */
	int uffd_error;            /* 0, or -errno: no userfaultfd (the runtime cannot start) */
	const char *uffd_origin;   /* how this process gets one: "userfaultfd(2)", ... */
	bool kernel_faults;        /* kernel-mode faults are served (read(2) into device pages) */
	uint64_t uffd_features;    /* UFFD_FEATURE_* bits the kernel offers */
};

/** hmm_kernel_info() - how this process gets userfaultfd, and what it offers. */
int hmm_kernel_info(struct hmm_kernel_info *ret_info);

/* ---- test aid ----------------------------------------------------------- */

/**
 * hmm_fault_inject() - make named operations fail, as UHMM_FAULT does.
 *
 * @spec: "point[:N][,point[:N]...]" where N is how many times to fail
 * (default 1) or "always"; "off" clears everything. Points: devmem_alloc,
 * devmem_alloc_huge, dma_to_device, dma_to_host, uring_short_io (the
 * storage tier asks for half of a transfer). Returns -EINVAL for an unknown
 * point.
 */
int hmm_fault_inject(const char *spec);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif

#endif /* UHMM_H */
