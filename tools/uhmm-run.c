// SPDX-License-Identifier: MIT
/*
 * uhmm-run: run a program with every heap pointer managed, in the manner of
 * numactl. It sets LD_PRELOAD and the UHMM_* variables, then execs the
 * program, so the exit status is the program's own.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uhmm.h>

static void usage(FILE *f)
{
	fprintf(f,
		"usage: uhmm-run [OPTIONS] [--] PROGRAM [ARGS...]\n"
		"Runs PROGRAM with libuhmm preloaded: its heap and private anonymous mappings\n"
		"become shared virtual memory that devices can use.\n"
		"  -d, --device SPEC      open a device at start (repeatable): sim, sim:copy,\n"
		"                         sim:coherent, sim:mem=256M (uhmm-info\n"
		"                         lists the backends built)\n"
		"  -l, --host-limit SIZE  keep managed memory on the host under SIZE (e.g. 64M),\n"
		"                         evicting cold pages to the first device\n"
		"  -c, --chaos MS         test aid: every MS ms move random pages to a device\n"
		"                         and some back\n"
		"  -s, --stats[=FILE]     at exit, print what the runtime did (to FILE as\n"
		"                         key=value lines)\n"
		"  -v, --log LEVEL        0 errors, 1 warnings (default), 2 info, 3 debug\n"
		"  -h, --help             this text\n"
		"Every other UHMM_* variable passes through (uhmm-info --env lists them).\n");
}

static void die(const char *fmt, const char *arg)
{
	fprintf(stderr, "uhmm-run: ");
	fprintf(stderr, fmt, arg);
	fputc('\n', stderr);
	exit(2);
}

/* The library next to us in a build tree, else the installed one. */
static const char *find_library(void)
{
	static char path[PATH_MAX];
	const char *env = getenv("UHMM_LIBRARY");
	ssize_t n;
	char *slash;

	if (env && *env)
		return env;
	n = readlink("/proc/self/exe", path, sizeof(path) - 64);
	if (n > 0) {
		path[n] = 0;
		slash = strrchr(path, '/');
		if (slash) {
			strcpy(slash, "/../runtime/libuhmm.so");
			if (!access(path, R_OK))
				return path;
		}
	}
	return UHMM_INSTALLED_LIBRARY;
}

static void prepend_preload(const char *lib)
{
	const char *old = getenv("LD_PRELOAD");
	size_t len = strlen(lib) + (old ? strlen(old) : 0) + 2;
	char *v = malloc(len);

	if (!v)
		die("%s", strerror(ENOMEM));
	snprintf(v, len, "%s%s%s", lib, old && *old ? ":" : "", old && *old ? old : "");
	setenv("LD_PRELOAD", v, 1);
	free(v);
}

static void append_device(char **devices, const char *spec)
{
	size_t len = (*devices ? strlen(*devices) + 1 : 0) + strlen(spec) + 1;
	char *v = malloc(len);

	if (!v)
		die("%s", strerror(ENOMEM));
	snprintf(v, len, "%s%s%s", *devices ? *devices : "", *devices ? ";" : "", spec);
	free(*devices);
	*devices = v;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "device", required_argument, NULL, 'd' },
		{ "host-limit", required_argument, NULL, 'l' },
		{ "chaos", required_argument, NULL, 'c' },
		{ "stats", optional_argument, NULL, 's' },
		{ "log", required_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char *devices = NULL, pid[16];
	const char *lib;
	int c;

	while ((c = getopt_long(argc, argv, "+d:l:c:s::v:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			append_device(&devices, optarg);
			break;
		case 'l':
			/* The runtime's own parser: what it would reject, we reject now. */
			if (hmm_option_check("UHMM_HOST_LIMIT", optarg))
				die("--host-limit %s: expected a size such as 64M", optarg);
			setenv("UHMM_HOST_LIMIT", optarg, 1);
			break;
		case 'c':
			if (hmm_option_check("UHMM_CHAOS", optarg) || !strtoul(optarg, NULL, 10))
				die("--chaos %s: expected milliseconds (1 or more)", optarg);
			setenv("UHMM_CHAOS", optarg, 1);
			break;
		case 's':
			setenv("UHMM_STATS", "1", 1);
			snprintf(pid, sizeof(pid), "%d", (int)getpid());
			setenv("UHMM_STATS_PID", pid, 1);
			if (optarg)
				setenv("UHMM_STATS_FILE", optarg, 1);
			break;
		case 'v':
			if (hmm_option_check("UHMM_LOG", optarg))
				die("--log %s: expected 0 to 3", optarg);
			setenv("UHMM_LOG", optarg, 1);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	if (devices)
		setenv("UHMM_DEVICES", devices, 1);
	free(devices);
	if ((getenv("UHMM_HOST_LIMIT") || getenv("UHMM_CHAOS")) &&
	    !(getenv("UHMM_DEVICES") && *getenv("UHMM_DEVICES")))
		die("%s", "--host-limit and --chaos need a device (--device sim, for one)");
	lib = find_library();
	if (access(lib, R_OK))
		die("cannot find libuhmm (%s); set UHMM_LIBRARY", lib);
	prepend_preload(lib);
	execvp(argv[optind], argv + optind);
	fprintf(stderr, "uhmm-run: cannot run %s: %s\n", argv[optind], strerror(errno));
	return errno == ENOENT ? 127 : 126;
}
