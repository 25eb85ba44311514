// SPDX-License-Identifier: MIT
/*
 * The control channel's frames and handshake (wire.h). All crypto is
 * libsodium's: HMAC-SHA-256 for the proofs, XSalsa20-Poly1305 (secretbox)
 * for the frames after them.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "wire.h"

struct frame_header {
	uint32_t type;
	uint32_t len;
};

int wire_load_key(const char *path, uint8_t key[WIRE_KEY_BYTES], char *err, size_t errlen)
{
	uint8_t secret[1024];
	struct stat st;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		snprintf(err, errlen, "cannot open key file %s: %s", path, strerror(errno));
		return -errno;
	}
	if (fstat(fd, &st) || (st.st_mode & 077)) {
		snprintf(err, errlen, "key file %s is readable by others: chmod 600 it", path);
		close(fd);
		return -EACCES;
	}
	n = read(fd, secret, sizeof(secret));
	close(fd);
	if (n < WIRE_KEY_FILE_MIN) {
		snprintf(err, errlen, "key file %s holds %zd bytes: at least %d random ones wanted",
			 path, n, WIRE_KEY_FILE_MIN);
		sodium_memzero(secret, sizeof(secret));
		return -EINVAL;
	}
	/* Whatever its length and form, the key is its hash. */
	crypto_generichash(key, WIRE_KEY_BYTES, secret, (size_t)n, NULL, 0);
	sodium_memzero(secret, sizeof(secret));
	return 0;
}

/* Wait until fd is ready for events, within the wire's timeout. */
static int wait_ready(const struct wire *w, short events)
{
	struct pollfd p = { .fd = w->fd, .events = events };
	int n;

	do
		n = poll(&p, 1, w->timeout_ms ? w->timeout_ms : -1);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return n ? 0 : -ETIMEDOUT;
}

static int io_all(const struct wire *w, void *buf, size_t len, bool out)
{
	char *p = buf;

	while (len) {
		int err = wait_ready(w, out ? POLLOUT : POLLIN);
		ssize_t n;

		if (err)
			return err;
		n = out ? send(w->fd, p, len, MSG_NOSIGNAL) : recv(w->fd, p, len, 0);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return -errno;
		if (!n)
			return -ECONNRESET; /* the other side went away */
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Direction byte, then the frame counter: never the same nonce twice per key. */
static void frame_nonce(uint8_t nonce[crypto_secretbox_NONCEBYTES], bool from_initiator,
			uint64_t seq)
{
	memset(nonce, 0, crypto_secretbox_NONCEBYTES);
	nonce[0] = from_initiator ? 'c' : 'n';
	memcpy(nonce + 1, &seq, sizeof(seq));
}

int wire_send(struct wire *w, uint32_t type, const void *payload, uint32_t len)
{
	uint8_t buf[sizeof(struct frame_header) + WIRE_MAX_PAYLOAD + crypto_secretbox_MACBYTES];
	struct frame_header *h = (void *)buf;
	uint8_t *body = buf + sizeof(*h);

	if (len > WIRE_MAX_PAYLOAD)
		return -EMSGSIZE;
	h->type = type;
	h->len = len;
	if (w->keyed) {
		uint8_t nonce[crypto_secretbox_NONCEBYTES];

		frame_nonce(nonce, w->initiator, w->send_seq++);
		crypto_secretbox_easy(body, payload, len, nonce, w->session);
		h->len += crypto_secretbox_MACBYTES;
	} else {
		memcpy(body, payload, len);
	}
	return io_all(w, buf, sizeof(*h) + h->len, true);
}

int wire_recv(struct wire *w, uint32_t type, void *payload, uint32_t len)
{
	uint8_t body[WIRE_MAX_PAYLOAD + crypto_secretbox_MACBYTES];
	uint32_t overhead = w->keyed ? crypto_secretbox_MACBYTES : 0;
	struct frame_header h;
	int err = io_all(w, &h, sizeof(h), false);

	if (err)
		return err;
	if (h.type != type || h.len != len + overhead)
		return -EPROTO;
	err = io_all(w, body, h.len, false);
	if (err)
		return err;
	if (w->keyed) {
		uint8_t nonce[crypto_secretbox_NONCEBYTES];

		frame_nonce(nonce, !w->initiator, w->recv_seq++);
		if (crypto_secretbox_open_easy(payload, body, h.len, nonce, w->session))
			return -EPROTO; /* forged, replayed or reordered */
	} else {
		memcpy(payload, body, len);
	}
	return 0;
}

/* HMAC(key, label || a || b). */
static void prove(uint8_t mac[WIRE_MAC_BYTES], const uint8_t *key, const char *label,
		  const uint8_t *a, const uint8_t *b)
{
	crypto_auth_hmacsha256_state st;

	crypto_auth_hmacsha256_init(&st, key, WIRE_KEY_BYTES);
	crypto_auth_hmacsha256_update(&st, (const uint8_t *)label, strlen(label));
	crypto_auth_hmacsha256_update(&st, a, WIRE_NONCE_BYTES);
	crypto_auth_hmacsha256_update(&st, b, WIRE_NONCE_BYTES);
	crypto_auth_hmacsha256_final(&st, mac);
}

static void derive_session(struct wire *w, const uint8_t *key, const uint8_t *challenge,
			   const uint8_t *cnonce)
{
	uint8_t mac[WIRE_MAC_BYTES];

	_Static_assert(sizeof(mac) >= sizeof(w->session), "session key from one HMAC");
	prove(mac, key, "uhmm-memnode session", challenge, cnonce);
	memcpy(w->session, mac, sizeof(w->session));
	sodium_memzero(mac, sizeof(mac));
	w->keyed = true;
	w->send_seq = w->recv_seq = 0;
}

int wire_accept(struct wire *w, const uint8_t *key)
{
	struct wire_hello hello = { .magic = WIRE_MAGIC, .version = WIRE_VERSION, .keyed = !!key };
	struct wire_welcome welcome = { 0 };
	struct wire_auth auth;
	uint8_t expect[WIRE_MAC_BYTES];
	int err;

	w->initiator = false;
	w->keyed = false;
	randombytes_buf(hello.challenge, sizeof(hello.challenge));
	err = wire_send(w, WIRE_HELLO, &hello, sizeof(hello));
	if (!err)
		err = wire_recv(w, WIRE_AUTH, &auth, sizeof(auth));
	if (err)
		return err;
	if (key) {
		prove(expect, key, "client", hello.challenge, auth.cnonce);
		if (sodium_memcmp(expect, auth.mac, sizeof(expect)))
			welcome.status = -EACCES;
		else
			prove(welcome.mac, key, "node", auth.cnonce, hello.challenge);
	}
	err = wire_send(w, WIRE_WELCOME, &welcome, sizeof(welcome));
	if (err || welcome.status)
		return err ? err : welcome.status;
	if (key)
		derive_session(w, key, hello.challenge, auth.cnonce);
	return 0;
}

int wire_connect(struct wire *w, const uint8_t *key)
{
	struct wire_hello hello;
	struct wire_welcome welcome;
	struct wire_auth auth = { 0 };
	uint8_t expect[WIRE_MAC_BYTES];
	int err;

	w->initiator = true;
	w->keyed = false;
	err = wire_recv(w, WIRE_HELLO, &hello, sizeof(hello));
	if (err)
		return err;
	if (hello.magic != WIRE_MAGIC || hello.version != WIRE_VERSION)
		return -EPROTO;
	/* A node without a key where we have one could be anybody's. */
	if (!hello.keyed != !key)
		return -EACCES;
	randombytes_buf(auth.cnonce, sizeof(auth.cnonce));
	if (key)
		prove(auth.mac, key, "client", hello.challenge, auth.cnonce);
	err = wire_send(w, WIRE_AUTH, &auth, sizeof(auth));
	if (!err)
		err = wire_recv(w, WIRE_WELCOME, &welcome, sizeof(welcome));
	if (err)
		return err;
	if (welcome.status)
		return welcome.status < 0 ? welcome.status : -EPROTO;
	if (key) {
		prove(expect, key, "node", auth.cnonce, hello.challenge);
		if (sodium_memcmp(expect, welcome.mac, sizeof(expect)))
			return -EACCES;
		derive_session(w, key, hello.challenge, auth.cnonce);
	}
	return 0;
}

int wire_split_addr(const char *addr, char *host, size_t hostlen, char *port, size_t portlen)
{
	const char *colon = strrchr(addr, ':');
	const char *h = addr;
	size_t n;

	if (!colon || !colon[1] || colon == addr)
		return -EINVAL;
	n = (size_t)(colon - addr);
	if (*h == '[' && colon[-1] == ']') { /* [v6]:port */
		h++;
		n -= 2;
	}
	if (n >= hostlen || strlen(colon + 1) >= portlen)
		return -EINVAL;
	memcpy(host, h, n);
	host[n] = '\0';
	strcpy(port, colon + 1);
	return 0;
}

bool wire_is_loopback(const char *host)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
	bool loopback = true;

	if (getaddrinfo(host, NULL, &hints, &res))
		return false;
	for (ai = res; ai; ai = ai->ai_next) {
		if (ai->ai_family == AF_INET) {
			const struct sockaddr_in *in = (const void *)ai->ai_addr;

			loopback &= (ntohl(in->sin_addr.s_addr) >> 24) == 127;
		} else if (ai->ai_family == AF_INET6) {
			const struct sockaddr_in6 *in6 = (const void *)ai->ai_addr;

			loopback &= IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
		} else {
			loopback = false;
		}
	}
	freeaddrinfo(res);
	return loopback;
}
