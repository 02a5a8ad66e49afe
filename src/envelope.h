/*
 * envelope.h: where a sealed value belongs, and sealing and opening it there
 */
#ifndef TV_ENVELOPE_H
#define TV_ENVELOPE_H

#include "postgres.h"

#include "utils/jsonb.h"
#include "utils/uuid.h"

extern Jsonb *tv_open_auth_secret(bytea *sealed, pg_uuid_t *auth_id);
extern text *tv_open_private_value(bytea *sealed, const char *owner_name, text *related_id, text *key);

#endif
