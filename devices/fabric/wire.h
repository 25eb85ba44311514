/* SPDX-License-Identifier: MIT */
/*
 * The control channel between a client (the fabric backend) and a memory
 * node (uhmm-memnode): a TCP connection, separate from the libfabric data
 * path, over which a client proves it knows the node's shared key, asks for
 * a region and learns where it is (address, MR key). The connection lives
 * as long as the client's use of the region: when it closes, for any
 * reason (a crash, SIGKILL), the node frees the region.
 *
 * Handshake, with a key (both sides read the same key file):
 *   node   -> client  HELLO    challenge (32 random bytes)
 *   client -> node    AUTH     cnonce, HMAC(key, "client" challenge cnonce)
 *   node   -> client  WELCOME  status, HMAC(key, "node" cnonce challenge)
 * Neither side sends the key; each proves it has it, and the client knows it
 * talks to a real node before it sends a page. Every later frame is sealed
 * (secretbox) under a key derived from both nonces, with per-direction
 * counters as nonces, so a region's MR key never crosses the network in
 * clear and a frame cannot be replayed or reordered. Without a key (a node on
 * loopback that was given none) the MACs are zero and frames are plain.
 *
 * Frames: a header (type, payload length) and a payload of at most
 * WIRE_MAX_PAYLOAD bytes. Integers are little-endian (x86, ARM: native).
 */
#ifndef UHMM_FABRIC_WIRE_H
#define UHMM_FABRIC_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

#define WIRE_MAGIC 0x45444f4e4d4d4855ull /* "UHMMNODE" */
#define WIRE_VERSION 1
#define WIRE_MAX_PAYLOAD 4096
#define WIRE_KEY_BYTES 32
#define WIRE_NONCE_BYTES 32
#define WIRE_MAC_BYTES crypto_auth_hmacsha256_BYTES
/* A key file shorter than this is refused: it would be guessable. */
#define WIRE_KEY_FILE_MIN 16

enum wire_type {
	WIRE_HELLO = 1,
	WIRE_AUTH,
	WIRE_WELCOME,
	WIRE_REQUEST,
	WIRE_REGION,
	WIRE_STATS,
};

enum wire_op {
	WIRE_OP_REGION = 1,                 /* a region of bytes, answered by WIRE_REGION */
	WIRE_OP_STATS,                      /* answered by WIRE_STATS */
};

struct wire_hello {
	uint64_t magic;
	uint32_t version;
	uint32_t keyed;                     /* the node holds a key */
	uint8_t challenge[WIRE_NONCE_BYTES];
};

struct wire_auth {
	uint8_t cnonce[WIRE_NONCE_BYTES];
	uint8_t mac[WIRE_MAC_BYTES];
};

struct wire_welcome {
	int32_t status;                     /* 0, or -EACCES */
	uint32_t pad;
	uint8_t mac[WIRE_MAC_BYTES];
};

struct wire_request {
	uint32_t op;                        /* enum wire_op */
	uint32_t pad;
	uint64_t bytes;                     /* WIRE_OP_REGION */
};

/* What a node holds, for --status and monitoring. */
struct wire_stats {
	uint64_t mem_bytes;                 /* --mem */
	uint64_t used_bytes;                /* handed out in regions */
	uint64_t regions;                   /* now */
	uint64_t clients;                   /* connected now, authenticated or not yet */
	uint64_t regions_granted;           /* since start */
	uint64_t regions_freed;
	uint64_t refused_nomem;             /* requests larger than what was left */
	uint64_t auth_failures;
};

#define WIRE_PROVIDER_LEN 32
#define WIRE_ADDR_MAX 256

struct wire_region {
	int32_t status;                     /* 0, -ENOMEM, -EINVAL, ... */
	uint32_t virt_addr;                 /* FI_MR_VIRT_ADDR: RMA addresses are raddr + offset */
	uint64_t raddr;
	uint64_t rkey;
	uint64_t bytes;
	char provider[WIRE_PROVIDER_LEN];   /* the node's provider, e.g. "tcp;ofi_rxm" */
	uint32_t addrlen;
	uint8_t addr[WIRE_ADDR_MAX];        /* the node's endpoint name (fi_getname) */
};

/* One end of a control connection. */
struct wire {
	int fd;
	bool keyed;
	uint8_t session[crypto_secretbox_KEYBYTES];
	uint64_t send_seq, recv_seq;
	bool initiator;                     /* the client: picks the direction byte of nonces */
	int timeout_ms;                     /* per frame; 0 waits for ever */
};

/*
 * wire_load_key() - read a key file: a secret of at least WIRE_KEY_FILE_MIN
 * bytes, readable by its owner only. @err says why not, for a log line.
 * Return: 0 and key, or -errno.
 */
int wire_load_key(const char *path, uint8_t key[WIRE_KEY_BYTES], char *err, size_t errlen);

/* A frame: 0, or -errno (-ETIMEDOUT, -EPROTO for a bad or forged frame). */
int wire_send(struct wire *w, uint32_t type, const void *payload, uint32_t len);
int wire_recv(struct wire *w, uint32_t type, void *payload, uint32_t len);

/*
 * The handshake, each side. @key is NULL without a key. Return: 0, -EACCES
 * when the other side does not know the key (or one side has none),
 * -EPROTO for something that is not a uhmm memory node or client.
 */
int wire_accept(struct wire *w, const uint8_t *key);
int wire_connect(struct wire *w, const uint8_t *key);

/* "host:port" into its parts; 0 or -EINVAL. */
int wire_split_addr(const char *addr, char *host, size_t hostlen, char *port, size_t portlen);

/* Whether a host name or address is on this machine's loopback. */
bool wire_is_loopback(const char *host);

#endif /* UHMM_FABRIC_WIRE_H */
