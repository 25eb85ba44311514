// SPDX-License-Identifier: MIT
/*
 * A memory node from the client's side (node.h): the control connection,
 * the region, one endpoint, and the operations in flight on it.
 */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <uhmm/device.h>

#include "node.h"

uint64_t node_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Connect with a deadline: a node that does not answer must not hang open(). */
static int tcp_connect(const char *addr, int timeout_ms)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res;
	char host[256], port[16];
	int fd, err = 0;

	if (wire_split_addr(addr, host, sizeof(host), port, sizeof(port)) ||
	    getaddrinfo(host, port, &hints, &res))
		return -EINVAL;
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		err = -errno;
	} else if (connect(fd, res->ai_addr, res->ai_addrlen) && errno != EINPROGRESS) {
		err = -errno;
	} else {
		struct pollfd p = { .fd = fd, .events = POLLOUT };
		socklen_t len = sizeof(err);

		if (poll(&p, 1, timeout_ms) != 1)
			err = -ETIMEDOUT;
		else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) || err)
			err = -(err ? err : errno);
	}
	freeaddrinfo(res);
	if (err && fd >= 0)
		close(fd);
	return err ? err : fd;
}

static int ask_region(struct fabric_node *n, uint64_t bytes, struct wire_region *r)
{
	struct wire_request req = { .op = WIRE_OP_REGION, .bytes = bytes };
	int err = wire_send(&n->ctl, WIRE_REQUEST, &req, sizeof(req));

	if (!err)
		err = wire_recv(&n->ctl, WIRE_REGION, r, sizeof(*r));
	if (!err && r->status)
		err = r->status < 0 ? r->status : -EPROTO;
	if (!err && (r->bytes < bytes || r->addrlen > sizeof(r->addr)))
		err = -EPROTO;
	return err;
}

/*
 * The endpoint binds the address our control connection to the node left
 * from: the one that routes to it. Left to itself, the provider takes the
 * first interface's, which the node may have no route back to (a node in
 * another network namespace, a machine with several networks), and
 * connects for ever (libfabric #12480).
 */
static int setup_endpoint(struct fabric_node *n, const struct wire_region *r, char *err,
			  size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	char local_host[NI_MAXHOST];
	char provider[WIRE_PROVIDER_LEN + 1] = { 0 };
	int rc;

	memcpy(provider, r->provider, WIRE_PROVIDER_LEN);
	if (getsockname(n->ctl.fd, (struct sockaddr *)&ss, &sslen) ||
	    getnameinfo((struct sockaddr *)&ss, sslen, local_host, sizeof(local_host), NULL, 0,
			NI_NUMERICHOST)) {
		snprintf(err, errlen, "cannot tell our address towards the node");
		return -EIO;
	}
	rc = fab_open(&n->ep, provider, local_host, false, err, errlen);
	if (rc)
		return rc;
	if (fi_av_insert(n->ep.av, r->addr, 1, &n->peer, 0, NULL) != 1) {
		snprintf(err, errlen, "%s: cannot add the node's address", provider);
		return -EIO;
	}
	if (posix_memalign((void **)&n->staging, 4096, (size_t)NODE_QD * NODE_CHUNK))
		return -ENOMEM;
	if (n->ep.mr_mode & FI_MR_LOCAL) {
		rc = fi_mr_reg(n->ep.domain, n->staging, (size_t)NODE_QD * NODE_CHUNK,
			       FI_READ | FI_WRITE, 0, 0, 0, &n->staging_mr, NULL);
		if (rc) {
			snprintf(err, errlen, "registering staging memory: %s", fi_strerror(-rc));
			return rc < 0 ? rc : -EIO;
		}
		n->staging_desc = fi_mr_desc(n->staging_mr);
	}
	for (unsigned i = 0; i < NODE_QD; i++) {
		n->ops[i].node = n;
		n->ops[i].staging = n->staging + (size_t)i * NODE_CHUNK;
	}
	return 0;
}

int node_connect(struct fabric_node *n, const char *addr, const char *provider,
		 const uint8_t *key, uint64_t bytes, int timeout_ms, char *err, size_t errlen)
{
	struct wire_region r;
	int rc;

	/* Before the provider reads its settings: a node and its clients must agree. */
	fab_set_environment();
	snprintf(n->addr, sizeof(n->addr), "%s", addr);
	n->op_timeout_ns = (uint64_t)timeout_ms * 1000000u;
	n->ctl.fd = tcp_connect(addr, timeout_ms);
	if (n->ctl.fd < 0) {
		snprintf(err, errlen, "node %s: %s", addr, strerror(-n->ctl.fd));
		return n->ctl.fd;
	}
	n->ctl.timeout_ms = timeout_ms;
	rc = wire_connect(&n->ctl, key);
	if (!rc)
		rc = ask_region(n, bytes, &r);
	if (rc) {
		snprintf(err, errlen, "node %s: %s", addr,
			 rc == -EACCES ? "authentication failed (wrong or missing key)"
			 : rc == -ENOMEM ? "not enough memory to lend"
			 : rc == -EPROTO ? "not a uhmm memory node, or a garbled answer"
					 : strerror(-rc));
		return rc;
	}
	/* The node names its provider; ours must be the same one. */
	if (strcmp(provider, "tcp") ? strncmp(r.provider, provider, strlen(provider))
				    : strncmp(r.provider, "tcp", 3)) {
		snprintf(err, errlen, "node %s serves provider %.32s, not %s", addr, r.provider,
			 provider);
		return -EPROTONOSUPPORT;
	}
	n->raddr = r.raddr;
	n->rkey = r.rkey;
	n->bytes = r.bytes;
	rc = setup_endpoint(n, &r, err, errlen);
	sodium_memzero(&r, sizeof(r));
	return rc;
}

void node_close(struct fabric_node *n)
{
	if (n->ctl.fd > 0)
		close(n->ctl.fd);
	n->ctl.fd = -1;
	/*
	 * A dead node's provider may still hold our ops and staging: closing
	 * its endpoint could wait for them for ever (libfabric has no give-up
	 * policy, #7441), and freeing them could let a late completion write
	 * into freed memory. Both stay, and so does the node.
	 */
	if (atomic_load(&n->dead))
		return;
	if (n->staging_mr)
		fi_close(&n->staging_mr->fid);
	fab_close(&n->ep);
	free(n->staging);
	n->staging = NULL;
}

struct node_op *node_op_get(struct fabric_node *n)
{
	if (atomic_load(&n->dead))
		return NULL;
	for (unsigned i = 0; i < NODE_QD; i++)
		if (!n->ops[i].busy) {
			n->ops[i].owner = NULL;
			return &n->ops[i];
		}
	return NULL;
}

int node_post(struct node_op *op, bool write, uint64_t offset, size_t len)
{
	struct fabric_node *n = op->node;
	uint64_t addr = n->raddr + offset, start;
	ssize_t rc;

	if (len > NODE_CHUNK || offset + len > n->bytes)
		return -EINVAL;
	op->busy = true;
	start = node_now_ns();
	for (;;) {
		rc = write ? fi_write(n->ep.ep, op->staging, len, n->staging_desc, n->peer, addr,
				      n->rkey, &op->ctx)
			   : fi_read(n->ep.ep, op->staging, len, n->staging_desc, n->peer, addr,
				     n->rkey, &op->ctx);
		if (rc != -FI_EAGAIN)
			break;
		/*
		 * Connection set-up or a full queue: progress, then post
		 * again; libfabric would say EAGAIN for ever to a node that
		 * never answers (#7441).
		 */
		if (node_poll(n, 0, NULL, NULL) < 0)
			break;
		if (node_now_ns() - start > n->op_timeout_ns) {
			rc = -FI_ETIMEDOUT;
			break;
		}
	}
	if (rc) {
		op->busy = false;
		return rc < 0 ? (int)rc : -EIO;
	}
	op->posted_ns = node_now_ns();
	n->inflight++;
	return 0;
}

static void complete(struct fabric_node *n, struct node_op *op, int status, node_done_fn *done,
		     void *arg)
{
	if (!op->busy || atomic_load(&n->dead))
		return; /* abandoned: its owner heard of it then */
	op->busy = false;
	n->inflight--;
	if (done)
		done(op, status, arg);
}

int node_poll(struct fabric_node *n, int wait_ms, node_done_fn *done, void *arg)
{
	struct fi_cq_entry entries[NODE_QD];
	ssize_t got;
	int reaped = 0;

	for (;;) {
		got = wait_ms && !reaped ? fi_cq_sread(n->ep.cq, entries, NODE_QD, NULL, wait_ms)
					 : fi_cq_read(n->ep.cq, entries, NODE_QD);
		if (got == -FI_EAVAIL) {
			struct fi_cq_err_entry e = { 0 };

			if (fi_cq_readerr(n->ep.cq, &e, 0) == 1 && e.op_context) {
				complete(n, e.op_context, e.err ? -e.err : -EIO, done, arg);
				reaped++;
			}
			continue;
		}
		if (got == -FI_EAGAIN || got == -FI_ETIMEDOUT || !got)
			return reaped;
		if (got < 0)
			return (int)got;
		for (ssize_t i = 0; i < got; i++)
			complete(n, entries[i].op_context, 0, done, arg);
		reaped += (int)got;
		wait_ms = 0;
	}
}

bool node_declare_dead(struct fabric_node *n, const char *why, node_done_fn *done, void *arg)
{
	if (atomic_exchange(&n->dead, true))
		return false;
	hmm_device_log(n->dev, "memory node %s is dead (%s): its copies are lost", n->addr, why);
	/* Each stays busy for the provider; its owner hears it failed. */
	for (unsigned i = 0; i < NODE_QD; i++)
		if (n->ops[i].busy && done)
			done(&n->ops[i], -EIO, arg);
	return true;
}

bool node_hung_up(struct fabric_node *n)
{
	struct pollfd p = { .fd = n->ctl.fd, .events = POLLIN };
	char c;

	if (n->ctl.fd < 0 || poll(&p, 1, 0) != 1)
		return false;
	/* The node says nothing after the region; readable means it closed. */
	return recv(n->ctl.fd, &c, 1, MSG_DONTWAIT | MSG_PEEK) <= 0 || (p.revents & POLLHUP);
}
