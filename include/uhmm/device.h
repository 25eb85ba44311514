/* SPDX-License-Identifier: MIT */
/*
 * The backend interface: what a device (sim, OpenCL, a coherent NUMA node,
 * remote memory over libfabric, an io_uring storage tier, CUDA) provides to
 * the runtime. A backend is one const ops table plus a per-device struct that
 * embeds struct hmm_device. The runtime owns policy, page state, the device
 * page table (the mirror), device memory allocation and the DMA queue; the
 * backend owns its memory and moves bytes.
 *
 * Models: the kernel's dev_pagemap_ops / mmu_interval_notifier_ops and
 * libfabric's provider ops (versioned table, size first, no NULL slots).
 */
#ifndef UHMM_DEVICE_H
#define UHMM_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uhmm.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HMM_DEVICE_OPS_VERSION 5
#define HMM_PAGE_SIZE 4096u

/*
 * What a device's memory is, from the CPU's point of view. The runtime picks
 * its migration paths from these bits.
 */
enum hmm_device_caps {
	/*
	 * The CPU reads and writes device memory in place, without faulting
	 * (HMM device-coherent memory, the CDM patches' DEVICE_PUBLIC). Pages
	 * placed here stay mapped at their address; ops->place does any
	 * physical placement.
	 */
	HMM_DEVCAP_COHERENT = 1u << 0,
	/*
	 * Device memory is mapped in this process at mem_base (slot n at
	 * mem_base + n * HMM_PAGE_SIZE), so the runtime may copy to and from it
	 * directly, and the fault thread can bring a page home without a trip
	 * through the DMA queue.
	 */
	HMM_DEVCAP_HOST_MAPPED = 1u << 1,
	/*
	 * mem_base is private anonymous memory with the same protection as
	 * ordinary heap memory (PROT_READ | PROT_WRITE), so the runtime may move
	 * pages into and out of it with UFFDIO_MOVE instead of copying.
	 * Implies HMM_DEVCAP_HOST_MAPPED.
	 */
	HMM_DEVCAP_MOVABLE = 1u << 2,
	/*
	 * A page copied home from here may keep its copy here while the CPU
	 * only reads it (a storage tier, as the kernel's swap cache keeps a
	 * swapped-in page's slot): evicting it again writes nothing. The slot
	 * is given back (release) on the first CPU write. For memory only the
	 * device can read, where each copy is real I/O.
	 */
	HMM_DEVCAP_KEEP_CLEAN = 1u << 3,
};

enum hmm_dma_dir {
	HMM_DMA_TO_DEVICE = 1,
	HMM_DMA_TO_HOST = 2,
};

/*
 * One DMA copy: a run of contiguous device pages (slots) and the same number
 * of host pages. For HMM_DMA_TO_DEVICE the runtime guarantees the host pages
 * stay unchanged until completion, and host is NULL for pages the CPU never
 * populated (the device pages must read as zeros); for HMM_DMA_TO_HOST the
 * host pages are runtime-owned bounce memory.
 */
struct hmm_dma_desc {
	uint32_t dir;      /* enum hmm_dma_dir */
	uint32_t npages;
	uint64_t slot;     /* first device page */
	void *host;        /* npages * HMM_PAGE_SIZE bytes */
	int32_t status;    /* written by the backend: 0 or -errno */
	uint32_t done;     /* written by the backend: pages completed */
};

/* What health() reports; zeros for memory in one piece. */
struct hmm_device_health {
	uint32_t parts_total;               /* nodes the memory is spread over */
	uint32_t parts_alive;               /* not declared dead */
	uint64_t pages_degraded;            /* fewer copies than wanted: being restored */
	uint64_t pages_lost;                /* reads that found no good copy */
	uint64_t pages_restored;            /* copies made again after a loss */
	uint64_t pages_tampered;            /* copies that failed their seal */
};

#define HMM_DEVICE_MAX_PARAMS 16

/* A parsed and validated spec, handed to ops->open. */
struct hmm_device_config {
	size_t size;
	const char *kind;
	uint64_t mem_bytes;    /* mem=, or UHMM_DEVICE_MEM */
	unsigned nparams;
	struct {
		const char *key;
		const char *value; /* NULL for a flag */
	} params[HMM_DEVICE_MAX_PARAMS];
};

struct hmm_device_core; /* the runtime's per-device state */

/*
 * struct hmm_device - embedded first in every backend's device struct;
 * recover the backend struct with container_of. The backend fills every
 * field but ops and core (the runtime's) before returning from ops->open.
 */
struct hmm_device {
	size_t size;                        /* sizeof(struct hmm_device) */
	const struct hmm_device_ops *ops;
	char name[64];
	char kind[16];
	uint32_t caps;                      /* enum hmm_device_caps */
	uint64_t mem_bytes;                 /* device memory, a multiple of HMM_PAGE_SIZE */
	void *mem_base;                     /* with HMM_DEVCAP_HOST_MAPPED */
	struct hmm_device_core *core;       /* set by the runtime; opaque here */
	/*
	 * How this device works, one line for people (uhmm-info --device,
	 * hmm_device_info): what the backend chose at open, e.g. the I/O mode
	 * a storage tier got from its file system. May stay empty.
	 */
	char detail[96];
};

/*
 * struct hmm_device_ops - a backend. Every slot is filled: ops that do not
 * apply use the shared stubs below.
 */
struct hmm_device_ops {
	size_t size;                        /* sizeof(struct hmm_device_ops) */
	uint32_t version;                   /* HMM_DEVICE_OPS_VERSION */
	const char *kind;                   /* spec prefix, e.g. "sim" */
	const char *description;            /* one line for uhmm-info */
	const struct hmm_device_param *params;  /* options (uhmm.h), key == NULL ends */

	/**
	 * probe() - is this backend usable here?
	 * Context: any thread, no runtime locks held. Must be cheap.
	 * Return: 0 if present, -ENODEV if absent (skipped quietly).
	 */
	int (*probe)(void);

	/**
	 * open() - create a device from a validated config.
	 * Context: an application thread, no runtime locks held; may block.
	 * Return: 0 and *ret_dev, -EINVAL for option values the backend
	 * rejects, -ENODEV if the device is absent, -ENOMEM.
	 */
	int (*open)(const struct hmm_device_config *cfg, struct hmm_device **ret_dev);

	/**
	 * close() - free the device. The runtime has already brought every
	 * page home and stopped the device's DMA queue.
	 * Context: an application thread; may block.
	 */
	void (*close)(struct hmm_device *dev);

	/**
	 * dma() - run a batch of copies and fill each status/done. The
	 * descriptors never share a slot or a host page, so a backend with a
	 * queue of its own should have them all in flight at once: the runtime
	 * gathers what is queued (the faults of many threads, an eviction's
	 * batches) into one call for that.
	 * Context: the device's DMA queue thread; may block; no runtime locks
	 * held. Never touches managed memory other than desc->host.
	 * Return: 0 if every descriptor completed, else the first error (the
	 * descriptors say which pages made it).
	 */
	int (*dma)(struct hmm_device *dev, struct hmm_dma_desc *descs, unsigned n);

	/**
	 * mem_access() - the device engine reads or writes its own memory
	 * (a page resident on this device, accessed in place).
	 * Context: an application thread inside hmm_device_read/write; the
	 * page is pinned against migration; may not block on the fault thread.
	 * Return: 0 or -errno.
	 */
	int (*mem_access)(struct hmm_device *dev, uint64_t slot, size_t offset, void *buf,
			  size_t len, bool write);

	/**
	 * mem_atomic_add() - atomic fetch-and-add on a 64-bit word of a page
	 * resident on this device. Context as mem_access.
	 */
	int (*mem_atomic_add)(struct hmm_device *dev, uint64_t slot, size_t offset,
			      uint64_t value, uint64_t *ret_old);

	/**
	 * place() - physically place (on_device) or release pages of a
	 * coherent device; the pages stay mapped at addr.
	 * Context: an application thread, no runtime locks held; may block.
	 * Return: 0 or -errno (the runtime keeps the pages on the host).
	 */
	int (*place)(struct hmm_device *dev, void *addr, size_t npages, bool on_device);

	/* Version 2. */

	/*
	 * The configurations the HMM behaviour suite runs this backend in, one
	 * per memory model it offers (uhmm.h), spec == NULL ends. A backend
	 * gets the whole suite (meson suite device-<kind>) by listing them.
	 */
	const struct hmm_device_variant *variants;

	/* Version 3. */

	/**
	 * fetch() - copy a short run of device pages into host memory now,
	 * on the calling thread: how a CPU fault on memory only the device can
	 * read is served without a hand-off to the DMA queue thread and back
	 * (the kernel's swap-in of one page, read synchronously). The runtime
	 * asks for at most a few pages.
	 * Context: the runtime's fault thread, with runtime locks held: it must
	 * not block on anything the runtime does, nor wait long on the device;
	 * it runs concurrently with dma() on the queue thread (never on the
	 * same pages). @host is runtime-owned bounce memory.
	 * Return: 0 when every page was copied; -EWOULDBLOCK when the backend
	 * cannot do it without waiting (the runtime then uses the DMA queue);
	 * -errno on failure (the runtime retries, then fails the access).
	 * hmm_device_fetch_queued is the stub for backends that only queue.
	 */
	int (*fetch)(struct hmm_device *dev, uint64_t slot, uint32_t npages, void *host);

	/* Version 4. */

	/**
	 * release() - slots the runtime no longer uses: what they hold is
	 * garbage from now on, and a backend whose memory costs something
	 * while it holds data (a file's blocks, a remote node's memory) may
	 * give it back. The slots may be handed out again at once, and the
	 * next dma() may write them: a backend that gives space back later
	 * must do so before it runs any later transfer.
	 * Context: any runtime thread, with runtime locks held: must not
	 * block or do I/O (note the slots and act on the DMA queue thread).
	 * hmm_device_release_nop is the stub for memory that costs nothing
	 * to keep.
	 */
	void (*release)(struct hmm_device *dev, uint64_t first, uint64_t nslots);

	/* Version 5. */

	/**
	 * health() - how a device whose memory is spread over parts that fail
	 * on their own (remote memory on several nodes) is doing: hmm_device_info
	 * reports it. Context: an application thread, no runtime locks held;
	 * may wait for a transfer under way.
	 * hmm_device_health_whole is the stub for memory in one piece.
	 */
	void (*health)(struct hmm_device *dev, struct hmm_device_health *ret);
};

/* Shared stubs for ops that do not apply to a backend. */
int hmm_device_dma_enosys(struct hmm_device *dev, struct hmm_dma_desc *descs, unsigned n);
int hmm_device_mem_access_enosys(struct hmm_device *dev, uint64_t slot, size_t offset,
				 void *buf, size_t len, bool write);
int hmm_device_mem_atomic_add_enosys(struct hmm_device *dev, uint64_t slot, size_t offset,
				     uint64_t value, uint64_t *ret_old);
int hmm_device_fetch_queued(struct hmm_device *dev, uint64_t slot, uint32_t npages, void *host);
void hmm_device_release_nop(struct hmm_device *dev, uint64_t first, uint64_t nslots);
void hmm_device_health_whole(struct hmm_device *dev, struct hmm_device_health *ret);
/* For coherent memory that is already where the CPU maps it. */
int hmm_device_place_in_place(struct hmm_device *dev, void *addr, size_t npages,
			      bool on_device);

/** hmm_device_config_get() - value of key (NULL for a flag or when absent). */
const char *hmm_device_config_get(const struct hmm_device_config *cfg, const char *key);
/**
 * hmm_device_config_get_nth() - the n-th value (from 0) of a key given more
 * than once (HMM_PARAM_STRING_LIST), NULL past the last.
 */
const char *hmm_device_config_get_nth(const struct hmm_device_config *cfg, const char *key,
				      unsigned n);
/** hmm_device_config_has() - whether key (flag or key=value) was given. */
bool hmm_device_config_has(const struct hmm_device_config *cfg, const char *key);

/**
 * hmm_device_log() - one line in the runtime's log (shown by default, as a
 * warning), prefixed with the device's name: what a backend says when it
 * gives up on something (a node declared dead, a full disk). Never
 * allocates; any thread.
 */
void hmm_device_log(const struct hmm_device *dev, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/**
 * hmm_fault_should_fail() - fault injection point check for backends
 * (UHMM_FAULT). @point: "dma_to_device", "dma_to_host", ...
 */
bool hmm_fault_should_fail(const char *point);

#ifndef container_of
#define container_of(ptr, type, member) \
	((type *)((char *)(ptr) - __builtin_offsetof(type, member)))
#endif

#ifdef __cplusplus
}
#endif

#endif /* UHMM_DEVICE_H */
