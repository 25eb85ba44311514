// SPDX-License-Identifier: MIT
/*
 * A process killed with SIGKILL in the middle of a run leaves no file of
 * the storage tier behind: its backing file is an unlinked one (O_TMPFILE)
 * in $TMPDIR by default, or in the directory path= names. While the child
 * runs, its /proc/PID/fd shows the file, deleted, in that directory and
 * holding the pages it migrated; once it is killed, the directory is empty.
 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "harness.h"

#define LEN (8ul << 20)

static size_t entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t n = 0;

	if (!d)
		return (size_t)-1;
	while ((e = readdir(d)))
		n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	closedir(d);
	return n;
}

/* The child: migrate, say so, and keep pages moving both ways until killed. */
static void child(const char *spec, int ready)
{
	struct hmm_device *dev;
	size_t pages = 0;
	int *p;

	if (hmm_device_open(spec, &dev) || !(p = hmm_alloc(LEN)))
		_exit(T_FAIL);
	t_fill(p, LEN / sizeof(int), 3);
	if (hmm_migrate(p, LEN, dev, 0, &pages) || pages != LEN / PAGE)
		_exit(T_FAIL);
	if (write(ready, "r", 1) != 1)
		_exit(T_FAIL);
	for (;;) {
		hmm_migrate(p, LEN / 2, NULL, 0, &pages);
		hmm_migrate(p, LEN / 2, dev, 0, &pages);
	}
}

/* The child's backing file: open in dir, deleted, and holding the half that stays out. */
static bool shows_deleted_file(pid_t pid, const char *dir)
{
	char fds[64], path[PATH_MAX], target[PATH_MAX];
	size_t dlen = strlen(dir);
	bool found = false;
	struct dirent *e;
	struct stat st;
	DIR *d;

	snprintf(fds, sizeof(fds), "/proc/%d/fd", (int)pid);
	d = opendir(fds);
	if (!d)
		return false;
	while (!found && (e = readdir(d))) {
		ssize_t n;

		snprintf(path, sizeof(path), "%s/%s", fds, e->d_name);
		n = readlink(path, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = 0;
		if (strncmp(target, dir, dlen) || target[dlen] != '/' ||
		    !strstr(target, " (deleted)"))
			continue;
		if (stat(path, &st)) /* through the link: the file itself */
			continue;
		t_note("pid %d fd %s: %s, %lld bytes allocated", (int)pid, e->d_name, target,
		       (long long)st.st_blocks * 512);
		found = st.st_nlink == 0 && (size_t)st.st_blocks * 512 >= LEN / 2;
	}
	closedir(d);
	return found;
}

static int kill_midrun(bool by_path)
{
	char dir[] = "/var/tmp/uhmm-kill.XXXXXX", spec[96], c;
	size_t during, after;
	struct pollfd pfd;
	int pipefd[2], status = 0;
	bool shown, killed, removed;
	pid_t pid;

	CHECK(mkdtemp(dir));
	if (by_path)
		snprintf(spec, sizeof(spec), "uring:path=%s,mem=64M", dir);
	else
		snprintf(spec, sizeof(spec), "uring:mem=64M");
	CHECK_OK(pipe(pipefd));
	pid = fork();
	CHECK(pid >= 0);
	if (!pid) {
		close(pipefd[0]);
		if (!by_path)
			setenv("TMPDIR", dir, 1);
		child(spec, pipefd[1]);
	}
	close(pipefd[1]);
	pfd = (struct pollfd){ .fd = pipefd[0], .events = POLLIN };
	if (poll(&pfd, 1, 20000) != 1 || read(pipefd[0], &c, 1) != 1) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		rmdir(dir);
		t_note("the child did not get its pages out");
		return T_FAIL;
	}
	/* Not vacuous: the file is there while the child runs, and only there. */
	shown = shows_deleted_file(pid, dir);
	during = entries(dir);
	killed = !kill(pid, SIGKILL) && waitpid(pid, &status, 0) == pid;
	close(pipefd[0]);
	after = entries(dir);
	removed = !rmdir(dir);
	CHECK(killed && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	CHECK(shown);
	CHECK_EQ(during, 0);
	CHECK_EQ(after, 0);
	CHECK(removed);
	return T_PASS;
}

/* O_TMPFILE in $TMPDIR. */
static int tmpdir_default(void)
{
	return kill_midrun(false);
}

/* O_TMPFILE in path=DIR. */
static int path_dir(void)
{
	return kill_midrun(true);
}

T_MAIN(TEST_CASE(tmpdir_default, T_NO_DEVICES | T_ONE_VARIANT),
       TEST_CASE(path_dir, T_NO_DEVICES | T_ONE_VARIANT))
