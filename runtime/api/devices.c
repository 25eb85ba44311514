// SPDX-License-Identifier: MIT
/*
 * The device calls: open, close, count, get, info, release, and the devices
 * of UHMM_DEVICES opened at start. Closing is where the layers meet: queued
 * prefetches for the device go, its pages come home (a device whose pages
 * cannot all come home stays open), its queue drains, and only then does
 * the state layer take it apart.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "api.h"

void devices_open_env(void)
{
	char buf[1024];
	char *save = NULL;

	if (!opt.devices || !*opt.devices)
		return;
	if (strlen(opt.devices) >= sizeof(buf)) {
		log_warn("UHMM_DEVICES is too long");
		return;
	}
	strcpy(buf, opt.devices);
	for (char *s = strtok_r(buf, ";", &save); s; s = strtok_r(NULL, ";", &save)) {
		struct hmm_device_core *c;
		int err;

		while (*s == ' ')
			s++;
		if (!*s)
			continue;
		err = dev_open(s, true, &c);
		if (err)
			log_warn("UHMM_DEVICES: cannot open \"%s\": %s", s, strerror(-err));
	}
}

int devices_close(struct hmm_device_core *c)
{
	int err;

	policy_forget_device(c);
	err = mig_home_everything(c);
	if (err)
		return err;
	dmaq_drain(&c->q);
	dev_close(c);
	return 0;
}

void devices_close_all(void)
{
	for (int i = 0; i < MAX_DEVICES; i++) {
		struct hmm_device_core *c = dev_table[i];

		if (c && devices_close(c))
			log_err("%s: pages could not all come home; the device stays open",
				c->dev->name);
	}
}

int hmm_device_open(const char *spec, struct hmm_device **ret_dev)
{
	struct hmm_device_core *c;
	int err;

	if (!spec || !ret_dev)
		return -EINVAL;
	err = rt_enter();
	if (err)
		return err;
	err = dev_open(spec, false, &c);
	if (!err)
		*ret_dev = c->dev;
	rt_leave();
	return err;
}

int hmm_device_close(struct hmm_device *dev)
{
	struct hmm_device_core *c;
	int err;

	/* No call may be using the device while it goes. */
	err = rt_enter();
	if (err)
		return err;
	rt_leave();
	err = rt_quiesce();
	if (err)
		return err == -EBUSY && rt_active() ? -EDEADLK : err;
	c = dev_from_handle(dev);
	err = c ? devices_close(c) : -EINVAL;
	rt_unquiesce();
	return err;
}

int hmm_device_count(void)
{
	int n;

	if (rt_enter())
		return 0;
	n = dev_env_count();
	rt_leave();
	return n;
}

struct hmm_device *hmm_device_get(int index)
{
	struct hmm_device_core *c;

	if (rt_enter())
		return NULL;
	c = dev_env(index);
	rt_leave();
	return c ? c->dev : NULL;
}

static int memory_model(const struct hmm_device_core *c)
{
	if (dev_coherent(c))
		return HMM_MEMORY_COHERENT;
	return dev_host_mapped(c) ? HMM_MEMORY_PRIVATE : HMM_MEMORY_DMA_ONLY;
}

int hmm_device_info(struct hmm_device *dev, struct hmm_device_info *ret_info)
{
	struct hmm_device_info info = { .size = sizeof(info) };
	struct hmm_device_health health;
	struct hmm_device_core *c;
	int err;

	if (!ret_info || ret_info->size < offsetof(struct hmm_device_info, name))
		return -EINVAL;
	err = api_enter_dev(dev, &c);
	if (err)
		return err;
	snprintf(info.name, sizeof(info.name), "%s", c->dev->name);
	snprintf(info.kind, sizeof(info.kind), "%s", c->dev->kind);
	info.index = c->index;
	info.mem_total = c->dev->mem_bytes;
	/*
	 * Slots change hands with page states, under reg.lock: a thread whose
	 * fault brought a page home may run before the fault thread has given
	 * the slot back, and must not see it still in use. A raw munmap(2)
	 * returns once the fault thread has read its event, perhaps before it
	 * has given the unmapped pages' slots back: the barrier waits for that.
	 */
	handler_barrier();
	reg_lock();
	info.mem_used = devmem_used(&c->mem) * PAGE_SIZE;
	reg_unlock();
	info.coherent = dev_coherent(c);
	info.memory_model = memory_model(c);
	info.keeps_clean = dev_keep_clean(c);
	if (c->dev->size >= offsetof(struct hmm_device, detail) + sizeof(c->dev->detail))
		snprintf(info.detail, sizeof(info.detail), "%s", c->dev->detail);
	dev_health(c, &health);
	info.parts_total = health.parts_total;
	info.parts_alive = health.parts_alive;
	info.pages_degraded = health.pages_degraded;
	info.pages_lost = health.pages_lost;
	info.pages_restored = health.pages_restored;
	info.pages_tampered = health.pages_tampered;
	rt_leave();
	memcpy((char *)ret_info + sizeof(info.size), (char *)&info + sizeof(info.size),
	       MIN(ret_info->size, sizeof(info)) - sizeof(info.size));
	return 0;
}

int hmm_device_release(struct hmm_device *dev)
{
	struct hmm_device_core *c;
	int err = api_enter_dev(dev, &c);

	if (err)
		return err;
	err = mig_home_everything(c);
	rt_leave();
	return err;
}
