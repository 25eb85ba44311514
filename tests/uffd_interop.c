// SPDX-License-Identifier: MIT
/*
 * Living with other userfaultfd users and with less privilege:
 * - userfaultfd_read (the kernel's proposed test): a device reads memory an
 *   application's own userfaultfd populates lazily; its handler serves it.
 * - user-mode-only userfaultfd (no CAP_SYS_PTRACE, sysctl 0): the runtime
 *   says so, keeps pages on the host so system calls on them keep working,
 *   and refuses private-device placement with -EPERM.
 */
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

#include "harness.h"

static int ufd;
static char fill_page[PAGE] __attribute__((aligned(PAGE)));

static void *serve(void *arg)
{
	(void)arg;
	for (;;) {
		struct pollfd p = { ufd, POLLIN, 0 };
		struct uffd_msg m;

		if (poll(&p, 1, -1) < 0 || read(ufd, &m, sizeof(m)) != sizeof(m))
			continue;
		if (m.event != UFFD_EVENT_PAGEFAULT)
			return NULL;
		struct uffdio_copy c = { .dst = m.arg.pagefault.address & ~(PAGE - 1),
					 .src = (uintptr_t)fill_page, .len = PAGE };
		ioctl(ufd, UFFDIO_COPY, &c);
	}
}

static int userfaultfd_read(void)
{
	struct uffdio_api api = { .api = UFFD_API };
	char *p = t_map(4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
	char buf[4 * PAGE];
	struct hmm_access acc;
	pthread_t t;

	CHECK(p);
	ufd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (ufd < 0)
		SKIP("no userfaultfd: %s", strerror(errno));
	CHECK_OK(ioctl(ufd, UFFDIO_API, &api));
	struct uffdio_register r = { .range = { (uintptr_t)p, 4 * PAGE },
				     .mode = UFFDIO_REGISTER_MODE_MISSING };
	CHECK_OK(ioctl(ufd, UFFDIO_REGISTER, &r));
	memset(fill_page, 0xab, PAGE);
	CHECK_OK(pthread_create(&t, NULL, serve, NULL));
	CHECK_OK(hmm_device_read(dev0, p, 4 * PAGE, buf, &acc));
	CHECK_EQ(acc.pages, 4);
	for (size_t i = 0; i < sizeof(buf); i++)
		CHECK_EQ((unsigned char)buf[i], 0xab);
	/* Memory another userfaultfd owns cannot be ours as well. */
	CHECK_RET(hmm_manage(p, 4 * PAGE), -EBUSY);
	return T_PASS;
}

static int user_mode_only(void)
{
	struct hmm_device *priv, *coh;
	size_t pages = 77;
	int fds[2];
	char *p;
	struct hmm_access acc;
	char buf[PAGE];

	setenv("UHMM_USERFAULTFD", "user", 1);
	setenv("UHMM_LOG", "0", 1);
	CHECK_OK(hmm_init());
	CHECK_OK(hmm_device_open("sim", &priv));
	CHECK_OK(hmm_device_open("sim:coherent", &coh));
	p = hmm_alloc(4 * PAGE);
	CHECK(p);
	/* A system call writing into untouched managed memory still works. */
	CHECK_OK(pipe(fds));
	CHECK_EQ(write(fds[1], "hello", 5), 5);
	CHECK_EQ(read(fds[0], p + PAGE, 5), 5);
	CHECK(!memcmp(p + PAGE, "hello", 5));
	CHECK_RET(hmm_migrate(p, 4 * PAGE, priv, 0, &pages), -EPERM);
	CHECK_EQ(pages, 77);
	CHECK_RET(hmm_device_exclusive(priv, p, PAGE, &acc), -EPERM);
	CHECK_OK(hmm_device_read(priv, p, PAGE, buf, &acc));
	CHECK_OK(hmm_migrate(p, 4 * PAGE, coh, 0, &pages));
	CHECK_EQ(pages, 4);
	CHECK(!memcmp(p + PAGE, "hello", 5));
	CHECK_OK(hmm_device_close(priv));
	CHECK_OK(hmm_device_close(coh));
	hmm_free(p);
	return T_PASS;
}

T_MAIN(TEST_CASE(userfaultfd_read, 0),
       TEST_CASE(user_mode_only, T_NO_DEVICES | T_ONE_VARIANT))
