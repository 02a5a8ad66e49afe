/*
 * keyring.h: the keys that seal and open secrets
 */
#ifndef TV_KEYRING_H
#define TV_KEYRING_H

#include "postgres.h"

#include "keyfile.h"

#define TV_MAX_KEYS 256

extern void tv_keyring_define_settings(void);
extern void tv_keyring_shmem_request(void);
extern void tv_keyring_shmem_startup(void);
extern const TvKey *tv_keyring_newest(void);
extern const TvKey *tv_keyring_find(uint32 id);
extern const char *tv_keyring_source(void);
extern void tv_forbid_core_dumps(void);

#endif
