// SPDX-License-Identifier: MIT
/*
 * What this library and this machine offer, for uhmm-info and for anyone
 * else (libfabric's fi_getinfo and fi_getparams are the models): the
 * backends built and whether each is present, the kernel features the
 * runtime looks for, and how this process gets userfaultfd. None of it
 * starts the runtime.
 */
#include <errno.h>
#include <string.h>

#include "api.h"

/* Copy what both sides know of a struct that starts with its size. */
#define COPY_OUT(ret, info)                                                         \
	memcpy((char *)(ret) + sizeof((info).size), (char *)&(info) + sizeof((info).size), \
	       MIN((ret)->size, sizeof(info)) - sizeof((info).size))

static bool size_ok(size_t size, size_t min)
{
	return size >= min;
}

int hmm_backend_info(int index, struct hmm_backend_info *ret_info)
{
	struct hmm_backend_info info = { .size = sizeof(info) };
	const struct hmm_device_ops *const *b;
	const struct hmm_device_ops *ops;
	size_t n;

	if (!ret_info || !size_ok(ret_info->size, offsetof(struct hmm_backend_info, kind)) ||
	    index < 0)
		return -EINVAL;
	b = dev_backends(&n);
	if ((size_t)index >= n)
		return -ENOENT;
	ops = b[index];
	info.kind = ops->kind;
	info.description = ops->description;
	info.present = ops->probe();
	info.params = ops->params;
	if (ops->size >= offsetof(struct hmm_device_ops, variants) + sizeof(ops->variants))
		info.variants = ops->variants;
	COPY_OUT(ret_info, info);
	return 0;
}

static const struct {
	uint64_t bit;
	const char *name;
	const char *use;
} uffd_features[] = {
	{ UFFD_FEATURE_PAGEFAULT_FLAG_WP, "PAGEFAULT_FLAG_WP", "write-protect faults (copy path, read-mostly)" },
	{ UFFD_FEATURE_EVENT_FORK, "EVENT_FORK", "unused: fork brings pages home first" },
	{ UFFD_FEATURE_EVENT_REMAP, "EVENT_REMAP", "mremap of managed memory" },
	{ UFFD_FEATURE_EVENT_REMOVE, "EVENT_REMOVE", "madvise(DONTNEED/FREE/REMOVE) of managed memory" },
	{ UFFD_FEATURE_MISSING_HUGETLBFS, "MISSING_HUGETLBFS", "unused" },
	{ UFFD_FEATURE_MISSING_SHMEM, "MISSING_SHMEM", "unused" },
	{ UFFD_FEATURE_EVENT_UNMAP, "EVENT_UNMAP", "munmap of managed memory" },
	{ UFFD_FEATURE_SIGBUS, "SIGBUS", "unused" },
	{ UFFD_FEATURE_THREAD_ID, "THREAD_ID", "telling runtime threads' faults apart" },
	{ UFFD_FEATURE_MINOR_HUGETLBFS, "MINOR_HUGETLBFS", "unused" },
	{ UFFD_FEATURE_MINOR_SHMEM, "MINOR_SHMEM", "unused" },
	{ UFFD_FEATURE_EXACT_ADDRESS, "EXACT_ADDRESS", "unused" },
	{ UFFD_FEATURE_WP_HUGETLBFS_SHMEM, "WP_HUGETLBFS_SHMEM", "unused" },
	{ UFFD_FEATURE_WP_UNPOPULATED, "WP_UNPOPULATED", "unused" },
	{ UFFD_FEATURE_POISON, "POISON", "a page that cannot come home raises SIGBUS on every access (6.6; else the one that faulted gets SIGBUS)" },
	{ UFFD_FEATURE_WP_ASYNC, "WP_ASYNC", "OpenCL coarse mode: only the pages the host changed go to the device" },
	{ UFFD_FEATURE_MOVE, "MOVE", "zero-copy migration and exclusive access (6.8; else pages are copied)" },
};

enum { PT_PROCMAP_QUERY, PT_PAGEMAP_SCAN, PT_PAGEMAP_PFN, PT_NR };

int hmm_kernel_feature(int index, struct hmm_kernel_feature *ret_feature)
{
	struct hmm_kernel_feature f = { .size = sizeof(f) };
	struct uffd_probe probe;

	if (!ret_feature || !size_ok(ret_feature->size, offsetof(struct hmm_kernel_feature, group)) ||
	    index < 0)
		return -EINVAL;
	opt_load(); /* UHMM_KERNEL_HIDE */
	if ((size_t)index < ARRAY_SIZE(uffd_features)) {
		uffd_probe(&probe);
		f.group = "userfaultfd";
		f.name = uffd_features[index].name;
		f.use = uffd_features[index].use;
		f.present = !probe.error && (probe.features & uffd_features[index].bit);
	} else {
		switch (index - (int)ARRAY_SIZE(uffd_features)) {
		case PT_PROCMAP_QUERY:
			f.name = "PROCMAP_QUERY";
			f.use = "VMA lookups without parsing /proc/self/maps (6.11)";
			f.present = vma_have_procmap_query();
			break;
		case PT_PAGEMAP_SCAN:
			f.name = "PAGEMAP_SCAN";
			f.use = "huge pages in snapshots, fast resident-memory counts under a host "
				"limit (6.7; else from pagemap entries)";
			f.present = pagemap_have_scan();
			break;
		case PT_PAGEMAP_PFN:
			f.name = "ZERO_PAGE";
			f.use = "zero pages in snapshots: PAGEMAP_SCAN, or frame numbers in "
				"/proc/self/pagemap (CAP_SYS_ADMIN)";
			f.present = pagemap_knows_zero();
			break;
		default:
			return -ENOENT;
		}
		f.group = "page tables";
	}
	COPY_OUT(ret_feature, f);
	return 0;
}

int hmm_kernel_info(struct hmm_kernel_info *ret_info)
{
	struct hmm_kernel_info info = { .size = sizeof(info) };
	struct uffd_probe probe;

	if (!ret_info || !size_ok(ret_info->size, offsetof(struct hmm_kernel_info, uffd_error)))
		return -EINVAL;
	/* The mode the runtime would use: UHMM_USERFAULTFD may ask for one. */
	opt_load();
	uffd_probe(&probe);
	info.uffd_error = probe.error;
	info.uffd_origin = probe.error ? "" : probe.origin;
	info.kernel_faults = !probe.error && probe.kernel_faults;
	info.uffd_features = probe.error ? 0 : probe.features;
	COPY_OUT(ret_info, info);
	return 0;
}
