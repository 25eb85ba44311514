// SPDX-License-Identifier: MIT
/*
 * uring: a storage tier. Device memory is a file, slot n at offset
 * n * HMM_PAGE_SIZE, and the DMA queue is an io_uring: one SQE per
 * contiguous run, a batch of them in flight, every completion checked and a
 * short transfer carried on from where it stopped. Pages evicted here leave
 * RAM: the file is opened O_DIRECT, so they do not move into the page cache
 * instead (where the file system refuses O_DIRECT, tmpfs for one, I/O is
 * buffered and uhmm-info's device line says so).
 *
 * By default the file is an unlinked one (O_TMPFILE) in $TMPDIR or
 * /var/tmp: nothing outlives the process, a crash included. path= names a
 * directory for it, or a file to use (created if need be, kept afterwards).
 * The file is sparse: a page never written reads as zeros, and a page
 * migrated while never populated is a punched hole, not written zeros.
 *
 * First cut of the storage-tier issue: a CPU fault reads its pages on the
 * fault thread (fetch); space is not given back when slots are freed (the
 * backend interface does not say so yet); no registered buffers.
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uhmm/device.h>

#define DEFAULT_QD 32
#define MAX_QD 1024

/* One run's progress through the ring. */
struct run_io {
	struct hmm_dma_desc *d;
	size_t done;                /* bytes */
	size_t len;
};

struct uring_device {
	struct hmm_device dev;
	int fd;
	bool direct;                /* O_DIRECT: pages evicted here leave RAM */
	struct io_uring ring;       /* the DMA queue thread's alone */
	unsigned qd;
	struct run_io *ios;         /* qd of them: a batch's runs in flight */
	pthread_mutex_t rmw_lock;   /* in-place accesses: read, modify, write a page */
	char *page;                 /* their page-aligned bounce */
};

static const struct hmm_device_param uring_params[] = {
	{ "path", HMM_PARAM_STRING, "a directory for the unlinked backing file, or a file to use",
	  NULL },
	{ "buffered", HMM_PARAM_FLAG, "buffered I/O instead of O_DIRECT", NULL },
	{ "qd", HMM_PARAM_UINT, "I/O requests in flight (default 32)", NULL },
	{ NULL, 0, NULL, NULL },
};

static const struct hmm_device_variant uring_variants[] = {
	{ "uring", HMM_MEMORY_DMA_ONLY },
	{ NULL, 0 },
};

static _Atomic int uring_count;

static inline struct uring_device *to_uring(struct hmm_device *dev)
{
	return container_of(dev, struct uring_device, dev);
}

static int uring_probe(void)
{
	struct io_uring ring;

	if (io_uring_queue_init(2, &ring, 0))
		return -ENODEV; /* io_uring disabled (kernel.io_uring_disabled) or absent */
	io_uring_queue_exit(&ring);
	return 0;
}

/* The backing file, O_DIRECT unless refused or not wanted; -errno on failure. */
static int open_backing(const char *path, bool buffered, bool *ret_direct)
{
	struct stat st;
	const char *dir = path;
	int flags = O_RDWR | O_CLOEXEC, fd;

	if (!dir || !*dir) {
		dir = getenv("TMPDIR");
		if (!dir || !*dir)
			dir = "/var/tmp";
	}
	if (!stat(dir, &st) && S_ISBLK(st.st_mode))
		return -EINVAL; /* block devices: not in this first cut */
	if (stat(dir, &st) || S_ISDIR(st.st_mode))
		flags |= O_TMPFILE;
	else
		flags |= O_CREAT;
	for (int direct = !buffered; direct >= 0; direct--) {
		fd = open(dir, flags | (direct ? O_DIRECT : 0), 0600);
		if (fd >= 0) {
			*ret_direct = direct;
			return fd;
		}
		if (errno != EINVAL)
			break; /* EINVAL: this file system refuses O_DIRECT */
	}
	return -errno;
}

static unsigned queue_depth(const struct hmm_device_config *cfg)
{
	const char *v = hmm_device_config_get(cfg, "qd");
	unsigned long qd = v ? strtoul(v, NULL, 0) : DEFAULT_QD;

	return qd >= 1 && qd <= MAX_QD ? (unsigned)qd : 0;
}

static int uring_open(const struct hmm_device_config *cfg, struct hmm_device **ret_dev)
{
	struct uring_device *u;
	unsigned qd = queue_depth(cfg);
	int err;

	if (!qd)
		return -EINVAL;
	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->qd = qd;
	u->fd = open_backing(hmm_device_config_get(cfg, "path"),
			     hmm_device_config_has(cfg, "buffered"), &u->direct);
	if (u->fd < 0) {
		err = u->fd;
		free(u);
		return err;
	}
	/* Sparse: space is taken as pages are written. */
	u->ios = calloc(qd, sizeof(*u->ios));
	if (!u->ios || ftruncate(u->fd, (off_t)cfg->mem_bytes) ||
	    posix_memalign((void **)&u->page, HMM_PAGE_SIZE, HMM_PAGE_SIZE)) {
		err = u->ios ? -errno : -ENOMEM;
		free(u->ios);
		close(u->fd);
		free(u);
		return err ? err : -ENOMEM;
	}
	err = io_uring_queue_init(qd, &u->ring, 0);
	if (!err)
		err = io_uring_register_files(&u->ring, &u->fd, 1);
	if (err) {
		free(u->ios);
		free(u->page);
		close(u->fd);
		free(u);
		return err;
	}
	pthread_mutex_init(&u->rmw_lock, NULL);
	u->dev.size = sizeof(u->dev);
	snprintf(u->dev.name, sizeof(u->dev.name), "uring%d", atomic_fetch_add(&uring_count, 1));
	snprintf(u->dev.kind, sizeof(u->dev.kind), "uring");
	u->dev.mem_bytes = cfg->mem_bytes;
	u->dev.caps = 0; /* reachable only through I/O */
	*ret_dev = &u->dev;
	return 0;
}

static void uring_close(struct hmm_device *dev)
{
	struct uring_device *u = to_uring(dev);

	io_uring_queue_exit(&u->ring);
	close(u->fd);
	pthread_mutex_destroy(&u->rmw_lock);
	free(u->ios);
	free(u->page);
	free(u);
}

/*
 * UHMM_FAULT=uring_short_io: ask for half of a transfer, in whole pages as
 * O_DIRECT wants (a single page whole), so that tests see the short
 * transfers a file system may give carried on.
 */
static size_t short_io(size_t len)
{
	if (len < 2 * HMM_PAGE_SIZE || !hmm_fault_should_fail("uring_short_io"))
		return len;
	return len / 2 / HMM_PAGE_SIZE * HMM_PAGE_SIZE;
}

static void prep(struct uring_device *u, struct run_io *io)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
	char *buf = (char *)io->d->host + io->done;
	off_t at = (off_t)(io->d->slot * HMM_PAGE_SIZE + io->done);
	unsigned len = (unsigned)short_io(io->len - io->done);

	if (io->d->dir == HMM_DMA_TO_DEVICE)
		io_uring_prep_write(sqe, 0, buf, len, at);
	else
		io_uring_prep_read(sqe, 0, buf, len, at);
	sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data(sqe, io);
}

/* A run the host never populated: a hole reads as zeros, and costs no space. */
static int punch(struct uring_device *u, struct hmm_dma_desc *d)
{
	off_t at = (off_t)(d->slot * HMM_PAGE_SIZE);
	off_t len = (off_t)d->npages * HMM_PAGE_SIZE;

	if (!fallocate(u->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, at, len))
		return 0;
	/* No hole punching here: write zeros, a page at a time. */
	memset(u->page, 0, HMM_PAGE_SIZE);
	for (off_t o = 0; o < len; o += HMM_PAGE_SIZE)
		if (pwrite(u->fd, u->page, HMM_PAGE_SIZE, at + o) != HMM_PAGE_SIZE)
			return errno ? -errno : -EIO;
	return 0;
}

/* Up to qd runs in flight; a short transfer goes on from where it stopped. */
static void run_batch(struct uring_device *u, struct run_io *ios, unsigned n)
{
	unsigned inflight = 0;

	for (unsigned i = 0; i < n; i++) {
		prep(u, &ios[i]);
		inflight++;
	}
	io_uring_submit(&u->ring);
	while (inflight) {
		struct io_uring_cqe *cqe;
		struct run_io *io;
		int res;

		res = io_uring_wait_cqe(&u->ring, &cqe);
		if (res == -EINTR)
			continue;
		if (res < 0) {
			/* The ring failed us: what did not complete failed. */
			for (unsigned i = 0; i < n; i++)
				if (ios[i].done < ios[i].len && !ios[i].d->status)
					ios[i].d->status = res;
			return;
		}
		io = io_uring_cqe_get_data(cqe);
		res = cqe->res;
		io_uring_cqe_seen(&u->ring, cqe);
		inflight--;
		if (res < 0) {
			io->d->status = res;
			continue;
		}
		if (res == 0) {
			io->d->status = -EIO; /* past the end of the file: cannot be */
			continue;
		}
		io->done += (size_t)res;
		if (io->done < io->len) {
			prep(u, io);
			io_uring_submit(&u->ring);
			inflight++;
		}
	}
}

static int uring_dma(struct hmm_device *dev, struct hmm_dma_desc *descs, unsigned n)
{
	struct uring_device *u = to_uring(dev);
	struct run_io *ios = u->ios;
	int first_err = 0;

	for (unsigned i = 0; i < n;) {
		unsigned k = 0;

		while (i < n && k < u->qd) {
			struct hmm_dma_desc *d = &descs[i++];
			bool to_dev = d->dir == HMM_DMA_TO_DEVICE;

			d->status = 0;
			d->done = 0;
			if ((d->slot + d->npages) * HMM_PAGE_SIZE > dev->mem_bytes) {
				d->status = -EINVAL;
			} else if (hmm_fault_should_fail(to_dev ? "dma_to_device" : "dma_to_host")) {
				d->status = -EIO;
			} else if (to_dev && !d->host) {
				d->status = punch(u, d);
			} else {
				ios[k++] = (struct run_io){ d, 0, (size_t)d->npages * HMM_PAGE_SIZE };
				continue;
			}
			d->done = d->status ? 0 : d->npages;
		}
		run_batch(u, ios, k);
		for (unsigned j = 0; j < k; j++)
			ios[j].d->done = ios[j].d->status ? (uint32_t)(ios[j].done / HMM_PAGE_SIZE)
							  : ios[j].d->npages;
	}
	for (unsigned i = 0; i < n; i++)
		if (descs[i].status && !first_err)
			first_err = descs[i].status;
	return first_err;
}

/* pread or pwrite all of it, or -errno. */
static int transfer(int fd, void *buf, size_t len, off_t at, bool write)
{
	for (size_t done = 0; done < len;) {
		size_t want = short_io(len - done);
		ssize_t n = write ? pwrite(fd, (char *)buf + done, want, at + (off_t)done)
				  : pread(fd, (char *)buf + done, want, at + (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		done += (size_t)n;
	}
	return 0;
}

/* A CPU fault's few pages, read on the fault thread (the bounce is page-aligned). */
static int uring_fetch(struct hmm_device *dev, uint64_t slot, uint32_t npages, void *host)
{
	struct uring_device *u = to_uring(dev);

	if ((slot + npages) * HMM_PAGE_SIZE > dev->mem_bytes)
		return -EINVAL;
	if (hmm_fault_should_fail("dma_to_host"))
		return -EIO;
	return transfer(u->fd, host, (size_t)npages * HMM_PAGE_SIZE,
			(off_t)(slot * HMM_PAGE_SIZE), false);
}

/* The device reads or writes its own page in place: the whole page, through the bounce. */
static int uring_mem_access(struct hmm_device *dev, uint64_t slot, size_t offset, void *buf,
			    size_t len, bool write)
{
	struct uring_device *u = to_uring(dev);
	off_t at = (off_t)(slot * HMM_PAGE_SIZE);
	int err;

	if (offset + len > HMM_PAGE_SIZE || (slot + 1) * HMM_PAGE_SIZE > dev->mem_bytes)
		return -EINVAL;
	pthread_mutex_lock(&u->rmw_lock);
	err = transfer(u->fd, u->page, HMM_PAGE_SIZE, at, false);
	if (!err && write) {
		memcpy(u->page + offset, buf, len);
		err = transfer(u->fd, u->page, HMM_PAGE_SIZE, at, true);
	} else if (!err) {
		memcpy(buf, u->page + offset, len);
	}
	pthread_mutex_unlock(&u->rmw_lock);
	return err;
}

static int uring_mem_atomic_add(struct hmm_device *dev, uint64_t slot, size_t offset,
				uint64_t value, uint64_t *ret_old)
{
	struct uring_device *u = to_uring(dev);
	off_t at = (off_t)(slot * HMM_PAGE_SIZE);
	uint64_t *word;
	int err;

	if (offset + sizeof(uint64_t) > HMM_PAGE_SIZE || (offset & 7) ||
	    (slot + 1) * HMM_PAGE_SIZE > dev->mem_bytes)
		return -EINVAL;
	pthread_mutex_lock(&u->rmw_lock);
	err = transfer(u->fd, u->page, HMM_PAGE_SIZE, at, false);
	if (!err) {
		word = (uint64_t *)(u->page + offset);
		*ret_old = *word;
		*word += value;
		err = transfer(u->fd, u->page, HMM_PAGE_SIZE, at, true);
	}
	pthread_mutex_unlock(&u->rmw_lock);
	return err;
}

const struct hmm_device_ops hmm_uring_ops = {
	.size = sizeof(struct hmm_device_ops),
	.version = HMM_DEVICE_OPS_VERSION,
	.kind = "uring",
	.description = "storage tier: a file, through io_uring (O_DIRECT)",
	.params = uring_params,
	.probe = uring_probe,
	.open = uring_open,
	.close = uring_close,
	.dma = uring_dma,
	.mem_access = uring_mem_access,
	.mem_atomic_add = uring_mem_atomic_add,
	.place = hmm_device_place_in_place,
	.variants = uring_variants,
	.fetch = uring_fetch,
};
