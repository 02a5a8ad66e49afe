/*
 * keyfile.h: key ring text, and the key file on disk
 */
#ifndef TV_KEYFILE_H
#define TV_KEYFILE_H

#include "postgres.h"

#include <sys/stat.h>

#define TV_KEY_LEN 32			/* AES-256 */
#define TV_KEY_CHECK_LEN 4

typedef struct TvKey
{
	uint32		id;
	unsigned char material[TV_KEY_LEN];
	unsigned char check[TV_KEY_CHECK_LEN];	/* tells this key from another of its id */
} TvKey;

extern const char *tv_keyfile_parse_line(const char *line, size_t len, TvKey *key);
extern size_t tv_keyfile_format_line(const TvKey *key, char *buf);
extern char *tv_keyfile_read(const char *path, size_t *len, struct stat *st);
extern char *tv_keyfile_run_command(const char *command, size_t *len);
extern bool tv_keyfile_write(const char *path, const char *content, size_t len, bool exclusive);

#endif
