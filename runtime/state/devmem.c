// SPDX-License-Identifier: MIT
/*
 * Device memory as slots of one page each, handed out in contiguous runs so
 * that a batch moves with one descriptor (and a 2 MiB aligned run can move a
 * whole huge page). For memory the runtime moves pages into with UFFDIO_MOVE,
 * a free slot may still hold a page ("stale"): a move needs an empty target,
 * so those are kept apart until someone empties them. A slot stays marked
 * while a copy uses it (copies do not care), because whoever frees it later
 * may not know it was ever filled; only emptying it clears the mark.
 */
#include <errno.h>
#include <string.h>

#include "state.h"

static inline bool bit(const uint64_t *map, uint64_t i)
{
	return map[i / 64] >> (i % 64) & 1;
}

static inline void set_bits(uint64_t *map, uint64_t first, size_t n, bool on)
{
	for (uint64_t i = first; i < first + n; i++) {
		if (on)
			map[i / 64] |= 1ull << (i % 64);
		else
			map[i / 64] &= ~(1ull << (i % 64));
	}
}

static size_t words(uint64_t nslots)
{
	return (size_t)((nslots + 63) / 64);
}

int devmem_init(struct devmem *m, uint64_t nslots, bool track_stale)
{
	memset(m, 0, sizeof(*m));
	pthread_mutex_init(&m->lock, NULL);
	m->nslots = nslots;
	m->track_stale = track_stale;
	m->used = meta_alloc(words(nslots) * sizeof(uint64_t));
	m->stale = meta_alloc(words(nslots) * sizeof(uint64_t));
	if (!m->used || !m->stale) {
		devmem_destroy(m);
		return -ENOMEM;
	}
	return 0;
}

void devmem_destroy(struct devmem *m)
{
	meta_free(m->used, words(m->nslots) * sizeof(uint64_t));
	meta_free(m->stale, words(m->nslots) * sizeof(uint64_t));
	m->used = m->stale = NULL;
}

static bool usable(const struct devmem *m, uint64_t i, bool clean)
{
	if (bit(m->used, i))
		return false;
	return !clean || !bit(m->stale, i);
}

/* Length of the usable run at first, up to max. */
static size_t run_at(const struct devmem *m, uint64_t first, size_t max, bool clean)
{
	size_t n = 0;

	while (n < max && first + n < m->nslots) {
		uint64_t i = first + n;

		/* A whole free word at once. */
		if (i % 64 == 0 && max - n >= 64 && i + 64 <= m->nslots &&
		    !(m->used[i / 64] | (clean ? m->stale[i / 64] : 0))) {
			n += 64;
			continue;
		}
		if (!usable(m, i, clean))
			break;
		n++;
	}
	return n;
}

/* nstale counts free marked slots: the ones clean_stale can empty. */
static size_t take(struct devmem *m, uint64_t first, size_t n, bool emptying,
		   uint64_t *ret_first)
{
	set_bits(m->used, first, n, true);
	if (m->track_stale) {
		for (uint64_t i = first; i < first + n; i++) {
			if (!bit(m->stale, i))
				continue;
			m->nstale--;
			if (emptying)
				set_bits(m->stale, i, 1, false);
		}
	}
	m->nused += n;
	m->cursor = first + n < m->nslots ? first + n : 0;
	*ret_first = first;
	return n;
}

/* First free slot at or after from whose word is not full, or nslots. */
static uint64_t next_free(const struct devmem *m, uint64_t from, bool clean)
{
	for (uint64_t i = from; i < m->nslots;) {
		uint64_t busy = m->used[i / 64] | (clean ? m->stale[i / 64] : 0);

		if (i % 64 == 0 && busy == ~0ull) {
			i += 64;
			continue;
		}
		if (usable(m, i, clean))
			return i;
		i++;
	}
	return m->nslots;
}

size_t devmem_alloc(struct devmem *m, size_t max, size_t align, bool clean, uint64_t *ret_first)
{
	size_t got = 0;

	if (!max || inject_fire(INJ_DEVMEM_ALLOC))
		return 0;
	if (align > 1 && inject_fire(INJ_DEVMEM_ALLOC_HUGE))
		align = 1;
	lock_acquired(LOCK_DEVMEM);
	pthread_mutex_lock(&m->lock);
	if (m->nused + max > m->nslots)
		max = (size_t)(m->nslots - m->nused);
	if (!max)
		goto out;
	/* An aligned run of the full size first, so huge pages move whole. */
	if (align > 1 && max >= align) {
		for (uint64_t f = 0; f + align <= m->nslots; f += align) {
			if (run_at(m, f, align, clean) == align) {
				got = take(m, f, align, false, ret_first);
				goto out;
			}
		}
	}
	/* Then the first usable run from the cursor, wrapping once. */
	for (int pass = 0; pass < 2 && !got; pass++) {
		uint64_t from = pass ? 0 : m->cursor;
		uint64_t stop = pass ? m->cursor : m->nslots;

		for (uint64_t f = next_free(m, from, clean); f < stop; f = next_free(m, f + 1, clean)) {
			size_t n = run_at(m, f, max, clean);

			if (n) {
				got = take(m, f, n, false, ret_first);
				break;
			}
		}
	}
out:
	pthread_mutex_unlock(&m->lock);
	lock_released(LOCK_DEVMEM);
	return got;
}

void devmem_free(struct devmem *m, uint64_t first, size_t n, bool stale)
{
	lock_acquired(LOCK_DEVMEM);
	pthread_mutex_lock(&m->lock);
	set_bits(m->used, first, n, false);
	m->nused -= n;
	if (m->track_stale) {
		for (uint64_t i = first; i < first + n; i++) {
			if (stale)
				set_bits(m->stale, i, 1, true);
			if (bit(m->stale, i))
				m->nstale++;
		}
	}
	pthread_mutex_unlock(&m->lock);
	lock_released(LOCK_DEVMEM);
}

size_t devmem_take_stale(struct devmem *m, size_t max, uint64_t *ret_first)
{
	size_t got = 0;

	lock_acquired(LOCK_DEVMEM);
	pthread_mutex_lock(&m->lock);
	for (uint64_t i = 0; m->nstale && i < m->nslots && !got; i++) {
		if (bit(m->used, i) || !bit(m->stale, i))
			continue;
		while (got < max && i + got < m->nslots && !bit(m->used, i + got) &&
		       bit(m->stale, i + got))
			got++;
		take(m, i, got, true, ret_first);
	}
	pthread_mutex_unlock(&m->lock);
	lock_released(LOCK_DEVMEM);
	return got;
}

uint64_t devmem_used(struct devmem *m)
{
	uint64_t n;

	lock_acquired(LOCK_DEVMEM);
	pthread_mutex_lock(&m->lock);
	n = m->nused;
	pthread_mutex_unlock(&m->lock);
	lock_released(LOCK_DEVMEM);
	return n;
}
