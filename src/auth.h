/*
 * auth.h: reading an auth's credential and handing out its token
 */
#ifndef TV_AUTH_H
#define TV_AUTH_H

#include "postgres.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

extern text *tv_auth_access_token(pg_uuid_t *id);
extern TimestampTz tv_auth_refresh(pg_uuid_t *id, bool *has_expiry);

#endif
