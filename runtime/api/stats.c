// SPDX-License-Identifier: MIT
/*
 * Counters: hmm_stats_get, the live stats region that uhmm-stat reads, and
 * the summary printed at exit under UHMM_STATS (uhmm-run --stats).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "api.h"

_Static_assert(sizeof(((struct hmm_stats_region *)0)->device_names[0]) ==
	       sizeof(((struct hmm_device *)0)->name), "device names are copied whole");

static struct {
	int fd;
	int summary_fd;             /* stderr as it was at start */
	struct hmm_stats_region *map;
} region = { .fd = -1, .summary_fd = -1 };

static void collect(struct hmm_stats *s)
{
	uint64_t on_devices = 0;

	memset(s, 0, sizeof(*s));
	s->size = sizeof(*s);
	s->cpu_faults = atomic_load(&stats.cpu_faults);
	s->device_faults = atomic_load(&stats.device_faults);
	s->pages_to_device = atomic_load(&stats.pages_to_device);
	s->bytes_to_device = s->pages_to_device * PAGE_SIZE;
	s->pages_to_host = atomic_load(&stats.pages_to_host);
	s->bytes_to_host = s->pages_to_host * PAGE_SIZE;
	s->migrations_failed = atomic_load(&stats.migrations_failed);
	s->evictions = atomic_load(&stats.evictions);
	s->thrash_events = atomic_load(&stats.thrash_events);
	s->fault_ns = atomic_load(&stats.fault_ns);
	s->zero_fills = atomic_load(&stats.zero_fills);
	s->parked_faults = atomic_load(&stats.parked_faults);
	s->managed_bytes = reg.managed_pages * PAGE_SIZE;
	for (int i = 0; i < MAX_DEVICES; i++) {
		if (dev_table[i]) {
			s->device_resident_bytes[i] = atomic_load(&dev_table[i]->resident) * PAGE_SIZE;
			on_devices += s->device_resident_bytes[i];
		}
	}
	s->host_resident_bytes = s->managed_bytes > on_devices ? s->managed_bytes - on_devices : 0;
	s->metadata_bytes = meta_bytes();
}

int hmm_stats_get(struct hmm_stats *ret)
{
	struct hmm_stats s;
	size_t n;

	if (!ret || ret->size < sizeof(uint64_t) * 2)
		return -EINVAL;
	/* Page transitions count under reg.lock; read them there too. */
	reg_lock();
	reg_catch_up();
	collect(&s);
	reg_unlock();
	n = MIN((size_t)ret->size, sizeof(s));
	memcpy((char *)ret + sizeof(s.size), (char *)&s + sizeof(s.size), n - sizeof(s.size));
	return 0;
}

static int count_run(uintptr_t s, uintptr_t e, void *arg)
{
	*(uint64_t *)arg += e - s;
	return 0;
}

/* Managed bytes with host memory of their own, measured (not estimated). */
static uint64_t measure_present(void)
{
	struct span *v;
	size_t n;
	uint64_t bytes = 0;

	reg_lock();
	reg_catch_up();
	if (reg_snapshot(&v, &n)) {
		reg_unlock();
		return 0;
	}
	reg_unlock();
	for (size_t i = 0; i < n; i++)
		pagemap_resident_runs(v[i].start, v[i].end, count_run, &bytes);
	meta_free(v, n * sizeof(*v));
	return bytes;
}

/* ---- the live region ------------------------------------------------------ */

/*
 * Programs may close stderr before they exit (xz does): the summary goes to
 * a copy taken now.
 */
void stats_keep_stderr(void)
{
	if (opt.stats_summary && !*opt.stats_file && region.summary_fd < 0)
		region.summary_fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 100);
}

int stats_region_open(void)
{
	struct hmm_stats_region *m;
	int fd;

	if (region.map)
		return 0;
	fd = memfd_create(HMM_STATS_REGION_NAME, MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, sizeof(*m)) ||
	    (m = sys_mmap(NULL, sizeof(*m), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED) {
		int err = -errno;

		close(fd);
		return err;
	}
	m->magic = HMM_STATS_REGION_MAGIC;
	m->version = HMM_STATS_REGION_VERSION;
	m->pid = (int32_t)getpid();
	region.fd = fd;
	region.map = m;
	return 0;
}

/* reg.lock held: everything the region holds but its header and time. */
static void snapshot(struct hmm_stats_region *m, uint64_t present)
{
	collect(&m->s);
	m->pid = (int32_t)getpid();
	m->host_limit = opt.host_limit;
	m->chaos_ms = opt.chaos_ms;
	m->host_present_bytes = present;
	m->ndevices = 0;
	for (int i = 0; i < MAX_DEVICES; i++) {
		if (!dev_table[i])
			continue;
		memcpy(m->device_names[i], dev_table[i]->dev->name, sizeof(m->device_names[i]));
		m->ndevices = (uint32_t)i + 1;
	}
}

/*
 * Residency is measured at every publication, lazy ranges and first touches
 * the runtime never saw included: an estimate (the pager's) or a figure kept
 * between publications would lag a program that allocates fast.
 */
void stats_publish(void)
{
	struct hmm_stats_region *m = region.map;
	uint64_t now = now_ns(), present;

	if (!m)
		return;
	present = measure_present();
	reg_lock();
	__atomic_add_fetch(&m->seq, 1, __ATOMIC_RELEASE);
	snapshot(m, present);
	m->updated_ns = now;
	__atomic_add_fetch(&m->seq, 1, __ATOMIC_RELEASE);
	reg_unlock();
}

/* The child must not write into its parent's region. */
void stats_fork_child(void)
{
	bool had = region.map != NULL;

	if (region.map)
		sys_munmap(region.map, sizeof(*region.map));
	if (region.fd >= 0)
		close(region.fd);
	region.map = NULL;
	region.fd = -1;
	stats_reset();
	if (had)
		stats_region_open();
}

/* ---- the summary at exit -------------------------------------------------- */

static size_t format_summary(const struct hmm_stats *s, uint64_t present, char *buf, size_t len)
{
	char a[32], b[32];
	size_t at = 0;

	at = stats_put(buf, len, at, "uhmm: pid %d: %llu CPU faults (%llu first-touch pages), %.1f ms serving them\n",
		 (int)getpid(), (unsigned long long)s->cpu_faults,
		 (unsigned long long)s->zero_fills, (double)s->fault_ns / 1e6);
	at = stats_put(buf, len, at, "uhmm: pid %d: %llu pages to devices (%s), %llu to the host (%s); "
		 "%llu evicted, %llu thrashing, %llu failed\n",
		 (int)getpid(), (unsigned long long)s->pages_to_device, stats_human_bytes(s->bytes_to_device, a, sizeof(a)),
		 (unsigned long long)s->pages_to_host, stats_human_bytes(s->bytes_to_host, b, sizeof(b)),
		 (unsigned long long)s->evictions, (unsigned long long)s->thrash_events,
		 (unsigned long long)s->migrations_failed);
	at = stats_put(buf, len, at, "uhmm: pid %d: managed %s; resident: host %s", (int)getpid(),
		 stats_human_bytes(s->managed_bytes, a, sizeof(a)), stats_human_bytes(present, b, sizeof(b)));
	for (int i = 0; i < MAX_DEVICES; i++)
		if (dev_table[i])
			at = stats_put(buf, len, at, ", %s %s", dev_table[i]->dev->name,
				 stats_human_bytes(s->device_resident_bytes[i], a, sizeof(a)));
	return stats_put(buf, len, at, "\n");
}

/*
 * Formatting happens outside reg.lock: printf may read locale data the
 * program allocated, which may be on a device and need the fault thread.
 */
void stats_summary(void)
{
	struct hmm_stats_region r = { .magic = 0 };
	uint64_t present;
	char buf[2048];
	size_t n;
	int fd = region.summary_fd >= 0 ? region.summary_fd : STDERR_FILENO;

	static _Atomic pid_t printed_by;

	if (!opt.stats_summary || (opt.stats_pid && (pid_t)opt.stats_pid != getpid()))
		return;
	if (atomic_exchange(&printed_by, getpid()) == getpid())
		return; /* once per process: _exit and the destructor both ask */
	reg_lock();
	reg_catch_up();
	reg_unlock();
	present = measure_present();
	reg_lock();
	snapshot(&r, present);
	reg_unlock();
	if (*opt.stats_file) {
		n = (size_t)hmm_stats_format(&r, HMM_STATS_FORMAT_KV, buf, sizeof(buf));
		fd = open(opt.stats_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (fd < 0) {
			log_warn("cannot write the summary to %s: %s", opt.stats_file, strerror(errno));
			return;
		}
	} else {
		n = format_summary(&r.s, present, buf, sizeof(buf));
	}
	if (write(fd, buf, n) < 0)
		n = 0;
	if (*opt.stats_file)
		close(fd);
}
