/*
 * oauth2_response.h: what a provider's answer to a token request means
 */
#ifndef TV_OAUTH2_RESPONSE_H
#define TV_OAUTH2_RESPONSE_H

#include "postgres.h"

#include "nodes/pg_list.h"
#include "utils/jsonb.h"

#include "http.h"
#include "verdict.h"

extern TvVerdict *tv_oauth2_read_response(TvHttpResponse *resp, JsonbContainer *config, List *secrets);

#endif
