/* SPDX-License-Identifier: MIT */
/*
 * Sealed pages: what leaves the process for a memory node is encrypted and
 * authenticated (XChaCha20-Poly1305, libsodium), so the node's operator can
 * neither read a page nor change it unnoticed. The key is made at open and
 * never leaves the process. Each page's tag and nonce stay here: the nonce
 * names the slot and a write counter, so a page moved to another slot, or
 * an older copy of the same slot (a replay), fails to open like a tampered
 * one.
 */
#ifndef UHMM_FABRIC_SEAL_H
#define UHMM_FABRIC_SEAL_H

#include <stdbool.h>
#include <stdint.h>

#include <sodium.h>

struct seal_tag {
	uint8_t mac[crypto_aead_xchacha20poly1305_ietf_ABYTES];
	uint64_t seq;                       /* the write that made it */
};

struct seal {
	uint8_t key[crypto_aead_xchacha20poly1305_ietf_KEYBYTES];
	uint64_t next_seq;
	struct seal_tag *tags;              /* one per slot */
};

/* 0 or -ENOMEM. */
int seal_init(struct seal *s, uint64_t nslots);
void seal_fini(struct seal *s);

/* Encrypt page @in (slot @slot) into @out, 4 KiB each; the tag stays here. */
void seal_page(struct seal *s, uint64_t slot, const void *in, void *out);
/* Decrypt and check @in into @out. Return: 0, or -EBADMSG when it fails the check. */
int seal_open_page(const struct seal *s, uint64_t slot, const void *in, void *out);

#endif /* UHMM_FABRIC_SEAL_H */
