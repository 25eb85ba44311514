// SPDX-License-Identifier: MIT
/*
 * Races: migrations in both directions (and across devices) run while the
 * CPU writes, the device writes, both do atomics, the CPU empties pages
 * (madvise), the mapping is unmapped, and the process forks. No write is ever lost, no count is off, nothing
 * hangs or crashes, and all device memory comes back.
 * UHMM_STRESS_MS sets how long each case runs (default 1000).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "harness.h"

#define RP 64                      /* pages under stress */
#define IPP (PAGE / sizeof(int))

static unsigned stress_ms(void)
{
	const char *s = getenv("UHMM_STRESS_MS");

	return s ? (unsigned)atoi(s) : 1000;
}

struct race {
	int *p;
	int *shadow;
	_Atomic bool stop;
	_Atomic int errors;
	size_t npages;
};

static unsigned rnd(unsigned *seed)
{
	return rand_r(seed);
}

/* Bounce random subranges between the devices and the host. */
static void *migrator(void *arg)
{
	struct race *r = arg;
	unsigned seed = (unsigned)pthread_self();

	while (!atomic_load(&r->stop)) {
		size_t a = rnd(&seed) % r->npages, n = 1 + rnd(&seed) % (r->npages - a);
		unsigned pick = rnd(&seed) % 3;
		struct hmm_device *dst = pick == 0 ? NULL : pick == 1 ? dev0 : (dev1 ? dev1 : dev0);
		int err = hmm_migrate((char *)r->p + a * PAGE, n * PAGE, dst, 0, NULL);

		if (err && err != -ENOMEM && err != -EINVAL) {
			fprintf(stderr, "  # migrate: %d\n", err);
			atomic_fetch_add(&r->errors, 1);
		}
	}
	return NULL;
}

struct writer {
	struct race *r;
	unsigned id, of;
	bool device;
};

/* Each writer owns the pages page % of == id: one of them, at random. */
static size_t own_page(const struct writer *wr, unsigned *seed)
{
	return (rnd(seed) % (wr->r->npages / wr->of)) * wr->of + wr->id;
}

/* Writes to its own pages; its shadow is exact. */
static void *writer(void *arg)
{
	struct writer *wr = arg;
	struct race *r = wr->r;
	unsigned seed = wr->id * 7919u + 1;
	int v = 0;

	while (!atomic_load(&r->stop)) {
		size_t page = own_page(wr, &seed);
		size_t i = page * IPP + rnd(&seed) % IPP;

		v++;
		if (wr->device) {
			struct hmm_access acc;
			int err = hmm_device_write(dev0, &r->p[i], sizeof(int), &v, &acc);

			if (err) {
				fprintf(stderr, "  # device write: %d\n", err);
				atomic_fetch_add(&r->errors, 1);
				continue;
			}
		} else {
			r->p[i] = v;
		}
		r->shadow[i] = v;
	}
	return NULL;
}

/*
 * Writes to its own pages, and now and then empties one (MADV_DONTNEED, as
 * an allocator purges a free block) while its data may be on its way home:
 * once madvise returns the page reads zero, however the copy in flight
 * landed, and what is written after it stays.
 */
static void *discarder(void *arg)
{
	struct writer *wr = arg;
	struct race *r = wr->r;
	unsigned seed = wr->id * 7919u + 1;
	int v = 0;

	while (!atomic_load(&r->stop)) {
		size_t page = own_page(wr, &seed);
		int *at = &r->p[page * IPP];

		if (rnd(&seed) % 8) {
			size_t i = rnd(&seed) % IPP;

			at[i] = ++v;
			r->shadow[page * IPP + i] = v;
			continue;
		}
		if (madvise(at, PAGE, MADV_DONTNEED)) {
			atomic_fetch_add(&r->errors, 1);
			continue;
		}
		for (size_t i = 0; i < IPP; i++)
			if (at[i]) {
				fprintf(stderr, "  # page %zu reads %d at int %zu after MADV_DONTNEED\n",
					page, at[i], i);
				atomic_fetch_add(&r->errors, 1);
				break;
			}
		memset(&r->shadow[page * IPP], 0, PAGE);
	}
	return NULL;
}

/*
 * Three threads of fn (the third a device writer if device_writer) on
 * their own pages while the migrator bounces them; the pages end as the
 * shadow says.
 */
static int writes_case(void *(*fn)(void *), bool device_writer, bool after_fork)
{
	struct race r = { .npages = RP };
	struct writer w[3] = { { &r, 0, 3, false }, { &r, 1, 3, false }, { &r, 2, 3, device_writer } };
	pthread_t mt, wt[3];
	pid_t sleeper = 0;
	int status;

	r.p = hmm_alloc(RP * PAGE);
	r.shadow = calloc(RP, PAGE);
	CHECK(r.p && r.shadow);
	memset(r.p, 0, RP * PAGE);
	if (after_fork) {
		/* Pages shared with a child cannot be moved until copy-on-write breaks. */
		sleeper = fork();
		CHECK(sleeper >= 0);
		if (!sleeper) {
			pause();
			_exit(0);
		}
	}
	CHECK_OK(pthread_create(&mt, NULL, migrator, &r));
	for (int i = 0; i < 3; i++)
		CHECK_OK(pthread_create(&wt[i], NULL, fn, &w[i]));
	usleep(stress_ms() * 1000);
	atomic_store(&r.stop, true);
	pthread_join(mt, NULL);
	for (int i = 0; i < 3; i++)
		pthread_join(wt[i], NULL);
	if (sleeper) {
		kill(sleeper, SIGKILL);
		waitpid(sleeper, &status, 0);
	}
	CHECK_EQ(atomic_load(&r.errors), 0);
	for (size_t i = 0; i < RP * IPP; i++)
		if (r.p[i] != r.shadow[i]) {
			t_note("int %zu (page %zu): %d, wrote %d", i, i / IPP, r.p[i], r.shadow[i]);
			return T_FAIL;
		}
	hmm_free(r.p);
	free(r.shadow);
	return T_PASS;
}

static int cpu_writes(void) { return writes_case(writer, false, false); }
static int cpu_writes_after_fork(void) { return writes_case(writer, false, true); }
static int device_writes(void) { return writes_case(writer, true, false); }
static int discards(void) { return writes_case(discarder, false, false); }

#define COUNTERS 32

struct atomics {
	struct race *r;
	uint64_t *c;
	bool device;
	uint64_t added[COUNTERS];
};

static void *adder(void *arg)
{
	struct atomics *a = arg;
	unsigned seed = (unsigned)(uintptr_t)a;

	while (!atomic_load(&a->r->stop)) {
		unsigned k = rnd(&seed) % COUNTERS;

		if (a->device) {
			uint64_t old;
			int err = hmm_device_atomic_add(dev0, &a->c[k * (PAGE / 8) * 2 + k], 1, &old);

			if (err) {
				fprintf(stderr, "  # atomic: %d\n", err);
				atomic_fetch_add(&a->r->errors, 1);
				continue;
			}
		} else {
			__atomic_fetch_add(&a->c[k * (PAGE / 8) * 2 + k], 1, __ATOMIC_SEQ_CST);
		}
		a->added[k]++;
	}
	return NULL;
}

static int atomics(void)
{
	struct race r = { .npages = 2 * COUNTERS };
	struct atomics add[3] = { { .r = &r, .device = true }, { .r = &r, .device = true },
				  { .r = &r, .device = false } };
	pthread_t mt, at[3];

	r.p = hmm_alloc(r.npages * PAGE);
	CHECK(r.p);
	memset(r.p, 0, r.npages * PAGE);
	for (int i = 0; i < 3; i++)
		add[i].c = (uint64_t *)r.p;
	CHECK_OK(pthread_create(&mt, NULL, migrator, &r));
	for (int i = 0; i < 3; i++)
		CHECK_OK(pthread_create(&at[i], NULL, adder, &add[i]));
	usleep(stress_ms() * 1000);
	atomic_store(&r.stop, true);
	pthread_join(mt, NULL);
	for (int i = 0; i < 3; i++)
		pthread_join(at[i], NULL);
	CHECK_EQ(atomic_load(&r.errors), 0);
	for (unsigned k = 0; k < COUNTERS; k++) {
		uint64_t want = add[0].added[k] + add[1].added[k] + add[2].added[k];

		CHECK_EQ(((uint64_t *)r.p)[k * (PAGE / 8) * 2 + k], want);
	}
	hmm_free(r.p);
	return T_PASS;
}

struct unmapper {
	char *p;
	size_t npages;
	unsigned seed;
};

static void *unmap_some(void *arg)
{
	struct unmapper *u = arg;
	size_t a = rand_r(&u->seed) % u->npages, n = 1 + rand_r(&u->seed) % (u->npages - a);

	usleep(rand_r(&u->seed) % 300);
	munmap(u->p + a * PAGE, n * PAGE);
	return NULL;
}

static size_t mem_used(struct hmm_device *d)
{
	struct hmm_device_info info = { .size = sizeof(info) };

	return !d || hmm_device_info(d, &info) ? 0 : info.mem_used;
}

static int unmap_vs_migration(void)
{
	uint64_t end = t_now_ns() + stress_ms() * 1000000ull;
	unsigned seed = 1;

	while (t_now_ns() < end) {
		struct race r = { .npages = RP };
		struct unmapper u = { .npages = RP, .seed = seed++ };
		pthread_t mt, ut;

		r.p = t_map(RP * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
		CHECK(r.p);
		CHECK_OK(hmm_manage(r.p, RP * PAGE));
		memset(r.p, 1, RP * PAGE);
		u.p = (char *)r.p;
		CHECK_OK(pthread_create(&mt, NULL, migrator, &r));
		CHECK_OK(pthread_create(&ut, NULL, unmap_some, &u));
		pthread_join(ut, NULL);
		usleep(200);
		atomic_store(&r.stop, true);
		pthread_join(mt, NULL);
		munmap(r.p, RP * PAGE);
		CHECK_EQ(atomic_load(&r.errors), 0);
	}
	CHECK_EQ(mem_used(dev0), 0);
	CHECK_EQ(mem_used(dev1), 0);
	return T_PASS;
}

static int check_pattern(const int *p, size_t n)
{
	return t_count_bad(p, n, 11) ? 1 : 0;
}

static int fork_vs_migration(void)
{
	struct race r = { .npages = 4 * RP };
	size_t ints = r.npages * IPP;
	pthread_t mt;
	int rc = T_PASS;

	r.p = hmm_alloc(r.npages * PAGE);
	CHECK(r.p);
	t_fill(r.p, ints, 11);
	CHECK_OK(pthread_create(&mt, NULL, migrator, &r));
	for (int i = 0; i < 20; i++) {
		int status = 0;
		pid_t pid = fork();

		if (pid < 0) {
			t_fail(__FILE__, __LINE__, "pid >= 0", NULL);
			rc = T_FAIL;
			break;
		}
		if (!pid)
			_exit(check_pattern(r.p, ints));
		if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
		    WEXITSTATUS(status) != 0) {
			t_note("fork %d: child status %#x", i, status);
			rc = T_FAIL;
			break;
		}
		usleep(stress_ms() * 1000 / 20);
	}
	/* Stop the migrator before any return: it uses r, on this stack. */
	atomic_store(&r.stop, true);
	pthread_join(mt, NULL);
	if (rc != T_PASS)
		return rc;
	CHECK_EQ(atomic_load(&r.errors), 0);
	CHECK_EQ(check_pattern(r.p, ints), 0);
	hmm_free(r.p);
	return T_PASS;
}

T_MAIN(TEST_CASE(cpu_writes, T_TWO_DEVICES),
       TEST_CASE(cpu_writes_after_fork, T_TWO_DEVICES),
       TEST_CASE(device_writes, T_TWO_DEVICES),
       TEST_CASE(atomics, T_TWO_DEVICES),
       TEST_CASE(discards, T_TWO_DEVICES),
       TEST_CASE(unmap_vs_migration, T_TWO_DEVICES),
       TEST_CASE(fork_vs_migration, T_TWO_DEVICES))
