/* SPDX-License-Identifier: MIT */
/*
 * A memory node's memory: regions handed to clients, each its own mapping
 * registered with libfabric under a key nobody can guess, and the
 * accounting against --mem.
 */
#ifndef UHMM_MEMNODE_REGIONS_H
#define UHMM_MEMNODE_REGIONS_H

#include <pthread.h>
#include <stdatomic.h>

#include "endpoint.h"
#include "wire.h"

struct memnode {
	struct fab_endpoint ep;
	uint64_t mem_bytes;
	pthread_mutex_t lock;               /* the counters below */
	struct wire_stats stats;
	pthread_t progress;
	pthread_mutex_t progress_lock;      /* held while the provider progresses: data moves */
	_Atomic unsigned freeing;           /* regions waiting for progress_lock */
	_Atomic bool stopping;
};

struct region {
	void *base;
	uint64_t bytes;
	struct fid_mr *mr;
};

int memnode_start(struct memnode *n, const char *provider, const char *host, uint64_t mem_bytes,
		  char *err, size_t errlen);
void memnode_stop(struct memnode *n);

/*
 * region_grant() - a region of @bytes for one client, described in @out for
 * the wire. Return: 0, -ENOMEM past --mem, -EINVAL, -errno.
 */
int region_grant(struct memnode *n, uint64_t bytes, struct region *r, struct wire_region *out);
/* The client went away: its region, and what its key opened, are gone. */
void region_free(struct memnode *n, struct region *r);

void memnode_stats(struct memnode *n, struct wire_stats *out);
void memnode_count(struct memnode *n, uint64_t *counter, int64_t delta);

#endif /* UHMM_MEMNODE_REGIONS_H */
