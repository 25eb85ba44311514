// SPDX-License-Identifier: MIT
/*
 * snapshot, double_map: the snapshot describes each page without faulting
 * it (the kernel's test_hmm byte values); a migration by one device
 * invalidates the other's mirror, which faults the data back on its next
 * read.
 */
#include <fcntl.h>
#include <stdlib.h>

#include "harness.h"

/*
 * Whether a read fault on anonymous memory maps the shared zero page here:
 * some kernels allocate a page instead (the runtime's own first-touch fills
 * still map it, with UFFDIO_ZEROPAGE). Reading 64 fresh pages tells: they
 * add nothing to the resident set, or 64 pages.
 */
static bool read_maps_zero_page(void)
{
	char *p = t_map(64 * PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS);
	long before, after;
	FILE *f;
	bool zero;

	f = fopen("/proc/self/statm", "r");
	if (!p || !f || fscanf(f, "%*d %ld", &before) != 1)
		return true;
	for (size_t i = 0; i < 64; i++)
		(void)*(volatile char *)(p + i * PAGE);
	rewind(f);
	zero = fscanf(f, "%*d %ld", &after) == 1 && after - before < 32;
	fclose(f);
	t_unmap(p, 64 * PAGE);
	return zero;
}

static int snapshot_case(bool managed)
{
	char *p = t_map(7 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
	/* Page 2 is read only: the runtime zero-fills it when managed, the kernel if not. */
	bool zero = t_kernel_has("ZERO_PAGE") && (managed || read_maps_zero_page());
	uint8_t snap[7];
	size_t pages;

	CHECK(p);
	if (managed)
		CHECK_OK(hmm_manage(p, 7 * PAGE));
	CHECK_OK(mprotect(p, PAGE, PROT_NONE));
	CHECK_OK(munmap(p + PAGE, PAGE));
	CHECK_OK(mprotect(p + 2 * PAGE, PAGE, PROT_READ));
	CHECK_EQ(*(volatile int *)(p + 2 * PAGE), 0);
	*(int *)(p + 3 * PAGE) = 3;
	CHECK_OK(mprotect(p + 3 * PAGE, PAGE, PROT_READ));
	*(int *)(p + 4 * PAGE) = 4;
	CHECK_OK(hmm_migrate(p + 5 * PAGE, PAGE, dev0, 0, &pages));
	CHECK_EQ(pages, 1);
	CHECK_OK(hmm_migrate(p + 6 * PAGE, PAGE, dev1, 0, &pages));
	CHECK_EQ(pages, 1);

	CHECK_OK(hmm_device_snapshot(dev0, p, 7 * PAGE, snap));
	CHECK_EQ(snap[0], HMM_SNAP_ERROR);
	CHECK_EQ(snap[1], HMM_SNAP_ERROR);
	CHECK_EQ(snap[2], (zero ? HMM_SNAP_ZERO : 0) | HMM_SNAP_READ);
	CHECK_EQ(snap[3], HMM_SNAP_READ);
	CHECK_EQ(snap[4], HMM_SNAP_WRITE);
	if (variant->coherent) {
		CHECK_EQ(snap[5], HMM_SNAP_DEV_COHERENT | HMM_SNAP_WRITE);
		CHECK_EQ(snap[6], HMM_SNAP_DEV_COHERENT_REMOTE | HMM_SNAP_WRITE);
	} else {
		CHECK_EQ(snap[5], HMM_SNAP_DEV_PRIVATE | HMM_SNAP_WRITE);
		CHECK_EQ(snap[6], HMM_SNAP_NONE);
	}
	/* Snapshots fault nothing in: page 6 is still on device 1. */
	CHECK_EQ(t_loc(p + 6 * PAGE), t_dev_index(dev1));
	t_unmap(p, PAGE);
	t_unmap(p + 2 * PAGE, 5 * PAGE);
	if (!zero && t_kernel_has("ZERO_PAGE"))
		SKIP("read faults map no zero page on this kernel; the rest checked");
	if (!zero)
		SKIP("zero pages untold: no PAGEMAP_SCAN (6.7), and pagemap shows frame numbers "
		     "only to CAP_SYS_ADMIN; the rest checked");
	return T_PASS;
}

static int snapshot(void) { return snapshot_case(false); }
static int snapshot_managed(void) { return snapshot_case(true); }

/* Untouched is NONE; a private file page not yet copied is READ (mixedmap). */
static int snapshot_special(void)
{
	int fd = open("/tmp", O_TMPFILE | O_RDWR, 0600);
	char *anon = t_map(2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
	char *file;
	uint8_t snap[2];

	CHECK(fd >= 0 && anon && !ftruncate(fd, 2 * PAGE));
	CHECK_EQ(pwrite(fd, "x", 1, 0), 1);
	file = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	CHECK(file != MAP_FAILED);
	CHECK_EQ(*(volatile char *)file, 'x');
	CHECK_OK(hmm_device_snapshot(dev0, file, 2 * PAGE, snap));
	CHECK_EQ(snap[0], HMM_SNAP_READ);
	CHECK_EQ(snap[1], HMM_SNAP_NONE);
	CHECK_OK(hmm_device_snapshot(dev0, anon, 2 * PAGE, snap));
	CHECK_EQ(snap[0], HMM_SNAP_NONE);
	CHECK_EQ(t_loc(anon), HMM_LOC_NONE); /* and it is still untouched */
	munmap(file, 2 * PAGE);
	t_unmap(anon, 2 * PAGE);
	close(fd);
	return T_PASS;
}

static int double_map(void)
{
	size_t n = 6, ints = n * PAGE / sizeof(int), pages;
	int *p = t_map(n * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
	int *mirror = malloc(n * PAGE);
	struct hmm_access acc;

	CHECK(p && mirror);
	t_fill(p, ints, 0);
	CHECK_OK(mprotect(p, n * PAGE, PROT_READ));
	CHECK_OK(hmm_device_read(dev0, p, n * PAGE, mirror, &acc));
	CHECK_EQ(acc.pages, n);
	CHECK_EQ(acc.faults, 1);
	CHECK_EQ(t_count_bad(mirror, ints, 0), 0);
	memset(mirror, 0, n * PAGE);
	CHECK_OK(hmm_device_read(dev1, p, n * PAGE, mirror, &acc));
	CHECK_EQ(acc.faults, 1);
	CHECK_EQ(t_count_bad(mirror, ints, 0), 0);
	CHECK_OK(hmm_migrate(p, n * PAGE, dev1, 0, &pages));
	CHECK_EQ(pages, n);
	memset(mirror, 0, n * PAGE);
	CHECK_OK(hmm_device_read(dev0, p, n * PAGE, mirror, &acc));
	CHECK_EQ(acc.pages, n);
	CHECK_EQ(acc.faults, 1);
	CHECK_EQ(t_count_bad(mirror, ints, 0), 0);
	t_unmap(p, n * PAGE);
	free(mirror);
	return T_PASS;
}

T_MAIN(TEST_CASE(snapshot, T_TWO_DEVICES),
       TEST_CASE(snapshot_managed, T_TWO_DEVICES),
       TEST_CASE(snapshot_special, 0),
       TEST_CASE(double_map, T_TWO_DEVICES))
