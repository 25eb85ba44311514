// SPDX-License-Identifier: MIT
/*
 * fabric: remote memory on memory nodes over libfabric (fabric.h).
 *
 *   fabric:node=HOST:PORT[,node=...][,replicas=R][,provider=P][,key=FILE]
 *          [,seal|,unsealed][,timeout=MS][,mem=SIZE]
 *
 * At open the device authenticates to every node (uhmm-memnode), gets a
 * region of mem bytes on each and an endpoint to it; all must answer. Pages
 * leave with one-sided writes to `replicas` nodes (2 by default when there
 * are two or more) and come back with one-sided reads from the first live
 * copy. Pages are sealed (seal.h) when asked, and by default when any node
 * is off loopback, where the wire and the node's operator are not ours.
 *
 * The device is DMA-only: the CPU reaches its memory only through
 * transfers. It does not keep a clean page's copy when the page goes home
 * (no HMM_DEVCAP_KEEP_CLEAN): a copy can be lost with its node, and the
 * page at home is the one sure copy.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fabric.h"

#define DEFAULT_TIMEOUT_MS 2000
/* open() may wait this long for a node's control connection, each step. */
#define CONNECT_TIMEOUT_MS 5000

static const struct hmm_device_param fabric_params[] = {
	{ "node", HMM_PARAM_STRING_LIST,
	  "a memory node, HOST:PORT (once per node; the variable: several, space-separated)",
	  "UHMM_FABRIC_NODES" },
	{ "replicas", HMM_PARAM_UINT, "copies of each page (default 2 with two nodes or more)",
	  NULL },
	{ "provider", HMM_PARAM_STRING, "libfabric provider: tcp (default), shm, verbs, efa",
	  "UHMM_FABRIC_PROVIDER" },
	{ "key", HMM_PARAM_STRING, "the nodes' key file (required by nodes that have one)",
	  "UHMM_FABRIC_KEY" },
	{ "seal", HMM_PARAM_FLAG, "encrypt and authenticate every page (default off loopback)",
	  NULL },
	{ "unsealed", HMM_PARAM_FLAG, "send pages in clear even to nodes off loopback", NULL },
	{ "timeout", HMM_PARAM_UINT, "milliseconds before a silent node is declared dead", NULL },
	{ NULL, 0, NULL, NULL },
};

/* The suite runs it on the nodes its wrapper started (UHMM_FABRIC_NODES). */
static const struct hmm_device_variant fabric_variants[] = {
	{ "fabric", HMM_MEMORY_DMA_ONLY },
	{ NULL, 0 },
};

static _Atomic int fabric_count;

int fab_library_present(void);

/* libfabric is opened now, not when libuhmm loads (libfabric.c says why). */
static int fabric_probe(void)
{
	return fab_library_present() ? 0 : -ENODEV;
}

static void free_fabric(struct fabric_device *f)
{
	for (unsigned i = 0; i < f->nnodes; i++) {
		if (!f->nodes[i])
			continue;
		node_close(f->nodes[i]);
		if (!atomic_load(&f->nodes[i]->dead))
			free(f->nodes[i]); /* a dead one's provider may still hold it */
	}
	if (f->sealed)
		seal_fini(&f->seal);
	sodium_memzero(f->key, sizeof(f->key));
	fabric_xfer_fini(f);
	free(f->slots);
	free(f->released);
	free(f->page);
	free(f->restore_buf);
	free(f);
}

static int parse_options(struct fabric_device *f, const struct hmm_device_config *cfg)
{
	const char *v;

	while (hmm_device_config_get_nth(cfg, "node", f->nnodes))
		if (++f->nnodes > FABRIC_MAX_NODES)
			return -EINVAL;
	if (!f->nnodes) {
		hmm_device_log(NULL, "fabric: no node= given (HOST:PORT of a uhmm-memnode)");
		return -EINVAL;
	}
	v = hmm_device_config_get(cfg, "replicas");
	f->replicas = v ? (unsigned)strtoul(v, NULL, 0) : f->nnodes >= 2 ? 2 : 1;
	if (!f->replicas || f->replicas > f->nnodes)
		return -EINVAL;
	v = hmm_device_config_get(cfg, "timeout");
	f->timeout_ms = v ? (int)strtoul(v, NULL, 0) : DEFAULT_TIMEOUT_MS;
	if (f->timeout_ms < 1 || f->timeout_ms > 600000)
		return -EINVAL;
	if (hmm_device_config_has(cfg, "seal") && hmm_device_config_has(cfg, "unsealed"))
		return -EINVAL;
	return 0;
}

static bool any_node_remote(const struct hmm_device_config *cfg)
{
	const char *addr;

	for (unsigned i = 0; (addr = hmm_device_config_get_nth(cfg, "node", i)); i++) {
		char host[256], port[16];

		if (wire_split_addr(addr, host, sizeof(host), port, sizeof(port)) ||
		    !wire_is_loopback(host))
			return true;
	}
	return false;
}

/*
 * A node of ours, connected: 0, or -errno, with a log line unless @quiet.
 * Nothing shared is touched.
 */
int fabric_connect_node(struct fabric_device *f, unsigned i, bool quiet, struct fabric_node **ret)
{
	struct fabric_node *n = calloc(1, sizeof(*n));
	char err[256];
	int rc;

	if (!n)
		return -ENOMEM;
	n->dev = &f->dev;
	n->index = i;
	n->ctl.fd = -1;
	rc = node_connect(n, f->node_addr[i], f->provider, f->keyed ? f->key : NULL,
			  f->dev.mem_bytes, CONNECT_TIMEOUT_MS, err, sizeof(err));
	n->op_timeout_ns = (uint64_t)f->timeout_ms * 1000000u;
	if (rc) {
		if (!quiet)
			hmm_device_log(&f->dev, "%s", err);
		node_close(n);
		free(n);
		return rc;
	}
	*ret = n;
	return 0;
}

static int connect_nodes(struct fabric_device *f, const struct hmm_device_config *cfg)
{
	const char *provider = hmm_device_config_get(cfg, "provider") ?: "tcp";
	const char *key_file = hmm_device_config_get(cfg, "key");
	char err[256];
	int rc = 0;

	if (key_file && wire_load_key(key_file, f->key, err, sizeof(err))) {
		hmm_device_log(NULL, "fabric: %s", err);
		return -EACCES;
	}
	f->keyed = key_file;
	snprintf(f->provider, sizeof(f->provider), "%s", provider);
	for (unsigned i = 0; i < f->nnodes && !rc; i++) {
		snprintf(f->node_addr[i], sizeof(f->node_addr[i]), "%s",
			 hmm_device_config_get_nth(cfg, "node", i));
		rc = fabric_connect_node(f, i, false, &f->nodes[i]);
		if (!rc)
			f->alive |= (uint8_t)(1u << i);
	}
	return rc;
}

static void describe(struct fabric_device *f)
{
	snprintf(f->dev.detail, sizeof(f->dev.detail), "%u node%s over %s, %u cop%s per page%s",
		 f->nnodes, f->nnodes == 1 ? "" : "s", f->nodes[0]->ep.provider, f->replicas,
		 f->replicas == 1 ? "y" : "ies", f->sealed ? ", sealed" : "");
}

static int fabric_open(const struct hmm_device_config *cfg, struct hmm_device **ret_dev)
{
	struct fabric_device *f = calloc(1, sizeof(*f));
	int err;

	if (!f)
		return -ENOMEM;
	f->dev.size = sizeof(f->dev);
	snprintf(f->dev.name, sizeof(f->dev.name), "fabric%d", atomic_fetch_add(&fabric_count, 1));
	snprintf(f->dev.kind, sizeof(f->dev.kind), "fabric");
	f->dev.mem_bytes = cfg->mem_bytes;
	f->nslots = cfg->mem_bytes / HMM_PAGE_SIZE;
	pthread_mutex_init(&f->io_lock, NULL);
	pthread_mutex_init(&f->release_lock, NULL);
	f->released_lo = f->nslots;
	err = parse_options(f, cfg);
	if (err) {
		free(f);
		return err;
	}
	f->sealed = hmm_device_config_has(cfg, "seal") ||
		    (!hmm_device_config_has(cfg, "unsealed") && any_node_remote(cfg));
	f->slots = calloc(f->nslots, sizeof(*f->slots));
	f->released = calloc((f->nslots + 63) / 64, sizeof(uint64_t));
	if (!f->slots || !f->released || fabric_xfer_init(f) ||
	    posix_memalign((void **)&f->page, HMM_PAGE_SIZE, HMM_PAGE_SIZE) ||
	    posix_memalign((void **)&f->restore_buf, HMM_PAGE_SIZE, NODE_CHUNK) ||
	    (f->sealed && seal_init(&f->seal, f->nslots))) {
		f->sealed = false;
		free_fabric(f);
		return -ENOMEM;
	}
	err = connect_nodes(f, cfg);
	if (!err)
		err = fabric_restorer_start(f);
	if (err) {
		free_fabric(f);
		return err;
	}
	describe(f);
	f->dev.caps = 0;
	*ret_dev = &f->dev;
	return 0;
}

static void fabric_close(struct hmm_device *dev)
{
	struct fabric_device *f = to_fabric(dev);

	fabric_restorer_stop(f);
	free_fabric(f);
}

static int fabric_dma(struct hmm_device *dev, struct hmm_dma_desc *descs, unsigned n)
{
	struct fabric_device *f = to_fabric(dev);
	int err;

	if (hmm_fault_should_fail(descs[0].dir == HMM_DMA_TO_DEVICE ? "dma_to_device"
								     : "dma_to_host")) {
		for (unsigned i = 0; i < n; i++) {
			descs[i].status = -EIO;
			descs[i].done = 0;
		}
		return -EIO;
	}
	pthread_mutex_lock(&f->io_lock);
	fabric_apply_released(f);
	err = fabric_run(f, descs, n);
	pthread_mutex_unlock(&f->io_lock);
	return err;
}

/* A CPU fault's pages, read on the fault thread unless a transfer is under way. */
static int fabric_fetch(struct hmm_device *dev, uint64_t slot, uint32_t npages, void *host)
{
	struct fabric_device *f = to_fabric(dev);
	struct hmm_dma_desc d = {
		.dir = HMM_DMA_TO_HOST, .npages = npages, .slot = slot, .host = host,
	};

	if (slot + npages > f->nslots)
		return -EINVAL;
	if (hmm_fault_should_fail("dma_to_host"))
		return -EIO;
	if (pthread_mutex_trylock(&f->io_lock))
		return -EWOULDBLOCK;
	fabric_apply_released(f);
	fabric_run(f, &d, 1);
	pthread_mutex_unlock(&f->io_lock);
	return d.status;
}

static void fabric_release(struct hmm_device *dev, uint64_t first, uint64_t nslots)
{
	struct fabric_device *f = to_fabric(dev);

	if (first >= f->nslots || nslots > f->nslots - first)
		return;
	pthread_mutex_lock(&f->release_lock);
	for (uint64_t s = first; s < first + nslots; s++)
		f->released[s / 64] |= 1ull << (s % 64);
	if (first < f->released_lo)
		f->released_lo = first;
	if (first + nslots > f->released_hi)
		f->released_hi = first + nslots;
	pthread_mutex_unlock(&f->release_lock);
}

/* One page in and, for a write, out again, with io_lock held. */
static int page_io(struct fabric_device *f, uint64_t slot, bool write)
{
	struct hmm_dma_desc d = {
		.dir = write ? HMM_DMA_TO_DEVICE : HMM_DMA_TO_HOST,
		.npages = 1, .slot = slot, .host = f->page,
	};

	fabric_run(f, &d, 1);
	return d.status;
}

static int fabric_mem_access(struct hmm_device *dev, uint64_t slot, size_t offset, void *buf,
			     size_t len, bool write)
{
	struct fabric_device *f = to_fabric(dev);
	int err;

	if (offset + len > HMM_PAGE_SIZE || slot >= f->nslots)
		return -EINVAL;
	pthread_mutex_lock(&f->io_lock);
	fabric_apply_released(f);
	err = page_io(f, slot, false);
	if (!err && write) {
		memcpy(f->page + offset, buf, len);
		err = page_io(f, slot, true);
	} else if (!err) {
		memcpy(buf, f->page + offset, len);
	}
	pthread_mutex_unlock(&f->io_lock);
	return err;
}

static int fabric_mem_atomic_add(struct hmm_device *dev, uint64_t slot, size_t offset,
				 uint64_t value, uint64_t *ret_old)
{
	struct fabric_device *f = to_fabric(dev);
	int err;

	if (offset + sizeof(uint64_t) > HMM_PAGE_SIZE || (offset & 7) || slot >= f->nslots)
		return -EINVAL;
	/* Atomic against every other access: they all take io_lock. */
	pthread_mutex_lock(&f->io_lock);
	fabric_apply_released(f);
	err = page_io(f, slot, false);
	if (!err) {
		uint64_t *word = (uint64_t *)(f->page + offset);

		*ret_old = *word;
		*word += value;
		err = page_io(f, slot, true);
	}
	pthread_mutex_unlock(&f->io_lock);
	return err;
}

static void fabric_health(struct hmm_device *dev, struct hmm_device_health *ret)
{
	struct fabric_device *f = to_fabric(dev);

	pthread_mutex_lock(&f->io_lock);
	fabric_apply_released(f);
	ret->parts_total = f->nnodes;
	ret->parts_alive = (uint32_t)__builtin_popcount(f->alive);
	ret->pages_degraded = fabric_degraded_pages(f);
	ret->pages_lost = f->lost_pages;
	ret->pages_restored = f->restored_pages;
	ret->pages_tampered = f->tampered_pages;
	pthread_mutex_unlock(&f->io_lock);
}

const struct hmm_device_ops hmm_fabric_ops = {
	.size = sizeof(struct hmm_device_ops),
	.version = HMM_DEVICE_OPS_VERSION,
	.kind = "fabric",
	.description = "remote memory on uhmm-memnode nodes, through libfabric",
	.params = fabric_params,
	.probe = fabric_probe,
	.open = fabric_open,
	.close = fabric_close,
	.dma = fabric_dma,
	.mem_access = fabric_mem_access,
	.mem_atomic_add = fabric_mem_atomic_add,
	.place = hmm_device_place_in_place,
	.variants = fabric_variants,
	.fetch = fabric_fetch,
	.release = fabric_release,
	.health = fabric_health,
};
