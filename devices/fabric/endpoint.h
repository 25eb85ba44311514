/* SPDX-License-Identifier: MIT */
/*
 * One libfabric reliable-datagram endpoint that does RMA, with its fabric,
 * domain, address vector and completion queue: what a memory node exposes
 * its regions through, and what a client reads and writes them with (one per
 * node, so that a node declared dead takes nothing else down with it).
 */
#ifndef UHMM_FABRIC_ENDPOINT_H
#define UHMM_FABRIC_ENDPOINT_H

#include <stddef.h>
#include <stdint.h>

#include <rdma/fabric.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_rma.h>
#include <rdma/fi_errno.h>

#include "wire.h"

struct fab_endpoint {
	struct fi_info *info;
	struct fid_fabric *fabric;
	struct fid_domain *domain;
	struct fid_av *av;
	struct fid_cq *cq;
	struct fid_ep *ep;
	uint64_t mr_mode;
	char provider[WIRE_PROVIDER_LEN];
};

/*
 * fab_open() - an RMA endpoint on @provider ("tcp", "shm", "verbs", "efa",
 * or a full name such as "tcp;ofi_rxm"). @host: the interface to bind
 * (a node's listen address), or NULL. @target: the endpoint is only read and
 * written by others (a node), else it initiates. @err says why not.
 * Return: 0, -ENODATA when the provider does not do RMA here, -errno.
 */
int fab_open(struct fab_endpoint *e, const char *provider, const char *host, bool target,
	     char *err, size_t errlen);
void fab_close(struct fab_endpoint *e);

/* The endpoint's name for others' address vectors. 0 or -errno. */
int fab_name(struct fab_endpoint *e, void *addr, uint32_t *addrlen);

/*
 * fab_set_environment() - libfabric's settings for us, where the user made
 * none: its memory-registration cache kept off userfaultfd (a range
 * belongs to one uffd, and ours manages the heap), and rxm's message
 * buffers small. Call before the first fi_getinfo of the process. Nodes
 * and clients must run with the same rxm settings: rxm connections between
 * different ones never come up.
 */
void fab_set_environment(void);

#endif /* UHMM_FABRIC_ENDPOINT_H */
