// SPDX-License-Identifier: MIT
/*
 * Remote memory when memory nodes fail: the fabric device on nodes that
 * tests/fabric/with-nodes.sh started (UHMM_FABRIC_NODES, their pids in
 * UHMM_FABRIC_NODE_PIDS). Each case kills nodes, so each runs in a wrapper
 * of its own (UHMM_TEST_CASE, tests/meson.build):
 *   node_lost        3 nodes, 2 copies: SIGKILL one while pages move both
 *                    ways; nothing is lost, 2 copies come back on the other
 *                    two, and then a second node can die too
 *   all_copies_lost  2 nodes, both killed: an access to a page that was
 *                    out gets SIGBUS with a log line; pages at home are fine
 *   node_restart     a node killed and started again on its port: the
 *                    client reads nothing from its new, empty region, and
 *                    makes it a replica again
 *   tampered         sealed pages altered in a node's memory: detected,
 *                    read from the other copy; both altered: SIGBUS
 *   partition        (tests/fabric/netns.sh: nodes in network namespaces)
 *                    node 0's link goes down, silently: it is declared
 *                    dead at the deadline and its pages read from the
 *                    other copy; pages off loopback are sealed by default
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define INTS_PER_PAGE (PAGE / sizeof(int))
#define PAGES 4096ul                /* 16 MiB */
#define WAIT_RESTORED_S 60

/* The pid of node i (from 0), or -1. */
static pid_t node_pid(unsigned i)
{
	const char *s = getenv("UHMM_FABRIC_NODE_PIDS");
	char *end;

	while (s && *s) {
		long pid = strtol(s, &end, 10);

		if (end == s)
			break;
		if (!i--)
			return (pid_t)pid;
		s = end;
	}
	return -1;
}

static int kill_node(unsigned i)
{
	pid_t pid = node_pid(i);

	CHECK(pid > 0);
	CHECK_OK(kill(pid, SIGKILL));
	/* Not our child (the wrapper's): wait until it is gone. */
	for (int tries = 0; tries < 1000 && !kill(pid, 0); tries++) {
		char path[64];

		snprintf(path, sizeof(path), "/proc/%d/stat", pid);
		FILE *f = fopen(path, "r");
		char state = 0;

		if (f) {
			if (fscanf(f, "%*d %*s %c", &state) != 1)
				state = 0;
			fclose(f);
		}
		if (state == 'Z' || !f)
			break;
		usleep(10000);
	}
	return T_PASS;
}

static int health(struct hmm_device_info *info)
{
	info->size = sizeof(*info);
	return hmm_device_info(dev0, info);
}

/* Pages moving both ways until stop: a node dies in the middle of it. */
struct mover {
	int *p;
	_Atomic bool stop;
	unsigned rounds;
};

static void *move_pages_around(void *arg)
{
	struct mover *m = arg;
	size_t half = PAGES / 2 * PAGE;

	while (!atomic_load(&m->stop)) {
		char *p = (char *)m->p + (m->rounds % 2) * half;

		/* Failures are allowed while a node dies: the data is what counts. */
		hmm_migrate(p, half, NULL, 0, NULL);
		hmm_migrate(p, half, dev0, 0, NULL);
		m->rounds++;
	}
	return NULL;
}

static int wait_restored(unsigned alive)
{
	struct hmm_device_info info;

	for (int i = 0; i < WAIT_RESTORED_S * 10; i++) {
		CHECK_OK(health(&info));
		CHECK_EQ(info.parts_alive, alive);
		if (!info.pages_degraded)
			return T_PASS;
		usleep(100000);
	}
	t_note("%llu pages still short of copies after %d s",
	       (unsigned long long)info.pages_degraded, WAIT_RESTORED_S);
	return T_FAIL;
}

static int node_lost(void)
{
	struct mover m = { 0 };
	struct hmm_device_info info;
	pthread_t t;

	CHECK_OK(health(&info));
	if (info.parts_total != 3)
		SKIP("wants 3 nodes, has %u", info.parts_total);
	m.p = hmm_alloc(PAGES * PAGE);
	CHECK(m.p);
	t_fill(m.p, PAGES * INTS_PER_PAGE, 7);
	CHECK_OK(hmm_migrate(m.p, PAGES * PAGE, dev0, 0, NULL));
	CHECK_EQ(pthread_create(&t, NULL, move_pages_around, &m), 0);
	while (m.rounds < 2)
		usleep(1000);
	if (kill_node(0))
		return T_FAIL;
	usleep(200000);
	atomic_store(&m.stop, true);
	pthread_join(t, NULL);
	CHECK_EQ(t_count_bad(m.p, PAGES * INTS_PER_PAGE, 7), 0);
	CHECK_OK(health(&info));
	CHECK_EQ(info.parts_alive, 2);
	CHECK_EQ(info.pages_lost, 0);

	/* Out again: the restorer brings every page to two copies on the two left. */
	CHECK_OK(hmm_migrate(m.p, PAGES * PAGE, dev0, 0, NULL));
	if (wait_restored(2))
		return T_FAIL;
	CHECK_OK(health(&info));
	t_note("restored %llu pages", (unsigned long long)info.pages_restored);

	/* So a second loss costs nothing either. */
	if (kill_node(1))
		return T_FAIL;
	CHECK_EQ(t_count_bad(m.p, PAGES * INTS_PER_PAGE, 7), 0);
	CHECK_OK(health(&info));
	CHECK_EQ(info.parts_alive, 1);
	CHECK_EQ(info.pages_lost, 0);
	CHECK_EQ(t_sigbus, 0);
	hmm_free(m.p);
	return T_PASS;
}

static int all_copies_lost(void)
{
	int *out = hmm_alloc(64 * PAGE), *home = hmm_alloc(64 * PAGE);
	struct hmm_device_info info;
	struct t_log log;
	size_t lines = 0, naming;
	char where[32];
	int v;

	CHECK(out && home);
	t_fill(out, 64 * INTS_PER_PAGE, 1);
	t_fill(home, 64 * INTS_PER_PAGE, 2);
	CHECK_OK(hmm_migrate(out, 64 * PAGE, dev0, 0, NULL));
	for (unsigned i = 0; node_pid(i) > 0; i++)
		if (kill_node(i))
			return T_FAIL;
	snprintf(where, sizeof(where), "0x%lx", (unsigned long)(out + 5 * INTS_PER_PAGE));
	CHECK_OK(t_log_start(&log));
	CHECK(!t_load_or_sigbus(out + 5 * INTS_PER_PAGE, &v));
	naming = t_log_stop(&log, where, &lines);
	CHECK_EQ(naming, 1);
	CHECK_EQ(t_sigbus, 1);
	/* That access only: the pages at home read back, and the process goes on. */
	CHECK_EQ(t_count_bad(home, 64 * INTS_PER_PAGE, 2), 0);
	CHECK_OK(health(&info));
	CHECK_EQ(info.parts_alive, 0);
	CHECK(info.pages_lost > 0);
	hmm_free(out);
	hmm_free(home);
	return T_PASS;
}

static pid_t restarted = -1;

/* Start node 0 again on its port, as an operator's restart would. */
static int restart_node0(void)
{
	const char *nodes = getenv("UHMM_FABRIC_NODES"), *memnode = getenv("UHMM_MEMNODE");
	char listen[64];
	pid_t pid;

	CHECK(nodes && memnode);
	snprintf(listen, sizeof(listen), "%.*s", (int)strcspn(nodes, " "), nodes);
	pid = fork();
	CHECK(pid >= 0);
	if (!pid) {
		execl(memnode, memnode, "--listen", listen, "--mem", "4G", (char *)NULL);
		_exit(127);
	}
	restarted = pid;
	usleep(500000);
	CHECK_EQ(waitpid(pid, NULL, WNOHANG), 0);
	t_note("node 0 restarted on %s as pid %d", listen, pid);
	return T_PASS;
}

static int node_restart(void)
{
	int *p = hmm_alloc(PAGES * PAGE);
	struct hmm_device_info info;
	int rc = T_FAIL;

	CHECK(p);
	t_fill(p, PAGES * INTS_PER_PAGE, 3);
	CHECK_OK(hmm_migrate(p, PAGES * PAGE, dev0, 0, NULL));
	if (kill_node(0) || restart_node0())
		goto out;
	/* Home from node 1; out again, and node 0 rejoins, empty, and gets its copies. */
	CHECK_EQ(t_count_bad(p, PAGES * INTS_PER_PAGE, 3), 0);
	CHECK_OK(hmm_migrate(p, PAGES * PAGE, dev0, 0, NULL));
	for (int i = 0; i < 100; i++) {
		CHECK_OK(health(&info));
		if (info.parts_alive == 2)
			break;
		usleep(100000);
	}
	if (wait_restored(2) || kill_node(1))
		goto out;
	/* Now every page comes from the restarted node. */
	CHECK_EQ(t_count_bad(p, PAGES * INTS_PER_PAGE, 3), 0);
	CHECK_OK(health(&info));
	CHECK_EQ(info.pages_lost, 0);
	CHECK_EQ(t_sigbus, 0);
	hmm_free(p);
	rc = T_PASS;
out:
	/* Ours, not the wrapper's: it must not outlive the test. */
	if (restarted > 0) {
		kill(restarted, SIGKILL);
		waitpid(restarted, NULL, 0);
	}
	return rc;
}

/*
 * The region this device got on node i: the memory node's one mapping of
 * exactly the device's size. Its address in that process, or 0.
 */
static unsigned long region_of(unsigned i, uint64_t bytes)
{
	char path[64], line[256];
	unsigned long found = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/maps", node_pid(i));
	f = fopen(path, "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;

		if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && hi - lo == bytes &&
		    strstr(line, " rw-p "))
			found = lo;
	}
	fclose(f);
	return found;
}

/*
 * Flip a byte in each of the first n pages of our region on node i, as its
 * operator could (the device hands out its lowest free slots first).
 */
static int tamper(unsigned i, size_t n)
{
	struct hmm_device_info info;
	unsigned long base;

	CHECK_OK(health(&info));
	base = region_of(i, info.mem_total);
	CHECK(base);
	for (size_t k = 0; k < n; k++) {
		unsigned char b;
		struct iovec local = { &b, 1 }, remote = { (void *)(base + k * PAGE + 100), 1 };

		CHECK_EQ(process_vm_readv(node_pid(i), &local, 1, &remote, 1, 0), 1);
		b ^= 0x5a;
		CHECK_EQ(process_vm_writev(node_pid(i), &local, 1, &remote, 1, 0), 1);
	}
	return T_PASS;
}

static int tampered(void)
{
	int *p = hmm_alloc(64 * PAGE);
	struct hmm_device_info info;
	struct t_log log;
	size_t lines = 0;
	int v;

	CHECK(p);
	CHECK_OK(health(&info));
	if (!strstr(info.detail, "sealed"))
		SKIP("pages are not sealed: %s", info.detail);
	t_fill(p, 64 * INTS_PER_PAGE, 4);
	CHECK_OK(hmm_migrate(p, 64 * PAGE, dev0, 0, NULL));
	if (tamper(0, 1024))
		return T_FAIL;
	CHECK_OK(t_log_start(&log));
	CHECK_EQ(t_count_bad(p, 64 * INTS_PER_PAGE, 4), 0);
	CHECK(t_log_stop(&log, "fails its seal", &lines) >= 1);
	CHECK_OK(health(&info));
	CHECK(info.pages_tampered > 0);
	CHECK_EQ(info.pages_lost, 0);

	/* Both copies altered: nothing trustworthy is left of page 9. */
	CHECK_OK(hmm_migrate(p, 64 * PAGE, dev0, 0, NULL));
	if (wait_restored(2) || tamper(0, 1024) || tamper(1, 1024))
		return T_FAIL;
	CHECK(!t_load_or_sigbus(p + 9 * INTS_PER_PAGE, &v));
	CHECK_EQ(t_sigbus, 1);
	hmm_free(p);
	return T_PASS;
}

static int partition(void)
{
	const char *cut = getenv("UHMM_FABRIC_PARTITION");
	int *p = hmm_alloc(PAGES * PAGE);
	struct hmm_device_info info;
	struct t_log log;
	size_t lines = 0;

	if (!cut)
		SKIP("no partition to make (UHMM_FABRIC_PARTITION): run by tests/fabric/netns.sh");
	CHECK(p);
	CHECK_OK(health(&info));
	CHECK(strstr(info.detail, "sealed"));
	t_fill(p, PAGES * INTS_PER_PAGE, 5);
	CHECK_OK(hmm_migrate(p, PAGES * PAGE, dev0, 0, NULL));
	CHECK_EQ(system(cut), 0);
	CHECK_OK(t_log_start(&log));
	CHECK_EQ(t_count_bad(p, PAGES * INTS_PER_PAGE, 5), 0);
	CHECK_EQ(t_log_stop(&log, "is dead", &lines), 1);
	CHECK_OK(health(&info));
	CHECK_EQ(info.parts_alive, 1);
	CHECK_EQ(info.pages_lost, 0);
	CHECK_EQ(t_sigbus, 0);
	hmm_free(p);
	return T_PASS;
}

T_MAIN(TEST_CASE(node_lost, 0), TEST_CASE(all_copies_lost, 0), TEST_CASE(node_restart, 0),
       TEST_CASE(tampered, 0), TEST_CASE(partition, 0))
