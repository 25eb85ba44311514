// SPDX-License-Identifier: MIT
/*
 * uring: a storage tier. Device memory is a file, slot n at offset
 * n * HMM_PAGE_SIZE, and the DMA queue is an io_uring: one SQE per
 * contiguous run, a batch of them in flight, every completion checked and a
 * short transfer carried on from where it stopped. Pages evicted here leave
 * RAM: the file is opened O_DIRECT, so they do not move into the page cache
 * instead. Where the file system refuses O_DIRECT (tmpfs for one), or with
 * 'buffered', I/O goes through the page cache without staying there:
 * RWF_DONTCACHE where the kernel has it (6.14), else written back and
 * dropped (fadvise) after each transfer. hmm_device_info's detail (and
 * uhmm-info --device) says which.
 *
 * By default the file is an unlinked one (O_TMPFILE) in $TMPDIR or
 * /var/tmp: nothing outlives the process, a crash included. path= names a
 * directory for it, or a file to use (created if need be, kept afterwards),
 * or, with 'blockdev' and only then, a block device, opened exclusively so
 * that one that is mounted or in use is refused.
 *
 * The file is sparse: a page never written reads as zeros, a page migrated
 * while never populated is a punched hole, not written zeros, and slots the
 * runtime releases are punched too (in bulk past RELEASED_SLACK, before the
 * next transfer, on the DMA queue thread; all of them when the file system
 * is full), so the file holds little more than what the process has here.
 *
 * An isolated CPU fault reads its pages on the fault thread (fetch); faults
 * from many threads, and streams with their read-ahead, come through the
 * DMA queue, which hands them over together: every descriptor of a dma
 * call goes out as requests of up to STAGING bytes, qd in flight. Writes
 * go out from registered staging memory (see STAGING for why not from the
 * program's pages); reads land in the runtime's bounce buffers directly.
 * A page read home keeps its blocks until it is written
 * (HMM_DEVCAP_KEEP_CLEAN): evicting it again while clean writes nothing.
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include <uhmm/device.h>

#include "kernel-compat.h"

#define DEFAULT_QD 32
#define MAX_QD 1024
/*
 * Released slots whose blocks the file keeps before they are punched. Under
 * a host limit slots are freed and taken again all the time, and punching a
 * block only to allocate it again is file-system work (a journal
 * transaction each) for nothing: 16 MiB of slack, given back in bulk.
 */
#define RELEASED_SLACK 4096

/*
 * Writes go out from the device's own staging memory (registered with the
 * ring), never from the program's pages: an O_DIRECT write holds the file's
 * inode lock while it reads its buffer, and a page of the program that
 * vanished meanwhile (discarded) would fault there, waiting for the fault
 * thread, which may itself wait for that lock to read another page home.
 * The copy into staging faults on the DMA thread instead, where a vanished
 * page reads as zero. STAGING bytes per request in flight.
 */
#define STAGING (256u << 10)

/*
 * One request in flight: up to STAGING bytes of a descriptor, so that a
 * long run goes out as several requests at once, not one after another.
 */
struct run_io {
	struct hmm_dma_desc *d;
	size_t off;                 /* where in the descriptor's pages it starts, bytes */
	size_t len;
	size_t done;                /* bytes, from off */
	char *staging;              /* writes: this request slot's STAGING bytes */
	bool busy;                  /* in flight */
};

struct uring_device {
	struct hmm_device dev;
	int fd;
	bool direct;                /* O_DIRECT: pages evicted here leave RAM */
	bool blockdev;
	int rw_flags;               /* RWF_DONTCACHE: buffered, but not kept cached */
	bool drop_cache;            /* buffered without it: write back and drop by hand */
	_Atomic bool can_punch;     /* released slots give their blocks back */
	/* Slots the runtime released, punched before the next transfer. */
	pthread_mutex_t release_lock;
	uint64_t *released;         /* a bit per slot */
	uint64_t nreleased;         /* bits set */
	uint64_t released_lo;       /* every set bit lies in [lo, hi) */
	uint64_t released_hi;
	struct io_uring ring;       /* the DMA queue thread's alone */
	unsigned qd;
	struct run_io *ios;         /* qd request slots */
	unsigned *free_ios;         /* the slots not in flight, a stack */
	pthread_mutex_t rmw_lock;   /* in-place accesses: read, modify, write a page */
	char *page;                 /* their page-aligned bounce */
	char *staging;              /* qd * STAGING, registered as fixed buffer 0 */
	bool staging_fixed;
};

static const struct hmm_device_param uring_params[] = {
	{ "path", HMM_PARAM_STRING, "a directory for the unlinked backing file, or a file to use",
	  NULL },
	{ "buffered", HMM_PARAM_FLAG, "buffered I/O instead of O_DIRECT", NULL },
	{ "blockdev", HMM_PARAM_FLAG,
	  "path= is a block device to use (refused when mounted or in use); its data is lost", NULL },
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

/* Where the backing store lives when path= does not say. */
static const char *default_dir(void)
{
	const char *dir = getenv("TMPDIR");

	return dir && *dir ? dir : "/var/tmp";
}

/*
 * The backing file (or block device), O_DIRECT unless refused or not
 * wanted; -errno on failure. A block device only when the user said so,
 * and opened O_EXCL: the kernel refuses that while it is mounted or used.
 */
static int open_backing(const char *path, bool buffered, bool blockdev, bool *ret_direct)
{
	struct stat st;
	int flags = O_RDWR | O_CLOEXEC, fd;
	bool exists = !stat(path, &st);
	bool is_blk = exists && S_ISBLK(st.st_mode);

	if (is_blk != blockdev)
		return -EINVAL;
	if (is_blk)
		flags |= O_EXCL;
	else if (exists && S_ISDIR(st.st_mode))
		flags |= O_TMPFILE;
	else
		flags |= O_CREAT;
	for (int direct = !buffered; direct >= 0; direct--) {
		fd = open(path, flags | (direct ? O_DIRECT : 0), 0600);
		if (fd >= 0) {
			*ret_direct = direct;
			return fd;
		}
		if (errno != EINVAL)
			break; /* EINVAL: this file system refuses O_DIRECT */
	}
	return -errno;
}

static const char *fs_name(int fd)
{
	static const struct {
		long magic;
		const char *name;
	} names[] = {
		{ EXT4_SUPER_MAGIC, "ext4" }, { XFS_SUPER_MAGIC, "xfs" },
		{ BTRFS_SUPER_MAGIC, "btrfs" }, { TMPFS_MAGIC, "tmpfs" },
		{ OVERLAYFS_SUPER_MAGIC, "overlayfs" }, { F2FS_SUPER_MAGIC, "f2fs" },
		{ NFS_SUPER_MAGIC, "nfs" },
	};
	struct statfs sf;

	if (fstatfs(fd, &sf))
		return "?";
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (sf.f_type == names[i].magic)
			return names[i].name;
	return "another file system";
}

/*
 * Buffered I/O that does not keep what it moved in the page cache: with
 * RWF_DONTCACHE if the kernel and the file system take it (a read of the
 * first page, a hole, tells), else by writing back and dropping the range
 * after each transfer.
 */
static void choose_buffered_mode(struct uring_device *u)
{
	struct iovec iov = { u->page, HMM_PAGE_SIZE };

	if (preadv2(u->fd, &iov, 1, 0, RWF_DONTCACHE) >= 0)
		u->rw_flags = RWF_DONTCACHE;
	else
		u->drop_cache = true;
}

static void describe(struct uring_device *u, const char *path)
{
	const char *fs = fs_name(u->fd);
	const char *mode = u->direct ? "O_DIRECT" : u->rw_flags ? "buffered, RWF_DONTCACHE"
						 : "buffered, written back and dropped";

	if (u->blockdev)
		snprintf(u->dev.detail, sizeof(u->dev.detail), "%s on block device %s, qd %u", mode,
			 path, u->qd);
	else
		snprintf(u->dev.detail, sizeof(u->dev.detail), "%s on %s (%s%s), qd %u", mode, path,
			 fs, strcmp(fs, "tmpfs") ? "" : ": pages stay in RAM", u->qd);
}

static unsigned queue_depth(const struct hmm_device_config *cfg)
{
	const char *v = hmm_device_config_get(cfg, "qd");
	unsigned long qd = v ? strtoul(v, NULL, 0) : DEFAULT_QD;

	return qd >= 1 && qd <= MAX_QD ? (unsigned)qd : 0;
}

/* 0 if the block device holds mem_bytes, else -ENOSPC or -errno. */
static int check_blockdev_size(int fd, uint64_t mem_bytes)
{
	uint64_t bytes;

	if (ioctl(fd, BLKGETSIZE64, &bytes))
		return -errno;
	return mem_bytes <= bytes ? 0 : -ENOSPC;
}

static void free_uring(struct uring_device *u)
{
	if (u->fd >= 0)
		close(u->fd);
	free(u->ios);
	free(u->free_ios);
	free(u->staging);
	free(u->page);
	free(u->released);
	free(u);
}

static int uring_open(const struct hmm_device_config *cfg, struct hmm_device **ret_dev)
{
	struct uring_device *u;
	const char *path = hmm_device_config_get(cfg, "path");
	unsigned qd = queue_depth(cfg);
	uint64_t nslots = cfg->mem_bytes / HMM_PAGE_SIZE;
	int err;

	if (!qd)
		return -EINVAL;
	if (!path || !*path)
		path = default_dir();
	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->qd = qd;
	u->blockdev = hmm_device_config_has(cfg, "blockdev");
	u->fd = open_backing(path, hmm_device_config_has(cfg, "buffered"), u->blockdev, &u->direct);
	if (u->fd < 0) {
		err = u->fd;
		free(u);
		return err;
	}
	u->ios = calloc(qd, sizeof(*u->ios));
	u->free_ios = calloc(qd, sizeof(*u->free_ios));
	if (posix_memalign((void **)&u->staging, HMM_PAGE_SIZE, (size_t)qd * STAGING))
		u->staging = NULL;
	u->released = calloc((nslots + 63) / 64, sizeof(uint64_t));
	if (!u->ios || !u->free_ios || !u->released || !u->staging ||
	    posix_memalign((void **)&u->page, HMM_PAGE_SIZE, HMM_PAGE_SIZE)) {
		free_uring(u);
		return -ENOMEM;
	}
	/* Sparse: space is taken as pages are written. A block device is what it is. */
	err = u->blockdev ? check_blockdev_size(u->fd, cfg->mem_bytes)
			  : ftruncate(u->fd, (off_t)cfg->mem_bytes) ? -errno : 0;
	if (!err)
		err = io_uring_queue_init(qd, &u->ring, 0);
	if (!err) {
		err = io_uring_register_files(&u->ring, &u->fd, 1);
		if (err)
			io_uring_queue_exit(&u->ring);
	}
	if (err) {
		free_uring(u);
		return err;
	}
	/* Pinned once, not per write; plain writes where the kernel refuses. */
	u->staging_fixed = !io_uring_register_buffers(
		&u->ring, &(struct iovec){ u->staging, (size_t)qd * STAGING }, 1);
	if (!u->direct)
		choose_buffered_mode(u);
	/* Releasing a block device's blocks buys nothing: it is all ours anyway. */
	u->can_punch = !u->blockdev;
	pthread_mutex_init(&u->rmw_lock, NULL);
	pthread_mutex_init(&u->release_lock, NULL);
	describe(u, path);
	u->dev.size = sizeof(u->dev);
	snprintf(u->dev.name, sizeof(u->dev.name), "uring%d", atomic_fetch_add(&uring_count, 1));
	snprintf(u->dev.kind, sizeof(u->dev.kind), "uring");
	u->dev.mem_bytes = cfg->mem_bytes;
	/* Reachable only through I/O; a page read home keeps its blocks while clean. */
	u->dev.caps = HMM_DEVCAP_KEEP_CLEAN;
	*ret_dev = &u->dev;
	return 0;
}

static void uring_close(struct hmm_device *dev)
{
	struct uring_device *u = to_uring(dev);

	/*
	 * The ring lets go of its registered file asynchronously after
	 * io_uring_queue_exit: unregistering first hands the file back now, so
	 * a block device's exclusive claim ends with hmm_device_close.
	 */
	io_uring_unregister_files(&u->ring);
	if (u->staging_fixed)
		io_uring_unregister_buffers(&u->ring);
	io_uring_queue_exit(&u->ring);
	pthread_mutex_destroy(&u->rmw_lock);
	pthread_mutex_destroy(&u->release_lock);
	free_uring(u);
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
	size_t from = io->off + io->done;
	char *buf = (char *)io->d->host + from;
	off_t at = (off_t)(io->d->slot * HMM_PAGE_SIZE + from);
	unsigned len = (unsigned)short_io(io->len - io->done);

	if (io->d->dir == HMM_DMA_TO_DEVICE) {
		memcpy(io->staging, buf, len);
		if (u->staging_fixed)
			io_uring_prep_write_fixed(sqe, 0, io->staging, len, at, 0);
		else
			io_uring_prep_write(sqe, 0, io->staging, len, at);
	} else {
		io_uring_prep_read(sqe, 0, buf, len, at);
	}
	sqe->rw_flags = u->rw_flags;
	sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data(sqe, io);
}

static inline bool released(const struct uring_device *u, uint64_t i)
{
	return u->released[i / 64] >> (i % 64) & 1;
}

/* Set or clear the released bits of a run; release_lock held. */
static void mark_released(struct uring_device *u, uint64_t first, uint64_t n, bool on)
{
	for (uint64_t i = first; i < first + n; i++) {
		if (released(u, i) == on)
			continue;
		u->released[i / 64] ^= 1ull << (i % 64);
		u->nreleased += on ? 1 : -1;
	}
	if (!u->nreleased) {
		u->released_lo = u->released_hi = 0;
	} else if (on && u->released_lo >= u->released_hi) {
		u->released_lo = first;
		u->released_hi = first + n;
	} else if (on) {
		u->released_lo = first < u->released_lo ? first : u->released_lo;
		u->released_hi = first + n > u->released_hi ? first + n : u->released_hi;
	}
}

/* Runs with locks held (the ops' context rule): note the slots, no I/O. */
static void uring_release(struct hmm_device *dev, uint64_t first, uint64_t nslots)
{
	struct uring_device *u = to_uring(dev);

	if (!u->can_punch)
		return;
	pthread_mutex_lock(&u->release_lock);
	mark_released(u, first, nslots, true);
	pthread_mutex_unlock(&u->release_lock);
}

/* Slots about to be written hold data again: never punch them now. */
static void unrelease(struct uring_device *u, uint64_t first, uint64_t n)
{
	pthread_mutex_lock(&u->release_lock);
	if (u->nreleased)
		mark_released(u, first, n, false);
	pthread_mutex_unlock(&u->release_lock);
}

static uint64_t released_count(struct uring_device *u)
{
	uint64_t n;

	pthread_mutex_lock(&u->release_lock);
	n = u->nreleased;
	pthread_mutex_unlock(&u->release_lock);
	return n;
}

/* Take the first run of released slots out of the set; 0 when it is empty. */
static uint64_t take_released(struct uring_device *u, uint64_t *ret_first)
{
	uint64_t i, n;

	pthread_mutex_lock(&u->release_lock);
	for (i = u->released_lo; i < u->released_hi && !released(u, i); i++)
		if (i % 64 == 0 && !u->released[i / 64])
			i += 63; /* a whole empty word */
	for (n = 0; i + n < u->released_hi && released(u, i + n); n++)
		;
	*ret_first = i;
	mark_released(u, i, n, false);
	if (u->nreleased)
		u->released_lo = i + n;
	pthread_mutex_unlock(&u->release_lock);
	return n;
}

/*
 * Released slots give their blocks back once there are more of them than
 * the slack (all of them when @all: the file system is full). Runs on the
 * DMA queue thread, between transfers; a slot written since it was
 * released is no longer in the set. A file system that cannot punch keeps
 * the blocks: they are reused as slots are.
 */
static void give_back_released(struct uring_device *u, bool all)
{
	uint64_t first, n;

	if (!u->can_punch || released_count(u) < (all ? 1 : RELEASED_SLACK))
		return;
	while ((n = take_released(u, &first))) {
		if (fallocate(u->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      (off_t)(first * HMM_PAGE_SIZE), (off_t)(n * HMM_PAGE_SIZE)) &&
		    errno == EOPNOTSUPP) {
			u->can_punch = false;
			return;
		}
	}
}

/*
 * Buffered I/O without RWF_DONTCACHE: what a transfer moved through the
 * page cache leaves it, written back first so that dropping it works.
 */
static void drop_cached(struct uring_device *u, uint64_t slot, uint64_t npages, bool written)
{
	off_t at = (off_t)(slot * HMM_PAGE_SIZE), len = (off_t)(npages * HMM_PAGE_SIZE);

	if (!u->drop_cache)
		return;
	if (written)
		sync_file_range(u->fd, at, len,
				SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
				SYNC_FILE_RANGE_WAIT_AFTER);
	posix_fadvise(u->fd, at, len, POSIX_FADV_DONTNEED);
}

/* Read or write all of it, or -errno. */
static int transfer(struct uring_device *u, void *buf, size_t len, off_t at, bool write)
{
	for (size_t done = 0; done < len;) {
		struct iovec iov = { (char *)buf + done, short_io(len - done) };
		ssize_t n = write ? pwritev2(u->fd, &iov, 1, at + (off_t)done, u->rw_flags)
				  : preadv2(u->fd, &iov, 1, at + (off_t)done, u->rw_flags);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		done += (size_t)n;
	}
	return 0;
}

/* A run the host never populated: a hole reads as zeros, and costs no space. */
static int punch(struct uring_device *u, struct hmm_dma_desc *d)
{
	/* Never written: all zeros, and aligned for O_DIRECT. */
	static char zeros[64 << 10] __attribute__((aligned(HMM_PAGE_SIZE)));
	off_t at = (off_t)(d->slot * HMM_PAGE_SIZE);
	off_t len = (off_t)d->npages * HMM_PAGE_SIZE;

	if (!fallocate(u->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, at, len))
		return 0;
	/* No hole punching here: write zeros (staging may be in flight meanwhile). */
	for (off_t o = 0; o < len; o += (off_t)sizeof(zeros)) {
		size_t n = len - o < (off_t)sizeof(zeros) ? (size_t)(len - o) : sizeof(zeros);
		int err = transfer(u, zeros, n, at + o, true);

		if (err)
			return err;
	}
	return 0;
}

/*
 * A request stopped short of its end: its descriptor is done up to the
 * first page that did not make it, whatever later requests did.
 */
static void request_failed(struct run_io *io, int err)
{
	uint32_t at = (uint32_t)((io->off + io->done) / HMM_PAGE_SIZE);

	if (at < io->d->done) {
		io->d->done = at;
		io->d->status = err;
	}
}

/*
 * Before a descriptor's first request: its pages count as done until a
 * request says otherwise. false when it needs no request (failed already,
 * or a hole punched).
 */
static bool start_desc(struct uring_device *u, struct hmm_dma_desc *d)
{
	bool to_dev = d->dir == HMM_DMA_TO_DEVICE;

	d->status = 0;
	d->done = d->npages;
	if ((d->slot + d->npages) * HMM_PAGE_SIZE > u->dev.mem_bytes)
		d->status = -EINVAL;
	else if (to_dev)
		unrelease(u, d->slot, d->npages);
	if (!d->status && hmm_fault_should_fail(to_dev ? "dma_to_device" : "dma_to_host"))
		d->status = -EIO;
	else if (!d->status && to_dev && !d->host)
		d->status = punch(u, d);
	else if (!d->status)
		return d->npages > 0;
	if (d->status)
		d->done = 0;
	return false;
}

/*
 * The descriptors as requests of up to STAGING bytes, qd of them in
 * flight; a short transfer goes on from where it stopped, every other
 * result ends its request.
 */
static void run_descs(struct uring_device *u, struct hmm_dma_desc *descs, unsigned n)
{
	unsigned next = 0, inflight = 0, nfree = u->qd;
	size_t next_off = 0;

	for (unsigned i = 0; i < u->qd; i++)
		u->free_ios[i] = i;
	for (;;) {
		struct io_uring_cqe *cqe;
		struct run_io *io;
		int res;

		while (nfree && next < n) {
			struct hmm_dma_desc *d = &descs[next];
			size_t total = (size_t)d->npages * HMM_PAGE_SIZE;

			if (!next_off && !start_desc(u, d)) {
				next++;
				continue;
			}
			io = &u->ios[u->free_ios[--nfree]];
			*io = (struct run_io){ d, next_off,
					       total - next_off < STAGING ? total - next_off : STAGING, 0,
					       u->staging + (size_t)(io - u->ios) * STAGING, true };
			prep(u, io);
			inflight++;
			next_off += io->len;
			if (next_off == total) {
				next++;
				next_off = 0;
			}
		}
		if (!inflight)
			break;
		io_uring_submit(&u->ring);
		res = io_uring_wait_cqe(&u->ring, &cqe);
		if (res == -EINTR)
			continue;
		if (res < 0) {
			/* The ring failed us: nothing in flight or not started made it. */
			for (unsigned i = 0; i < u->qd; i++)
				if (u->ios[i].busy)
					request_failed(&u->ios[i], res);
			if (next_off)
				request_failed(&(struct run_io){ .d = &descs[next], .off = next_off },
					       res);
			for (unsigned i = next_off ? next + 1 : next; i < n; i++) {
				descs[i].status = res;
				descs[i].done = 0;
			}
			return;
		}
		io = io_uring_cqe_get_data(cqe);
		res = cqe->res;
		io_uring_cqe_seen(&u->ring, cqe);
		if (res > 0)
			io->done += (size_t)res;
		if (res > 0 && io->done < io->len) {
			prep(u, io);
			continue;
		}
		/* 0 bytes: past the end of the file, which cannot be. */
		if (io->done < io->len)
			request_failed(io, res < 0 ? res : -EIO);
		inflight--;
		io->busy = false;
		u->free_ios[nfree++] = (unsigned)(io - u->ios);
	}
	for (unsigned i = 0; i < n; i++)
		drop_cached(u, descs[i].slot, descs[i].npages, descs[i].dir == HMM_DMA_TO_DEVICE);
}

static int uring_dma(struct hmm_device *dev, struct hmm_dma_desc *descs, unsigned n)
{
	struct uring_device *u = to_uring(dev);
	bool full = false;
	int first_err = 0;

	give_back_released(u, false);
	run_descs(u, descs, n);
	/* A full file system: the slack of released blocks first, then once more. */
	for (unsigned i = 0; i < n; i++)
		full |= descs[i].status == -ENOSPC;
	if (full && released_count(u)) {
		give_back_released(u, true);
		for (unsigned i = 0; i < n; i++)
			if (descs[i].status == -ENOSPC)
				run_descs(u, &descs[i], 1);
	}
	for (unsigned i = 0; i < n; i++)
		if (descs[i].status && !first_err)
			first_err = descs[i].status;
	return first_err;
}


/* A CPU fault's few pages, read on the fault thread (the bounce is page-aligned). */
static int uring_fetch(struct hmm_device *dev, uint64_t slot, uint32_t npages, void *host)
{
	struct uring_device *u = to_uring(dev);
	int err;

	if ((slot + npages) * HMM_PAGE_SIZE > dev->mem_bytes)
		return -EINVAL;
	if (hmm_fault_should_fail("dma_to_host"))
		return -EIO;
	err = transfer(u, host, (size_t)npages * HMM_PAGE_SIZE, (off_t)(slot * HMM_PAGE_SIZE),
		       false);
	drop_cached(u, slot, npages, false);
	return err;
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
	err = transfer(u, u->page, HMM_PAGE_SIZE, at, false);
	if (!err && write) {
		memcpy(u->page + offset, buf, len);
		err = transfer(u, u->page, HMM_PAGE_SIZE, at, true);
	} else if (!err) {
		memcpy(buf, u->page + offset, len);
	}
	pthread_mutex_unlock(&u->rmw_lock);
	drop_cached(u, slot, 1, write);
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
	err = transfer(u, u->page, HMM_PAGE_SIZE, at, false);
	if (!err) {
		word = (uint64_t *)(u->page + offset);
		*ret_old = *word;
		*word += value;
		err = transfer(u, u->page, HMM_PAGE_SIZE, at, true);
	}
	pthread_mutex_unlock(&u->rmw_lock);
	drop_cached(u, slot, 1, true);
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
	.release = uring_release,
	.health = hmm_device_health_whole,
};
