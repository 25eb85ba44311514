// SPDX-License-Identifier: MIT
/* open_close: devices open and close; info describes them; specs parse. */
#include <stdlib.h>

#include "harness.h"

static int open_close(void)
{
	struct hmm_device_info info = { .size = sizeof(info) };

	CHECK_OK(hmm_device_info(dev0, &info));
	CHECK(info.name[0]);
	/* The kind is what the spec starts with. */
	CHECK(!strncmp(info.kind, variant->spec, strlen(info.kind)));
	CHECK(variant->spec[strlen(info.kind)] == 0 || variant->spec[strlen(info.kind)] == ':');
	CHECK(info.index >= 0 && info.index < HMM_STATS_MAX_DEVICES);
	CHECK_EQ(info.mem_total, 1ull << 30);
	CHECK_EQ(info.mem_used, 0);
	CHECK_EQ(info.coherent, variant->coherent);
	return T_PASS;
}

static int two_devices(void)
{
	CHECK(dev0 != dev1);
	CHECK(t_dev_index(dev0) != t_dev_index(dev1));
	/* Close in either order; a closed handle is no longer a device. */
	CHECK_OK(hmm_device_close(dev0));
	CHECK_RET(hmm_device_close(dev0), -EINVAL);
	CHECK_RET(t_dev_index(dev0), -1);
	dev0 = NULL;
	CHECK(t_dev_index(dev1) >= 0);
	return T_PASS;
}

static int mem_option(void)
{
	struct hmm_device_info info = { .size = sizeof(info) };
	struct hmm_device *d;
	char spec[64];

	snprintf(spec, sizeof(spec), "%s%smem=1M", variant->spec,
		 strchr(variant->spec, ':') ? "," : ":");
	CHECK_OK(hmm_device_open(spec, &d));
	CHECK_OK(hmm_device_info(d, &info));
	CHECK_EQ(info.mem_total, 1 << 20);
	CHECK_OK(hmm_device_close(d));
	return T_PASS;
}

/* A caller built against a smaller struct gets only what it knows. */
static int info_old_size(void)
{
	struct hmm_device_info info;

	memset(&info, 0x5a, sizeof(info));
	info.size = offsetof(struct hmm_device_info, index);
	CHECK_OK(hmm_device_info(dev0, &info));
	CHECK(info.name[0]);
	CHECK_EQ(info.index, 0x5a5a5a5a);
	return T_PASS;
}

/* UHMM_DEVICES opens devices at start, in order. */
static int env_devices(void)
{
	struct hmm_device_info info = { .size = sizeof(info) };

	setenv("UHMM_DEVICES", "sim;sim:coherent,mem=1M; ;sim:bogus", 1);
	CHECK_OK(hmm_init());
	CHECK_EQ(hmm_device_count(), 2);
	CHECK_OK(hmm_device_info(hmm_device_get(0), &info));
	CHECK(!info.coherent);
	CHECK_OK(hmm_device_info(hmm_device_get(1), &info));
	CHECK(info.coherent);
	CHECK_EQ(info.mem_total, 1 << 20);
	CHECK(hmm_device_get(2) == NULL);
	CHECK(hmm_device_get(-1) == NULL);
	CHECK_OK(hmm_device_close(hmm_device_get(0)));
	CHECK_EQ(hmm_device_count(), 1);
	hmm_fini();
	CHECK_EQ(hmm_device_count(), 2); /* started again, from UHMM_DEVICES */
	return T_PASS;
}

T_MAIN(TEST_CASE(open_close, 0),
       TEST_CASE(two_devices, T_TWO_DEVICES),
       TEST_CASE(mem_option, T_NO_DEVICES),
       TEST_CASE(info_old_size, 0),
       TEST_CASE(env_devices, T_NO_DEVICES | T_ONE_VARIANT))
