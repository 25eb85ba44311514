// SPDX-License-Identifier: MIT
/*
 * The storage tier on a file system that fills up: a 16 MiB ext4 image,
 * loop-mounted, behind a uring device with 64 MiB of device memory.
 *
 * migrate_full: migrating more than fits places what fits and says
 * -ENOSPC with the count placed; the rest stays on the host, the runtime
 * logs one line (not one per page or per call), no byte is lost, and once
 * there is room again the next migration goes through.
 *
 * evict_backoff (run under UHMM_HOST_LIMIT by its own meson test):
 * eviction to the full tier backs off instead of failing a batch on every
 * round of the pager, the program goes on past the limit, and every page
 * reads back.
 *
 * Needs root (mount) and mkfs.ext4: skips with the reason otherwise.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "harness.h"

#define FS_SIZE (16ul << 20)
#define BALLAST (4ul << 20)     /* a file deleted to make room */

struct small_fs {
	char dir[64];
	char img[96];
	char mnt[96];
	char ballast[128];
	bool mounted;
};

/* argv[0] with its output, as a shell would; its exit status, or -1. */
static int run(char *const argv[])
{
	int status;
	pid_t pid = fork();

	if (!pid) {
		execvp(argv[0], argv);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

static void fs_remove(struct small_fs *fs)
{
	/* The ring lets go of its file a moment after the device closes. */
	for (int i = 0; fs->mounted && i < 100; i++) {
		if (!umount(fs->mnt))
			fs->mounted = false;
		else
			usleep(20000);
	}
	if (fs->mounted)
		umount2(fs->mnt, MNT_DETACH);
	rmdir(fs->mnt);
	unlink(fs->img);
	rmdir(fs->dir);
}

/* A fresh ext4 of FS_SIZE at fs->mnt; false (with a note) where this machine cannot. */
static bool fs_make(struct small_fs *fs)
{
	int fd, rc;

	memset(fs, 0, sizeof(*fs));
	snprintf(fs->dir, sizeof(fs->dir), "/tmp/uhmm-enospc.XXXXXX");
	if (!mkdtemp(fs->dir)) {
		t_note("mkdtemp: %s", strerror(errno));
		return false;
	}
	snprintf(fs->img, sizeof(fs->img), "%s/img", fs->dir);
	snprintf(fs->mnt, sizeof(fs->mnt), "%s/mnt", fs->dir);
	snprintf(fs->ballast, sizeof(fs->ballast), "%s/ballast", fs->mnt);
	fd = open(fs->img, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (fd < 0 || ftruncate(fd, FS_SIZE) || mkdir(fs->mnt, 0700)) {
		t_note("cannot make the image: %s", strerror(errno));
		goto fail;
	}
	close(fd);
	fd = -1;
	rc = run((char *const[]){ "mkfs.ext4", "-q", "-F", "-m", "0", fs->img, NULL });
	if (rc) {
		t_note("mkfs.ext4 -q %s: exit %d (is e2fsprogs installed?)", fs->img, rc);
		goto fail;
	}
	rc = run((char *const[]){ "mount", "-o", "loop", fs->img, fs->mnt, NULL });
	if (rc) {
		t_note("mount -o loop: exit %d (needs root and a loop device)", rc);
		goto fail;
	}
	fs->mounted = true;
	return true;
fail:
	if (fd >= 0)
		close(fd);
	fs_remove(fs);
	return false;
}

/* Take BALLAST bytes of the file system, written through. */
static int fill_ballast(const struct small_fs *fs)
{
	char *buf = malloc(BALLAST);
	int fd = open(fs->ballast, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	int err = 0;

	if (!buf || fd < 0) {
		err = -ENOMEM;
		goto out;
	}
	memset(buf, 0x5a, BALLAST);
	if (write(fd, buf, BALLAST) != (ssize_t)BALLAST || fsync(fd))
		err = -EIO;
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	return err;
}

static int open_tier(const struct small_fs *fs, struct hmm_device **ret_dev)
{
	char spec[160];

	snprintf(spec, sizeof(spec), "uring:path=%s,mem=64M", fs->mnt);
	return hmm_device_open(spec, ret_dev);
}

static int migrate_full_on(struct small_fs *fs, struct t_log *log)
{
	const size_t n = 8192, len = n * PAGE, tail = 512; /* 32 MiB, twice the file system */
	size_t placed = 0, again = 0, ints = len / sizeof(int), lines;
	struct hmm_device *dev;
	int *p, idx;

	CHECK_OK(fill_ballast(fs));
	CHECK_OK(open_tier(fs, &dev));
	idx = t_dev_index(dev);
	p = hmm_alloc(len);
	CHECK(p);
	t_fill(p, ints, 11);

	CHECK_OK(t_log_start(log));
	/* What fits goes; the call says why the rest did not, and how much went. */
	CHECK_RET(hmm_migrate(p, len, dev, 0, &placed), -ENOSPC);
	CHECK(placed > 0 && placed < n);
	CHECK_EQ(t_pages_at(p, n, idx), placed);
	CHECK_EQ(t_pages_at(p, n, HMM_LOC_HOST), n - placed);
	/* Still full: the same answer, at the cost of a batch, and no new line. */
	CHECK_RET(hmm_migrate(p, len, dev, 0, &again), -ENOSPC);
	CHECK_EQ(again, placed);
	CHECK_EQ(t_pages_at(p, n, idx), placed);
	CHECK_EQ(t_pages_at(p + (n - tail) * PAGE / sizeof(int), tail, HMM_LOC_HOST), tail);

	/* Room again: what fits now goes, quietly. */
	CHECK_OK(unlink(fs->ballast));
	sync();
	CHECK_OK(hmm_migrate(p + (n - tail) * PAGE / sizeof(int), tail * PAGE, dev, 0, &again));
	CHECK_EQ(again, tail);
	CHECK_EQ(t_log_stop(log, "no space left", &lines), 1);
	CHECK_EQ(lines, 1);
	CHECK_EQ(t_pages_at(p, n, idx), placed + tail);

	/* Every page reads back through the CPU, from the file or from the host. */
	CHECK_EQ(t_count_bad(p, ints, 11), 0);
	CHECK_EQ(t_pages_at(p, n, HMM_LOC_HOST), n);
	hmm_free(p);
	CHECK_OK(hmm_device_close(dev));
	return T_PASS;
}

/* A check that failed while the log was taken: its line is in the log. */
static int finish(struct small_fs *fs, struct t_log *log, int rc)
{
	if (log->fd >= 0)
		t_log_stop(log, "", NULL);
	fs_remove(fs);
	return rc;
}

static int migrate_full(void)
{
	struct t_log log = { -1, -1 };
	struct small_fs fs;

	if (!fs_make(&fs))
		return T_SKIP;
	return finish(&fs, &log, migrate_full_on(&fs, &log));
}

static int evict_backoff_on(struct small_fs *fs, struct t_log *log)
{
	const size_t n = 12288, len = n * PAGE, ints = len / sizeof(int); /* 48 MiB */
	struct hmm_stats s1 = { .size = sizeof(s1) }, s2 = { .size = sizeof(s2) };
	struct hmm_device *dev;
	uint64_t failed;
	int *p;

	CHECK_OK(open_tier(fs, &dev));
	p = hmm_alloc(len);
	CHECK(p);
	CHECK_OK(t_log_start(log));
	/* Over the limit, the pager evicts to the tier until the file system is full. */
	t_fill(p, ints, 21);
	usleep(300000);
	CHECK_OK(hmm_stats_get(&s1));
	/* Nothing changes now; without the back-off, a batch would fail every 5 ms. */
	sleep(2);
	CHECK_OK(hmm_stats_get(&s2));
	failed = s2.migrations_failed - s1.migrations_failed;
	/* Reading it all back makes room, and the pager fills it again: no new line. */
	CHECK_EQ(t_count_bad(p, ints, 21), 0);
	CHECK_EQ(t_log_stop(log, "no space left", NULL), 1);
	t_note("%llu pages evicted, %llu failed for want of space, %llu more in 2 s idle",
	       (unsigned long long)s1.evictions, (unsigned long long)s1.migrations_failed,
	       (unsigned long long)failed);
	CHECK(s1.evictions > 0);
	CHECK(s1.migrations_failed > 0);
	CHECK(failed <= 4 * 512);
	hmm_free(p);
	CHECK_OK(hmm_device_close(dev));
	return T_PASS;
}

static int evict_backoff(void)
{
	struct t_log log = { -1, -1 };
	struct small_fs fs;

	if (!getenv("UHMM_HOST_LIMIT"))
		SKIP("needs UHMM_HOST_LIMIT (the uring_enospc-hostlimit test sets it)");
	if (!fs_make(&fs))
		return T_SKIP;
	return finish(&fs, &log, evict_backoff_on(&fs, &log));
}

T_MAIN(TEST_CASE(migrate_full, T_NO_DEVICES | T_ONE_VARIANT),
       TEST_CASE(evict_backoff, T_NO_DEVICES | T_ONE_VARIANT))
