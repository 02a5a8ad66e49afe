/*
 * oauth2.h: token requests, prepared to be sent many at once
 */
#ifndef TV_OAUTH2_H
#define TV_OAUTH2_H

#include "postgres.h"

#include "nodes/pg_list.h"
#include "utils/jsonb.h"

#include "http.h"
#include "verdict.h"

/* A token request made ready, sent, then judged (for sending many at once). */
typedef struct TvTokenCall
{
	TvHttpRequest req;
	JsonbContainer *config;
	List	   *secrets;		/* what the request carries, scrubbed from answers */
	TvVerdict  *verdict;		/* set when it could not even be prepared */
} TvTokenCall;

extern void tv_oauth2_prepare(TvTokenCall *call, Jsonb *config, const char *kind, Jsonb *params);
extern TvVerdict *tv_oauth2_verdict(TvTokenCall *call, TvHttpResponse *resp);

#endif
