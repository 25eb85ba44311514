// SPDX-License-Identifier: MIT
/*
 * Opening an RMA endpoint (endpoint.h). Providers that need the memory
 * registration modes we can honour get them: FI_MR_VIRT_ADDR (shm: remote
 * addresses are the node's virtual addresses, sent with the region),
 * FI_MR_PROV_KEY (the provider picks keys: verbs, efa), FI_MR_ALLOCATED,
 * FI_MR_LOCAL (the client registers its staging memory), FI_MR_ENDPOINT
 * (the node binds each region to its endpoint).
 * The completion queue has a wait object: fi_cq_sread sleeps until the
 * provider has work, where polling would spin a CPU.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "endpoint.h"

#define FAB_VERSION FI_VERSION(1, 9)

static const uint64_t mr_modes_we_honour =
	FI_MR_VIRT_ADDR | FI_MR_PROV_KEY | FI_MR_ALLOCATED | FI_MR_LOCAL | FI_MR_ENDPOINT;

void fab_set_environment(void)
{
	const char *m = getenv("FI_MR_CACHE_MONITOR");

	/* kdreg2 and memhooks leave userfaultfd alone; uffd and the default may not. */
	if (!m || !strcmp(m, "uffd") || !strcmp(m, "userfaultfd"))
		setenv("FI_MR_CACHE_MONITOR", "disabled", 1);
	/*
	 * rxm's bounce buffers carry messages, and we send none: RMA goes
	 * to the core provider directly. At their default 16 KiB and 128
	 * queue entries per connection, the pools fi_enable fills take 68 MiB
	 * of RSS per endpoint, in a process whose memory we are limiting;
	 * with 1 KiB and queues sized for NODE_QD operations (and rxm's own
	 * few), 3.
	 */
	setenv("FI_OFI_RXM_BUFFER_SIZE", "1024", 0);
	setenv("FI_OFI_RXM_MSG_TX_SIZE", "32", 0);
	setenv("FI_OFI_RXM_MSG_RX_SIZE", "16", 0);
}

static struct fi_info *hints_for(const char *provider, bool target)
{
	struct fi_info *h = fi_allocinfo();

	if (!h)
		return NULL;
	h->ep_attr->type = FI_EP_RDM;
	h->caps = FI_RMA | (target ? FI_REMOTE_READ | FI_REMOTE_WRITE : FI_READ | FI_WRITE);
	h->mode = FI_CONTEXT;
	h->domain_attr->mr_mode = (int)mr_modes_we_honour;
	h->domain_attr->threading = FI_THREAD_SAFE;

	h->fabric_attr->prov_name = strdup(provider);
	return h;
}

/*
 * 1.17 has no tcp RDM of its own: "tcp" there means "tcp;ofi_rxm"; from
 * 1.18 plain tcp does RDM and is the recommended one.
 */
static int getinfo(const char *provider, const char *host, bool target, struct fi_info **ret)
{
	static const char *const tcp_names[] = { "tcp", "tcp;ofi_rxm", NULL };
	const char *const one[] = { provider, NULL };
	const char *const *names = strcmp(provider, "tcp") ? one : tcp_names;
	int err = -FI_ENODATA;

	for (; *names; names++) {
		struct fi_info *h = hints_for(*names, target);

		if (!h)
			return -ENOMEM;
		/* shm names its endpoints itself; a host means nothing to it. */
		bool named = host && strncmp(*names, "shm", 3);

		err = fi_getinfo(FAB_VERSION, named ? host : NULL, NULL, named ? FI_SOURCE : 0, h,
				 ret);
		fi_freeinfo(h);
		if (!err)
			return 0;
	}
	return err;
}

int fab_open(struct fab_endpoint *e, const char *provider, const char *host, bool target,
	     char *errbuf, size_t errlen)
{
	struct fi_av_attr av_attr = { .type = FI_AV_TABLE };
	struct fi_cq_attr cq_attr = { .format = FI_CQ_FORMAT_CONTEXT, .wait_obj = FI_WAIT_UNSPEC };
	const char *step = "fi_getinfo";
	int err;

	memset(e, 0, sizeof(*e));
	err = getinfo(provider, host, target, &e->info);
	if (!err) {
		step = "fi_fabric";
		err = fi_fabric(e->info->fabric_attr, &e->fabric, NULL);
	}
	if (!err) {
		step = "fi_domain";
		err = fi_domain(e->fabric, e->info, &e->domain, NULL);
	}
	if (!err) {
		step = "fi_av_open";
		err = fi_av_open(e->domain, &av_attr, &e->av, NULL);
	}
	if (!err) {
		step = "fi_cq_open";
		cq_attr.size = 1024;
		err = fi_cq_open(e->domain, &cq_attr, &e->cq, NULL);
	}
	if (!err) {
		step = "fi_endpoint";
		err = fi_endpoint(e->domain, e->info, &e->ep, NULL);
	}
	if (!err) {
		step = "binding the endpoint";
		err = fi_ep_bind(e->ep, &e->av->fid, 0);
		if (!err)
			err = fi_ep_bind(e->ep, &e->cq->fid, FI_TRANSMIT | FI_RECV);
		if (!err)
			err = fi_enable(e->ep);
	}
	if (err) {
		snprintf(errbuf, errlen, "%s %s: %s", provider, step, fi_strerror(-err));
		fab_close(e);
		return err == -FI_ENODATA ? -ENODATA : err < 0 ? err : -EIO;
	}
	e->mr_mode = (uint64_t)e->info->domain_attr->mr_mode;
	snprintf(e->provider, sizeof(e->provider), "%s", e->info->fabric_attr->prov_name);
	return 0;
}

void fab_close(struct fab_endpoint *e)
{
	if (e->ep)
		fi_close(&e->ep->fid);
	if (e->cq)
		fi_close(&e->cq->fid);
	if (e->av)
		fi_close(&e->av->fid);
	if (e->domain)
		fi_close(&e->domain->fid);
	if (e->fabric)
		fi_close(&e->fabric->fid);
	if (e->info)
		fi_freeinfo(e->info);
	memset(e, 0, sizeof(*e));
}

int fab_name(struct fab_endpoint *e, void *addr, uint32_t *addrlen)
{
	size_t len = *addrlen;
	int err = fi_getname(&e->ep->fid, addr, &len);

	if (err)
		return err < 0 ? err : -EIO;
	*addrlen = (uint32_t)len;
	return 0;
}
