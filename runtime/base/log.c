// SPDX-License-Identifier: MIT
/*
 * Logging to stderr. Formats into a stack buffer and writes once: the fault
 * thread may log, and it must never allocate (stdio buffers could be managed
 * memory under LD_PRELOAD).
 */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "base.h"

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void nap(void)
{
	nanosleep(&(struct timespec){ .tv_nsec = 50000 }, NULL);
}

void log_write(unsigned level, const char *fmt, ...)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };
	char buf[512];
	va_list ap;
	int n;

	if (level > opt.log_level)
		return;
	n = snprintf(buf, sizeof(buf), "uhmm[%d]: %s: ", (int)getpid(), names[level]);
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	if (write(STDERR_FILENO, buf, (size_t)n) < 0)
		return;
}

/* One message per second (or interval_ns) from each call site. */
bool log_ratelimit_ok(struct log_ratelimit *rl)
{
	uint64_t now = now_ns();
	uint64_t next = atomic_load_explicit(&rl->next_ns, memory_order_relaxed);

	if (now < next)
		return false;
	return atomic_compare_exchange_strong(&rl->next_ns, &next,
					      now + (rl->interval_ns ?: 1000000000ull));
}
