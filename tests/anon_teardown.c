// SPDX-License-Identifier: MIT
/*
 * anon_teardown: munmap of half the buffer races a device read. A read that
 * succeeds is complete and correct; any error is fine; nothing crashes or
 * hangs. Also with the buffer resident on the device.
 */
#include <pthread.h>
#include <stdlib.h>

#include "harness.h"

struct unmapper {
	void *addr;
	size_t len;
	unsigned delay_us;
};

static void *unmap_later(void *arg)
{
	struct unmapper *u = arg;

	usleep(u->delay_us);
	munmap(u->addr, u->len);
	return NULL;
}

static int race(bool managed, bool migrated)
{
	size_t ints = NPAGES * PAGE / sizeof(int);
	int *mirror = malloc(NPAGES * PAGE);

	CHECK(mirror);
	srand(getpid());
	for (int c = 0; c < NTIMES; c++) {
		int *p = t_map(NPAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
		struct unmapper u = { (char *)p + NPAGES * PAGE / 2, NPAGES * PAGE / 2,
				      (unsigned)(rand() % 32) };
		struct hmm_access acc;
		pthread_t t;
		int err;

		CHECK(p);
		if (managed)
			CHECK_OK(hmm_manage(p, NPAGES * PAGE));
		t_fill(p, ints, c);
		if (migrated)
			CHECK_OK(hmm_migrate(p, NPAGES * PAGE, dev1 ? dev1 : dev0, 0, NULL));
		CHECK_OK(pthread_create(&t, NULL, unmap_later, &u));
		err = hmm_device_read(dev0, p, NPAGES * PAGE, mirror, &acc);
		pthread_join(t, NULL);
		if (!err) {
			CHECK_EQ(acc.pages, NPAGES);
			CHECK_EQ(t_count_bad(mirror, ints, c), 0);
		}
		t_unmap(p, NPAGES * PAGE / 2);
	}
	free(mirror);
	return T_PASS;
}

static int anon_teardown(void) { return race(false, false); }
static int anon_teardown_managed(void) { return race(true, false); }
static int anon_teardown_migrated(void) { return race(true, true); }

T_MAIN(TEST_CASE(anon_teardown, 0),
       TEST_CASE(anon_teardown_managed, 0),
       TEST_CASE(anon_teardown_migrated, T_TWO_DEVICES))
