/*
 * access.h: who may use tokenvault in this database, and whose a private
 * client's auths are
 */
#ifndef TV_ACCESS_H
#define TV_ACCESS_H

#include "postgres.h"

#include "utils/uuid.h"

typedef enum TvLevel
{
	TV_LEVEL_NONE = 0,
	TV_LEVEL_APP,
	TV_LEVEL_ADMIN
} TvLevel;

extern bool tv_admitted(TvLevel need);
extern void tv_require_admission(TvLevel need);
extern void tv_require_client_access(pg_uuid_t *client_id, pg_uuid_t *auth_id);

#endif
