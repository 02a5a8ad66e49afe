/*
 * crypto.h: AES-256-GCM sealing of secrets, HMAC signatures, random tokens
 */
#ifndef TV_CRYPTO_H
#define TV_CRYPTO_H

#include "postgres.h"

/*
 * What a sealed value holds.  The kind is part of the associated data, so a
 * value sealed as one kind never opens as another.
 */
#define TV_SEAL_JSONB 'j'
#define TV_SEAL_TEXT  't'

extern bytea *tv_seal(char kind, const char *plain, Size len,
					  const char *aad, Size aadlen);
extern struct varlena *tv_open(char kind, bytea *sealed,
							   const char *aad, Size aadlen);
extern void tv_wipe_on_reset(struct varlena *value);
extern char *tv_hmac_sha256_hex(const char *key, const char *text);

#endif
