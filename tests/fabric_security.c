// SPDX-License-Identifier: MIT
/*
 * Who may use a memory node's memory, on nodes with a key
 * (tests/fabric/with-nodes.sh --keyed; UHMM_FABRIC_KEY is the right key):
 *   bad_key      a wrong key, no key, a key file others can read: the
 *                device does not open (-EACCES) and says why; the node
 *                counts the failures; the right key opens it
 *   wrong_mr_key one client's region is out of another's reach: a wrong MR
 *                key, an offset past the region, and the key of a region
 *                whose client has gone all fail at the provider, while the
 *                client's own key works
 * The client side is the fabric device's own node code (node.c), driven
 * directly with raw RMA.
 */
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uhmm/device.h>

#include "harness.h"
#include "node.h"

#define REGION (1ul << 20)

/* node.c's log lines, which libuhmm keeps to itself: here they are notes. */
void hmm_device_log(const struct hmm_device *dev, const char *fmt, ...)
{
	char line[256];
	va_list ap;

	(void)dev;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	t_note("%s", line);
}

static const char *first_node(char *buf, size_t len)
{
	const char *nodes = getenv("UHMM_FABRIC_NODES");

	if (!nodes)
		return NULL;
	snprintf(buf, len, "%.*s", (int)strcspn(nodes, " "), nodes);
	return buf;
}

static int load_right_key(uint8_t key[WIRE_KEY_BYTES])
{
	const char *path = getenv("UHMM_FABRIC_KEY");
	char err[256];

	CHECK(path);
	if (wire_load_key(path, key, err, sizeof(err))) {
		t_note("%s", err);
		return T_FAIL;
	}
	return T_PASS;
}

static int write_key_file(const char *path, const char *secret, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);

	CHECK(fd >= 0);
	CHECK_EQ(write(fd, secret, strlen(secret)), (ssize_t)strlen(secret));
	CHECK_OK(fchmod(fd, mode));
	close(fd);
	return T_PASS;
}

/* The node's figures, asked over an authenticated control connection. */
static int node_stats(struct wire_stats *s)
{
	struct fabric_node n = { .ctl.fd = -1 };
	struct wire_request req = { .op = WIRE_OP_STATS };
	uint8_t key[WIRE_KEY_BYTES];
	char addr[128], err[256];

	if (load_right_key(key))
		return T_FAIL;
	CHECK(first_node(addr, sizeof(addr)));
	CHECK_EQ(node_connect(&n, addr, "tcp", key, REGION, 5000, err, sizeof(err)), 0);
	CHECK_OK(wire_send(&n.ctl, WIRE_REQUEST, &req, sizeof(req)));
	CHECK_OK(wire_recv(&n.ctl, WIRE_STATS, s, sizeof(*s)));
	node_close(&n);
	return T_PASS;
}

static int open_with(const char *extra, int want)
{
	struct hmm_device *d = NULL;
	char spec[256];
	int err;

	snprintf(spec, sizeof(spec), "fabric%s%s", *extra ? ":" : "", extra);
	err = hmm_device_open(spec, &d);
	if (!err)
		hmm_device_close(d);
	CHECK_EQ(err, want);
	return T_PASS;
}

static int bad_key(void)
{
	char wrong[] = "/tmp/uhmm-wrong-key-XXXXXX", spec[128];
	const char *right = getenv("UHMM_FABRIC_KEY");
	struct wire_stats before, after;
	struct t_log log;
	size_t lines = 0;
	int fd = mkstemp(wrong);

	CHECK(fd >= 0 && right);
	close(fd);
	if (node_stats(&before))
		return T_FAIL;

	/* Another secret: the node refuses it, and the device says so. */
	if (write_key_file(wrong, "not the secret the nodes were given", 0600))
		return T_FAIL;
	snprintf(spec, sizeof(spec), "key=%s", wrong);
	CHECK_OK(t_log_start(&log));
	if (open_with(spec, -EACCES))
		return T_FAIL;
	CHECK(t_log_stop(&log, "authentication failed", &lines) >= 1);

	/* A key file anyone may read is no secret: refused before any connection. */
	if (write_key_file(wrong, "not the secret the nodes were given", 0644))
		return T_FAIL;
	CHECK_OK(t_log_start(&log));
	if (open_with(spec, -EACCES))
		return T_FAIL;
	CHECK(t_log_stop(&log, "readable by others", &lines) >= 1);

	/* No key at all, to nodes that have one. */
	CHECK_OK(unsetenv("UHMM_FABRIC_KEY"));
	CHECK_OK(t_log_start(&log));
	int rc = open_with("", -EACCES);
	t_log_stop(&log, "", &lines);
	CHECK_OK(setenv("UHMM_FABRIC_KEY", right, 1));
	if (rc)
		return T_FAIL;

	/* The right one. */
	if (open_with("", 0) || node_stats(&after))
		return T_FAIL;
	/* The wrong key failed at the node; the missing one at the client, before it sent a proof. */
	CHECK(after.auth_failures >= before.auth_failures + 1);
	unlink(wrong);
	return T_PASS;
}

struct outcome {
	int status;
	bool done;
};

static void record(struct node_op *op, int status, void *arg)
{
	struct outcome *o = arg;

	(void)op;
	o->status = status;
	o->done = true;
}

/* One RMA of a page from n's staging, raw: its status (0 or -errno). */
static int rma(struct fabric_node *n, bool write, uint64_t offset, uint64_t key)
{
	struct node_op *op = node_op_get(n);
	struct outcome o = { 0 };
	ssize_t rc;

	if (!op)
		return -EBUSY;
	op->busy = true;
	n->inflight++;
	do {
		rc = write ? fi_write(n->ep.ep, op->staging, PAGE, n->staging_desc, n->peer,
				      n->raddr + offset, key, &op->ctx)
			   : fi_read(n->ep.ep, op->staging, PAGE, n->staging_desc, n->peer,
				     n->raddr + offset, key, &op->ctx);
		if (rc == -FI_EAGAIN)
			node_poll(n, 0, record, &o);
	} while (rc == -FI_EAGAIN);
	if (rc) {
		op->busy = false;
		n->inflight--;
		return (int)rc;
	}
	for (int i = 0; i < 5000 && !o.done; i++)
		node_poll(n, 1, record, &o);
	return o.done ? o.status : -ETIMEDOUT;
}

/*
 * A client of its own reads a page at @offset with @key (NULL: its own):
 * the status. A refused RMA may take the client's connection down with it,
 * hence a new client each time.
 */
static int read_as_new_client(const uint64_t *key, uint64_t offset, uint64_t *ret_own_key)
{
	struct fabric_node c = { .ctl.fd = -1 };
	uint8_t secret[WIRE_KEY_BYTES];
	char addr[128], err[256];
	int st;

	if (load_right_key(secret) || !first_node(addr, sizeof(addr)) ||
	    node_connect(&c, addr, "tcp", secret, REGION, 5000, err, sizeof(err)))
		return -EPROTO;
	st = rma(&c, false, offset, key ? *key : c.rkey);
	if (!st && !key && c.ops[0].staging[0])
		st = -EBADMSG; /* its own region, never written: zeros */
	if (ret_own_key)
		*ret_own_key = c.rkey;
	node_close(&c);
	return st;
}

static int wrong_mr_key(void)
{
	struct fabric_node a = { .ctl.fd = -1 };
	uint8_t key[WIRE_KEY_BYTES];
	char addr[128], err[256];
	uint64_t a_key, b_key, wrong;
	int st;

	if (load_right_key(key))
		return T_FAIL;
	CHECK(first_node(addr, sizeof(addr)));
	CHECK_EQ(node_connect(&a, addr, "tcp", key, REGION, 5000, err, sizeof(err)), 0);
	a_key = a.rkey;
	memset(a.ops[0].staging, 0xa5, PAGE);
	CHECK_OK(rma(&a, true, 0, a.rkey));

	/* With its own key, another client reaches its own region (zeros), not A's page. */
	CHECK_OK(read_as_new_client(NULL, 0, &b_key));
	/* Keys are random 64-bit numbers, one per region. */
	CHECK(a_key != b_key);
	CHECK((a_key >> 32) || (b_key >> 32));

	/* A key near A's, or made up: refused. */
	wrong = a_key ^ 1;
	st = read_as_new_client(&wrong, 0, NULL);
	t_note("a wrong MR key: %s", fi_strerror(-st));
	CHECK(st < 0 && st != -EPROTO);
	wrong = 0x1234;
	st = read_as_new_client(&wrong, 0, NULL);
	CHECK(st < 0 && st != -EPROTO);
	/* A's own key, past the end of A's region: refused. */
	st = read_as_new_client(&a_key, REGION, NULL);
	t_note("past the region: %s", fi_strerror(-st));
	CHECK(st < 0 && st != -EPROTO);
	/* A's own key, for whoever learnt it: A's page (a key is a capability, kept secret). */
	CHECK_OK(rma(&a, false, 0, a_key));
	CHECK(a.ops[0].staging[0] == (char)0xa5);

	/* A goes away: its region and its key with it. */
	node_close(&a);
	for (int i = 0; i < 100 && !(st = read_as_new_client(&a_key, 0, NULL)); i++)
		usleep(10000);
	t_note("the key of a region whose client left: %s", fi_strerror(-st));
	CHECK(st < 0 && st != -EPROTO);
	return T_PASS;
}

T_MAIN(TEST_CASE(bad_key, T_NO_DEVICES), TEST_CASE(wrong_mr_key, T_NO_DEVICES))
