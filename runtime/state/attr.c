// SPDX-License-Identifier: MIT
/*
 * Interval advice: a preferred location and the devices that access a span
 * keep their meaning for every page in it, even pages that did not exist
 * yet when the advice was given (cudaMemAdvise and AMD's SVM attributes are
 * the models). A range keeps a short sorted list of intervals with
 * non-default advice; changes cut it at the boundaries and merge it again.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "state.h"

static const struct attr default_attr = { .preferred = PREF_NONE };

const struct attr *attr_at(const struct range *r, uintptr_t addr)
{
	for (unsigned i = 0; i < r->nattrs; i++)
		if (r->attrs[i].start <= addr && addr < r->attrs[i].end)
			return &r->attrs[i];
	return &default_attr;
}

int attr_preferred(const struct range *r, uintptr_t addr)
{
	return attr_at(r, addr)->preferred;
}

uint32_t attr_accessed_by(const struct range *r, uintptr_t addr)
{
	return attr_at(r, addr)->accessed_by;
}

static int cmp_addr(const void *a, const void *b)
{
	uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * Change the advice of [s, e): cut the range at every interval boundary,
 * apply the change inside [s, e), and keep only non-default pieces, merged.
 */
int attr_apply(struct range *r, uintptr_t s, uintptr_t e, const struct attr_change *ch)
{
	bool set_preferred = ch->set_preferred;
	int preferred = ch->preferred;
	uint32_t ab_set = ch->accessed_by_set, ab_clear = ch->accessed_by_clear;
	size_t npts = 0, cap = 2 * (size_t)r->nattrs + 2;
	uintptr_t *pts = meta_alloc(cap * sizeof(*pts));
	struct attr *out;
	unsigned nout = 0;

	/* Nothing to split when the range has no advice and none is added. */
	if (!r->nattrs && !ab_set && (!set_preferred || preferred == PREF_NONE)) {
		meta_free(pts, cap * sizeof(*pts));
		return 0;
	}
	out = meta_alloc((cap + 1) * sizeof(*out));
	if (!pts || !out) {
		meta_free(pts, cap * sizeof(*pts));
		meta_free(out, (cap + 1) * sizeof(*out));
		return -ENOMEM;
	}
	pts[npts++] = s;
	pts[npts++] = e;
	for (unsigned i = 0; i < r->nattrs; i++) {
		pts[npts++] = r->attrs[i].start;
		pts[npts++] = r->attrs[i].end;
	}
	qsort(pts, npts, sizeof(*pts), cmp_addr);
	for (size_t i = 0; i + 1 < npts; i++) {
		uintptr_t p = pts[i], q = pts[i + 1];
		struct attr a;

		if (p == q)
			continue;
		a = *attr_at(r, p);
		a.start = p;
		a.end = q;
		if (p >= s && q <= e) {
			if (set_preferred)
				a.preferred = preferred;
			a.accessed_by = (a.accessed_by | ab_set) & ~ab_clear;
		}
		if (a.preferred == PREF_NONE && !a.accessed_by)
			continue;
		if (nout && out[nout - 1].end == p && out[nout - 1].preferred == a.preferred &&
		    out[nout - 1].accessed_by == a.accessed_by)
			out[nout - 1].end = q;
		else
			out[nout++] = a;
	}
	meta_free(pts, cap * sizeof(*pts));
	meta_free(r->attrs, r->nattrs * sizeof(*r->attrs));
	r->attrs = NULL;
	r->nattrs = 0;
	if (nout) {
		r->attrs = meta_alloc(nout * sizeof(*out));
		if (!r->attrs) {
			meta_free(out, (cap + 1) * sizeof(*out));
			return -ENOMEM;
		}
		memcpy(r->attrs, out, nout * sizeof(*out));
		r->nattrs = nout;
	}
	meta_free(out, (cap + 1) * sizeof(*out));
	return 0;
}

void attr_copy_out(const struct range *r, uintptr_t start, uintptr_t end, struct attr **ret,
		   unsigned *ret_n)
{
	unsigned n = 0;

	*ret = NULL;
	*ret_n = 0;
	for (unsigned i = 0; i < r->nattrs; i++)
		if (r->attrs[i].start < end && r->attrs[i].end > start)
			n++;
	if (!n || !(*ret = meta_alloc(n * sizeof(**ret))))
		return;
	n = 0;
	for (unsigned i = 0; i < r->nattrs; i++) {
		if (r->attrs[i].start < end && r->attrs[i].end > start) {
			(*ret)[n] = r->attrs[i];
			(*ret)[n].start = MAX(start, r->attrs[i].start);
			(*ret)[n].end = MIN(end, r->attrs[i].end);
			n++;
		}
	}
	*ret_n = n;
}

int attr_clear(struct range *r, uintptr_t start, uintptr_t end)
{
	return attr_apply(r, start, end, &(struct attr_change){
		.set_preferred = true,
		.preferred = PREF_NONE,
		.accessed_by_clear = ~0u,
	});
}

/* The child of fork has no devices: advice naming one is void there. */
void attr_fork_child(struct range *r)
{
	for (unsigned a = 0; a < r->nattrs; a++) {
		r->attrs[a].accessed_by = 0;
		if (r->attrs[a].preferred >= 0)
			r->attrs[a].preferred = PREF_NONE;
	}
}
