// SPDX-License-Identifier: MIT
/*
 * uhmm-bench, the storage tier: the uring device against the same I/O done
 * raw, with liburing and O_DIRECT, on a file of the same size in the same
 * directory ($TMPDIR or /var/tmp, where the device puts its own), each
 * baseline measured in the same run as its figure and in alternation with
 * it, so that both see the same disk in the same mood. Every file here is
 * unlinked (O_TMPFILE), as the device's is.
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <uhmm.h>

#include "bench.h"

#define PAGE 4096ul
#define QD 32                           /* the device's, and the baselines' */
#define RUN (2ul << 20)                 /* what the runtime writes per request: a batch */
#define RATE_PAGES 512                  /* per thread and round */
#define RATE_THREADS QD                 /* one fault per request the queue holds */

static size_t dev_mem;                  /* the device's file, and the raw ones: same size */

static void die(const char *what, int err)
{
	fprintf(stderr, "uhmm-bench: %s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(1);
}

/* Where the device puts its file by default. */
static const char *tier_dir(void)
{
	const char *dir = getenv("TMPDIR");

	return dir && *dir ? dir : "/var/tmp";
}

/* A raw file as the device makes its own: unlinked, sparse, O_DIRECT unless refused. */
static int raw_open(void)
{
	static unsigned warned;
	int fd = -1;

	for (int direct = 1; direct >= 0 && fd < 0; direct--) {
		int flags = O_TMPFILE | O_RDWR | O_CLOEXEC | (direct ? O_DIRECT : 0);

		fd = open(tier_dir(), flags, 0600);
		if (fd < 0 && errno != EINVAL)
			break;
	}
	if (fd < 0 || ftruncate(fd, (off_t)dev_mem))
		die(tier_dir(), errno);
	if (!(fcntl(fd, F_GETFL) & O_DIRECT) && !warned++)
		fprintf(stderr, "uhmm-bench: %s refuses O_DIRECT: the uring figures are for "
			"buffered I/O, there and on the device\n", tier_dir());
	return fd;
}

static void ring_init(struct io_uring *ring, int fd)
{
	int err = io_uring_queue_init(QD, ring, 0);

	if (!err)
		err = io_uring_register_files(ring, &fd, 1);
	if (err)
		die("io_uring", err);
}

static void prep(struct io_uring *ring, void *buf, size_t len, off_t at, bool write)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

	if (write)
		io_uring_prep_write(sqe, 0, buf, (unsigned)len, at);
	else
		io_uring_prep_read(sqe, 0, buf, (unsigned)len, at);
	sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data(sqe, buf);
}

/*
 * One completion, its buffer returned. base and len: the buffer of a
 * raw_seq, whose requests are RUN long but for the last; base NULL: a page.
 */
static char *reap(struct io_uring *ring, const char *base, size_t len)
{
	struct io_uring_cqe *cqe;
	size_t want;
	char *buf;
	int err, res;

	while ((err = io_uring_wait_cqe(ring, &cqe)) == -EINTR)
		;
	if (err)
		die("io_uring_wait_cqe", err);
	buf = io_uring_cqe_get_data(cqe);
	res = cqe->res;
	io_uring_cqe_seen(ring, cqe);
	want = !base ? PAGE : RUN < len - (size_t)(buf - base) ? RUN : len - (size_t)(buf - base);
	/* A short or failed transfer is not something a baseline may hide. */
	if (res < 0 || (size_t)res != want)
		die("raw I/O", res < 0 ? res : EIO);
	return buf;
}

/* len bytes from offset 0 in RUN requests, QD in flight; GB/s. */
static double raw_seq(int fd, char *buf, size_t len, bool write)
{
	struct io_uring ring;
	unsigned inflight = 0;
	size_t at = 0;
	double t0;

	ring_init(&ring, fd);
	t0 = now();
	while (at < len || inflight) {
		for (; at < len && inflight < QD; at += RUN, inflight++)
			prep(&ring, buf + at, RUN < len - at ? RUN : len - at, (off_t)at, write);
		io_uring_submit(&ring);
		reap(&ring, buf, len);
		inflight--;
	}
	t0 = now() - t0;
	io_uring_queue_exit(&ring);
	return (double)len / t0 / 1e9;
}

/* n random 4 KiB reads (page numbers pages[]), QD in flight; reads per second. */
static double raw_random(int fd, const uint32_t *pages, size_t n)
{
	char *bufs = aligned_alloc(PAGE, QD * PAGE), *free_bufs[QD];
	struct io_uring ring;
	unsigned nfree = QD;
	size_t next = 0, done = 0;
	double t0;

	if (!bufs)
		die("aligned_alloc", ENOMEM);
	for (unsigned i = 0; i < QD; i++)
		free_bufs[i] = bufs + i * PAGE;
	ring_init(&ring, fd);
	t0 = now();
	while (done < n) {
		for (; next < n && nfree; next++)
			prep(&ring, free_bufs[--nfree], PAGE, (off_t)(pages[next] * PAGE),
			     false);
		io_uring_submit(&ring);
		free_bufs[nfree++] = reap(&ring, NULL, 0);
		done++;
	}
	t0 = now() - t0;
	io_uring_queue_exit(&ring);
	free(bufs);
	return (double)n / t0;
}

/* One 4 KiB read at qd 1, after the same settle as a fault's; ns. */
static double raw_read_once(struct io_uring *ring, char *buf, uint32_t page)
{
	double t0;

	settle();
	t0 = now();
	prep(ring, buf, PAGE, (off_t)(page * PAGE), false);
	io_uring_submit(ring);
	reap(ring, NULL, 0);
	return (now() - t0) * 1e9;
}

/* A raw file holding len bytes of data: a hole would read without any I/O. */
static int raw_file_with_data(size_t len)
{
	char *buf = map(len);
	int fd = raw_open();

	memset(buf, 5, len);
	raw_seq(fd, buf, len, true);
	munmap(buf, len);
	return fd;
}

static struct hmm_device *open_tier(void)
{
	struct hmm_device *dev;
	char spec[64];
	int err;

	snprintf(spec, sizeof(spec), "uring:qd=%d,mem=%zuM", QD, dev_mem >> 20);
	err = hmm_device_open(spec, &dev);
	if (err)
		die(spec, err);
	return dev;
}

/* Managed memory holding data, all of it on dev. */
static char *on_tier(struct hmm_device *dev, size_t len)
{
	char *p = hmm_alloc(len);
	int err;

	if (!p)
		die("hmm_alloc", ENOMEM);
	memset(p, 3, len);
	err = hmm_migrate(p, len, dev, 0, NULL);
	if (err)
		die("hmm_migrate", err);
	return p;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next_random(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/*
 * n even page numbers of [0, 2n) in random order. Never two neighbours in
 * a row: the runtime's sequential window grows only when a fault lands
 * where the last one ended, so every fault here reads its one page.
 */
static uint32_t *random_even_pages(size_t n)
{
	uint32_t *v = malloc(n * sizeof(*v));

	if (!v)
		die("malloc", ENOMEM);
	for (size_t i = 0; i < n; i++)
		v[i] = (uint32_t)(2 * i);
	for (size_t i = n - 1; i > 0; i--) {
		size_t j = next_random() % (i + 1);
		uint32_t t = v[i];

		v[i] = v[j];
		v[j] = t;
	}
	return v;
}

/* Each of the faults since before brought its one page, and no more. */
static void check_isolated(const struct hmm_stats *before, size_t faults)
{
	struct hmm_stats st = { .size = sizeof(st) };

	hmm_stats_get(&st);
	if (st.pages_to_host - before->pages_to_host != faults)
		fprintf(stderr, "uhmm-bench: %zu faults brought %llu pages home: not isolated\n",
			faults, (unsigned long long)(st.pages_to_host - before->pages_to_host));
}

/*
 * uring_fault_latency: an isolated page on the tier touched by the CPU,
 * against what it cannot avoid: a 4 KiB O_DIRECT read of the same file
 * system at qd 1 plus a raw userfaultfd round trip. The three are sampled
 * in turn; medians.
 */
static void fault_latency(unsigned samples)
{
	size_t len = 2 * (size_t)samples * PAGE;
	struct hmm_device *dev = open_tier();
	char *region = on_tier(dev, len), *buf = aligned_alloc(PAGE, PAGE);
	double *ours = calloc(samples, sizeof(double)), *io = calloc(samples, sizeof(double)),
	       *uffd = calloc(samples, sizeof(double));
	uint32_t *order = random_even_pages(samples);
	int fd = raw_file_with_data(len);
	struct hmm_stats before = { .size = sizeof(before) };
	struct io_uring ring;

	if (!buf || !ours || !io || !uffd)
		die("calloc", ENOMEM);
	ring_init(&ring, fd);
	hmm_stats_get(&before);
	for (unsigned i = 0; i < samples; i++) {
		char *page = region + (size_t)order[i] * PAGE;
		double t0;

		settle();
		t0 = now();
		(void)*(volatile char *)page;
		ours[i] = (now() - t0) * 1e9;
		io[i] = raw_read_once(&ring, buf, order[i]);
		uffd[i] = raw_fault_once(i);
	}
	check_isolated(&before, samples);
	/*
	 * Each baseline sample is the read and the round trip taken together,
	 * as ours are: with skewed noise, a median of sums is not the sum of
	 * the medians.
	 */
	for (unsigned i = 0; i < samples; i++)
		io[i] += uffd[i];
	report("uring_fault_latency", median(ours, samples), "ns", median(io, samples),
	       "O_DIRECT 4K read qd 1 + raw uffd");
	io_uring_queue_exit(&ring);
	close(fd);
	hmm_free(region);
	hmm_device_close(dev);
	free(order);
	free(buf);
	free(ours);
	free(io);
	free(uffd);
}

struct toucher {
	char *region;
	const uint32_t *pages;
	pthread_barrier_t *start;
};

static void *touch_pages(void *arg)
{
	struct toucher *t = arg;

	pthread_barrier_wait(t->start);
	for (size_t i = 0; i < RATE_PAGES; i++)
		(void)*(volatile char *)(t->region + (size_t)t->pages[i] * PAGE);
	return NULL;
}

/* Faults per second, nthreads each touching their RATE_PAGES pages of order[]. */
static double touch_round(char *region, const uint32_t *order, unsigned nthreads)
{
	struct toucher t[RATE_THREADS];
	pthread_barrier_t start;

	for (unsigned i = 0; i < nthreads; i++)
		t[i] = (struct toucher){ .region = region, .pages = order + (size_t)i * RATE_PAGES,
					 .start = &start };
	return (double)nthreads * RATE_PAGES /
	       run_released(nthreads, touch_pages, t, sizeof(t[0]), &start);
}

/*
 * uring_fault_rate: QD threads faulting random tier pages (a thread asleep
 * in a fault costs no CPU, so QD faults can wait at once on any machine),
 * against the same pages read raw at random, QD in flight. Rounds
 * alternate; the best of each side counts.
 */
static void fault_rate(unsigned rounds)
{
	unsigned nthreads = RATE_THREADS;
	size_t n = (size_t)nthreads * RATE_PAGES, len = 2 * n * PAGE;
	struct hmm_device *dev = open_tier();
	char *region = on_tier(dev, len);
	uint32_t *order = random_even_pages(n);
	int fd = raw_file_with_data(len), err;
	struct hmm_stats before = { .size = sizeof(before) };
	double ours = 0, raw = 0;

	for (unsigned r = 0; r < rounds; r++) {
		double f;

		if (r && (err = hmm_migrate(region, len, dev, 0, NULL)))
			die("hmm_migrate", err);
		hmm_stats_get(&before);
		f = touch_round(region, order, nthreads);
		check_isolated(&before, n);
		ours = f > ours ? f : ours;
		f = raw_random(fd, order, n);
		raw = f > raw ? f : raw;
	}
	report("uring_fault_rate", ours, "faults/s", raw, "random 4K O_DIRECT reads, qd 32");
	close(fd);
	hmm_free(region);
	hmm_device_close(dev);
	free(order);
}

/*
 * The raw sequential read again, into memory never touched before (4 KiB
 * pages, as faults install them), and each page then read once, as the
 * stream does: what bringing SIZE into a process and looking at it costs
 * besides the I/O, a floor under uring_stream_bw that its baseline (reads
 * into the same warm buffer, never looked at) does not pay. On a guest with
 * shadow page tables the first access to a new page costs microseconds.
 */
static double raw_fresh_read(int fd, size_t size)
{
	char *fresh = map(size);
	volatile char sink = 0;
	double t0, v;

	madvise(fresh, size, MADV_NOHUGEPAGE);
	t0 = now();
	raw_seq(fd, fresh, size, false);
	for (size_t i = 0; i < size; i += PAGE)
		sink += fresh[i];
	v = (double)size / (now() - t0) / 1e9;
	(void)sink;
	munmap(fresh, size);
	return v;
}

/*
 * uring_evict_bw and uring_stream_bw: SIZE migrated to a fresh device,
 * then read back by the CPU in address order, against SIZE written to a
 * fresh file and read back raw, in RUN requests with QD in flight (a
 * fresh file each time: a sparse file's first writes allocate, as the
 * device's do). Best of the rounds.
 */
static void evict_stream(size_t size, unsigned rounds)
{
	char *p = hmm_alloc(size), *buf = map(size);
	double evict = 0, stream = 0, raw_write = 0, raw_read = 0, raw_fresh = 0;

	if (!p)
		die("hmm_alloc", ENOMEM);
	memset(p, 3, size);
	memset(buf, 5, size);
	for (unsigned r = 0; r < rounds; r++) {
		struct hmm_device *dev = open_tier();
		int fd = raw_open(), err;
		double t0, v;

		v = raw_seq(fd, buf, size, true);
		raw_write = v > raw_write ? v : raw_write;
		t0 = now();
		err = hmm_migrate(p, size, dev, 0, NULL);
		if (err)
			die("hmm_migrate", err);
		v = (double)size / (now() - t0) / 1e9;
		evict = v > evict ? v : evict;
		v = raw_seq(fd, buf, size, false);
		raw_read = v > raw_read ? v : raw_read;
		v = raw_fresh_read(fd, size);
		raw_fresh = v > raw_fresh ? v : raw_fresh;
		v = stream_gbps(p, size);
		stream = v > stream ? v : stream;
		close(fd);
		hmm_device_close(dev);
	}
	report("uring_evict_bw", evict, "GB/s", raw_write, "O_DIRECT 2M writes, qd 32");
	report("uring_stream_bw", stream, "GB/s", raw_read, "O_DIRECT 2M reads, qd 32");
	report("uring_stream_floor_bw", raw_fresh, "GB/s", raw_read,
	       "the same reads into new memory, each page then read once");
	hmm_free(p);
	munmap(buf, size);
}

void bench_uring(size_t size, unsigned samples, bool quick)
{
	dev_mem = size + (64ul << 20) > (1ul << 30) ? size + (64ul << 20) : 1ul << 30;
	dev_mem &= ~((1ul << 20) - 1);
	fault_latency(samples);
	fault_rate(quick ? 2 : 3);
	evict_stream(size, quick ? 2 : 3);
}
