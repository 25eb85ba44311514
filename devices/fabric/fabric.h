/* SPDX-License-Identifier: MIT */
/*
 * fabric: remote memory on memory nodes (uhmm-memnode) over libfabric. The
 * device's slot n is at offset n * HMM_PAGE_SIZE of the region each node
 * lends us; each written page has copies on up to `replicas` nodes, and a
 * byte per slot says which.
 *
 * Locking: io_lock serialises every transfer (the DMA queue's batches, the
 * fault thread's fetches, in-place accesses, the restorer's steps) and
 * guards the slot table, the nodes' operations and the seal. release() may
 * not wait for it, so released slots wait in their own small lock's bitmap
 * until the next transfer applies them, first thing.
 */
#ifndef UHMM_FABRIC_H
#define UHMM_FABRIC_H

#include <pthread.h>

#include <uhmm/device.h>

#include "node.h"
#include "seal.h"

#define FABRIC_MAX_NODES 8
/* Pages per placement stripe: a chunk's pages share their replica set. */
#define STRIPE_PAGES (NODE_CHUNK / HMM_PAGE_SIZE)

/* A slot's meta: the nodes with a good copy (a bit each), and ZERO. */
#define SLOT_ZERO 0x100u    /* reads as zeros: migrated before the CPU wrote it */

struct fabric_device {
	struct hmm_device dev;
	struct fabric_node *nodes[FABRIC_MAX_NODES];
	unsigned nnodes;
	/* What it takes to connect to a node again (the restorer's rejoin). */
	char node_addr[FABRIC_MAX_NODES][128];
	char provider[WIRE_PROVIDER_LEN];
	uint8_t key[WIRE_KEY_BYTES];
	bool keyed;
	unsigned replicas;
	int timeout_ms;                     /* an operation's deadline */
	bool sealed;
	struct seal seal;
	uint64_t nslots;

	pthread_mutex_t io_lock;
	void *run;                          /* xfer.c's state of the transfer under way */
	uint16_t *slots;                    /* per slot: node bits | SLOT_ZERO */
	uint8_t alive;                      /* a bit per node not declared dead */
	char *page;                         /* bounce: unsealing, in-place access */
	char *restore_buf;                  /* NODE_CHUNK */
	uint64_t lost_pages;                /* reads that found no good copy */
	uint64_t restored_pages;
	uint64_t tampered_pages;

	pthread_mutex_t release_lock;
	uint64_t *released;                 /* a bit per slot, applied under io_lock */
	uint64_t released_lo, released_hi;

	pthread_t restorer;
	pthread_cond_t restore_wake;        /* with io_lock */
	bool degraded;                      /* some slot has fewer copies than wanted */
	bool stopping;
};

static inline struct fabric_device *to_fabric(struct hmm_device *dev)
{
	return container_of(dev, struct fabric_device, dev);
}

/* xfer.c: transfers, with io_lock held. */
int fabric_xfer_init(struct fabric_device *f);
void fabric_xfer_fini(struct fabric_device *f);

/*
 * fabric_run() - run @n descriptors to completion: every copy written or
 * read, a node that errs or misses the deadline declared dead, reads moved
 * to the next copy. Fills each status and done. Return: 0 or the first error.
 */
int fabric_run(struct fabric_device *f, struct hmm_dma_desc *descs, unsigned n);
/* Apply released slots: forget their copies. First thing of every transfer. */
void fabric_apply_released(struct fabric_device *f);
/* The nodes that will hold a page of @slot's stripe, at most @want of them. */
uint8_t fabric_place(const struct fabric_device *f, uint64_t slot, unsigned want);
/* Wanted copies per page now: replicas, or fewer when fewer nodes live. */
unsigned fabric_wanted(const struct fabric_device *f);
/* A node is gone: take it out of every choice, wake the restorer. */
void fabric_node_died(struct fabric_device *f, struct fabric_node *n, const char *why);
/*
 * Control connections that hung up: their nodes are dead. The restorer's
 * turn each second, not every transfer's (a fault's, too): a node that
 * goes away mid-transfer fails its operations or misses their deadline.
 */
void fabric_check_hangups(struct fabric_device *f);

/* fabric.c: connect to node @i (f->node_addr); 0 or -errno, logged unless @quiet. */
int fabric_connect_node(struct fabric_device *f, unsigned i, bool quiet, struct fabric_node **ret);

/* restore.c: bring pages back to `replicas` copies after a node died. */
int fabric_restorer_start(struct fabric_device *f);
void fabric_restorer_stop(struct fabric_device *f);
/* Pages with fewer good copies than wanted (and at least one), io_lock held. */
uint64_t fabric_degraded_pages(struct fabric_device *f);

#endif /* UHMM_FABRIC_H */
