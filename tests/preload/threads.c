// SPDX-License-Identifier: MIT
/*
 * Thread-heavy heap stress, run natively and under uhmm-run: threads
 * allocate, fill, resize, hand blocks to each other and free them, checking
 * every byte they wrote. Pages move under them (chaos, a host limit); the
 * program must not notice. The output depends only on the work done, never
 * on the interleaving.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 6
#define ROUNDS 150000
#define SLOTS 256
#define MAILBOX 64

struct block {
	uint32_t *p;
	size_t words;
	uint32_t seed;
};

/* Blocks handed from one thread to the next, which checks and frees them. */
static struct {
	pthread_mutex_t lock;
	struct block v[MAILBOX];
	unsigned n;
} mail[THREADS];

static uint32_t next_rand(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

static void fill(struct block *b, size_t from)
{
	for (size_t i = from; i < b->words; i++)
		b->p[i] = b->seed * 2654435761u + (uint32_t)i;
}

static void check(const struct block *b, const char *what)
{
	for (size_t i = 0; i < b->words; i++) {
		if (b->p[i] != b->seed * 2654435761u + (uint32_t)i) {
			fprintf(stderr, "threads: %s: word %zu of %zu is %08x\n", what, i, b->words,
				b->p[i]);
			abort();
		}
	}
}

static size_t random_words(uint32_t *s)
{
	uint32_t r = next_rand(s);

	/* Mostly small, some large (jemalloc's large classes, whole extents). */
	return (r % 16 == 0) ? 1024 + r % 65536 : 1 + r % 200;
}

static void *worker(void *arg)
{
	unsigned id = (unsigned)(uintptr_t)arg;
	struct block slots[SLOTS] = { { 0 } };
	uint32_t s = 0x9e3779b9u * (id + 1);

	for (unsigned round = 0; round < ROUNDS; round++) {
		struct block *b = &slots[next_rand(&s) % SLOTS];
		unsigned op = next_rand(&s) % 8;

		if (b->p && op < 3) {
			check(b, "before free");
			free(b->p);
			b->p = NULL;
		} else if (b->p && op < 5) {
			size_t words = random_words(&s), old = b->words;
			uint32_t *q;

			check(b, "before realloc");
			q = realloc(b->p, words * sizeof(uint32_t));
			if (!q)
				abort();
			b->p = q;
			b->words = words;
			if (words > old)
				fill(b, old);
			check(b, "after realloc");
		} else if (b->p && op == 5) {
			struct block give = *b;
			unsigned to = (id + 1) % THREADS;

			pthread_mutex_lock(&mail[to].lock);
			if (mail[to].n < MAILBOX) {
				mail[to].v[mail[to].n++] = give;
				b->p = NULL;
			}
			pthread_mutex_unlock(&mail[to].lock);
		} else if (!b->p) {
			b->words = random_words(&s);
			b->seed = next_rand(&s);
			b->p = (op == 6) ? calloc(b->words, sizeof(uint32_t)) :
					   malloc(b->words * sizeof(uint32_t));
			if (!b->p)
				abort();
			if (op == 6)
				for (size_t i = 0; i < b->words; i++)
					if (b->p[i])
						abort();
			fill(b, 0);
		}
		/* Blocks from the previous thread: check and free them. */
		pthread_mutex_lock(&mail[id].lock);
		while (mail[id].n) {
			struct block got = mail[id].v[--mail[id].n];

			check(&got, "handed over");
			free(got.p);
		}
		pthread_mutex_unlock(&mail[id].lock);
	}
	for (unsigned i = 0; i < SLOTS; i++) {
		if (slots[i].p) {
			check(&slots[i], "at exit");
			free(slots[i].p);
		}
	}
	return NULL;
}

int main(void)
{
	pthread_t t[THREADS];

	for (unsigned i = 0; i < THREADS; i++)
		pthread_mutex_init(&mail[i].lock, NULL);
	for (unsigned i = 0; i < THREADS; i++)
		if (pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)i))
			return 1;
	for (unsigned i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	for (unsigned i = 0; i < THREADS; i++) {
		while (mail[i].n) {
			struct block got = mail[i].v[--mail[i].n];

			check(&got, "left over");
			free(got.p);
		}
	}
	printf("threads: %d workers, %d rounds each: every block intact\n", THREADS, ROUNDS);
	return 0;
}
