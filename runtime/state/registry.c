// SPDX-License-Identifier: MIT
/*
 * Managed ranges and the state word of every managed page.
 *
 * A range covers a span of private anonymous memory. An armed range is
 * registered with our userfaultfd (missing and write-protect modes). A lazy
 * one (the transparent mode's heap and mappings) is not, until a page of it
 * is about to leave the host: until then the program runs at native speed
 * (first touches are the kernel's, huge pages included), and the wrappers in
 * intercept.c keep its entry up to date, since no userfaultfd event will.
 * Ranges are few and large;
 * they sit in an array sorted by address. Pages that stop being managed
 * inside a range (partial munmap, hmm_unmanage) become holes (PW_UNMAPPED)
 * rather than splitting the range, so nobody's view of a range ever moves
 * under reg.lock; holes at either end are trimmed, and an all-hole range
 * is freed.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "state.h"

struct registry reg = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.changed = PTHREAD_COND_INITIALIZER,
};

#define REG_MODE (UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP)

void reg_lock(void)
{
	lock_acquired(LOCK_REG);
	pthread_mutex_lock(&reg.lock);
}

void reg_unlock(void)
{
	pthread_mutex_unlock(&reg.lock);
	lock_released(LOCK_REG);
}

void reg_wait_changed(void)
{
	reg_assert_locked();
	pthread_cond_wait(&reg.changed, &reg.lock);
}

void reg_broadcast(void)
{
	pthread_cond_broadcast(&reg.changed);
}

/* Index of the first range whose end is above addr. */
static size_t first_above(uintptr_t addr)
{
	size_t lo = 0, hi = reg.n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (reg.v[mid]->end <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

struct range *reg_lookup(uintptr_t addr)
{
	size_t i;

	reg_assert_locked();
	i = first_above(addr);

	if (i < reg.n && reg.v[i]->start <= addr)
		return reg.v[i];
	return NULL;
}

uint64_t *reg_word(uintptr_t addr, struct range **ret_r)
{
	struct range *r = reg_lookup(addr);
	uint64_t *w;

	if (!r)
		return NULL;
	w = &r->pages[range_index(r, addr)];
	if (*w & PW_UNMAPPED)
		return NULL;
	if (ret_r)
		*ret_r = r;
	return w;
}

int reg_for_each(uintptr_t start, uintptr_t end,
		 int (*fn)(struct range *r, uintptr_t s, uintptr_t e, void *arg), void *arg)
{
	for (size_t i = first_above(start); i < reg.n && reg.v[i]->start < end; i++) {
		struct range *r = reg.v[i];
		int err = fn(r, MAX(start, r->start), MIN(end, r->end), arg);

		if (err)
			return err;
	}
	return 0;
}

bool reg_overlaps(uintptr_t start, uintptr_t end)
{
	for (size_t i = first_above(start); i < reg.n && reg.v[i]->start < end; i++) {
		struct range *r = reg.v[i];
		uintptr_t s = MAX(start, r->start), e = MIN(end, r->end);

		for (uintptr_t a = s; a < e; a += PAGE_SIZE)
			if (!(r->pages[range_index(r, a)] & PW_UNMAPPED))
				return true;
	}
	return false;
}

bool reg_covers(uintptr_t start, uintptr_t end)
{
	for (uintptr_t a = start; a < end;) {
		struct range *r = reg_lookup(a);

		if (!r)
			return false;
		for (; a < end && a < r->end; a += PAGE_SIZE)
			if (r->pages[range_index(r, a)] & PW_UNMAPPED)
				return false;
	}
	return true;
}

static int insert_range(struct range *r)
{
	size_t i = first_above(r->start);

	if (reg.n == reg.cap) {
		size_t cap = reg.cap ? reg.cap * 2 : 16;
		struct range **v = meta_realloc(reg.v, reg.cap * sizeof(*v), cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		reg.v = v;
		reg.cap = cap;
	}
	memmove(&reg.v[i + 1], &reg.v[i], (reg.n - i) * sizeof(*reg.v));
	reg.v[i] = r;
	reg.n++;
	return 0;
}

static void free_range(struct range *r)
{
	meta_free(r->pages_base, r->pages_bytes);
	meta_free(r->attrs, r->nattrs * sizeof(*r->attrs));
	meta_free(r, sizeof(*r));
}

static void drop_range(struct range *r)
{
	for (size_t i = 0; i < reg.n; i++) {
		if (reg.v[i] == r) {
			memmove(&reg.v[i], &reg.v[i + 1], (reg.n - i - 1) * sizeof(*reg.v));
			reg.n--;
			break;
		}
	}
	free_range(r);
}

static struct range *new_range(uintptr_t start, uintptr_t end, const uint64_t *words)
{
	size_t npages = (end - start) >> PAGE_SHIFT;
	struct range *r = meta_alloc(sizeof(*r));

	if (!r)
		return NULL;
	r->pages_bytes = npages * sizeof(uint64_t);
	r->pages_base = meta_alloc(r->pages_bytes);
	if (!r->pages_base) {
		meta_free(r, sizeof(*r));
		return NULL;
	}
	r->pages = r->pages_base;
	r->start = start;
	r->end = end;
	if (words)
		pages_init(r->pages, words, npages);
	return r;
}

static int register_span(const struct range *r, uintptr_t start, uintptr_t end)
{
	if (!reg.registered || !r->armed)
		return 0;
	return uffd_register(start, end - start, REG_MODE);
}

/* Register every run of r that is not a hole. */
static void register_range(struct range *r)
{
	uintptr_t run = 0;

	for (uintptr_t a = r->start; a <= r->end; a += PAGE_SIZE) {
		bool hole = a == r->end || (r->pages[range_index(r, a)] & PW_UNMAPPED);

		if (!hole && !run)
			run = a;
		if (hole && run) {
			int err = register_span(r, run, a);

			if (err && err != -ENOMEM) {
				/* The mapping changed while we were not looking. */
				log_warn("cannot manage 0x%lx-0x%lx: %d", (unsigned long)run,
					 (unsigned long)a, err);
			}
			run = 0;
		}
	}
}

static void arm(struct range *r)
{
	if (r->armed)
		return;
	r->armed = true;
	register_range(r);
}

void reg_arm(uintptr_t start, uintptr_t end)
{
	for (size_t i = first_above(start); i < reg.n && reg.v[i]->start < end; i++)
		arm(reg.v[i]);
}

/*
 * Manage [a, b), all of it mapped private anonymous memory: holes of
 * existing ranges come back to life, gaps between ranges become new ranges.
 * words (optional, indexed from start) gives their state.
 */
static int add_mapped(uintptr_t a, uintptr_t b, uintptr_t start, const uint64_t *words,
		      bool armed, struct range **ret)
{
	uintptr_t at = a;

	while (at < b) {
		size_t i = first_above(at);
		struct range *r = i < reg.n ? reg.v[i] : NULL;
		uintptr_t stop;

		if (r && r->start <= at) {
			int err;

			stop = MIN(b, r->end);
			if (armed && !r->armed)
				arm(r);
			err = register_span(r, at, stop);
			if (err)
				return err;
			for (uintptr_t p = at; p < stop; p += PAGE_SIZE) {
				uint64_t *w = &r->pages[range_index(r, p)];

				if (*w & PW_UNMAPPED) {
					page_adopt(w, words ? words[(p - start) >> PAGE_SHIFT] : 0);
					reg.managed_pages++;
				}
			}
			if (words)
				range_note_offhost(r, at, stop);
		} else {
			struct range *nr;
			int err;

			stop = r ? MIN(b, r->start) : b;
			nr = new_range(at, stop, words ? words + ((at - start) >> PAGE_SHIFT) : NULL);
			if (!nr)
				return -ENOMEM;
			nr->armed = armed;
			err = register_span(nr, at, stop);
			if (!err && insert_range(nr))
				err = -ENOMEM;
			if (err) {
				free_range(nr);
				return err;
			}
			reg.managed_pages += (stop - at) >> PAGE_SHIFT;
			r = nr;
			if (words)
				range_note_offhost(r, at, stop);
		}
		if (ret && !*ret)
			*ret = r;
		at = stop;
	}
	return 0;
}

struct add_walk {
	uintptr_t start;
	const uint64_t *words;
	bool armed;
	struct range **ret;
};

static int add_piece(const struct vma *v, uintptr_t s, uintptr_t e, void *arg)
{
	struct add_walk *aw = arg;

	/* What is not mapped private anonymous memory now is not ours to add. */
	if (!v || !vma_private_anon(v))
		return 0;
	return add_mapped(s, e, aw->start, aw->words, aw->armed, aw->ret);
}

/*
 * The mapping is checked here, under reg.lock, not trusted from the caller's
 * earlier look: a page unmapped since then must not come back as managed
 * (a later mapping there would be taken for ours). An unmap that races this
 * call still reaches us as an event, after it.
 */
static int add_span(uintptr_t start, uintptr_t end, const uint64_t *words, bool armed,
		    struct range **ret)
{
	struct add_walk aw = { start, words, armed, ret };

	if (ret)
		*ret = NULL;
	return vma_walk(start, end, add_piece, &aw);
}

int reg_add(uintptr_t start, uintptr_t end, struct range **ret)
{
	if (reg_foreign(start, end))
		return -EINVAL;
	return add_span(start, end, NULL, true, ret);
}

/*
 * Under a host limit nothing is lazy: the limit is held by seeing every
 * first touch (engine/pager.c), which a lazy range's are not.
 */
int reg_add_lazy(uintptr_t start, uintptr_t end)
{
	if (reg_foreign(start, end))
		return -EINVAL;
	return add_span(start, end, NULL, opt.host_limit != 0, NULL);
}

/*
 * Lazily, and whatever is mapped there now: the caller is about to move
 * registered anonymous memory over [start, end) (a private file mapping,
 * which cannot be registered), and claims its pages first so that the
 * faults that follow park until it fills them.
 */
int reg_add_ahead(uintptr_t start, uintptr_t end)
{
	if (reg_foreign(start, end))
		return -EINVAL;
	return add_mapped(start, end, start, NULL, false, NULL);
}

int reg_insert_words(uintptr_t start, const uint64_t *words, size_t npages,
		     const struct attr *attrs, unsigned nattrs)
{
	uintptr_t end = start + npages * PAGE_SIZE;
	struct range *r = NULL;
	int err = add_span(start, end, words, true, &r);

	for (unsigned i = 0; !err && i < nattrs; i++) {
		uintptr_t s = MAX(attrs[i].start, start), e = MIN(attrs[i].end, end);

		for (uintptr_t a = s; a < e;) {
			struct range *t = reg_lookup(a);
			uintptr_t stop;

			if (!t) {
				a += PAGE_SIZE; /* not added: no longer mapped */
				continue;
			}
			stop = MIN(e, t->end);
			attr_apply(t, a, stop, &(struct attr_change){
				.set_preferred = true,
				.preferred = attrs[i].preferred,
				.accessed_by_set = attrs[i].accessed_by,
			});
			a = stop;
		}
	}
	return err;
}

/* Give back holes at either end; free a range that is all hole. */
static void trim(struct range *r)
{
	while (r->start < r->end && (r->pages[0] & PW_UNMAPPED)) {
		r->pages++;
		r->start += PAGE_SIZE;
	}
	while (r->end > r->start && (r->pages[range_index(r, r->end - PAGE_SIZE)] & PW_UNMAPPED))
		r->end -= PAGE_SIZE;
	if (r->start == r->end)
		drop_range(r);
}

void reg_mark_unmapped(uintptr_t start, uintptr_t end)
{
	size_t i = first_above(start);

	while (i < reg.n && reg.v[i]->start < end) {
		struct range *r = reg.v[i];
		uintptr_t s = MAX(start, r->start), e = MIN(end, r->end);
		size_t before = reg.n;

		for (uintptr_t a = s; a < e; a += PAGE_SIZE) {
			uint64_t *w = &r->pages[range_index(r, a)];

			if (!(*w & PW_UNMAPPED)) {
				page_unmap(w);
				reg.managed_pages--;
			}
		}
		attr_clear(r, s, e);
		trim(r);
		if (reg.n == before)
			i++;
	}
}

int reg_remove(uintptr_t start, uintptr_t end)
{
	for (size_t i = first_above(start); reg.registered && i < reg.n && reg.v[i]->start < end; i++) {
		struct range *r = reg.v[i];
		int err;

		if (!r->armed)
			continue;
		err = uffd_unregister(MAX(start, r->start), MIN(end, r->end) - MAX(start, r->start));
		if (err && err != -ENOENT)
			return err;
	}
	reg_mark_unmapped(start, end);
	return 0;
}

void reg_forget_lazy(uintptr_t start, uintptr_t end)
{
	size_t i = first_above(start);

	while (i < reg.n && reg.v[i]->start < end) {
		struct range *r = reg.v[i];
		size_t before = reg.n;

		if (!r->armed)
			reg_mark_unmapped(MAX(start, r->start), MIN(end, r->end));
		if (reg.n == before)
			i++;
	}
}

bool reg_lazy(uintptr_t start, uintptr_t end)
{
	for (size_t i = first_above(start); i < reg.n && reg.v[i]->start < end; i++)
		if (!reg.v[i]->armed)
			return true;
	return false;
}

int reg_extend(uintptr_t old_end, uintptr_t new_end)
{
	struct range *r = reg_lookup(old_end - PAGE_SIZE);
	size_t off, npages, bytes;
	uint64_t *base;
	int err;

	if (!r || r->end != old_end || reg_lookup(old_end))
		return add_span(old_end, new_end, NULL, r ? r->armed : true, NULL);
	err = register_span(r, old_end, new_end);
	if (err)
		return err;
	off = (size_t)(r->pages - r->pages_base);
	npages = (new_end - r->start) >> PAGE_SHIFT;
	bytes = (off + npages) * sizeof(uint64_t);
	if (bytes > r->pages_bytes) {
		base = meta_realloc(r->pages_base, r->pages_bytes, bytes);
		if (!base)
			return -ENOMEM;
		r->pages_base = base;
		r->pages = base + off;
		r->pages_bytes = bytes;
	}
	pages_init(&r->pages[range_index(r, old_end)], NULL, (new_end - old_end) >> PAGE_SHIFT);
	reg.managed_pages += (new_end - old_end) >> PAGE_SHIFT;
	r->end = new_end;
	return 0;
}

int reg_register_all(void)
{
	/*
	 * With user-mode faults only, a registered page the kernel touches
	 * (read(2) into a fresh buffer) would fail with EFAULT: register
	 * nothing, and keep every page on the host.
	 */
	if (!uffd.kernel_faults)
		return 0;
	reg.registered = true;
	for (size_t i = 0; i < reg.n; i++)
		register_range(reg.v[i]);
	return 0;
}

void reg_forget_registration(void)
{
	reg.registered = false;
}

void reg_fence_add(struct fence *f, uintptr_t start, uintptr_t end)
{
	f->start = start;
	f->end = end;
	f->next = reg.fences;
	reg.fences = f;
}

void reg_fence_remove(struct fence *f)
{
	for (struct fence **p = &reg.fences; *p; p = &(*p)->next) {
		if (*p == f) {
			*p = f->next;
			break;
		}
	}
	reg_broadcast();
	kick(); /* faults parked on the fence */
}

bool reg_fenced(uintptr_t start, uintptr_t end)
{
	for (struct fence *f = reg.fences; f; f = f->next)
		if (f->start < end && f->end > start)
			return true;
	return false;
}

static bool any_busy(uintptr_t start, uintptr_t end)
{
	for (size_t i = first_above(start); i < reg.n && reg.v[i]->start < end; i++) {
		struct range *r = reg.v[i];

		for (uintptr_t a = MAX(start, r->start); a < MIN(end, r->end); a += PAGE_SIZE)
			if (r->pages[range_index(r, a)] & PW_BUSY)
				return true;
	}
	return false;
}

void reg_wait_quiet(uintptr_t start, uintptr_t end, bool ignore_fences)
{
	while ((!ignore_fences && reg_fenced(start, end)) || any_busy(start, end))
		reg_wait_changed();
}

/* The child of fork holds no device state and no registration. */
void reg_fork_child(void)
{
	pthread_mutex_init(&reg.lock, NULL);
	pthread_cond_init(&reg.changed, NULL);
	reg.registered = false;
	reg.fences = NULL;
	for (size_t i = 0; i < reg.n; i++) {
		struct range *r = reg.v[i];

		/* Nothing of the child's is anywhere but home: lazy until used. */
		r->armed = false;
		r->off_lo = r->off_hi = 0;

		for (size_t p = 0; p < (size_t)((r->end - r->start) >> PAGE_SHIFT); p++)
			page_fork_child(&r->pages[p]);
		attr_fork_child(r);
	}
}

/* Set once, from inside the process's first malloc: no lock may be taken there. */
static void (*_Atomic catch_up)(void);

static bool (*_Atomic foreign)(uintptr_t start, uintptr_t end);

void reg_set_foreign(bool (*fn)(uintptr_t start, uintptr_t end))
{
	atomic_store(&foreign, fn);
}

bool reg_foreign(uintptr_t start, uintptr_t end)
{
	bool (*fn)(uintptr_t, uintptr_t) = atomic_load_explicit(&foreign, memory_order_acquire);

	return fn && fn(start, end);
}

void reg_set_catch_up(void (*fn)(void))
{
	atomic_store(&catch_up, fn);
}

void reg_catch_up(void)
{
	void (*fn)(void) = atomic_load_explicit(&catch_up, memory_order_acquire);

	reg_assert_locked();
	if (fn)
		fn();
}

/* A copy of the ranges' extents, for walks that must not hold reg.lock. */
int reg_snapshot(struct span **ret, size_t *ret_n)
{
	struct span *v = NULL;

	*ret = NULL;
	*ret_n = 0;
	if (reg.n && !(v = meta_alloc(reg.n * sizeof(*v))))
		return -ENOMEM;
	for (size_t i = 0; i < reg.n; i++)
		v[i] = (struct span){ reg.v[i]->start, reg.v[i]->end };
	*ret = v;
	*ret_n = reg.n;
	return 0;
}
