// SPDX-License-Identifier: MIT
/*
 * Open devices: spec parsing ("kind[:option[,option...]]"), the backend
 * table, and the runtime's per-device state (memory slots, mirror, queue).
 * A device's index is its place in dev_table and what page words and
 * hmm_residency call it.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "backends.h"
#include "internal.h"
#include "kernel-compat.h"

static const struct hmm_device_ops *const backends[] = { UHMM_BACKEND_OPS };

/* Every kind the project knows; the ones not built here give -ENODEV. */
static const char *const known_kinds[] = { "sim", "opencl", "numa", "fabric", "uring", "cuda" };

struct hmm_device_core *dev_table[MAX_DEVICES];
static struct hmm_device_core *env_devs[MAX_DEVICES];
static int nenv;

const struct hmm_device_ops *const *dev_backends(size_t *ret_n)
{
	*ret_n = ARRAY_SIZE(backends);
	return backends;
}

struct hmm_device_core *dev_by_loc(unsigned loc)
{
	return loc && loc <= MAX_DEVICES ? dev_table[loc - 1] : NULL;
}

struct hmm_device_core *dev_from_handle(struct hmm_device *dev)
{
	for (int i = 0; dev && i < MAX_DEVICES; i++)
		if (dev_table[i] && dev_table[i]->dev == dev && !dev_table[i]->closing)
			return dev_table[i];
	return NULL;
}

static const struct hmm_device_param *find_param(const struct hmm_device_ops *ops,
						 const char *key)
{
	for (const struct hmm_device_param *p = ops->params; p && p->key; p++)
		if (!strcmp(p->key, key))
			return p;
	return NULL;
}

static int check_value(const struct hmm_device_param *p, const char *value)
{
	uint64_t v;

	switch (p->type) {
	case HMM_PARAM_FLAG:
		return value ? -EINVAL : 0;
	case HMM_PARAM_SIZE:
		return value && !parse_size(value, &v) ? 0 : -EINVAL;
	case HMM_PARAM_UINT:
		return value && !parse_uint(value, UINT64_MAX, &v) ? 0 : -EINVAL;
	case HMM_PARAM_STRING:
		return value && *value ? 0 : -EINVAL;
	}
	return -EINVAL;
}

/* Parse into cfg; strings point into buf. Nothing is opened. */
int dev_parse_spec(const char *spec, const struct hmm_device_ops **ret_ops,
		   struct hmm_device_config *cfg, char *buf, size_t buflen)
{
	const struct hmm_device_ops *ops = NULL;
	char *kind, *rest;

	if (!spec || !*spec || strlen(spec) >= buflen)
		return -EINVAL;
	strcpy(buf, spec);
	memset(cfg, 0, sizeof(*cfg));
	cfg->size = sizeof(*cfg);
	cfg->mem_bytes = opt.device_mem;
	kind = buf;
	rest = strchr(buf, ':');
	if (rest)
		*rest++ = 0;
	for (size_t i = 0; i < ARRAY_SIZE(backends); i++)
		if (!strcmp(backends[i]->kind, kind))
			ops = backends[i];
	if (!ops) {
		for (size_t i = 0; i < ARRAY_SIZE(known_kinds); i++)
			if (!strcmp(known_kinds[i], kind))
				return -ENODEV;
		return -EINVAL;
	}
	cfg->kind = ops->kind;
	/* Options are separated by single commas; an empty one is an error. */
	for (char *opt_s = rest; opt_s;) {
		char *next = strchr(opt_s, ','), *value;
		const struct hmm_device_param *p;

		if (next)
			*next++ = 0;
		value = strchr(opt_s, '=');
		if (value)
			*value++ = 0;
		if (!*opt_s || hmm_device_config_has(cfg, opt_s) ||
		    cfg->nparams == HMM_DEVICE_MAX_PARAMS)
			return -EINVAL;
		if (!strcmp(opt_s, "mem")) {
			uint64_t v;

			if (!value || parse_size(value, &v) || v < PAGE_SIZE || v > (1ull << 44))
				return -EINVAL;
			cfg->mem_bytes = ALIGN_UP(v, PAGE_SIZE);
		} else if (!(p = find_param(ops, opt_s)) || check_value(p, value)) {
			return -EINVAL;
		}
		cfg->params[cfg->nparams].key = opt_s;
		cfg->params[cfg->nparams].value = value;
		cfg->nparams++;
		opt_s = next;
	}
	*ret_ops = ops;
	return 0;
}

const char *hmm_device_config_get(const struct hmm_device_config *cfg, const char *key)
{
	for (unsigned i = 0; i < cfg->nparams; i++)
		if (!strcmp(cfg->params[i].key, key))
			return cfg->params[i].value;
	return NULL;
}

bool hmm_device_config_has(const struct hmm_device_config *cfg, const char *key)
{
	for (unsigned i = 0; i < cfg->nparams; i++)
		if (!strcmp(cfg->params[i].key, key))
			return true;
	return false;
}

static int free_index(void)
{
	for (int i = 0; i < MAX_DEVICES; i++)
		if (!dev_table[i])
			return i;
	return -1;
}

static void core_free(struct hmm_device_core *c)
{
	dmaq_stop(&c->q);
	mirror_destroy(&c->mirror);
	devmem_destroy(&c->mem);
	meta_free(c, sizeof(*c));
}

int dev_open(const char *spec, bool from_env, struct hmm_device_core **ret)
{
	const struct hmm_device_ops *ops;
	struct hmm_device_config cfg;
	struct hmm_device_core *c;
	struct hmm_device *dev;
	char buf[256];
	int index, err;

	err = dev_parse_spec(spec, &ops, &cfg, buf, sizeof(buf));
	if (err)
		return err;
	err = ops->probe();
	if (err)
		return err == -ENODEV ? -ENODEV : err;
	reg_lock();
	index = free_index();
	reg_unlock();
	if (index < 0)
		return -ENOSPC;
	err = ops->open(&cfg, &dev);
	if (err)
		return err;
	c = meta_alloc(sizeof(*c));
	if (!c) {
		ops->close(dev);
		return -ENOMEM;
	}
	c->dev = dev;
	dev->ops = ops;
	dev->core = c;
	err = devmem_init(&c->mem, dev->mem_bytes / PAGE_SIZE, dev->caps & HMM_DEVCAP_MOVABLE);
	if (!err)
		err = mirror_init(&c->mirror);
	if (!err)
		err = dmaq_start(&c->q, c);
	if (!err && dev_movable(c)) {
		/* Pages move into this memory, so it must be ours to move into. */
		sys_madvise(dev->mem_base, dev->mem_bytes, MADV_DONTFORK);
		err = uffd_register((uintptr_t)dev->mem_base, dev->mem_bytes, UFFDIO_REGISTER_MODE_WP);
	}
	if (err) {
		core_free(c);
		ops->close(dev);
		return err;
	}
	reg_lock();
	index = free_index();
	if (index < 0) {
		reg_unlock();
		core_free(c);
		ops->close(dev);
		return -ENOSPC;
	}
	c->index = index;
	c->from_env = from_env;
	dev_table[index] = c;
	if (from_env)
		env_devs[nenv++] = c;
	reg_unlock();
	*ret = c;
	return 0;
}

/* Releases first: a device whose pages cannot all come home stays open. */
int dev_close(struct hmm_device_core *c)
{
	struct hmm_device *dev = c->dev;
	int err;

	policy_forget_device(c);
	err = mig_home_everything(c);
	if (err)
		return err;
	dmaq_drain(&c->q);
	reg_lock();
	c->closing = true;
	dev_table[c->index] = NULL;
	for (int i = 0; i < nenv; i++) {
		if (env_devs[i] == c) {
			memmove(&env_devs[i], &env_devs[i + 1], (size_t)(nenv - i - 1) * sizeof(*env_devs));
			nenv--;
			break;
		}
	}
	reg_unlock();
	if (dev_movable(c) && uffd.fd >= 0)
		uffd_unregister((uintptr_t)dev->mem_base, dev->mem_bytes);
	core_free(c);
	dev->ops->close(dev);
	return 0;
}

int dev_open_env(void)
{
	char buf[1024];
	char *save = NULL;

	if (!opt.devices || !*opt.devices)
		return 0;
	if (strlen(opt.devices) >= sizeof(buf)) {
		log_warn("UHMM_DEVICES is too long");
		return -EINVAL;
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
	return 0;
}

int hmm_device_count(void)
{
	int n;

	if (rt_enter())
		return 0;
	n = nenv;
	rt_leave();
	return n;
}

struct hmm_device *hmm_device_get(int index)
{
	struct hmm_device *dev = NULL;

	if (rt_enter())
		return NULL;
	if (index >= 0 && index < nenv)
		dev = env_devs[index]->dev;
	rt_leave();
	return dev;
}

void dev_close_all(void)
{
	for (int i = 0; i < MAX_DEVICES; i++) {
		struct hmm_device_core *c = dev_table[i];

		if (c && dev_close(c))
			log_err("%s: pages could not all come home; the device stays open",
				c->dev->name);
	}
}

/* The child of fork holds no device state; the parent's devices stay the parent's. */
void dev_fork_child(void)
{
	memset(dev_table, 0, sizeof(dev_table));
	memset(env_devs, 0, sizeof(env_devs));
	nenv = 0;
}

int hmm_device_dma_enosys(struct hmm_device *dev, struct hmm_dma_desc *descs, unsigned n)
{
	(void)dev;
	for (unsigned i = 0; i < n; i++) {
		descs[i].status = -EOPNOTSUPP;
		descs[i].done = 0;
	}
	return -EOPNOTSUPP;
}

int hmm_device_mem_access_enosys(struct hmm_device *dev, uint64_t slot, size_t offset, void *buf,
				 size_t len, bool write)
{
	(void)dev, (void)slot, (void)offset, (void)buf, (void)len, (void)write;
	return -EOPNOTSUPP;
}

int hmm_device_mem_atomic_add_enosys(struct hmm_device *dev, uint64_t slot, size_t offset,
				     uint64_t value, uint64_t *ret_old)
{
	(void)dev, (void)slot, (void)offset, (void)value, (void)ret_old;
	return -EOPNOTSUPP;
}

int hmm_device_place_in_place(struct hmm_device *dev, void *addr, size_t npages, bool on_device)
{
	(void)dev, (void)addr, (void)npages, (void)on_device;
	return 0;
}
