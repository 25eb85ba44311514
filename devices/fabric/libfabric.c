// SPDX-License-Identifier: MIT
/*
 * libfabric, opened when a fabric device is, never before. Linked into
 * libuhmm, it would load into every program under uhmm-run with what
 * Debian's build of it needs (libpsm2, libinfinipath, libibverbs,
 * libstdc++), and libpsm2 and libinfinipath install SIGSEGV and SIGABRT
 * handlers from their constructors: a program's crash would end in an
 * exit status instead of its signal. So the backend calls these, which
 * dlopen libfabric on first use and forward; everything else of
 * libfabric's API is inline, through the tables these return. The memory
 * node, the tests and the bench link libfabric itself.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <string.h>

#include <rdma/fabric.h>
#include <rdma/fi_errno.h>

static struct {
	int (*getinfo)(uint32_t, const char *, const char *, uint64_t, const struct fi_info *,
		       struct fi_info **);
	void (*freeinfo)(struct fi_info *);
	struct fi_info *(*dupinfo)(const struct fi_info *);
	int (*fabric)(struct fi_fabric_attr *, struct fid_fabric **, void *);
	const char *(*strerror)(int);
} lf;
static pthread_once_t lf_once = PTHREAD_ONCE_INIT;

static void load(void)
{
	void *h = dlopen("libfabric.so.1", RTLD_NOW | RTLD_LOCAL);

	if (!h)
		return;
	lf.freeinfo = (void (*)(struct fi_info *))dlsym(h, "fi_freeinfo");
	lf.dupinfo = (struct fi_info * (*)(const struct fi_info *)) dlsym(h, "fi_dupinfo");
	lf.fabric = (int (*)(struct fi_fabric_attr *, struct fid_fabric **, void *))dlsym(
		h, "fi_fabric");
	lf.strerror = (const char *(*)(int))dlsym(h, "fi_strerror");
	/* Last: the others are there when this one is. */
	if (lf.freeinfo && lf.dupinfo && lf.fabric && lf.strerror)
		lf.getinfo = (int (*)(uint32_t, const char *, const char *, uint64_t,
				      const struct fi_info *, struct fi_info **))dlsym(h, "fi_getinfo");
}

/* Whether libfabric is here: the backend's probe. */
int fab_library_present(void)
{
	pthread_once(&lf_once, load);
	return lf.getinfo != NULL;
}

int fi_getinfo(uint32_t version, const char *node, const char *service, uint64_t flags,
	       const struct fi_info *hints, struct fi_info **info)
{
	if (!fab_library_present())
		return -FI_ENOSYS;
	return lf.getinfo(version, node, service, flags, hints, info);
}

void fi_freeinfo(struct fi_info *info)
{
	if (fab_library_present())
		lf.freeinfo(info);
}

struct fi_info *fi_dupinfo(const struct fi_info *info)
{
	return fab_library_present() ? lf.dupinfo(info) : NULL;
}

int fi_fabric(struct fi_fabric_attr *attr, struct fid_fabric **fabric, void *context)
{
	return fab_library_present() ? lf.fabric(attr, fabric, context) : -FI_ENOSYS;
}

const char *fi_strerror(int errnum)
{
	return fab_library_present() ? lf.strerror(errnum) : strerror(errnum);
}
