// SPDX-License-Identifier: MIT
/*
 * uhmm-memnode: a memory node. It lends its memory to uhmm processes on
 * other machines (the fabric device): each authenticated client gets a
 * region of its own, read and written with one-sided RMA through libfabric,
 * and freed when the client goes away. The control connection (wire.h) is
 * TCP on --listen; one thread serves each client on it.
 *
 *   uhmm-memnode --listen ADDR:PORT --mem SIZE [--key-file FILE] [--provider P]
 *   uhmm-memnode --status ADDR:PORT [--key-file FILE]
 *   uhmm-memnode --gen-key FILE
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include "regions.h"

/* A client must finish the handshake and ask within this, or is dropped. */
#define HANDSHAKE_MS 10000

static struct memnode node;
static uint8_t node_key[WIRE_KEY_BYTES];
static bool keyed;
static volatile sig_atomic_t report_wanted, stop_wanted;

static void usage(FILE *f)
{
	fprintf(f,
		"usage: uhmm-memnode --listen ADDR:PORT --mem SIZE [--key-file FILE] [--provider P]\n"
		"                    [--port-file FILE]\n"
		"       uhmm-memnode --status ADDR:PORT [--key-file FILE]\n"
		"       uhmm-memnode --gen-key FILE\n"
		"Lends SIZE bytes of this machine's memory to uhmm processes (device fabric:).\n"
		"  --listen ADDR:PORT  control address (default 127.0.0.1:7480; port 0 picks one)\n"
		"  --mem SIZE          memory to lend, e.g. 4G (K, M, G suffixes)\n"
		"  --key-file FILE     shared secret clients must prove they know; required\n"
		"                      unless ADDR is loopback\n"
		"  --provider P        libfabric provider: tcp (default), shm, verbs, efa\n"
		"  --port-file FILE    write the port listened on there (with port 0)\n"
		"  --status ADDR:PORT  print what a running node holds, as key=value lines\n"
		"  --gen-key FILE      write a new random key file, mode 0600\n"
		"SIGUSR1 prints the same figures on stderr; SIGTERM or SIGINT stops the node.\n");
}

static int parse_size(const char *s, uint64_t *ret)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	}
	if (*end || !v || v > (~0ull >> shift))
		return -EINVAL;
	*ret = v << shift;
	return 0;
}

static void print_stats(FILE *f, const struct wire_stats *s)
{
	fprintf(f,
		"mem_bytes=%llu\nused_bytes=%llu\nregions=%llu\nclients=%llu\n"
		"regions_granted=%llu\nregions_freed=%llu\nrefused_nomem=%llu\n"
		"auth_failures=%llu\n",
		(unsigned long long)s->mem_bytes, (unsigned long long)s->used_bytes,
		(unsigned long long)s->regions, (unsigned long long)s->clients,
		(unsigned long long)s->regions_granted, (unsigned long long)s->regions_freed,
		(unsigned long long)s->refused_nomem, (unsigned long long)s->auth_failures);
}

/*
 * A node listening on every address (0.0.0.0, ::) has an endpoint named by
 * that wildcard, which a client cannot connect to: it gets the address it
 * reached us at instead, with the endpoint's port.
 */
static void name_as_reached(int fd, struct wire_region *out)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len))
		return;
	if (out->addrlen == sizeof(struct sockaddr_in) && ss.ss_family == AF_INET) {
		struct sockaddr_in *ep = (void *)out->addr;

		if (ep->sin_family == AF_INET && ep->sin_addr.s_addr == htonl(INADDR_ANY))
			ep->sin_addr = ((struct sockaddr_in *)&ss)->sin_addr;
	} else if (out->addrlen == sizeof(struct sockaddr_in6) && ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *ep = (void *)out->addr;

		if (ep->sin6_family == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(&ep->sin6_addr))
			ep->sin6_addr = ((struct sockaddr_in6 *)&ss)->sin6_addr;
	}
}

/* One client, from handshake to goodbye. */
static void *serve_client(void *arg)
{
	struct wire w = { .fd = (int)(intptr_t)arg, .timeout_ms = HANDSHAKE_MS };
	struct region region = { 0 };
	struct wire_request req;
	int err = wire_accept(&w, keyed ? node_key : NULL);

	if (err == -EACCES) {
		memnode_count(&node, &node.stats.auth_failures, 1);
		fprintf(stderr, "uhmm-memnode: a client failed to authenticate\n");
	}
	while (!err && !(err = wire_recv(&w, WIRE_REQUEST, &req, sizeof(req)))) {
		if (req.op == WIRE_OP_STATS) {
			struct wire_stats s;

			memnode_stats(&node, &s);
			err = wire_send(&w, WIRE_STATS, &s, sizeof(s));
		} else if (req.op == WIRE_OP_REGION && !region.base) {
			struct wire_region out = { 0 };

			out.status = region_grant(&node, req.bytes, &region, &out);
			if (!out.status)
				name_as_reached(w.fd, &out);
			err = wire_send(&w, WIRE_REGION, &out, sizeof(out));
		} else {
			err = -EPROTO; /* one region per connection */
		}
		/* Granted: the connection now only says when the client is gone. */
		w.timeout_ms = region.base ? 0 : HANDSHAKE_MS;
	}
	region_free(&node, &region);
	memnode_count(&node, &node.stats.clients, -1);
	close(w.fd);
	return NULL;
}

static int listen_on(const char *addr, char *host, size_t hostlen, unsigned *ret_port)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *res;
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	char port[16];
	int fd, one = 1, err = 0;

	if (wire_split_addr(addr, host, hostlen, port, sizeof(port)) ||
	    getaddrinfo(host, port, &hints, &res))
		return -EINVAL;
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		err = -errno;
	} else if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
		   bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, 64) ||
		   getsockname(fd, (struct sockaddr *)&ss, &sslen)) {
		err = -errno;
		close(fd);
	}
	freeaddrinfo(res);
	if (err)
		return err;
	*ret_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						   : ((struct sockaddr_in *)&ss)->sin_port);
	return fd;
}

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		report_wanted = 1;
	else
		stop_wanted = 1;
}

static void accept_loop(int lfd)
{
	struct sigaction sa = { .sa_handler = on_signal };

	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	while (!stop_wanted) {
		struct pollfd p = { .fd = lfd, .events = POLLIN };
		pthread_t t;
		int fd;

		if (report_wanted) {
			struct wire_stats s;

			report_wanted = 0;
			memnode_stats(&node, &s);
			print_stats(stderr, &s);
		}
		if (poll(&p, 1, 1000) <= 0)
			continue;
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		memnode_count(&node, &node.stats.clients, 1);
		if (pthread_create(&t, NULL, serve_client, (void *)(intptr_t)fd)) {
			memnode_count(&node, &node.stats.clients, -1);
			close(fd);
			continue;
		}
		pthread_detach(t);
	}
}

static int connect_to(const char *addr)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res;
	char host[256], port[16];
	int fd;

	if (wire_split_addr(addr, host, sizeof(host), port, sizeof(port)) ||
	    getaddrinfo(host, port, &hints, &res))
		return -EINVAL;
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen)) {
		int err = -errno;

		close(fd);
		fd = err;
	}
	freeaddrinfo(res);
	return fd;
}

static int query_status(const char *addr)
{
	struct wire w = { .timeout_ms = HANDSHAKE_MS };
	struct wire_request req = { .op = WIRE_OP_STATS };
	struct wire_stats s;
	int err;

	w.fd = connect_to(addr);
	if (w.fd < 0) {
		fprintf(stderr, "uhmm-memnode: %s: %s\n", addr, strerror(-w.fd));
		return 1;
	}
	err = wire_connect(&w, keyed ? node_key : NULL);
	if (!err)
		err = wire_send(&w, WIRE_REQUEST, &req, sizeof(req));
	if (!err)
		err = wire_recv(&w, WIRE_STATS, &s, sizeof(s));
	close(w.fd);
	if (err) {
		fprintf(stderr, "uhmm-memnode: %s: %s\n", addr,
			err == -EACCES ? "authentication failed (wrong or missing key file)"
				       : strerror(-err));
		return 1;
	}
	print_stats(stdout, &s);
	return 0;
}

static int gen_key(const char *path)
{
	uint8_t secret[32];
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	bool ok;

	if (fd < 0) {
		fprintf(stderr, "uhmm-memnode: %s: %s\n", path, strerror(errno));
		return 1;
	}
	randombytes_buf(secret, sizeof(secret));
	ok = write(fd, secret, sizeof(secret)) == sizeof(secret);
	sodium_memzero(secret, sizeof(secret));
	if (close(fd) || !ok) {
		fprintf(stderr, "uhmm-memnode: writing %s failed\n", path);
		unlink(path);
		return 1;
	}
	return 0;
}

static int write_port(const char *path, unsigned port)
{
	FILE *f = fopen(path, "w");

	if (!f)
		return -errno;
	fprintf(f, "%u\n", port);
	return fclose(f) ? -errno : 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "mem", required_argument, NULL, 'm' },
		{ "key-file", required_argument, NULL, 'k' },
		{ "provider", required_argument, NULL, 'p' },
		{ "port-file", required_argument, NULL, 'P' },
		{ "status", required_argument, NULL, 's' },
		{ "gen-key", required_argument, NULL, 'g' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *listen_addr = "127.0.0.1:7480", *key_file = NULL, *provider = "tcp";
	const char *port_file = NULL, *status = NULL;
	char host[256], err[256];
	uint64_t mem = 0;
	unsigned port = 0;
	int c, lfd, rc;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'l': listen_addr = optarg; break;
		case 'k': key_file = optarg; break;
		case 'p': provider = optarg; break;
		case 'P': port_file = optarg; break;
		case 's': status = optarg; break;
		case 'g': return sodium_init() < 0 ? 1 : gen_key(optarg);
		case 'm':
			if (parse_size(optarg, &mem)) {
				fprintf(stderr, "uhmm-memnode: --mem %s: not a size\n", optarg);
				return 2;
			}
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc || (!status && !mem)) {
		usage(stderr);
		return 2;
	}
	if (sodium_init() < 0)
		return 1;
	if (key_file) {
		if (wire_load_key(key_file, node_key, err, sizeof(err))) {
			fprintf(stderr, "uhmm-memnode: %s\n", err);
			return 2;
		}
		keyed = true;
	}
	if (status)
		return query_status(status);
	mem &= ~4095ull;
	lfd = listen_on(listen_addr, host, sizeof(host), &port);
	if (lfd < 0) {
		fprintf(stderr, "uhmm-memnode: cannot listen on %s: %s\n", listen_addr,
			strerror(-lfd));
		return 1;
	}
	if (!keyed && !wire_is_loopback(host)) {
		fprintf(stderr, "uhmm-memnode: %s is not loopback: a --key-file is required\n",
			listen_addr);
		return 2;
	}
	fab_set_environment();
	rc = memnode_start(&node, provider, host, mem, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "uhmm-memnode: %s\n", err);
		return 1;
	}
	if (port_file && write_port(port_file, port)) {
		fprintf(stderr, "uhmm-memnode: cannot write %s\n", port_file);
		return 1;
	}
	fprintf(stderr, "uhmm-memnode: lending %llu MiB on %s port %u through %s%s\n",
		(unsigned long long)(mem >> 20), host, port, node.ep.provider,
		keyed ? ", clients authenticated" : "");
	accept_loop(lfd);
	close(lfd);
	memnode_stop(&node);
	return 0;
}
