// SPDX-License-Identifier: MIT
/*
 * The page-state machine on its own (runtime/state/pagestate.c), linked
 * against the runtime's three bottom layers only, as the kernel tests its
 * internals with KUnit: which words are legal states, what each transition
 * does to a word, and, in a build with debug checks, that an illegal
 * transition, a transition without reg.lock and locks taken out of order
 * stop the process (SIGABRT, with a line saying what) rather than corrupt
 * a page quietly. Without debug checks those cases skip.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "state.h"

#define T_PASS 0
#define T_FAIL 1
#define T_SKIP 77

#define CHECK(cond)                                                               \
	do {                                                                      \
		if (!(cond)) {                                                    \
			fprintf(stderr, "  # %s:%d: check failed: %s\n", __FILE__, \
				__LINE__, #cond);                                 \
			return T_FAIL;                                            \
		}                                                                 \
	} while (0)

static uint64_t device_word(unsigned loc, uint64_t slot)
{
	return ((uint64_t)loc << PW_LOC_SHIFT) | slot;
}

static uint64_t shared_word(uint64_t kind, unsigned aux, uint64_t slot)
{
	return kind | ((uint64_t)aux << PW_AUX_SHIFT) | slot;
}

static int legal_states(void)
{
	const uint64_t legal[] = {
		0,                                              /* HOST, never populated */
		PW_PIN_HOST | PW_READ_MOSTLY,                   /* HOST with advice */
		PW_UNMAPPED,                                    /* a hole */
		device_word(1, 7),                              /* DEVICE(0) slot 7 */
		device_word(3, 0) | PW_POISONED,                /* DEVICE(2), SIGBUS marker */
		shared_word(PW_EXCL, 2, 5),                     /* EXCL(1) */
		shared_word(PW_DUP, 1, 9) | PW_READ_MOSTLY,     /* DUP(0) */
		PW_BUSY | PW_PARKED,                            /* claimed on its way out */
		PW_BUSY | PW_ABORT,                             /* the CPU wrote during a copy */
		PW_BUSY | PW_ZAPPING,                           /* the copy made it */
		device_word(1, 7) | PW_BUSY | PW_DISCARD,       /* on its way home, emptied */
		PW_PARKED,                                      /* a fault waits on a pinned page */
	};
	const uint64_t illegal[] = {
		PW_UNMAPPED | PW_BUSY,                          /* a hole has no state */
		3,                                              /* HOST with a slot */
		shared_word(PW_EXCL | PW_DUP, 1, 0),            /* both kinds of sharing */
		shared_word(PW_EXCL, 0, 1),                     /* exclusive to nobody */
		device_word(1, 2) | shared_word(PW_DUP, 1, 2),  /* shared and elsewhere */
		(uint64_t)1 << PW_AUX_SHIFT,                    /* aux without sharing */
		PW_ABORT,                                       /* a mark without a claim */
		PW_DISCARD,
		device_word(1, 0) | PW_BUSY | PW_ZAPPING,       /* zapping is host to device */
		PW_POISONED,                                    /* a marker with nothing behind it */
		shared_word(PW_DUP, 1, 2) | PW_BUSY,            /* shared pages are not claimed */
		device_word(MAX_DEVICES + 1, 0),                /* no such device */
		1ull << 63,                                     /* no such bit */
	};

	for (size_t i = 0; i < ARRAY_SIZE(legal); i++)
		CHECK(pw_valid(legal[i]));
	for (size_t i = 0; i < ARRAY_SIZE(illegal); i++)
		CHECK(!pw_valid(illegal[i]));
	return T_PASS;
}

/* A range of four pages that only this test knows (no registry, no userfaultfd). */
static uint64_t words[4];
static struct range fake = {
	.start = 0x10000000, .end = 0x10004000, .pages = words, .pages_base = words,
};

static int claim_and_release(void)
{
	reg_lock();
	words[0] = 0;
	page_claim(&words[0]);
	CHECK(words[0] == PW_BUSY);
	page_mark_parked(&words[0]);
	page_mark_aborted(&words[0]);
	CHECK(pw_valid(words[0]));
	pages_release(&fake, fake.start, 1);
	CHECK(words[0] == 0);

	/* Emptied while claimed: released to a host page that reads zero. */
	page_set_advice(&words[1], PW_PIN_HOST, 0);
	page_claim(&words[1]);
	page_mark_discarded(&words[1]);
	pages_release(&fake, fake.start + PAGE_SIZE, 1);
	CHECK(words[1] == PW_PIN_HOST);
	page_set_advice(&words[1], 0, PW_PIN_HOST);
	CHECK(words[1] == 0);
	reg_unlock();
	return T_PASS;
}

static int moved_and_adopted(void)
{
	uint64_t moved;

	reg_lock();
	words[2] = PW_READ_MOSTLY;
	page_mark_parked(&words[2]);
	moved = page_move_out(&words[2]);
	CHECK(moved == PW_READ_MOSTLY);          /* the fault that waited stays behind */
	CHECK(words[2] == PW_READ_MOSTLY);
	page_unmap(&words[2]);
	CHECK(words[2] == PW_UNMAPPED);
	page_adopt(&words[2], moved);
	CHECK(words[2] == PW_READ_MOSTLY);
	/* A claimed page cannot follow mremap: discarded, only its advice moves. */
	page_claim(&words[2]);
	moved = page_move_out(&words[2]);
	CHECK(moved == PW_READ_MOSTLY);
	CHECK(words[2] & PW_DISCARD);
	pages_release(&fake, fake.start + 2 * PAGE_SIZE, 1);
	CHECK(words[2] == PW_READ_MOSTLY);
	reg_unlock();
	page_fork_child(&words[2]);
	CHECK(words[2] == PW_READ_MOSTLY);
	return T_PASS;
}

/* Runs fn in a child, which must die of SIGABRT (a debug check fired). */
static int expect_abort(void (*fn)(void))
{
	int status;
	pid_t pid;

	if (!UHMM_HAVE_DEBUG_CHECKS)
		return T_SKIP;
	fflush(NULL);
	pid = fork();
	if (!pid) {
		/* The check's own line goes to stderr; the test's output stays readable. */
		fn();
		_exit(0);
	}
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
	return T_PASS;
}

static void claim_twice(void)
{
	reg_lock();
	words[3] = 0;
	page_claim(&words[3]);
	page_claim(&words[3]);
}

static void claim_unlocked(void)
{
	words[3] = 0;
	page_claim(&words[3]);
}

static void adopt_mapped(void)
{
	reg_lock();
	words[3] = 0;
	page_adopt(&words[3], 0);
}

static void unmap_device_page(void)
{
	/* Its slot would leak: the caller must drop or release it first. */
	reg_lock();
	words[3] = device_word(1, 4);
	page_unmap(&words[3]);
}

static void lock_out_of_order(void)
{
	struct mirror m;

	if (mirror_init(&m))
		_exit(0);
	mirror_lock(&m);
	reg_lock();
}

static int illegal_transition_aborts(void)
{
	int rc = expect_abort(claim_twice);

	if (rc == T_PASS)
		rc = expect_abort(adopt_mapped);
	if (rc == T_PASS)
		rc = expect_abort(unmap_device_page);
	return rc;
}

static int transition_without_lock_aborts(void)
{
	return expect_abort(claim_unlocked);
}

static int lock_order_aborts(void)
{
	return expect_abort(lock_out_of_order);
}

int main(void)
{
	static const struct {
		const char *name;
		int (*fn)(void);
	} cases[] = {
		{ "legal_states", legal_states },
		{ "claim_and_release", claim_and_release },
		{ "moved_and_adopted", moved_and_adopted },
		{ "illegal_transition_aborts", illegal_transition_aborts },
		{ "transition_without_lock_aborts", transition_without_lock_aborts },
		{ "lock_order_aborts", lock_order_aborts },
	};
	int pass = 0, fail = 0, skip = 0;

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		int rc = cases[i].fn();

		printf("%s %s\n", rc == T_PASS ? "ok  " : rc == T_SKIP ? "skip" : "FAIL", cases[i].name);
		pass += rc == T_PASS;
		skip += rc == T_SKIP;
		fail += rc != T_PASS && rc != T_SKIP;
	}
	printf("# %d passed, %d failed, %d skipped%s\n", pass, fail, skip,
	       UHMM_HAVE_DEBUG_CHECKS ? "" : " (debug checks are off in this build)");
	return fail ? T_FAIL : pass ? T_PASS : T_SKIP;
}
