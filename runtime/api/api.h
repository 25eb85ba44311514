/* SPDX-License-Identifier: MIT */
/*
 * Layer 6, API: the public functions (include/uhmm.h) and the process-wide
 * lifetime: starting the runtime on first use, fork, hmm_fini, the
 * transparent mode's start and exit (preload.c), the agent thread that does
 * periodic work, and the statistics (hmm_stats_get, the live region, the
 * summary at exit, reading another process's region).
 */
#ifndef UHMM_API_H
#define UHMM_API_H

#include "transparent.h"

/* ---- api.c: memory and placement calls, and what every call starts with -- */

/* [addr, addr + len) as whole pages; false if empty or wrapping. */
bool api_page_span(const void *addr, size_t len, uintptr_t *ret_start, uintptr_t *ret_end);
/* The runtime held and the device handle checked: rt_leave() when done. */
int api_enter_dev(struct hmm_device *dev, struct hmm_device_core **ret_c);

/* ---- init.c: lifetime ---------------------------------------------------- */

/* Start the runtime if it is not running, and hold it (rt_leave() ends). */
int rt_enter(void);
void rt_reset_after_fork(void);

/* ---- devices.c: open devices, from the API and UHMM_DEVICES --------------- */

void devices_open_env(void);
/* Pages home, then the runtime's state and the backend's device go. */
int devices_close(struct hmm_device_core *c);
void devices_close_all(void);

/* ---- fork.c -------------------------------------------------------------- */

int fork_hooks_install(void);

/* ---- agent.c: periodic work ---------------------------------------------- */

int agent_start(void);
void agent_stop(void);              /* not with the runtime quiesced */
void agent_fork_child(void);

/* ---- stats.c: hmm_stats_get, the live region, the summary at exit -------- */

int stats_region_open(void);        /* the live region uhmm-stat reads */
void stats_keep_stderr(void);       /* at start: where the summary will go */
void stats_publish(void);           /* runtime held */
void stats_fork_child(void);
void stats_summary(void);           /* UHMM_STATS, at exit */

/* ---- stats-format.c: stats as text (hmm_stats_format) -------------------- */

size_t stats_put(char *buf, size_t len, size_t at, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
const char *stats_human_bytes(uint64_t bytes, char *buf, size_t len);

/* ---- preload.c: transparent mode's lifetime ------------------------------- */

void preload_fork_child(void);

#endif /* UHMM_API_H */
