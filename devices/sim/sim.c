// SPDX-License-Identifier: MIT
/*
 * sim: the simulated device, our analogue of the kernel's lib/test_hmm.c.
 * Its memory is ordinary anonymous memory of this process, private to the
 * runtime, in three flavours chosen by the spec:
 *
 *   sim           device-private memory the runtime can see (like dmirror's
 *                 backing pages): pages move in and out with UFFDIO_MOVE;
 *   sim:copy      device-private memory reachable only through dma() and
 *                 mem_access(), like a discrete card behind PCIe;
 *   sim:coherent  device-coherent memory (the CDM patches' DEVICE_PUBLIC):
 *                 the CPU keeps accessing pages in place. The simulation's
 *                 coherent memory is this process's own memory, so placing a
 *                 page there moves nothing; the device accounts for it.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <uhmm/device.h>

#define HUGE_SIZE (2ul << 20)

struct sim_device {
	struct hmm_device dev;
	char *mem;          /* 2 MiB aligned, so huge pages move whole */
	char *map;          /* the mapping mem lies in */
	size_t map_len;
};

static const struct hmm_device_param sim_params[] = {
	{ "coherent", HMM_PARAM_FLAG, "memory the CPU accesses in place (device-coherent)", NULL },
	{ "copy", HMM_PARAM_FLAG, "memory reachable only through the DMA queue (discrete card)", NULL },
	{ NULL, 0, NULL, NULL },
};

/* The three kinds of device memory HMM knows, one spec each. */
static const struct hmm_device_variant sim_variants[] = {
	{ "sim", HMM_MEMORY_PRIVATE },
	{ "sim:coherent", HMM_MEMORY_COHERENT },
	{ "sim:copy", HMM_MEMORY_DMA_ONLY },
	{ NULL, 0 },
};

static _Atomic int sim_count;

static inline struct sim_device *to_sim(struct hmm_device *dev)
{
	return container_of(dev, struct sim_device, dev);
}

static int sim_probe(void)
{
	return 0; /* always present */
}

static int sim_open(const struct hmm_device_config *cfg, struct hmm_device **ret_dev)
{
	bool coherent = hmm_device_config_has(cfg, "coherent");
	bool copy = hmm_device_config_has(cfg, "copy");
	struct sim_device *sim;

	if (coherent && copy)
		return -EINVAL;
	sim = calloc(1, sizeof(*sim));
	if (!sim)
		return -ENOMEM;
	sim->dev.size = sizeof(sim->dev);
	snprintf(sim->dev.name, sizeof(sim->dev.name), "sim%d", atomic_fetch_add(&sim_count, 1));
	snprintf(sim->dev.kind, sizeof(sim->dev.kind), "sim");
	sim->dev.mem_bytes = cfg->mem_bytes;
	if (coherent) {
		sim->dev.caps = HMM_DEVCAP_COHERENT;
	} else {
		/* Raw mmap: this memory is the device's, never the application's. */
		sim->map_len = cfg->mem_bytes + HUGE_SIZE;
		sim->map = (char *)syscall(SYS_mmap, NULL, sim->map_len, PROT_READ | PROT_WRITE,
					   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (sim->map == MAP_FAILED) {
			free(sim);
			return -ENOMEM;
		}
		sim->mem = (char *)(((uintptr_t)sim->map + HUGE_SIZE - 1) & ~(HUGE_SIZE - 1));
		sim->dev.caps = copy ? 0 : HMM_DEVCAP_HOST_MAPPED | HMM_DEVCAP_MOVABLE;
		sim->dev.mem_base = copy ? NULL : sim->mem;
	}
	*ret_dev = &sim->dev;
	return 0;
}

static void sim_close(struct hmm_device *dev)
{
	struct sim_device *sim = to_sim(dev);

	if (sim->map)
		syscall(SYS_munmap, sim->map, sim->map_len);
	free(sim);
}

/* The DMA engine: one memcpy per descriptor, failing on demand. */
static int sim_dma(struct hmm_device *dev, struct hmm_dma_desc *descs, unsigned n)
{
	struct sim_device *sim = to_sim(dev);
	int first_err = 0;

	for (unsigned i = 0; i < n; i++) {
		struct hmm_dma_desc *d = &descs[i];
		char *devmem = sim->mem + d->slot * HMM_PAGE_SIZE;
		size_t len = (size_t)d->npages * HMM_PAGE_SIZE;
		bool to_dev = d->dir == HMM_DMA_TO_DEVICE;

		if (!sim->mem || d->slot * HMM_PAGE_SIZE + len > dev->mem_bytes) {
			d->status = -EINVAL;
		} else if (hmm_fault_should_fail(to_dev ? "dma_to_device" : "dma_to_host")) {
			d->status = -EIO;
		} else {
			if (to_dev && !d->host)
				memset(devmem, 0, len);
			else if (to_dev)
				memcpy(devmem, d->host, len);
			else
				memcpy(d->host, devmem, len);
			d->status = 0;
		}
		d->done = d->status ? 0 : d->npages;
		if (d->status && !first_err)
			first_err = d->status;
	}
	return first_err;
}

/* A CPU fault's few pages, copied on the fault thread: memory is right here. */
static int sim_fetch(struct hmm_device *dev, uint64_t slot, uint32_t npages, void *host)
{
	struct sim_device *sim = to_sim(dev);
	size_t len = (size_t)npages * HMM_PAGE_SIZE;

	if (!sim->mem || slot * HMM_PAGE_SIZE + len > dev->mem_bytes)
		return -EINVAL;
	if (hmm_fault_should_fail("dma_to_host"))
		return -EIO;
	memcpy(host, sim->mem + slot * HMM_PAGE_SIZE, len);
	return 0;
}

static int sim_mem_access(struct hmm_device *dev, uint64_t slot, size_t offset, void *buf,
			  size_t len, bool write)
{
	struct sim_device *sim = to_sim(dev);
	char *p = sim->mem + slot * HMM_PAGE_SIZE + offset;

	if (!sim->mem || offset + len > HMM_PAGE_SIZE)
		return -EINVAL;
	if (write)
		memcpy(p, buf, len);
	else
		memcpy(buf, p, len);
	return 0;
}

static int sim_mem_atomic_add(struct hmm_device *dev, uint64_t slot, size_t offset,
			      uint64_t value, uint64_t *ret_old)
{
	struct sim_device *sim = to_sim(dev);

	if (!sim->mem || offset + sizeof(uint64_t) > HMM_PAGE_SIZE || (offset & 7))
		return -EINVAL;
	*ret_old = __atomic_fetch_add((uint64_t *)(sim->mem + slot * HMM_PAGE_SIZE + offset), value,
				      __ATOMIC_SEQ_CST);
	return 0;
}

const struct hmm_device_ops hmm_sim_ops = {
	.size = sizeof(struct hmm_device_ops),
	.version = HMM_DEVICE_OPS_VERSION,
	.kind = "sim",
	.description = "simulated device (private, sim:copy discrete, sim:coherent)",
	.params = sim_params,
	.probe = sim_probe,
	.open = sim_open,
	.close = sim_close,
	.dma = sim_dma,
	.mem_access = sim_mem_access,
	.mem_atomic_add = sim_mem_atomic_add,
	.place = hmm_device_place_in_place,
	.variants = sim_variants,
	.fetch = sim_fetch,
	.release = hmm_device_release_nop,
	.health = hmm_device_health_whole,
};
