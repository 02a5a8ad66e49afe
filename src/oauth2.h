/*
 * oauth2.h: token requests and what their responses mean
 */
#ifndef TV_OAUTH2_H
#define TV_OAUTH2_H

#include "postgres.h"

#include "utils/jsonb.h"

extern Jsonb *tv_oauth2_token_request(Jsonb *config, const char *kind, Jsonb *params);
extern Jsonb *tv_oauth2_revoke(Jsonb *config, Jsonb *params);

#endif
