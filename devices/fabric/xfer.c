// SPDX-License-Identifier: MIT
/*
 * Transfers (fabric.h): descriptors cut into chunks of up to NODE_CHUNK
 * within one placement stripe, every chunk's operations in flight at once
 * on every node, NODE_QD per node.
 *
 * A write goes to the stripe's replica set, and the pages' copies are
 * those that made it: the old ones elsewhere are stale from then on. A
 * read takes the first live node with a good copy; when that node fails,
 * times out or hands back a page that fails its seal, the chunk goes again
 * to the next copy; with none left, those pages fail (the runtime retries,
 * then that one access gets SIGBUS). A node that errs or misses the
 * deadline is dead for good: libfabric has no give-up policy of its own.
 *
 * Completions run callbacks (on_done) that only account: anything to post
 * again is marked RETRY and posted from the main loop, so that a callback
 * never waits for a free operation inside the poll that called it.
 */
#include <assert.h>
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "fabric.h"

#define MAX_XFERS (FABRIC_MAX_NODES * NODE_QD)

enum xfer_state { X_FREE, X_RUNNING, X_RETRY };

struct xfer {
	enum xfer_state state;
	struct hmm_dma_desc *d;
	uint32_t first, npages;             /* pages of d */
	uint8_t tried;                      /* reads: nodes asked already */
	uint8_t ok;                         /* writes: nodes that have it */
	uint8_t pending;                    /* operations in flight */
};

struct run {
	struct fabric_device *f;
	struct xfer xfers[MAX_XFERS];
};

static inline uint64_t x_slot(const struct xfer *x)
{
	return x->d->slot + x->first;
}

static inline char *x_host(const struct xfer *x)
{
	return (char *)x->d->host + (size_t)x->first * HMM_PAGE_SIZE;
}

/* Pages [first, ...) of d did not make it. */
static void desc_fail(struct hmm_dma_desc *d, uint32_t first, int err)
{
	if (first < d->done)
		d->done = first;
	if (!d->status)
		d->status = err;
}

unsigned fabric_wanted(const struct fabric_device *f)
{
	unsigned live = (unsigned)__builtin_popcount(f->alive);

	return live < f->replicas ? live : f->replicas;
}

uint8_t fabric_place(const struct fabric_device *f, uint64_t slot, unsigned want)
{
	unsigned start = (unsigned)((slot / STRIPE_PAGES) % f->nnodes);
	uint8_t set = 0;

	for (unsigned i = 0; i < f->nnodes && want; i++) {
		unsigned n = (start + i) % f->nnodes;

		if (f->alive & (1u << n)) {
			set |= (uint8_t)(1u << n);
			want--;
		}
	}
	return set;
}

static void on_done(struct node_op *op, int status, void *arg);

void fabric_node_died(struct fabric_device *f, struct fabric_node *n, const char *why)
{
	if (!node_declare_dead(n, why, on_done, f))
		return;
	f->alive &= (uint8_t)~(1u << n->index);
	f->degraded = true;
	pthread_cond_signal(&f->restore_wake);
}

void fabric_check_hangups(struct fabric_device *f)
{
	for (unsigned i = 0; i < f->nnodes; i++)
		if ((f->alive & (1u << i)) && node_hung_up(f->nodes[i]))
			fabric_node_died(f, f->nodes[i], "it closed our connection");
}

void fabric_apply_released(struct fabric_device *f)
{
	pthread_mutex_lock(&f->release_lock);
	for (uint64_t s = f->released_lo; s < f->released_hi; s++)
		if (f->released[s / 64] & (1ull << (s % 64))) {
			f->released[s / 64] &= ~(1ull << (s % 64));
			f->slots[s] = 0;
		}
	f->released_lo = f->nslots;
	f->released_hi = 0;
	pthread_mutex_unlock(&f->release_lock);
}

static void finish_write(struct fabric_device *f, struct xfer *x)
{
	uint64_t slot = x_slot(x);

	/* The copies are the ones just written; any others are stale now. */
	for (uint32_t i = 0; i < x->npages; i++)
		f->slots[slot + i] = x->ok;
	if (!x->ok)
		desc_fail(x->d, x->first, -EIO);
	else if ((unsigned)__builtin_popcount(x->ok) < fabric_wanted(f))
		f->degraded = true;
	x->state = X_FREE;
}

/* A read's pages came back: open them into the host pages, or try another copy. */
static void read_arrived(struct fabric_device *f, struct xfer *x, struct node_op *op)
{
	uint64_t slot = x_slot(x);
	char *host = x_host(x);

	if (!f->sealed) {
		memcpy(host, op->staging, (size_t)x->npages * HMM_PAGE_SIZE);
		x->state = X_FREE;
		return;
	}
	for (uint32_t i = 0; i < x->npages; i++) {
		size_t off = (size_t)i * HMM_PAGE_SIZE;

		if (!seal_open_page(&f->seal, slot + i, op->staging + off, host + off))
			continue;
		/* Altered or replayed on the node: that copy is worthless. */
		hmm_device_log(&f->dev, "a page from memory node %s fails its seal: tampered with? "
			       "Reading another copy", op->node->addr);
		f->tampered_pages++;
		for (uint32_t j = 0; j < x->npages; j++)
			f->slots[slot + j] &= (uint16_t)~(1u << op->node->index);
		f->degraded = true;
		x->state = X_RETRY;
		return;
	}
	x->state = X_FREE;
}

static void on_done(struct node_op *op, int status, void *arg)
{
	struct fabric_device *f = arg;
	struct xfer *x = op->owner;
	struct fabric_node *n = op->node;

	if (!x)
		return;
	op->owner = NULL;
	x->pending--;
	if (x->d->dir == HMM_DMA_TO_DEVICE) {
		if (!status)
			x->ok |= (uint8_t)(1u << n->index);
		else
			fabric_node_died(f, n, "a write failed");
		if (!x->pending)
			finish_write(f, x);
		return;
	}
	x->tried |= (uint8_t)(1u << n->index);
	if (!status) {
		read_arrived(f, x, op);
	} else {
		fabric_node_died(f, n, "a read failed");
		x->state = X_RETRY;
	}
}

/*
 * Drive every live node's completions, once. Nodes past their deadline
 * die here. With @wait and nothing done, yield the CPU before the next.
 */
static void pump(struct fabric_device *f, bool wait)
{
	uint64_t now = node_now_ns(), limit = (uint64_t)f->timeout_ms * 1000000u;
	struct fabric_node *busy = NULL;
	int reaped = 0;

	for (unsigned i = 0; i < f->nnodes; i++) {
		struct fabric_node *n = f->nodes[i];
		int got;

		if (!(f->alive & (1u << i)) || !n->inflight)
			continue;
		got = node_poll(n, 0, on_done, f);
		if (got < 0) {
			fabric_node_died(f, n, "its completion queue failed");
			continue;
		}
		reaped += got;
		for (unsigned k = 0; k < NODE_QD && n->inflight; k++)
			if (n->ops[k].busy && now - n->ops[k].posted_ns > limit) {
				fabric_node_died(f, n, "no answer within the deadline");
				break;
			}
		if (!atomic_load(&n->dead) && n->inflight)
			busy = n;
	}
	/*
	 * Nothing yet: poll again, letting others run first. Sleeping in the
	 * provider (fi_cq_sread) costs a wake-up per operation, several times
	 * a loopback round trip here; operations are short, and bounded by
	 * the deadline.
	 */
	if (wait && !reaped && busy)
		sched_yield();
}

/* A free operation on node @n, or NULL once @n is dead. */
static struct node_op *get_op(struct fabric_device *f, struct fabric_node *n)
{
	struct node_op *op;

	while (!(op = node_op_get(n)) && !atomic_load(&n->dead))
		pump(f, true);
	return op;
}

static void post(struct fabric_device *f, struct xfer *x, struct node_op *op, bool write)
{
	int err;

	op->owner = x;
	x->pending++;
	err = node_post(op, write, x_slot(x) * HMM_PAGE_SIZE, (size_t)x->npages * HMM_PAGE_SIZE);
	if (err) {
		op->owner = NULL;
		x->pending--;
		fabric_node_died(f, op->node, "posting an operation failed");
	}
}

/* The chunk's bytes as they leave: sealed once, whatever the number of copies. */
static void fill_staging(struct fabric_device *f, struct xfer *x, char *staging)
{
	if (!f->sealed) {
		memcpy(staging, x_host(x), (size_t)x->npages * HMM_PAGE_SIZE);
		return;
	}
	for (uint32_t i = 0; i < x->npages; i++)
		seal_page(&f->seal, x_slot(x) + i, x_host(x) + (size_t)i * HMM_PAGE_SIZE,
			  staging + (size_t)i * HMM_PAGE_SIZE);
}

static void start_write(struct fabric_device *f, struct xfer *x)
{
	uint8_t targets = fabric_place(f, x_slot(x), fabric_wanted(f));
	const char *filled = NULL;

	x->state = X_RUNNING;
	/*
	 * Ours until every copy is posted: waiting for a free operation on one
	 * node may complete the copy already sent to another, and the chunk
	 * must not be finished with that one copy.
	 */
	x->pending = 1;
	for (unsigned i = 0; i < f->nnodes; i++) {
		struct node_op *op;

		if (!(targets & (1u << i)) || !(op = get_op(f, f->nodes[i])))
			continue;
		if (filled)
			memcpy(op->staging, filled, (size_t)x->npages * HMM_PAGE_SIZE);
		else
			fill_staging(f, x, op->staging);
		filled = op->staging;
		post(f, x, op, true);
	}
	if (!--x->pending)
		finish_write(f, x); /* all done already, or nobody took it (it fails) */
}

static void start_read(struct fabric_device *f, struct xfer *x)
{
	uint64_t slot = x_slot(x);

	x->state = X_RUNNING;
	for (;;) {
		unsigned candidates = f->slots[slot] & f->alive & (uint8_t)~x->tried;
		struct node_op *op;
		unsigned i;

		if (!candidates) {
			f->lost_pages += x->npages;
			hmm_device_log(&f->dev, "no good copy left of %u page(s) at slot %llu: "
				       "that access fails", x->npages, (unsigned long long)slot);
			desc_fail(x->d, x->first, -EIO);
			x->state = X_FREE;
			return;
		}
		i = (unsigned)__builtin_ctz(candidates);
		op = get_op(f, f->nodes[i]);
		if (!op) {
			x->tried |= (uint8_t)(1u << i);
			continue;
		}
		post(f, x, op, false);
		if (x->pending)
			return;
		x->tried |= (uint8_t)(1u << i);
	}
}

static void start_retries(struct run *r)
{
	for (unsigned i = 0; i < MAX_XFERS; i++)
		if (r->xfers[i].state == X_RETRY)
			start_read(r->f, &r->xfers[i]);
}

static struct xfer *alloc_xfer(struct run *r)
{
	for (;;) {
		start_retries(r);
		for (unsigned i = 0; i < MAX_XFERS; i++)
			if (r->xfers[i].state == X_FREE)
				return &r->xfers[i];
		pump(r->f, true);
	}
}

static bool any_active(const struct run *r)
{
	for (unsigned i = 0; i < MAX_XFERS; i++)
		if (r->xfers[i].state != X_FREE)
			return true;
	return false;
}

/* The pages of a read chunk from @first that share their copies (and so their source). */
static uint32_t same_copies(const struct fabric_device *f, uint64_t slot, uint32_t max)
{
	uint32_t n = 1;

	while (n < max && f->slots[slot + n] == f->slots[slot])
		n++;
	return n;
}

static void start_desc(struct run *r, struct hmm_dma_desc *d)
{
	struct fabric_device *f = r->f;
	bool write = d->dir == HMM_DMA_TO_DEVICE;

	for (uint32_t first = 0, np; first < d->npages && first < d->done; first += np) {
		uint64_t slot = d->slot + first;
		struct xfer *x;

		np = d->npages - first;
		if (np > STRIPE_PAGES - slot % STRIPE_PAGES)
			np = (uint32_t)(STRIPE_PAGES - slot % STRIPE_PAGES);
		if (write && !d->host) {
			/* Never populated: zeros, and nothing to send for them. */
			for (uint32_t i = 0; i < np; i++)
				f->slots[slot + i] = SLOT_ZERO;
			continue;
		}
		if (!write) {
			np = same_copies(f, slot, np);
			if (f->slots[slot] & SLOT_ZERO) {
				memset((char *)d->host + (size_t)first * HMM_PAGE_SIZE, 0,
				       (size_t)np * HMM_PAGE_SIZE);
				continue;
			}
		}
		x = alloc_xfer(r);
		*x = (struct xfer){ .d = d, .first = first, .npages = np };
		if (write)
			start_write(f, x);
		else
			start_read(f, x);
	}
}

int fabric_xfer_init(struct fabric_device *f)
{
	f->run = calloc(1, sizeof(struct run));
	return f->run ? 0 : -ENOMEM;
}

void fabric_xfer_fini(struct fabric_device *f)
{
	free(f->run);
	f->run = NULL;
}

int fabric_run(struct fabric_device *f, struct hmm_dma_desc *descs, unsigned n)
{
	struct run *r = f->run;
	int err = 0;

	memset(r, 0, sizeof(*r));
	r->f = f;
	for (unsigned i = 0; i < n; i++) {
		descs[i].status = 0;
		descs[i].done = descs[i].npages;
		if (descs[i].slot + descs[i].npages > f->nslots) {
			desc_fail(&descs[i], 0, -EINVAL);
			continue;
		}
		start_desc(r, &descs[i]);
	}
	while (any_active(r)) {
		start_retries(r);
		pump(f, true);
	}
	/* Nothing of this run is left with a live node: its staging is free. */
	for (unsigned i = 0; i < f->nnodes; i++)
		if (f->alive & (1u << i))
			assert(!f->nodes[i]->inflight);
	for (unsigned i = 0; i < n && !err; i++)
		err = descs[i].status;
	return err;
}
