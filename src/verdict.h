/*
 * verdict.h: what a token request or a refresh came to, in C and in SQL
 */
#ifndef TV_VERDICT_H
#define TV_VERDICT_H

#include "postgres.h"

#include "utils/jsonb.h"

/*
 * The SQL type tokenvault.outcome has these labels, in this order
 * (sql/types.sql); a refresh's waiters get one of them.
 */
typedef enum TvOutcome
{
	TV_OUTCOME_DONE,			/* a new token is stored, or the stored one is valid */
	TV_OUTCOME_NEEDS_REAUTH,	/* the grant is gone: the user must authorize again */
	TV_OUTCOME_RETRYABLE,		/* try again later */
	TV_OUTCOME_ERROR,			/* the provider or the client's settings are at fault */
	TV_OUTCOME_IN_RECOVERY,		/* C only: a standby, where the primary refreshes */
	TV_OUTCOME_NO_FLIGHT,		/* C only: no refresh was asked for (a limit, a backoff) */
	TV_OUTCOME_UNCONFIRMED		/* C only: stored here, its synchronous standby has not confirmed it */
} TvOutcome;

#define TV_OUTCOME_SQL_LABELS 4

/* A token request's verdict: tokenvault.verdict. */
typedef struct TvVerdict
{
	TvOutcome	outcome;
	int			status;			/* HTTP status, 0 when none came */
	char	   *error;			/* the provider's OAuth2 error code, or NULL */
	char	   *message;		/* what went wrong, never a secret; NULL when done */
	int			retry_after;	/* seconds, from Retry-After, or -1 */
	Jsonb	   *token;			/* the provider's token object when done */
} TvVerdict;

extern TvOutcome tv_outcome_from_datum(Datum d);
extern Datum tv_verdict_datum(TvVerdict *v);
extern TvVerdict *tv_verdict_done(int status, Jsonb *token);
extern TvVerdict *tv_verdict_failure(TvOutcome outcome, int status, const char *error,
									 const char *message, int retry_after);

#endif
