// SPDX-License-Identifier: MIT
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

#include "harness.h"

static const struct variant variants[] = {
	{ "private", "sim", "sim", false, false },
	{ "coherent", "sim:coherent", "sim:coherent", true, false },
	{ "copy", "sim:copy", "sim:copy", false, true },
};

const struct variant *variant;
struct hmm_device *dev0, *dev1;
static const char *current_case;

void t_note(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "  # %s [%s]: ", current_case, variant ? variant->name : "-");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void t_fail(const char *file, int line, const char *what, const char *detail)
{
	fprintf(stderr, "  # %s [%s]: %s:%d: check failed: %s%s%s\n", current_case,
		variant ? variant->name : "-", file, line, what, detail ? ": " : "",
		detail ? detail : "");
}

int t_open(const char *spec, struct hmm_device **ret)
{
	return hmm_device_open(spec, ret);
}

static int run_case(const struct test_case *tc)
{
	int rc, err;

	alarm(120); /* a hang is a failure, not a stuck CI */
	dev0 = dev1 = NULL;
	if (!(tc->flags & T_NO_DEVICES)) {
		err = hmm_device_open(variant->spec, &dev0);
		if (!err && (tc->flags & T_TWO_DEVICES))
			err = hmm_device_open(variant->spec2, &dev1);
		if (err) {
			t_note("cannot open %s: %s", variant->spec, strerror(-err));
			return T_FAIL;
		}
	}
	rc = tc->fn();
	/* Teardown: closing must work, and it brings everything home. */
	if (dev1 && (err = hmm_device_close(dev1))) {
		t_note("closing device 1: %s", strerror(-err));
		rc = T_FAIL;
	}
	if (dev0 && (err = hmm_device_close(dev0))) {
		t_note("closing device 0: %s", strerror(-err));
		rc = T_FAIL;
	}
	return rc;
}

static bool wanted_variant(const char *name)
{
	const char *want = getenv("UHMM_TEST_VARIANTS");
	size_t len = strlen(name);

	if (!want || !*want)
		return true;
	for (const char *p = want; (p = strstr(p, name)); p += len)
		if ((p == want || p[-1] == ',') && (p[len] == 0 || p[len] == ','))
			return true;
	return false;
}

int t_run(const struct test_case *cases, size_t n, int argc, char **argv)
{
	const char *only = getenv("UHMM_TEST_CASE");
	int pass = 0, fail = 0, skip = 0;

	(void)argc;
	(void)argv;
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (size_t i = 0; i < n; i++) {
		const struct test_case *tc = &cases[i];

		if (only && strcmp(only, tc->name))
			continue;
		for (size_t v = 0; v < T_ARRAY_SIZE(variants); v++) {
			const struct variant *var = &variants[v];
			int status, rc;
			pid_t pid;

			if (tc->flags & T_ONE_VARIANT) {
				if (v)
					break;
			} else if (!wanted_variant(var->name) ||
				   ((tc->flags & T_PRIVATE_ONLY) && var->coherent)) {
				continue;
			}
			fflush(NULL);
			pid = fork();
			if (pid < 0) {
				perror("fork");
				return T_FAIL;
			}
			if (!pid) {
				variant = var;
				current_case = tc->name;
				_exit(run_case(tc));
			}
			if (waitpid(pid, &status, 0) != pid)
				status = -1;
			rc = WIFEXITED(status) ? WEXITSTATUS(status) : T_FAIL;
			printf("%s %s [%s]", rc == T_PASS ? "ok  " : rc == T_SKIP ? "skip" : "FAIL",
			       tc->name, (tc->flags & T_ONE_VARIANT) ? "-" : var->name);
			if (WIFSIGNALED(status))
				printf(" (killed by signal %d)", WTERMSIG(status));
			printf("\n");
			if (rc == T_PASS)
				pass++;
			else if (rc == T_SKIP)
				skip++;
			else
				fail++;
		}
	}
	printf("# %d passed, %d failed, %d skipped\n", pass, fail, skip);
	if (fail)
		return T_FAIL;
	return pass ? T_PASS : T_SKIP;
}

void *t_map(size_t len, int prot, int flags)
{
	void *p = mmap(NULL, len, prot, flags, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

void t_unmap(void *p, size_t len)
{
	if (p)
		munmap(p, len);
}

bool t_have_thp(void)
{
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
	char buf[128] = "";

	if (!f)
		return false;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = 0;
	fclose(f);
	return !strstr(buf, "[never]") && buf[0];
}

void *t_thp_region(void **ret_map, size_t *ret_map_len, int prot)
{
	size_t len = 2 * THP_SIZE;
	char *map = t_map(len, prot, MAP_PRIVATE | MAP_ANONYMOUS);
	char *p;

	if (!map)
		return NULL;
	p = (char *)(((uintptr_t)map + THP_SIZE - 1) & ~(THP_SIZE - 1));
	madvise(p, THP_SIZE, MADV_HUGEPAGE);
	*ret_map = map;
	*ret_map_len = len;
	return p;
}

void t_fill(int *p, size_t nints, int base)
{
	for (size_t i = 0; i < nints; i++)
		p[i] = (int)i + base;
}

size_t t_count_bad(const int *p, size_t nints, int base)
{
	size_t bad = 0;

	for (size_t i = 0; i < nints; i++)
		bad += p[i] != (int)i + base;
	return bad;
}

size_t t_count_neg(const int *p, size_t nints)
{
	size_t bad = 0;

	for (size_t i = 0; i < nints; i++)
		bad += p[i] != -(int)i;
	return bad;
}

bool t_is_zero(const void *p, size_t len)
{
	const unsigned char *c = p;

	for (size_t i = 0; i < len; i++)
		if (c[i])
			return false;
	return true;
}

int t_loc(const void *addr)
{
	int loc = -100;

	hmm_residency(addr, 1, &loc);
	return loc;
}

size_t t_pages_at(const void *addr, size_t npages, int loc)
{
	int *v = calloc(npages, sizeof(int));
	size_t n = 0;

	if (!v || hmm_residency(addr, npages * PAGE, v)) {
		free(v);
		return (size_t)-1;
	}
	for (size_t i = 0; i < npages; i++)
		n += v[i] == loc;
	free(v);
	return n;
}

int t_dev_index(struct hmm_device *dev)
{
	struct hmm_device_info info = { .size = sizeof(info) };

	return hmm_device_info(dev, &info) ? -1 : info.index;
}

uint64_t t_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
