/* SPDX-License-Identifier: MIT */
/*
 * The test harness. A test program is a list of cases; each case runs in a
 * child process of its own (as kselftest's TEST_F does), once per device
 * variant, with fresh devices opened for it. Exit status: 0 pass, 1 fail,
 * 77 skip (all cases skipped).
 *
 * The variants are what the backends built into the library and present
 * here declare (hmm_backend_info: a spec and its memory model), so a new
 * backend gets every behaviour test by declaring its specs.
 *   UHMM_TEST_BACKEND=kind       only that backend's variants (meson's
 *                                device-<kind> suites set it)
 *   UHMM_TEST_DEVICES=spec;spec  exactly these specs: declared ones keep
 *                                their model, others take the one the device
 *                                reports when opened
 *   UHMM_TEST_CASE=name          one case only
 * and the runtime's UHMM_KERNEL_HIDE=MOVE,PAGEMAP_SCAN,... runs an older
 * kernel's ways on this one (the *-oldkernel tests).
 */
#ifndef UHMM_TEST_HARNESS_H
#define UHMM_TEST_HARNESS_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <uhmm.h>

#define T_PASS 0
#define T_FAIL 1
#define T_SKIP 77

#define PAGE 4096ul
#define THP_SIZE (2ul << 20)
#define NPAGES 1024ul            /* HMM_BUFFER_SIZE of the kernel's tests: 4 MiB */
#define NTIMES 10

struct variant {
	const char *spec;            /* devices 0 and 1, and the variant's name */
	int memory_model;            /* enum hmm_memory_model */
	bool coherent;               /* the CPU accesses device memory in place */
	bool dma_only;               /* device memory only reachable through DMA */
};

enum {
	T_TWO_DEVICES = 1u << 0,     /* open dev1 as well */
	T_NO_DEVICES = 1u << 1,      /* open nothing */
	T_PRIVATE_ONLY = 1u << 2,    /* device-private variants only */
	T_ONE_VARIANT = 1u << 3,     /* device-independent: run once */
};

struct test_case {
	const char *name;
	int (*fn)(void);
	unsigned flags;
};

#define TEST_CASE(fn, flags) { #fn, fn, flags }

extern const struct variant *variant;
extern struct hmm_device *dev0, *dev1;

int t_run(const struct test_case *cases, size_t n, int argc, char **argv);
void t_fail(const char *file, int line, const char *what, const char *detail);
void t_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define T_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define T_MAIN(...)                                                        \
	int main(int argc, char **argv)                                    \
	{                                                                  \
		static const struct test_case cases_[] = { __VA_ARGS__ }; \
		return t_run(cases_, T_ARRAY_SIZE(cases_), argc, argv);    \
	}

#define CHECK(cond)                                                \
	do {                                                       \
		if (!(cond)) {                                     \
			t_fail(__FILE__, __LINE__, #cond, NULL);   \
			return T_FAIL;                             \
		}                                                  \
	} while (0)

#define CHECK_EQ(a, b)                                                              \
	do {                                                                        \
		long long a_ = (long long)(a), b_ = (long long)(b);                 \
		if (a_ != b_) {                                                     \
			char d_[96];                                                \
			snprintf(d_, sizeof(d_), "%lld != %lld", a_, b_);           \
			t_fail(__FILE__, __LINE__, #a " == " #b, d_);               \
			return T_FAIL;                                              \
		}                                                                   \
	} while (0)

/* For calls returning 0 or -errno. */
#define CHECK_RET(expr, want) CHECK_EQ(expr, want)
#define CHECK_OK(expr) CHECK_EQ(expr, 0)

#define SKIP(...)                         \
	do {                              \
		t_note(__VA_ARGS__);      \
		return T_SKIP;            \
	} while (0)

/*
 * In a child of fork: open the variant's device there, or end the child's
 * part here when the backend cannot be used in a child whose parent started
 * its driver (PoCL's threads, a GPU context do not survive fork; such a
 * backend says -ENODEV): the child then exits T_SKIP, and so does the case.
 */
#define CHILD_OPEN(ret_dev)                                                            \
	do {                                                                           \
		int e_ = hmm_device_open(variant->spec, ret_dev);                      \
		if (e_ == -ENODEV) {                                                   \
			t_note("%s cannot be opened in a child of fork", variant->spec); \
			return T_SKIP;                                                 \
		}                                                                      \
		CHECK_OK(e_);                                                          \
	} while (0)

/* Anonymous mappings the test controls, and their helpers. */
void *t_map(size_t len, int prot, int flags);
void t_unmap(void *p, size_t len);
/* A PMD-aligned huge-page region of THP_SIZE inside a 2x mapping (*ret_map). */
void *t_thp_region(void **ret_map, size_t *ret_map_len, int prot);
bool t_have_thp(void);
bool t_kernel_has(const char *feature);                      /* a uhmm-info name */
void t_fill(int *p, size_t nints, int base);
size_t t_count_bad(const int *p, size_t nints, int base);   /* != i + base */
size_t t_count_neg(const int *p, size_t nints);             /* != -i */
bool t_is_zero(const void *p, size_t len);
int t_open(const char *spec, struct hmm_device **ret);
int t_loc(const void *addr);                                 /* hmm_residency of one page */
size_t t_pages_at(const void *addr, size_t npages, int loc); /* pages resident at loc */
int t_dev_index(struct hmm_device *dev);
uint64_t t_now_ns(void);
/*
 * *p read with a SIGBUS handler in place: false if that access got SIGBUS
 * (a page the runtime could not bring home). t_sigbus counts them.
 */
bool t_load_or_sigbus(const volatile int *p, int *ret);
extern volatile int t_sigbus;

/*
 * The runtime's log (standard error) into a memory file for a while. Stop
 * puts standard error back, shows what was logged as notes, and returns
 * how many lines contain needle (*ret_lines: how many there were). Not
 * started, or stopped: fd is -1.
 */
struct t_log {
	int saved, fd;
};
int t_log_start(struct t_log *log);
size_t t_log_stop(struct t_log *log, const char *needle, size_t *ret_lines);

#endif
