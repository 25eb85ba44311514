// SPDX-License-Identifier: MIT
/*
 * Read errors on the way home from the storage tier (UHMM_FAULT's
 * dma_to_host), on both paths a CPU fault takes: a few pages are read on
 * the fault thread (the backend's fetch), a sequential stream's larger
 * window through the DMA queue. A transient error is retried and the access
 * goes on; a lasting one gives that access SIGBUS with one log line, its
 * page stays on the device, intact, and every other page reads back.
 */
#include <setjmp.h>
#include <signal.h>

#include "harness.h"

#define N NPAGES
#define INTS_PER_PAGE (PAGE / sizeof(int))
#define FETCH_MAX 16        /* the most pages a fault reads on the fault thread (fault.c) */
#define STREAM 31           /* pages 0..30 read in order: windows 1, 2, 4, 8, 16 */

static sigjmp_buf jb;
static volatile sig_atomic_t sigbus;

static void on_sigbus(int sig)
{
	(void)sig;
	sigbus++;
	siglongjmp(jb, 1);
}

/* Read an int of page i under a SIGBUS handler: false if the access got SIGBUS. */
static bool touch(const int *p, size_t i, int *ret)
{
	struct sigaction sa = { .sa_handler = on_sigbus }, old;
	bool ok = false;

	sigaction(SIGBUS, &sa, &old);
	if (!sigsetjmp(jb, 1)) {
		*ret = *(volatile const int *)(p + i * INTS_PER_PAGE);
		ok = true;
	}
	sigaction(SIGBUS, &old, NULL);
	return ok;
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
	CHECK_EQ(sigbus, 1);
	CHECK_OK(hmm_migrate(p + bad * INTS_PER_PAGE, PAGE, NULL, 0, &pages));
	CHECK_EQ(pages, 1);
	CHECK_EQ(bad_in(p, bad, bad + 1, base), 0);
	return T_PASS;
}

/* On the fault thread: two failed reads of three. */
static int fetch_transient(void)
{
	int *p = out_on_device(1), v = 0;
	struct t_log log;
	size_t lines;
	bool ok;

	CHECK(p);
	CHECK_OK(hmm_fault_inject("dma_to_host:2"));
	CHECK_OK(t_log_start(&log));
	ok = touch(p, 5, &v);
	t_log_stop(&log, "", &lines);
	CHECK(ok);
	CHECK_EQ(lines, 0);
	CHECK_EQ(v, (int)(5 * INTS_PER_PAGE) + 1);
	/* A window of one page: the fault thread read it. */
	CHECK_EQ(t_pages_at(p, N, HMM_LOC_HOST), 1);
	CHECK_EQ(t_loc(p + 5 * INTS_PER_PAGE), HMM_LOC_HOST);
	CHECK_OK(hmm_fault_inject("off"));
	CHECK_EQ(t_count_bad(p, N * INTS_PER_PAGE, 1), 0);
	CHECK_EQ(sigbus, 0);
	hmm_free(p);
	return T_PASS;
}

static int fetch_persistent(void)
{
	int *p = out_on_device(2), v = 0;
	struct t_log log;
	char where[32];
	size_t lines, logged;
	bool ok;

	CHECK(p);
	snprintf(where, sizeof(where), "0x%lx", (unsigned long)(p + 7 * INTS_PER_PAGE));
	CHECK_OK(hmm_fault_inject("dma_to_host:always"));
	CHECK_OK(t_log_start(&log));
	ok = touch(p, 7, &v);
	logged = t_log_stop(&log, where, &lines);
	CHECK_OK(hmm_fault_inject("off"));
	CHECK(!ok);
	CHECK_EQ(logged, 1);
	CHECK_EQ(lines, 1);
	if (all_but_one_read_back(p, 7, 2))
		return T_FAIL;
	hmm_free(p);
	return T_PASS;
}

/* Through the DMA queue: two failed reads of three. */
static int queue_transient(void)
{
	int *p = out_on_device(3), v = 0;
	struct t_log log;
	size_t lines;
	bool ok;

	CHECK(p);
	if (stream_up_to_queue(p, 3))
		return T_FAIL;
	CHECK_OK(hmm_fault_inject("dma_to_host:2"));
	CHECK_OK(t_log_start(&log));
	ok = touch(p, STREAM, &v);
	t_log_stop(&log, "", &lines);
	CHECK(ok);
	CHECK_EQ(lines, 0);
	CHECK_EQ(v, (int)(STREAM * INTS_PER_PAGE) + 3);
	/* One fault brought more than the fault thread reads itself: the queue did. */
	CHECK(t_pages_at(p, N, HMM_LOC_HOST) - STREAM > FETCH_MAX);
	CHECK_OK(hmm_fault_inject("off"));
	CHECK_EQ(t_count_bad(p, N * INTS_PER_PAGE, 3), 0);
	CHECK_EQ(sigbus, 0);
	hmm_free(p);
	return T_PASS;
}

static int queue_persistent(void)
{
	int *p = out_on_device(4), v = 0;
	struct t_log log;
	char where[32];
	size_t lines, logged;
	bool ok;

	CHECK(p);
	if (stream_up_to_queue(p, 4))
		return T_FAIL;
	snprintf(where, sizeof(where), "0x%lx", (unsigned long)(p + STREAM * INTS_PER_PAGE));
	CHECK_OK(hmm_fault_inject("dma_to_host:always"));
	CHECK_OK(t_log_start(&log));
	ok = touch(p, STREAM, &v);
	logged = t_log_stop(&log, where, &lines);
	CHECK_OK(hmm_fault_inject("off"));
	CHECK(!ok);
	CHECK_EQ(logged, 1);
	CHECK_EQ(lines, 1);
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
