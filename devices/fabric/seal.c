// SPDX-License-Identifier: MIT
/* Sealed pages (seal.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <uhmm/device.h>

#include "seal.h"

int seal_init(struct seal *s, uint64_t nslots)
{
	if (sodium_init() < 0)
		return -ENOMEM;
	s->tags = calloc(nslots, sizeof(*s->tags));
	if (!s->tags)
		return -ENOMEM;
	crypto_aead_xchacha20poly1305_ietf_keygen(s->key);
	s->next_seq = 1;
	return 0;
}

void seal_fini(struct seal *s)
{
	sodium_memzero(s->key, sizeof(s->key));
	free(s->tags);
	s->tags = NULL;
}

static void page_nonce(uint8_t nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES],
		       uint64_t slot, uint64_t seq)
{
	memset(nonce, 0, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
	memcpy(nonce, &slot, sizeof(slot));
	memcpy(nonce + sizeof(slot), &seq, sizeof(seq));
}

void seal_page(struct seal *s, uint64_t slot, const void *in, void *out)
{
	uint8_t nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];
	struct seal_tag *t = &s->tags[slot];

	t->seq = s->next_seq++;
	page_nonce(nonce, slot, t->seq);
	crypto_aead_xchacha20poly1305_ietf_encrypt_detached(out, t->mac, NULL, in, HMM_PAGE_SIZE,
							    NULL, 0, NULL, nonce, s->key);
}

int seal_open_page(const struct seal *s, uint64_t slot, const void *in, void *out)
{
	uint8_t nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];
	const struct seal_tag *t = &s->tags[slot];

	page_nonce(nonce, slot, t->seq);
	return crypto_aead_xchacha20poly1305_ietf_decrypt_detached(out, NULL, in, HMM_PAGE_SIZE,
								   t->mac, NULL, 0, nonce, s->key)
		       ? -EBADMSG
		       : 0;
}
