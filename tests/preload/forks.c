// SPDX-License-Identifier: MIT
/*
 * Fork-heavy stress, run natively and under uhmm-run: while threads keep
 * rewriting their heap buffers (so pages are on the move), the main thread
 * forks again and again. Each child must see a consistent copy of the
 * parent's memory, may change it freely (the parent must not see that), and
 * allocates, frees and forks a grandchild of its own before it exits.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define WRITERS 2
#define BUF_WORDS (2u << 20)    /* 8 MiB each */
#define FORKS 40
#define PAGE_WORDS 1024

struct writer {
	pthread_mutex_t lock;
	uint32_t *buf;
	uint32_t version;
	pthread_t thread;
};

static struct writer w[WRITERS];
static volatile int stop;

static void stamp(uint32_t *buf, uint32_t version, unsigned id)
{
	for (uint32_t i = 0; i < BUF_WORDS; i += PAGE_WORDS / 4)
		buf[i] = version * 131u + id * 7u + i;
}

static int verify(const uint32_t *buf, uint32_t version, unsigned id)
{
	for (uint32_t i = 0; i < BUF_WORDS; i += PAGE_WORDS / 4)
		if (buf[i] != version * 131u + id * 7u + i)
			return -1;
	return 0;
}

static void *writer(void *arg)
{
	struct writer *me = arg;
	unsigned id = (unsigned)(me - w);

	while (!stop) {
		pthread_mutex_lock(&me->lock);
		stamp(me->buf, ++me->version, id);
		pthread_mutex_unlock(&me->lock);
		usleep(500);
	}
	return NULL;
}

/* In the child: check the copy, scribble on it, use the heap, fork once more. */
static int child(const uint32_t *versions)
{
	char *scratch;
	pid_t pid;
	int status;

	for (unsigned i = 0; i < WRITERS; i++) {
		if (verify(w[i].buf, versions[i], i)) {
			fprintf(stderr, "forks: child sees a torn copy of buffer %u\n", i);
			return 1;
		}
		stamp(w[i].buf, versions[i] + 1000000, i);
	}
	scratch = malloc(8 << 20);
	if (!scratch)
		return 1;
	memset(scratch, 0x5a, 8 << 20);
	pid = fork();
	if (pid == 0)
		_exit(scratch[12345] == 0x5a && !verify(w[0].buf, versions[0] + 1000000, 0) ? 0 : 1);
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
	    WEXITSTATUS(status)) {
		fprintf(stderr, "forks: grandchild failed\n");
		return 1;
	}
	free(scratch);
	return 0;
}

int main(void)
{
	uint32_t versions[WRITERS];
	int failures = 0;

	for (unsigned i = 0; i < WRITERS; i++) {
		pthread_mutex_init(&w[i].lock, NULL);
		w[i].buf = malloc(BUF_WORDS * sizeof(uint32_t));
		if (!w[i].buf)
			return 1;
		stamp(w[i].buf, 0, i);
		pthread_create(&w[i].thread, NULL, writer, &w[i]);
	}
	for (int n = 0; n < FORKS; n++) {
		pid_t pid;
		int status;

		/* Buffers stay consistent across the fork: hold their locks. */
		for (unsigned i = 0; i < WRITERS; i++) {
			pthread_mutex_lock(&w[i].lock);
			versions[i] = w[i].version;
		}
		pid = fork();
		if (pid == 0)
			_exit(child(versions));
		for (unsigned i = 0; i < WRITERS; i++) {
			if (verify(w[i].buf, versions[i], i)) {
				fprintf(stderr, "forks: the child's writes reached the parent\n");
				failures++;
			}
			pthread_mutex_unlock(&w[i].lock);
		}
		if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
		    WEXITSTATUS(status))
			failures++;
		usleep(2000);
	}
	stop = 1;
	for (unsigned i = 0; i < WRITERS; i++)
		pthread_join(w[i].thread, NULL);
	printf("forks: %d forks, %d failures\n", FORKS, failures);
	return failures != 0;
}
