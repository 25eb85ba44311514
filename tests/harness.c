// SPDX-License-Identifier: MIT
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>

#include "harness.h"

#define MAX_VARIANTS 32

static struct variant variants[MAX_VARIANTS];
static size_t nvariants;
const struct variant *variant;
struct hmm_device *dev0, *dev1;
static const char *current_case;

void t_note(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "  # %s [%s]: ", current_case, variant ? variant->spec : "-");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void t_fail(const char *file, int line, const char *what, const char *detail)
{
	fprintf(stderr, "  # %s [%s]: %s:%d: check failed: %s%s%s\n", current_case,
		variant ? variant->spec : "-", file, line, what, detail ? ": " : "",
		detail ? detail : "");
}

int t_open(const char *spec, struct hmm_device **ret)
{
	return hmm_device_open(spec, ret);
}

static void add_variant(const char *spec, int model)
{
	if (nvariants == MAX_VARIANTS)
		return;
	variants[nvariants++] = (struct variant){
		.spec = spec,
		.memory_model = model,
		.coherent = model == HMM_MEMORY_COHERENT,
		.dma_only = model == HMM_MEMORY_DMA_ONLY,
	};
}

/* What a spec nobody declared is: opened in a child, so this process stays clean. */
static int probe_model(const char *spec)
{
	int status;
	pid_t pid = fork();

	if (!pid) {
		struct hmm_device_info info = { .size = sizeof(info) };
		struct hmm_device *d;

		_exit(hmm_device_open(spec, &d) || hmm_device_info(d, &info) ? 100 : info.memory_model);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
	    WEXITSTATUS(status) >= 100)
		return -1;
	return WEXITSTATUS(status);
}

/* The declared model of spec, or -1. */
static int declared_model(const char *spec)
{
	struct hmm_backend_info b = { .size = sizeof(b) };

	for (int i = 0; !hmm_backend_info(i, &b); i++)
		for (const struct hmm_device_variant *v = b.variants; v && v->spec; v++)
			if (!strcmp(v->spec, spec))
				return v->memory_model;
	return -1;
}

/*
 * UHMM_TEST_SKIP_BACKENDS: backends left out of a run over all of them,
 * for those that need what such a run does not set up (fabric: memory
 * nodes); their own suites run them.
 */
static bool skipped_backend(const char *kind)
{
	const char *skip = getenv("UHMM_TEST_SKIP_BACKENDS");
	size_t n = strlen(kind);

	for (const char *p = skip; p && (p = strstr(p, kind)); p += n)
		if ((p == skip || p[-1] == ',') && (!p[n] || p[n] == ','))
			return true;
	return false;
}

static void load_variants(void)
{
	const char *only = getenv("UHMM_TEST_BACKEND"), *devices = getenv("UHMM_TEST_DEVICES");
	struct hmm_backend_info b = { .size = sizeof(b) };

	if (devices && *devices) {
		static char buf[1024];
		char *save = NULL;

		snprintf(buf, sizeof(buf), "%s", devices);
		for (char *s = strtok_r(buf, ";", &save); s; s = strtok_r(NULL, ";", &save)) {
			int model = declared_model(s);

			if (model < 0)
				model = probe_model(s);
			if (model < 0)
				fprintf(stderr, "  # UHMM_TEST_DEVICES: cannot open %s; skipped\n", s);
			else
				add_variant(s, model);
		}
		return;
	}
	for (int i = 0; !hmm_backend_info(i, &b); i++) {
		if ((only && strcmp(only, b.kind)) || b.present || skipped_backend(b.kind))
			continue;
		for (const struct hmm_device_variant *v = b.variants; v && v->spec; v++)
			add_variant(v->spec, v->memory_model);
	}
}

/*
 * The device must be what its backend says it is: a wrong model would run
 * every test against the wrong expectations.
 */
static bool model_agrees(void)
{
	struct hmm_device_info info = { .size = sizeof(info) };

	if (!dev0 || hmm_device_info(dev0, &info))
		return true;
	if (info.memory_model == variant->memory_model)
		return true;
	t_note("%s reports memory model %d, its backend declares %d", variant->spec,
	       info.memory_model, variant->memory_model);
	return false;
}

static int run_case(const struct test_case *tc)
{
	int rc, err;

	alarm(120); /* a hang is a failure, not a stuck CI */
	dev0 = dev1 = NULL;
	if (!(tc->flags & T_NO_DEVICES)) {
		err = hmm_device_open(variant->spec, &dev0);
		if (!err && (tc->flags & T_TWO_DEVICES))
			err = hmm_device_open(variant->spec, &dev1);
		if (err == -ENODEV) {
			/* Built, but no such device here (no driver, no hardware). */
			t_note("%s: no such device here", variant->spec);
			return T_SKIP;
		}
		if (err) {
			t_note("cannot open %s: %s", variant->spec, strerror(-err));
			return T_FAIL;
		}
	}
	rc = model_agrees() ? tc->fn() : T_FAIL;
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

int t_run(const struct test_case *cases, size_t n, int argc, char **argv)
{
	const char *only = getenv("UHMM_TEST_CASE");
	int pass = 0, fail = 0, skip = 0;

	(void)argc;
	(void)argv;
	setvbuf(stdout, NULL, _IOLBF, 0);
	load_variants();
	if (!nvariants) {
		printf("# no device to test on (UHMM_TEST_BACKEND=%s, UHMM_TEST_DEVICES=%s)\n",
		       getenv("UHMM_TEST_BACKEND") ?: "", getenv("UHMM_TEST_DEVICES") ?: "");
		return T_SKIP;
	}
	for (size_t i = 0; i < n; i++) {
		const struct test_case *tc = &cases[i];

		if (only && strcmp(only, tc->name))
			continue;
		for (size_t v = 0; v < nvariants; v++) {
			const struct variant *var = &variants[v];
			int status, rc;
			pid_t pid;

			if (tc->flags & T_ONE_VARIANT) {
				if (v)
					break;
			} else if ((tc->flags & T_PRIVATE_ONLY) && var->coherent) {
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
			       tc->name, (tc->flags & T_ONE_VARIANT) ? "-" : var->spec);
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

bool t_kernel_has(const char *feature)
{
	struct hmm_kernel_feature f = { .size = sizeof(f) };

	for (int i = 0; !hmm_kernel_feature(i, &f); i++)
		if (!strcmp(f.name, feature))
			return f.present;
	return false;
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

int t_log_start(struct t_log *log)
{
	int fd = memfd_create("t_log", MFD_CLOEXEC), saved = dup(STDERR_FILENO);

	fflush(stderr);
	if (fd < 0 || saved < 0 || dup2(fd, STDERR_FILENO) < 0) {
		int err = -errno;

		if (fd >= 0)
			close(fd);
		if (saved >= 0)
			close(saved);
		return err;
	}
	log->fd = fd;
	log->saved = saved;
	return 0;
}

size_t t_log_stop(struct t_log *log, const char *needle, size_t *ret_lines)
{
	static char text[1 << 16];
	size_t matches = 0, lines = 0;
	ssize_t len;

	fflush(stderr);
	dup2(log->saved, STDERR_FILENO);
	close(log->saved);
	len = pread(log->fd, text, sizeof(text) - 1, 0);
	close(log->fd);
	log->fd = log->saved = -1;
	text[len > 0 ? len : 0] = 0;
	for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		t_note("log: %s", line);
		lines++;
		matches += strstr(line, needle) != NULL;
	}
	if (ret_lines)
		*ret_lines = lines;
	return matches;
}

volatile int t_sigbus;
static sigjmp_buf sigbus_jb;

static void on_sigbus(int sig)
{
	(void)sig;
	t_sigbus++;
	siglongjmp(sigbus_jb, 1);
}

bool t_load_or_sigbus(const volatile int *p, int *ret)
{
	struct sigaction sa = { .sa_handler = on_sigbus }, old;
	bool ok = false;

	sigaction(SIGBUS, &sa, &old);
	if (!sigsetjmp(sigbus_jb, 1)) {
		*ret = *p;
		ok = true;
	}
	sigaction(SIGBUS, &old, NULL);
	return ok;
}
