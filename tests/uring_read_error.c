// SPDX-License-Identifier: MIT
/*
 * Read errors on the way home from the storage tier (UHMM_FAULT's
 * dma_to_host), on both paths a CPU fault takes: a few pages are read on
 * the fault thread (the backend's fetch), a sequential stream's larger
 * window through the DMA queue. A transient error is retried and the access
 * goes on; a lasting one gives that access SIGBUS with one log line, its
 * page stays on the device, intact, and every other page reads back.
 */

#include "harness.h"

#define N NPAGES
#define INTS_PER_PAGE (PAGE / sizeof(int))
#define FETCH_MAX 16        /* the most pages a fault reads on the fault thread (fault.c) */
#define STREAM 31           /* pages 0..30 read in order: windows 1, 2, 4, 8, 16 */

/* Read an int of page i: false if the access got SIGBUS. */
static bool touch(const int *p, size_t i, int *ret)
{
	return t_load_or_sigbus(p + i * INTS_PER_PAGE, ret);
}

/*
 * Page i read with fault injection spec on and the runtime's log captured:
 * the value (*ret), the lines logged and those naming page i's address.
 * -errno if injection or the capture could not be set up.
 */
struct injected_read {
	bool ok;                    /* false: the access got SIGBUS */
	int value;
	size_t lines, naming;
};

static int read_injected(int *p, size_t i, const char *spec, struct injected_read *ret)
{
	char where[32];
	struct t_log log;
	int err = hmm_fault_inject(spec);

	snprintf(where, sizeof(where), "0x%lx", (unsigned long)(p + i * INTS_PER_PAGE));
	if (!err)
		err = t_log_start(&log);
	if (err)
		return err;
	ret->ok = touch(p, i, &ret->value);
	ret->naming = t_log_stop(&log, where, &ret->lines);
	return hmm_fault_inject("off");
}

static int *out_on_device(int base)
{
	int *p = hmm_alloc(N * PAGE);
	size_t pages = 0;

	if (!p)
		return NULL;
	t_fill(p, N * INTS_PER_PAGE, base);
	if (hmm_migrate(p, N * PAGE, dev0, 0, &pages) || pages != N) {
		hmm_free(p);
		return NULL;
	}
	return p;
}

/*
 * Read pages 0..STREAM-1 in order, so that the next fault's window (32
 * pages) is more than the fault thread reads itself: it goes through the
 * DMA queue.
 */
static int stream_up_to_queue(const int *p, int base)
{
	int v;

	for (size_t i = 0; i < STREAM; i++) {
		CHECK(touch(p, i, &v));
		CHECK_EQ(v, (int)(i * INTS_PER_PAGE) + base);
	}
	CHECK_EQ(t_pages_at(p, STREAM, HMM_LOC_HOST), STREAM);
	CHECK_EQ(t_pages_at(p + STREAM * INTS_PER_PAGE, N - STREAM, t_dev_index(dev0)), N - STREAM);
	return T_PASS;
}

/* Pages [from, to) of a t_fill'ed range: the ints that are not what was written. */
static size_t bad_in(const int *p, size_t from, size_t to, int base)
{
	return t_count_bad(p + from * INTS_PER_PAGE, (to - from) * INTS_PER_PAGE,
			   base + (int)(from * INTS_PER_PAGE));
}

/* Everything but page bad reads back; page bad is on the device, and comes home whole. */
static int all_but_one_read_back(int *p, size_t bad, int base)
{
	size_t pages = 0;

	CHECK_EQ(t_loc(p + bad * INTS_PER_PAGE), t_dev_index(dev0));
	CHECK_EQ(bad_in(p, 0, bad, base), 0);
	CHECK_EQ(bad_in(p, bad + 1, N, base), 0);
	CHECK_EQ(t_sigbus, 1);
	CHECK_OK(hmm_migrate(p + bad * INTS_PER_PAGE, PAGE, NULL, 0, &pages));
	CHECK_EQ(pages, 1);
	CHECK_EQ(bad_in(p, bad, bad + 1, base), 0);
	return T_PASS;
}

/* On the fault thread: two failed reads of three. */
static int fetch_transient(void)
{
	int *p = out_on_device(1);
	struct injected_read r;

	CHECK(p);
	CHECK_OK(read_injected(p, 5, "dma_to_host:2", &r));
	CHECK(r.ok);
	CHECK_EQ(r.lines, 0);
	CHECK_EQ(r.value, (int)(5 * INTS_PER_PAGE) + 1);
	/* A window of one page: the fault thread read it. */
	CHECK_EQ(t_pages_at(p, N, HMM_LOC_HOST), 1);
	CHECK_EQ(t_loc(p + 5 * INTS_PER_PAGE), HMM_LOC_HOST);
	CHECK_EQ(t_count_bad(p, N * INTS_PER_PAGE, 1), 0);
	CHECK_EQ(t_sigbus, 0);
	hmm_free(p);
	return T_PASS;
}

static int fetch_persistent(void)
{
	int *p = out_on_device(2);
	struct injected_read r;

	CHECK(p);
	CHECK_OK(read_injected(p, 7, "dma_to_host:always", &r));
	CHECK(!r.ok);
	CHECK_EQ(r.naming, 1);
	CHECK_EQ(r.lines, 1);
	if (all_but_one_read_back(p, 7, 2))
		return T_FAIL;
	hmm_free(p);
	return T_PASS;
}

/* Through the DMA queue: two failed reads of three. */
static int queue_transient(void)
{
	int *p = out_on_device(3);
	struct injected_read r;

	CHECK(p);
	if (stream_up_to_queue(p, 3))
		return T_FAIL;
	CHECK_OK(read_injected(p, STREAM, "dma_to_host:2", &r));
	CHECK(r.ok);
	CHECK_EQ(r.lines, 0);
	CHECK_EQ(r.value, (int)(STREAM * INTS_PER_PAGE) + 3);
	/* One fault brought more than the fault thread reads itself: the queue did. */
	CHECK(t_pages_at(p, N, HMM_LOC_HOST) - STREAM > FETCH_MAX);
	CHECK_EQ(t_count_bad(p, N * INTS_PER_PAGE, 3), 0);
	CHECK_EQ(t_sigbus, 0);
	hmm_free(p);
	return T_PASS;
}

static int queue_persistent(void)
{
	int *p = out_on_device(4);
	struct injected_read r;

	CHECK(p);
	if (stream_up_to_queue(p, 4))
		return T_FAIL;
	CHECK_OK(read_injected(p, STREAM, "dma_to_host:always", &r));
	CHECK(!r.ok);
	CHECK_EQ(r.naming, 1);
	CHECK_EQ(r.lines, 1);
	/* The rest of the window stayed on the device with it. */
	CHECK_EQ(t_pages_at(p, N, HMM_LOC_HOST), STREAM);
	if (all_but_one_read_back(p, STREAM, 4))
		return T_FAIL;
	hmm_free(p);
	return T_PASS;
}

T_MAIN(TEST_CASE(fetch_transient, T_PRIVATE_ONLY),
       TEST_CASE(fetch_persistent, T_PRIVATE_ONLY),
       TEST_CASE(queue_transient, T_PRIVATE_ONLY),
       TEST_CASE(queue_persistent, T_PRIVATE_ONLY))
