/*
 * auth.c: reading an auth's credential and handing out its token
 *
 * This is the path every access_token() call takes, so it reads the row by a
 * direct primary-key probe and opens the secret without parsing JSON:
 * secrets are sealed as jsonb's binary form.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type_d.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "access.h"
#include "envelope.h"
#include "flight.h"
#include "jsonb_member.h"
#include "probe.h"
#include "settings.h"
#include "sqlarg.h"

typedef struct AuthRow
{
	pg_uuid_t	client_id;
	char	   *status;
	bool		has_expiry;
	TimestampTz expires_at;
	bytea	   *secret;			/* still sealed */
	bool		locked_here;	/* written or locked by this transaction */
} AuthRow;

static char *
auth_id_string(pg_uuid_t *id)
{
	return DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(id)));
}

enum
{
	AUTH_ID,
	AUTH_CLIENT_ID,
	AUTH_STATUS,
	AUTH_EXPIRES_AT,
	AUTH_SECRET
};

static TvTable auths = {"auths", {"id", "client_id", "status", "expires_at", "secret"},
{UUIDOID, UUIDOID, TEXTOID, TIMESTAMPTZOID, BYTEAOID}};

enum
{
	CLIENT_ID,
	CLIENT_TYPE
};

static TvTable clients = {"clients", {"id", "type"}, {UUIDOID, TEXTOID}};

/* Copy out what access_token() needs, into the current memory context. */
static void
fill_auth(TvTable *t, HeapTuple tup, TupleDesc desc, void *arg)
{
	AuthRow    *row = (AuthRow *) arg;
	bool		isnull;
	Datum		d;

	row->client_id = *DatumGetUUIDP(tv_probe_get(t, AUTH_CLIENT_ID, tup, desc, &isnull));
	row->status = TextDatumGetCString(tv_probe_get(t, AUTH_STATUS, tup, desc, &isnull));
	d = tv_probe_get(t, AUTH_EXPIRES_AT, tup, desc, &isnull);
	row->has_expiry = !isnull;
	row->expires_at = isnull ? 0 : DatumGetTimestampTz(d);
	row->secret = DatumGetByteaPCopy(tv_probe_get(t, AUTH_SECRET, tup, desc, &isnull));
	row->locked_here =
		TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetRawXmin(tup->t_data)) ||
		(!(tup->t_data->t_infomask & HEAP_XMAX_IS_MULTI) &&
		 TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetRawXmax(tup->t_data)));
}

/* The calling query's snapshot, as a read-only SPI query would use. */
static Snapshot
query_snapshot(void)
{
	return ActiveSnapshotSet() ? GetActiveSnapshot() : GetTransactionSnapshot();
}

static void
fill_client_type(TvTable *t, HeapTuple tup, TupleDesc desc, void *arg)
{
	bool		isnull;

	*(char **) arg = TextDatumGetCString(tv_probe_get(t, CLIENT_TYPE, tup, desc, &isnull));
}

/*
 * The client's type.  Only oauth2 and api_key auths have a token to hand
 * out; say so before anything else goes wrong with a basic or noauth auth.
 */
static char *
require_token_type(pg_uuid_t *id, AuthRow *row)
{
	char	   *type = NULL;

	if (!tv_probe_by_id(&clients, &row->client_id, query_snapshot(), fill_client_type, &type))
		elog(ERROR, "client of auth %s does not exist", auth_id_string(id));
	if (strcmp(type, "oauth2") != 0 && strcmp(type, "api_key") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("auth %s has no access token", auth_id_string(id)),
				 errdetail("Its client is of type %s.", type),
				 errhint("Use tokenvault.http_headers() or tokenvault.credentials() for basic and noauth auths.")));
	return type;
}

/* A string member of a jsonb object, or NULL. */
static text *
jsonb_string_member(Jsonb *jb, const char *key)
{
	char	   *value = tv_jsonb_string(&jb->root, key);

	if (value == NULL || value[0] == '\0')
		return NULL;
	return cstring_to_text(value);
}

static void
no_valid_token(pg_uuid_t *id, AuthRow *row)
{
	if (row->has_expiry)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("auth %s has no access token valid for %d seconds",
						auth_id_string(id), tv_min_validity),
				 errdetail("Its token expires at %s.", timestamptz_to_str(row->expires_at)),
				 errhint("Import a fresh token with tokenvault.update_auth(), or lower tokenvault.min_validity.")));
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("auth %s has no access token", auth_id_string(id)),
			 errhint("Import one with tokenvault.update_auth().")));
}

/*
 * The refresher stores its result in a transaction of its own, which would
 * wait on this one's row lock while this one waits for it.
 */
static void
refuse_if_locked_here(pg_uuid_t *id, AuthRow *row)
{
	if (row->locked_here)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("auth %s cannot be refreshed in a transaction that changed or locked it",
						auth_id_string(id)),
				 errhint("Commit first: a refresh is committed on its own.")));
}

static void
refresh_failed(pg_uuid_t *id, TvOutcome outcome, const char *message)
{
	switch (outcome)
	{
		case TV_OUTCOME_NEEDS_REAUTH:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("auth %s needs to be authorized again: %s", auth_id_string(id), message),
					 errhint("Send the user through tokenvault.authorize_url(..., auth_id => '%s').",
							 auth_id_string(id))));
			break;
		case TV_OUTCOME_IN_RECOVERY:
			ereport(ERROR,
					(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
					 errmsg("cannot refresh auth %s during recovery", auth_id_string(id)),
					 errhint("Tokens are refreshed on the primary and reach a standby by replication; "
							 "ask the primary.")));
			break;
		case TV_OUTCOME_RETRYABLE:
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_EXCEPTION),
					 errmsg("could not refresh auth %s: %s", auth_id_string(id), message),
					 errhint("The failure is temporary; try again later.")));
			break;
		default:
			ereport(ERROR,
					(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
					 errmsg("could not refresh auth %s: %s", auth_id_string(id), message),
					 errhint("See the auth's last_error, and the client's settings.")));
	}
}

/*
 * The stored token if it stays valid for min_secs: the access token of an
 * oauth2 auth, or the key of an api_key auth.  An import lets an oauth2
 * secret hold an access_token and never an api_key, and an api_key secret
 * the reverse, so the secret itself says which it is.
 */
static text *
stored_token(pg_uuid_t *id, AuthRow *row, Snapshot snapshot, int min_secs)
{
	Jsonb	   *secret;
	text	   *token;

	if (!tv_probe_by_id(&auths, id, snapshot, fill_auth, row))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("auth %s does not exist", auth_id_string(id)),
				 errhint("List a user's auths with tokenvault.user_auths().")));
	tv_require_client_access(&row->client_id, id);
	if (strcmp(row->status, "revoked") == 0 ||
		(row->has_expiry &&
		 row->expires_at <= GetCurrentTimestamp() + (TimestampTz) min_secs * USECS_PER_SEC))
		return NULL;
	secret = tv_open_auth_secret(row->secret, id);
	token = jsonb_string_member(secret, "access_token");
	if (token == NULL)
		token = jsonb_string_member(secret, "api_key");
	return token;
}

/*
 * The token an application sends, valid for tokenvault.min_validity; an
 * oauth2 auth without one is refreshed first.  Only then is the client
 * looked at.  A refresh that fails leaves the old token in use while it is
 * still valid at all.
 */
static text *
auth_access_token(pg_uuid_t *id)
{
	AuthRow		row;
	text	   *token;
	char		message[TV_REFRESH_MESSAGE_LEN];
	TvOutcome outcome;

	token = stored_token(id, &row, query_snapshot(), tv_min_validity);
	if (token)
		return token;
	if (strcmp(require_token_type(id, &row), "oauth2") != 0)
		no_valid_token(id, &row);
	if (strcmp(row.status, "revoked") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("auth %s is revoked", auth_id_string(id)),
				 errhint("Authorize it again, or import a new token with tokenvault.update_auth().")));

	refuse_if_locked_here(id, &row);
	outcome = tv_refresh_wait(id, false, message);
	/* the refresher committed: read what it stored, not what the query saw */
	token = stored_token(id, &row, GetLatestSnapshot(), tv_min_validity);
	if (token == NULL && outcome != TV_OUTCOME_DONE)
		token = stored_token(id, &row, GetLatestSnapshot(), 1);
	if (token)
		return token;
	if (outcome == TV_OUTCOME_DONE)
		no_valid_token(id, &row);
	refresh_failed(id, outcome, message);
	return NULL;				/* keep compiler quiet */
}

/* refresh_auth(): refresh now, whatever the token's expiry; the new expiry. */
static TimestampTz
auth_refresh(pg_uuid_t *id, bool *has_expiry)
{
	AuthRow		row;
	char		message[TV_REFRESH_MESSAGE_LEN];
	TvOutcome outcome;

	(void) stored_token(id, &row, query_snapshot(), 0);
	if (strcmp(require_token_type(id, &row), "oauth2") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("auth %s is not an oauth2 auth and has nothing to refresh", auth_id_string(id))));
	refuse_if_locked_here(id, &row);
	outcome = tv_refresh_wait(id, true, message);
	if (outcome != TV_OUTCOME_DONE)
		refresh_failed(id, outcome, message);
	(void) stored_token(id, &row, GetLatestSnapshot(), 0);
	*has_expiry = row.has_expiry;
	return row.expires_at;
}

/* ---- SQL-callable ---- */

PG_FUNCTION_INFO_V1(tv_access_token);
PG_FUNCTION_INFO_V1(tv_refresh_auth);

Datum
tv_access_token(PG_FUNCTION_ARGS)
{
	tv_require_admission(TV_LEVEL_APP);
	tv_require_arg(fcinfo, 0, "auth id");
	PG_RETURN_TEXT_P(auth_access_token(PG_GETARG_UUID_P(0)));
}

/* refresh_auth(auth_id uuid) returns timestamptz */
Datum
tv_refresh_auth(PG_FUNCTION_ARGS)
{
	bool		has_expiry;
	TimestampTz expires_at;

	tv_require_admission(TV_LEVEL_APP);
	tv_require_arg(fcinfo, 0, "auth id");
	expires_at = auth_refresh(PG_GETARG_UUID_P(0), &has_expiry);
	if (!has_expiry)
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ(expires_at);
}
