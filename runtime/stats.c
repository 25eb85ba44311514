// SPDX-License-Identifier: MIT
/* Counters for hmm_stats_get. */
#include <errno.h>
#include <string.h>

#include "internal.h"

struct rt_stats stats;

int hmm_stats_get(struct hmm_stats *ret)
{
	struct hmm_stats s = { .size = sizeof(s) };
	uint64_t on_devices = 0;
	size_t n;

	if (!ret || ret->size < sizeof(uint64_t) * 2)
		return -EINVAL;
	/* Page transitions count under reg.lock; read them there too. */
	reg_lock();
	s.cpu_faults = atomic_load(&stats.cpu_faults);
	s.device_faults = atomic_load(&stats.device_faults);
	s.pages_to_device = atomic_load(&stats.pages_to_device);
	s.bytes_to_device = s.pages_to_device * PAGE_SIZE;
	s.pages_to_host = atomic_load(&stats.pages_to_host);
	s.bytes_to_host = s.pages_to_host * PAGE_SIZE;
	s.migrations_failed = atomic_load(&stats.migrations_failed);
	s.evictions = atomic_load(&stats.evictions);
	s.thrash_events = atomic_load(&stats.thrash_events);
	s.fault_ns = atomic_load(&stats.fault_ns);
	s.zero_fills = atomic_load(&stats.zero_fills);
	s.parked_faults = atomic_load(&stats.parked_faults);
	s.managed_bytes = reg.managed_pages * PAGE_SIZE;
	for (int i = 0; i < MAX_DEVICES; i++) {
		if (dev_table[i]) {
			s.device_resident_bytes[i] = atomic_load(&dev_table[i]->resident) * PAGE_SIZE;
			on_devices += s.device_resident_bytes[i];
		}
	}
	reg_unlock();
	s.host_resident_bytes = s.managed_bytes > on_devices ? s.managed_bytes - on_devices : 0;
	s.metadata_bytes = meta_bytes();
	n = MIN((size_t)ret->size, sizeof(s));
	memcpy((char *)ret + sizeof(s.size), (char *)&s + sizeof(s.size), n - sizeof(s.size));
	return 0;
}
