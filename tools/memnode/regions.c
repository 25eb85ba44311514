// SPDX-License-Identifier: MIT
/*
 * A memory node's regions (regions.h). Each region is a mapping of its own
 * (MAP_NORESERVE: the node's RAM holds only the pages clients wrote), freed
 * with its client; each memory registration carries a random 64-bit key
 * (or the provider's own, FI_MR_PROV_KEY), so a client can reach its
 * regions and nobody else's: an RMA with another key, or beyond the
 * region, fails at the provider.
 *
 * The providers progress data by hand (FI_PROGRESS_MANUAL): one-sided
 * operations aimed at us move only while someone reads our completion
 * queue, so a thread does that (progress_main), under progress_lock: data
 * moves only while it is held.
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "regions.h"

#define SLEEP_MS 100
#define SPIN_NS 2000000ull
#define SHM_NAP_NS 100000

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void drain(struct memnode *n)
{
	struct fi_cq_entry entries[16];
	ssize_t got = fi_cq_read(n->ep.cq, entries, 16);

	if (got == -FI_EAVAIL) {
		struct fi_cq_err_entry e = { 0 };

		fi_cq_readerr(n->ep.cq, &e, 0); /* a target sees none; drain it anyway */
	}
}

/*
 * A region being freed waits for progress_lock; the progress thread would
 * take it back at once, again and again (a mutex is not fair), so it
 * stands aside first.
 */
static void wait_for_frees(struct memnode *n)
{
	while (atomic_load(&n->freeing))
		sched_yield();
}

/*
 * Asleep in fi_cq_sread while nobody uses the node; woken early, there is
 * traffic, and the thread polls for SPIN_NS before it sleeps again: a
 * sleeping target costs every one-sided operation a wake-up (several times
 * the round trip here), a polling one a CPU.
 */
static void *progress_main(void *arg)
{
	struct memnode *n = arg;
	struct fi_cq_entry entries[16];

	/* shm's fi_cq_sread spins instead of sleeping: naps between reads there. */
	bool can_sleep = strncmp(n->ep.provider, "shm", 3);

	while (!atomic_load(&n->stopping)) {
		uint64_t t0 = mono_ns(), until;
		ssize_t got = 0;

		if (!can_sleep) {
			wait_for_frees(n);
			pthread_mutex_lock(&n->progress_lock);
			drain(n);
			pthread_mutex_unlock(&n->progress_lock);
			nanosleep(&(struct timespec){ .tv_nsec = SHM_NAP_NS }, NULL);
			continue;
		}
		wait_for_frees(n);
		pthread_mutex_lock(&n->progress_lock);
		got = fi_cq_sread(n->ep.cq, entries, 16, NULL, SLEEP_MS);
		if (got == -FI_EAVAIL)
			drain(n);
		pthread_mutex_unlock(&n->progress_lock);
		if (mono_ns() - t0 >= (uint64_t)SLEEP_MS * 1000000u)
			continue; /* timed out: still idle */
		until = mono_ns() + SPIN_NS;
		while (mono_ns() < until && !atomic_load(&n->stopping)) {
			wait_for_frees(n);
			pthread_mutex_lock(&n->progress_lock);
			drain(n);
			pthread_mutex_unlock(&n->progress_lock);
		}
	}
	return NULL;
}

int memnode_start(struct memnode *n, const char *provider, const char *host, uint64_t mem_bytes,
		  char *err, size_t errlen)
{
	int rc = fab_open(&n->ep, provider, host, true, err, errlen);

	if (rc)
		return rc;
	n->mem_bytes = mem_bytes;
	n->stats.mem_bytes = mem_bytes;
	pthread_mutex_init(&n->lock, NULL);
	pthread_mutex_init(&n->progress_lock, NULL);
	rc = -pthread_create(&n->progress, NULL, progress_main, n);
	if (rc) {
		snprintf(err, errlen, "progress thread: %s", strerror(-rc));
		fab_close(&n->ep);
	}
	return rc;
}

void memnode_stop(struct memnode *n)
{
	atomic_store(&n->stopping, true);
	pthread_join(n->progress, NULL);
	fab_close(&n->ep);
}

void memnode_count(struct memnode *n, uint64_t *counter, int64_t delta)
{
	pthread_mutex_lock(&n->lock);
	*counter += (uint64_t)delta;
	pthread_mutex_unlock(&n->lock);
}

void memnode_stats(struct memnode *n, struct wire_stats *out)
{
	pthread_mutex_lock(&n->lock);
	*out = n->stats;
	pthread_mutex_unlock(&n->lock);
}

/* Take @bytes from what --mem leaves; false past it. */
static bool reserve(struct memnode *n, uint64_t bytes)
{
	bool ok;

	pthread_mutex_lock(&n->lock);
	ok = bytes <= n->mem_bytes - n->stats.used_bytes;
	if (ok) {
		n->stats.used_bytes += bytes;
		n->stats.regions++;
		n->stats.regions_granted++;
	} else {
		n->stats.refused_nomem++;
	}
	pthread_mutex_unlock(&n->lock);
	return ok;
}

static void unreserve(struct memnode *n, uint64_t bytes, bool granted)
{
	pthread_mutex_lock(&n->lock);
	n->stats.used_bytes -= bytes;
	n->stats.regions--;
	if (granted)
		n->stats.regions_freed++;
	else
		n->stats.regions_granted--;
	pthread_mutex_unlock(&n->lock);
}

static int register_region(struct memnode *n, struct region *r)
{
	uint64_t access = FI_REMOTE_READ | FI_REMOTE_WRITE;
	int err = -FI_EKEYREJECTED;

	/* A random key may collide with a region's of the same domain: pick again. */
	for (int tries = 0; tries < 8 && err; tries++) {
		uint64_t key;

		randombytes_buf(&key, sizeof(key));
		err = fi_mr_reg(n->ep.domain, r->base, r->bytes, access, 0, key, 0, &r->mr, NULL);
		if (err && err != -FI_ENOKEY && err != -FI_EKEYREJECTED)
			break;
	}
	if (!err && (n->ep.mr_mode & FI_MR_ENDPOINT)) {
		err = fi_mr_bind(r->mr, &n->ep.ep->fid, 0);
		if (!err)
			err = fi_mr_enable(r->mr);
		if (err) {
			fi_close(&r->mr->fid);
			r->mr = NULL;
		}
	}
	return err < 0 ? err : err ? -EIO : 0;
}

int region_grant(struct memnode *n, uint64_t bytes, struct region *r, struct wire_region *out)
{
	uint32_t addrlen = sizeof(out->addr);
	int err;

	memset(r, 0, sizeof(*r));
	if (!bytes || bytes % 4096 || bytes > n->mem_bytes)
		return bytes > n->mem_bytes ? -ENOMEM : -EINVAL;
	if (!reserve(n, bytes))
		return -ENOMEM;
	r->bytes = bytes;
	r->base = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (r->base == MAP_FAILED) {
		r->base = NULL;
		unreserve(n, bytes, false);
		return -ENOMEM;
	}
	err = register_region(n, r);
	if (!err)
		err = fab_name(&n->ep, out->addr, &addrlen);
	if (err) {
		if (r->mr)
			fi_close(&r->mr->fid);
		munmap(r->base, bytes);
		unreserve(n, bytes, false);
		memset(r, 0, sizeof(*r));
		return err;
	}
	out->status = 0;
	out->virt_addr = !!(n->ep.mr_mode & FI_MR_VIRT_ADDR);
	out->raddr = out->virt_addr ? (uint64_t)(uintptr_t)r->base : 0;
	out->rkey = fi_mr_key(r->mr);
	out->bytes = bytes;
	snprintf(out->provider, sizeof(out->provider), "%s", n->ep.provider);
	out->addrlen = addrlen;
	return 0;
}

void region_free(struct memnode *n, struct region *r)
{
	if (!r->base)
		return;
	/*
	 * Not while the provider moves data: it looks a key up, then copies
	 * into the region, and a region unmapped in between took the node
	 * down (SIGSEGV in libfabric). Closed first: from here on the key
	 * opens nothing.
	 */
	atomic_fetch_add(&n->freeing, 1);
	pthread_mutex_lock(&n->progress_lock);
	fi_close(&r->mr->fid);
	munmap(r->base, r->bytes);
	pthread_mutex_unlock(&n->progress_lock);
	atomic_fetch_sub(&n->freeing, 1);
	unreserve(n, r->bytes, true);
	memset(r, 0, sizeof(*r));
}
