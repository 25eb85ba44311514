// SPDX-License-Identifier: MIT
/*
 * The storage tier as storage: where its bytes go. Pages evicted to it
 * leave RAM (no page-cache copy left behind, O_DIRECT or buffered), the
 * file holds blocks only for what is on it (released slots are punched),
 * a file named by path= is created and kept, and a block device is used
 * only when the spec says so and never while it is mounted.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "harness.h"

#define DATA (32ul << 20)

static char dir[] = "/var/tmp/uhmm-storage-XXXXXX";
static char file[sizeof(dir) + 16];

static int open_tier(const char *opts, struct hmm_device **ret)
{
	char spec[256];

	snprintf(spec, sizeof(spec), "uring:path=%s,mem=128M%s%s", file, *opts ? "," : "", opts);
	return hmm_device_open(spec, ret);
}

static uint64_t file_bytes(void)
{
	struct stat st;

	return stat(file, &st) ? ~0ull : (uint64_t)st.st_blocks * 512;
}

/* Pages of the file in the page cache, read without faulting any in. */
static size_t cached_pages(size_t len)
{
	int fd = open(file, O_RDONLY);
	unsigned char *vec = malloc(len / PAGE);
	void *map = fd >= 0 ? mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
	size_t n = 0;

	if (map != MAP_FAILED && vec && !mincore(map, len, vec))
		for (size_t i = 0; i < len / PAGE; i++)
			n += vec[i] & 1;
	else
		n = ~(size_t)0;
	if (map != MAP_FAILED)
		munmap(map, len);
	if (fd >= 0)
		close(fd);
	free(vec);
	return n;
}

static char *filled(size_t len, int base)
{
	char *p = hmm_alloc(len);

	if (p)
		t_fill((int *)p, len / sizeof(int), base);
	return p;
}

/* Any transfer: the backend gives released slots back before its next one. */
static int nudge(struct hmm_device *dev)
{
	char *p = filled(PAGE, 0);
	size_t n;
	int err = p ? hmm_migrate(p, PAGE, dev, 0, &n) : -ENOMEM;

	hmm_free(p);
	return err;
}

static int space_given_back(void)
{
	struct hmm_device *dev;
	char *p, *q;
	size_t n;

	CHECK_OK(open_tier("", &dev));
	p = filled(DATA, 1);
	q = filled(DATA, 2);
	CHECK(p && q);
	CHECK_OK(hmm_migrate(p, DATA, dev, 0, &n));
	CHECK_OK(hmm_migrate(q, DATA, dev, 0, &n));
	CHECK(file_bytes() >= 2 * DATA);
	t_note("after 64 MiB out: %llu KiB in the file", (unsigned long long)file_bytes() >> 10);

	/* Pages that come home, and memory freed while on the tier. */
	CHECK_OK(hmm_migrate(p, DATA, NULL, 0, &n));
	CHECK_EQ(t_count_bad((int *)p, DATA / sizeof(int), 1), 0);
	hmm_free(q);
	CHECK_OK(nudge(dev));
	t_note("after all came home or was freed: %llu KiB", (unsigned long long)file_bytes() >> 10);
	CHECK(file_bytes() <= (1ul << 20));

	/* The slots are reused, the data right. */
	CHECK_OK(hmm_migrate(p, DATA, dev, 0, &n));
	CHECK_EQ(t_count_bad((int *)p, DATA / sizeof(int), 1), 0);
	hmm_free(p);
	CHECK_OK(hmm_device_close(dev));
	CHECK_OK(unlink(file)); /* path= a file: created, and kept */
	return T_PASS;
}

static int evicted_pages_leave_ram(const char *opts, const char *mode)
{
	struct hmm_device_info info = { .size = sizeof(info) };
	struct hmm_device *dev;
	size_t n, cached = 0;
	char *p = filled(DATA, 3);

	CHECK(p);
	CHECK_OK(open_tier(opts, &dev));
	CHECK_OK(hmm_device_info(dev, &info));
	t_note("%s", info.detail);
	CHECK(!strncmp(info.detail, mode, strlen(mode)));
	CHECK_OK(hmm_migrate(p, DATA, dev, 0, &n));
	CHECK(file_bytes() >= DATA);
	/* RWF_DONTCACHE drops pages once their writeback ends, a moment later. */
	for (int i = 0; i < 50 && (cached = cached_pages(DATA)) > 16; i++)
		usleep(100 * 1000);
	t_note("%s: %zu of %lu pages left in the page cache", opts, cached, DATA / PAGE);
	CHECK(cached <= 16);
	CHECK_EQ(t_count_bad((int *)p, DATA / sizeof(int), 3), 0);
	hmm_free(p);
	CHECK_OK(hmm_device_close(dev));
	CHECK_OK(unlink(file));
	return T_PASS;
}

static int direct_leaves_ram(void)
{
	return evicted_pages_leave_ram("", "O_DIRECT");
}

static int buffered_leaves_ram(void)
{
	return evicted_pages_leave_ram("buffered", "buffered");
}

static int sh(const char *cmd)
{
	int st = system(cmd);

	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A loop device over a file: the block device a user would name. */
static int block_device(void)
{
	char img[sizeof(dir) + 16], cmd[512], loop[64] = "", spec[128];
	struct hmm_device *dev;
	FILE *f;
	char *p;
	size_t n;
	int ret = T_FAIL, err;

	snprintf(img, sizeof(img), "%s/disk.img", dir);
	snprintf(cmd, sizeof(cmd), "truncate -s 64M %s && losetup -f --show %s 2>/dev/null", img,
		 img);
	f = popen(cmd, "r");
	if (!f || !fgets(loop, sizeof(loop), f) || !loop[0]) {
		if (f)
			pclose(f);
		unlink(img);
		SKIP("no loop device here (losetup needs root and the loop driver)");
	}
	pclose(f);
	loop[strcspn(loop, "\n")] = 0;

	/* Named without 'blockdev': refused, the device untouched. */
	snprintf(spec, sizeof(spec), "uring:path=%s,mem=32M", loop);
	if ((err = hmm_device_open(spec, &dev)) != -EINVAL)
		goto out;
	snprintf(spec, sizeof(spec), "uring:path=%s,mem=128M,blockdev", loop);
	if ((err = hmm_device_open(spec, &dev)) != -ENOSPC)
		goto out;
	snprintf(spec, sizeof(spec), "uring:path=%s,mem=32M,blockdev", loop);
	if ((err = hmm_device_open(spec, &dev)))
		goto out;
	p = filled(16ul << 20, 4);
	err = p ? hmm_migrate(p, 16ul << 20, dev, 0, &n) : -ENOMEM;
	if (err || n != (16ul << 20) / PAGE ||
	    t_pages_at(p, (16ul << 20) / PAGE, t_dev_index(dev)) != (16ul << 20) / PAGE ||
	    t_count_bad((int *)p, (16ul << 20) / sizeof(int), 4))
		goto out_close;
	hmm_free(p);
	if (hmm_device_close(dev))
		goto out;

	/* Mounted: the exclusive open is refused. */
	snprintf(cmd, sizeof(cmd), "mkfs.ext4 -q %s && mkdir -p %s/mnt && mount %s %s/mnt", loop,
		 dir, loop, dir);
	if (sh(cmd)) {
		t_note("cannot mount a file system here: the mounted case is not checked");
		ret = T_PASS;
		goto out;
	}
	err = hmm_device_open(spec, &dev);
	ret = err == -EBUSY ? T_PASS : T_FAIL;
	if (!err)
		hmm_device_close(dev);
	snprintf(cmd, sizeof(cmd), "umount %s/mnt; rmdir %s/mnt", dir, dir);
	sh(cmd);
	goto out;
out_close:
	hmm_device_close(dev);
out:
	snprintf(cmd, sizeof(cmd), "losetup -d %s", loop);
	sh(cmd);
	unlink(img);
	if (ret != T_PASS) {
		snprintf(cmd, sizeof(cmd), "%s: %s", spec, strerror(-err));
		t_fail(__FILE__, __LINE__, "block device", cmd);
	}
	return ret;
}

static void cleanup(void)
{
	unlink(file);
	rmdir(dir);
}

int main(int argc, char **argv)
{
	static const struct test_case cases[] = {
		TEST_CASE(space_given_back, T_NO_DEVICES | T_ONE_VARIANT),
		TEST_CASE(direct_leaves_ram, T_NO_DEVICES | T_ONE_VARIANT),
		TEST_CASE(buffered_leaves_ram, T_NO_DEVICES | T_ONE_VARIANT),
		TEST_CASE(block_device, T_NO_DEVICES | T_ONE_VARIANT),
	};
	int ret;

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return T_FAIL;
	}
	snprintf(file, sizeof(file), "%s/tier", dir);
	ret = t_run(cases, T_ARRAY_SIZE(cases), argc, argv);
	cleanup();
	return ret;
}
