// SPDX-License-Identifier: MIT
/*
 * uhmm-bench, remote memory: the fabric device against the same RMA done
 * raw, with libfabric, to the same memory nodes over the same provider.
 * The nodes are uhmm-memnode processes this part starts from uhmm-bench's
 * own directory, on loopback, and stops again.
 *
 *   fabric_fault_latency   an isolated 4 KiB CPU fault from a node, against
 *                          a raw 4 KiB fi_read round trip plus a raw
 *                          userfaultfd round trip, sampled in turn; medians
 *   fabric_evict_bw        SIZE migrated to one node, against SIZE written
 *                          raw in 64 KiB fi_writes, 16 in flight (the
 *                          device's chunk and depth); best of the rounds
 *   ..._seal               the same two with sealed pages (report)
 *   fabric_recovery_s      three nodes, two copies, 256 MiB out; one node
 *                          killed: seconds until every page has two copies
 *                          again, against how long the first eviction of
 *                          the 256 MiB took (report)
 * The raw side is the device's own node code (node.c): the same endpoint,
 * the same staging, without the runtime.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uhmm.h>
#include <uhmm/device.h>

#include "bench.h"
#include "node.h"

#define PAGE 4096ul
#define MAX_NODES 3
#define RECOVERY_SIZE (256ul << 20)

static pid_t node_pids[MAX_NODES];
static char node_addrs[MAX_NODES][64];
static char tmpdir[64];

/* node.c's log lines (libuhmm keeps its own to itself): on standard error. */
void hmm_device_log(const struct hmm_device *dev, const char *fmt, ...)
{
	va_list ap;

	(void)dev;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void die(const char *what, int err)
{
	fprintf(stderr, "uhmm-bench: %s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(1);
}

/* Memory node i, on loopback, with its port in tmpdir/port<i>. */
static void start_node(const char *dir, unsigned i)
{
	char memnode[4200], port_file[128], buf[16] = { 0 };
	pid_t pid;

	snprintf(memnode, sizeof(memnode), "%s/uhmm-memnode", dir);
	snprintf(port_file, sizeof(port_file), "%s/port%u", tmpdir, i);
	pid = fork();
	if (pid < 0)
		die("fork", errno);
	if (!pid) {
		execl(memnode, memnode, "--listen", "127.0.0.1:0", "--mem", "8G", "--port-file",
		      port_file, (char *)NULL);
		_exit(127);
	}
	node_pids[i] = pid;
	for (int tries = 0; tries < 200; tries++) {
		FILE *f = fopen(port_file, "r");

		if (f && fgets(buf, sizeof(buf), f) && strchr(buf, '\n')) {
			fclose(f);
			snprintf(node_addrs[i], sizeof(node_addrs[i]), "127.0.0.1:%ld",
				 strtol(buf, NULL, 10));
			return;
		}
		if (f)
			fclose(f);
		usleep(20000);
	}
	die("uhmm-memnode did not start", ETIMEDOUT);
}

static void stop_node(unsigned i)
{
	if (node_pids[i] > 0) {
		kill(node_pids[i], SIGKILL);
		waitpid(node_pids[i], NULL, 0);
	}
	node_pids[i] = 0;
}

static struct hmm_device *open_fabric(unsigned nodes, const char *extra, size_t mem)
{
	char spec[512];
	int n = snprintf(spec, sizeof(spec), "fabric:mem=%zuM", mem >> 20), err;
	struct hmm_device *dev;

	for (unsigned i = 0; i < nodes; i++)
		n += snprintf(spec + n, sizeof(spec) - (size_t)n, ",node=%s", node_addrs[i]);
	if (*extra)
		snprintf(spec + n, sizeof(spec) - (size_t)n, ",%s", extra);
	err = hmm_device_open(spec, &dev);
	if (err)
		die(spec, err);
	return dev;
}

/* A raw client of node 0, as the device is one: region, endpoint, staging. */
static void raw_connect(struct fabric_node *n, size_t bytes)
{
	char err[256];

	memset(n, 0, sizeof(*n));
	n->ctl.fd = -1;
	if (node_connect(n, node_addrs[0], "tcp", NULL, bytes, 5000, err, sizeof(err))) {
		fprintf(stderr, "uhmm-bench: %s\n", err);
		exit(1);
	}
}

static void count_done(struct node_op *op, int status, void *arg)
{
	(void)op;
	if (status)
		die("raw RMA", status);
	(*(unsigned *)arg)++;
}

/* Raw RMAs of len bytes each from offset 0 on, qd in flight, total bytes; seconds. */
static double raw_rma(struct fabric_node *n, bool write, size_t len, unsigned qd, size_t total)
{
	unsigned done = 0, posted = 0, want = (unsigned)(total / len);
	double t0 = now();

	while (done < want) {
		struct node_op *op;

		while (posted < want && posted - done < qd && (op = node_op_get(n))) {
			int err = node_post(op, write, (uint64_t)posted * len % n->bytes, len);

			if (err)
				die("raw fi_write", err);
			posted++;
		}
		if (node_poll(n, 0, count_done, &done) < 0)
			die("raw completion", EIO);
	}
	return now() - t0;
}

static void fault_latency(unsigned samples, const char *extra, const char *name)
{
	size_t len = 2 * (size_t)samples * PAGE;
	struct hmm_device *dev = open_fabric(1, extra, len + (64ul << 20));
	char *region = hmm_alloc(len);
	double *ours = calloc(samples, sizeof(double)), *base = calloc(samples, sizeof(double));
	struct fabric_node raw;
	int err;

	if (!region || !ours || !base)
		die("alloc", ENOMEM);
	memset(region, 3, len);
	err = hmm_migrate(region, len, dev, 0, NULL);
	if (err)
		die("hmm_migrate", err);
	raw_connect(&raw, len);
	raw_rma(&raw, true, PAGE, 1, 16 * PAGE); /* the connection up before timing */
	for (unsigned i = 0; i < samples; i++) {
		/* Every other page, in order but never neighbours: each fault reads its one. */
		char *page = region + (size_t)((i * 7919u) % samples) * 2 * PAGE;
		double t0;

		settle();
		t0 = now();
		(void)*(volatile char *)page;
		ours[i] = (now() - t0) * 1e9;
		settle();
		base[i] = raw_rma(&raw, false, PAGE, 1, PAGE) * 1e9 + raw_fault_once(i);
	}
	report(name, median(ours, samples), "ns", median(base, samples),
	       "raw 4K fi_read + raw uffd");
	node_close(&raw);
	hmm_free(region);
	hmm_device_close(dev);
	free(ours);
	free(base);
}

static void evict_bw(size_t size, unsigned rounds, const char *extra, const char *name)
{
	char *p = hmm_alloc(size);
	double ours = 0, base = 0;

	if (!p)
		die("hmm_alloc", ENOMEM);
	memset(p, 3, size);
	for (unsigned r = 0; r < rounds; r++) {
		struct hmm_device *dev = open_fabric(1, extra, size + (64ul << 20));
		struct fabric_node raw;
		double t0, v;
		int err;

		raw_connect(&raw, size);
		v = (double)size / raw_rma(&raw, true, NODE_CHUNK, NODE_QD, size) / 1e9;
		base = v > base ? v : base;
		node_close(&raw);
		t0 = now();
		err = hmm_migrate(p, size, dev, 0, NULL);
		if (err)
			die("hmm_migrate", err);
		v = (double)size / (now() - t0) / 1e9;
		ours = v > ours ? v : ours;
		err = hmm_migrate(p, size, NULL, 0, NULL);
		if (err)
			die("hmm_migrate home", err);
		hmm_device_close(dev);
	}
	report(name, ours, "GB/s", base, "raw 64K fi_write, 16 in flight");
	hmm_free(p);
}

static void recovery(const char *dir)
{
	struct hmm_device *dev;
	struct hmm_device_info info = { .size = sizeof(info) };
	char *p = hmm_alloc(RECOVERY_SIZE);
	double t0, evict;
	int err;

	if (!p)
		die("hmm_alloc", ENOMEM);
	start_node(dir, 1);
	start_node(dir, 2);
	dev = open_fabric(3, "replicas=2", RECOVERY_SIZE + (64ul << 20));
	memset(p, 3, RECOVERY_SIZE);
	t0 = now();
	err = hmm_migrate(p, RECOVERY_SIZE, dev, 0, NULL);
	if (err)
		die("hmm_migrate", err);
	evict = now() - t0;
	stop_node(0);
	t0 = now();
	do {
		usleep(10000);
		hmm_device_info(dev, &info);
	} while ((info.parts_alive == 3 || info.pages_degraded) && now() - t0 < 600);
	report("fabric_recovery_s", now() - t0, "s", evict,
	       "the first eviction of the 256 MiB, 2 copies");
	hmm_free(p);
	hmm_device_close(dev);
	stop_node(1);
	stop_node(2);
}

void bench_fabric(const char *dir, size_t size, unsigned samples, bool quick)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/uhmm-bench-XXXXXX");
	if (!mkdtemp(tmpdir))
		die("mkdtemp", errno);
	start_node(dir, 0);
	fault_latency(samples, "", "fabric_fault_latency");
	evict_bw(size, quick ? 2 : 3, "", "fabric_evict_bw");
	fault_latency(samples, "seal", "fabric_fault_latency_seal");
	evict_bw(size, quick ? 2 : 3, "seal", "fabric_evict_bw_seal");
	recovery(dir);
	stop_node(0);
	for (unsigned i = 0; i < MAX_NODES; i++) {
		char path[128];

		snprintf(path, sizeof(path), "%s/port%u", tmpdir, i);
		unlink(path);
	}
	rmdir(tmpdir);
}
