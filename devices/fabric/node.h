/* SPDX-License-Identifier: MIT */
/*
 * One memory node as a client sees it: the control connection that holds
 * our region there, an endpoint of our own to reach it, and staging memory
 * that RMA reads land in and writes go out from. The program's pages never
 * meet the provider: a node that dies with operations in flight can only
 * ever touch its own staging, which is then never used again.
 */
#ifndef UHMM_FABRIC_NODE_H
#define UHMM_FABRIC_NODE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "endpoint.h"
#include "wire.h"

/* Bytes per RMA operation, and operations in flight per node. */
#define NODE_CHUNK (64u << 10)
#define NODE_QD 16

struct node_op {
	struct fi_context ctx;              /* first: the provider hands it back */
	struct fabric_node *node;
	char *staging;                      /* NODE_CHUNK bytes of the node's staging */
	bool busy;                          /* posted, not completed */
	uint64_t posted_ns;                 /* for the deadline */
	void *owner;                        /* the caller's, for its bookkeeping */
};

/* Called once per op that completed, with 0 or -errno. */
typedef void node_done_fn(struct node_op *op, int status, void *arg);

struct hmm_device;

struct fabric_node {
	const struct hmm_device *dev;       /* whose log lines these are */
	unsigned index;                     /* the device's node number: its bit in slot masks */
	char addr[128];                     /* host:port, for log lines */
	struct wire ctl;
	struct fab_endpoint ep;
	fi_addr_t peer;
	uint64_t raddr, rkey, bytes;
	char *staging;                      /* NODE_QD * NODE_CHUNK */
	struct fid_mr *staging_mr;          /* FI_MR_LOCAL providers only */
	void *staging_desc;
	struct node_op ops[NODE_QD];
	unsigned inflight;
	uint64_t op_timeout_ns;             /* posting gives up after it: connect's, or the owner's */
	_Atomic bool dead;
};

/*
 * node_connect() - authenticate to the node at @addr (host:port), get a
 * region of @bytes and an endpoint to it. @key: NULL without one.
 * @timeout_ms bounds the control connection's every step. @err says why
 * not. Return: 0, -EACCES (key), -ENOMEM (the node lacks room),
 * -ECONNREFUSED, -ETIMEDOUT, -errno.
 */
int node_connect(struct fabric_node *n, const char *addr, const char *provider,
		 const uint8_t *key, uint64_t bytes, int timeout_ms, char *err, size_t errlen);
/* Disconnect: the node frees our region. A dead node's endpoint is left as is. */
void node_close(struct fabric_node *n);

/* A free operation slot with its staging, or NULL while NODE_QD are in flight. */
struct node_op *node_op_get(struct fabric_node *n);

/*
 * node_post() - start one RMA between op's staging and our region at
 * @offset. Return: 0, or -errno (the op is free again); -FI_ETIMEDOUT when
 * the provider would not take it within op_timeout_ns.
 */
int node_post(struct node_op *op, bool write, uint64_t offset, size_t len);

/*
 * node_poll() - reap completions, calling @done for each. Waits up to
 * @wait_ms for the first (0: only what is there).
 * Return: the number reaped, or -errno from the provider.
 */
int node_poll(struct fabric_node *n, int wait_ms, node_done_fn *done, void *arg);

/*
 * node_declare_dead() - stop using the node, with one log line. Its ops in
 * flight are abandoned with their staging (neither is ever reused): @done
 * is called for each, with -EIO. Idempotent: false if it was dead already.
 */
bool node_declare_dead(struct fabric_node *n, const char *why, node_done_fn *done, void *arg);

uint64_t node_now_ns(void);

/* Whether the node's control connection says it went away. Never blocks. */
bool node_hung_up(struct fabric_node *n);

#endif /* UHMM_FABRIC_NODE_H */
