/*
 * keyring.h: the keys that seal and open secrets
 */
#ifndef TV_KEYRING_H
#define TV_KEYRING_H

#include "postgres.h"

#define TV_KEY_LEN 32			/* AES-256 */
#define TV_MAX_KEYS 256

typedef struct TvKey
{
	uint32		id;
	unsigned char material[TV_KEY_LEN];
} TvKey;

extern const TvKey *tv_keyring_newest(void);
extern const TvKey *tv_keyring_find(uint32 id);
extern const char *tv_keyring_source(void);
extern int	tv_key_ids(uint32 **ids);
extern uint32 tv_add_key(void);
extern void tv_drop_key(uint32 id);
extern void tv_keyring_invalidate(void);
extern uint64 tv_keyring_generation(void);

#endif
