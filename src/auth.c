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
#include "crypto.h"
#include "envelope.h"
#include "flight.h"
#include "host_policy.h"
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

	/*
	 * What decides whether a refresh may be asked for: read only when the
	 * token is not valid until fresh_until, or when want_schedule says so,
	 * so that handing out a valid token reads no more than it needs.
	 */
	TimestampTz fresh_until;
	bool		want_schedule;
	bool		schedule_read;
	TimestampTz issued_at;		/* the last refresh, else the auth's creation */
	bool		refreshed;		/* last_refreshed_at is set */
	int			failure_count;
	TimestampTz next_try_at;	/* no refresh is asked for before, after failures */
	char	   *last_error;
} AuthRow;

/* The longest backoff (tokenvault._backoff): an auth the worker gave up on is tried no more often. */
#define BACKOFF_CAP_SECS 1800

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
	AUTH_SECRET,
	AUTH_LAST_REFRESHED_AT,
	AUTH_CREATED_AT,
	AUTH_REFRESH_AT,
	AUTH_UPDATED_AT,
	AUTH_FAILURE_COUNT,
	AUTH_LAST_ERROR
};

static TvTable auths = {"auths", {"id", "client_id", "status", "expires_at", "secret", "last_refreshed_at",
		"created_at", "refresh_at", "updated_at", "failure_count", "last_error"},
{UUIDOID, UUIDOID, TEXTOID, TIMESTAMPTZOID, BYTEAOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID,
TIMESTAMPTZOID, INT4OID, TEXTOID}};

enum
{
	CLIENT_ID,
	CLIENT_TYPE
};

static TvTable clients = {"clients", {"id", "type"}, {UUIDOID, TEXTOID}};

static TimestampTz
timestamp_or(TvTable *t, int column, HeapTuple tup, TupleDesc desc, TimestampTz otherwise)
{
	bool		isnull;
	Datum		d = tv_probe_get(t, column, tup, desc, &isnull);

	return isnull ? otherwise : DatumGetTimestampTz(d);
}

/*
 * When the token was issued, and when a refresh may be asked for again: at
 * once, unless refreshes failed; then when the worker's backoff ends
 * (refresh_at), or, where the worker gave up on the auth (no refresh_at),
 * a longest backoff after the last failure.
 */
static void
fill_schedule(TvTable *t, HeapTuple tup, TupleDesc desc, AuthRow *row)
{
	bool		isnull;
	Datum		d;
	TimestampTz created_at = timestamp_or(t, AUTH_CREATED_AT, tup, desc, 0);
	TimestampTz refresh_at = timestamp_or(t, AUTH_REFRESH_AT, tup, desc, 0);

	row->issued_at = timestamp_or(t, AUTH_LAST_REFRESHED_AT, tup, desc, 0);
	row->refreshed = row->issued_at != 0;
	if (!row->refreshed)
		row->issued_at = created_at;
	row->failure_count = DatumGetInt32(tv_probe_get(t, AUTH_FAILURE_COUNT, tup, desc, &isnull));
	if (row->failure_count == 0)
		row->next_try_at = 0;
	else if (refresh_at != 0)
		row->next_try_at = refresh_at;
	else
		row->next_try_at = timestamp_or(t, AUTH_UPDATED_AT, tup, desc, 0) +
			(TimestampTz) BACKOFF_CAP_SECS * USECS_PER_SEC;
	d = tv_probe_get(t, AUTH_LAST_ERROR, tup, desc, &isnull);
	row->last_error = isnull ? NULL : TextDatumGetCString(d);
	row->schedule_read = true;
}

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
	row->schedule_read = false;
	if (row->want_schedule || (row->has_expiry && row->expires_at <= row->fresh_until))
		fill_schedule(t, tup, desc, row);
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
	JsonbValue	v;
	text	   *value;

	if (!tv_jsonb_member(&jb->root, key, &v) || v.type != jbvString || v.val.string.len == 0)
		return NULL;
	/* straight from the opened secret, with no copy left behind */
	value = cstring_to_text_with_len(v.val.string.val, v.val.string.len);
	tv_wipe_on_reset((struct varlena *) value);
	return value;
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
					 *message ? errmsg("cannot refresh auth %s: %s", auth_id_string(id), message)
					 : errmsg("cannot refresh auth %s during recovery", auth_id_string(id)),
					 errhint("Tokens are refreshed on the primary and reach a standby by replication; "
							 "ask the primary.")));
			break;
		case TV_OUTCOME_RETRYABLE:
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_EXCEPTION),
					 errmsg("could not refresh auth %s: %s", auth_id_string(id), message),
					 errhint("The failure is temporary; try again later.")));
			break;
		case TV_OUTCOME_UNCONFIRMED:
			ereport(ERROR,
					(errcode(ERRCODE_T_R_STATEMENT_COMPLETION_UNKNOWN),
					 errmsg("the refresh of auth %s is committed on this server, but no synchronous standby has confirmed it",
							auth_id_string(id)),
					 errdetail("The refresher's wait for synchronous replication was cancelled."),
					 errhint("Ask again: a failover before a standby has the refresh would restore the token it replaced.")));
			break;
		case TV_OUTCOME_NO_FLIGHT:
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("could not refresh auth %s: %s", auth_id_string(id), message),
					 errhint("Try again once the refreshes under way have finished; "
							 "a token still valid is handed out meanwhile.")));
			break;
		default:
			ereport(ERROR,
					(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
					 errmsg("could not refresh auth %s: %s", auth_id_string(id), message),
					 errhint("%s", strstr(message, TV_HOST_POLICY_REFUSED) ? TV_HOST_POLICY_HINT :
							 "See the auth's last_error, and the client's settings.")));
	}
}

/*
 * Whether the token stays valid long enough: for min_secs, or for half its
 * lifetime if that is shorter.  Just refreshed, a token always is, so no
 * tokenvault.min_validity (which any role may set) has every call send a
 * request; _refresh_plan holds the same cap.
 */
static bool
valid_long_enough(AuthRow *row, TimestampTz now, int min_secs)
{
	TimestampTz needed = (TimestampTz) min_secs * USECS_PER_SEC;

	if (!row->has_expiry || row->expires_at > now + needed)
		return true;
	Assert(row->schedule_read);
	return row->expires_at > now + Min(needed, (row->expires_at - row->issued_at) / 2);
}

/*
 * The stored token if it stays valid for min_secs (see valid_long_enough):
 * the access token of an oauth2 auth, or the key of an api_key auth.  An
 * import lets an oauth2 secret hold an access_token and never an api_key,
 * and an api_key secret the reverse, so the secret itself says which it is.
 */
static text *
stored_token(pg_uuid_t *id, AuthRow *row, Snapshot snapshot, int min_secs)
{
	TimestampTz now = GetCurrentTimestamp();
	Jsonb	   *secret;
	text	   *token;

	row->fresh_until = now + (TimestampTz) min_secs * USECS_PER_SEC;
	if (!tv_probe_by_id(&auths, id, snapshot, fill_auth, row))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("auth %s does not exist", auth_id_string(id)),
				 errhint("List a user's auths with tokenvault.user_auths().")));
	tv_require_client_access(&row->client_id, id);
	if (strcmp(row->status, "revoked") == 0 || !valid_long_enough(row, now, min_secs))
		return NULL;
	secret = tv_open_auth_secret(row->secret, id);
	token = jsonb_string_member(secret, "access_token");
	if (token == NULL)
		token = jsonb_string_member(secret, "api_key");
	return token;
}

static void
refuse_if_revoked(pg_uuid_t *id, AuthRow *row)
{
	if (strcmp(row->status, "revoked") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("auth %s is revoked", auth_id_string(id)),
				 errhint("Authorize it again, or import a new token with tokenvault.update_auth().")));
}

/*
 * Ask the refresher for a refresh, as far as the auth's state allows: none
 * for an auth that needs authorizing again, and, while it backs off after
 * failures, none but the one already under way (the worker's retry).  On
 * demand is never more often than the schedule.  *message gets what went
 * wrong.
 */
static TvOutcome
refresh_as_allowed(pg_uuid_t *id, AuthRow *row, bool force, char **message)
{
	char		buf[TV_REFRESH_MESSAGE_LEN] = "";
	TvOutcome	outcome;
	bool		backing_off;

	Assert(row->schedule_read);
	if (strcmp(row->status, "needs_reauth") == 0)
	{
		*message = row->last_error ? row->last_error : "the auth needs to be authorized again";
		return TV_OUTCOME_NEEDS_REAUTH;
	}
	backing_off = row->next_try_at > GetCurrentTimestamp();
	outcome = tv_refresh_wait(id, force, !backing_off, buf);
	*message = pstrdup(buf);
	if (outcome == TV_OUTCOME_NO_FLIGHT && backing_off)
	{
		*message = psprintf("%s (not tried again before %s)",
							row->last_error ? row->last_error : "the last refresh failed",
							timestamptz_to_str(row->next_try_at));
		outcome = strcmp(row->status, "error") == 0 ? TV_OUTCOME_ERROR : TV_OUTCOME_RETRYABLE;
	}
	return outcome;
}

/*
 * The token an application sends, valid for tokenvault.min_validity; an
 * oauth2 auth without one is refreshed first, if its state allows.  Only
 * then is the client looked at.  A refresh that fails, or is not asked for,
 * leaves the old token in use while it is still valid at all.
 */
static text *
auth_access_token(pg_uuid_t *id)
{
	AuthRow		row = {0};
	text	   *token;
	char	   *message;
	TvOutcome	outcome;

	token = stored_token(id, &row, query_snapshot(), tv_min_validity);
	if (token)
		return token;
	if (strcmp(require_token_type(id, &row), "oauth2") != 0)
		no_valid_token(id, &row);

	/*
	 * Whether a refresh may be asked for is decided on what is committed
	 * now, not on what an older snapshot saw: a loop in a repeatable read
	 * transaction would never see its own failures, nor a refresh done.
	 */
	row.want_schedule = true;
	token = stored_token(id, &row, GetLatestSnapshot(), tv_min_validity);
	if (token)
		return token;
	refuse_if_revoked(id, &row);
	refuse_if_locked_here(id, &row);

	/*
	 * An error needs the client's settings mended, not another try: the
	 * schedule retries it, refresh_auth() may.
	 */
	if (strcmp(row.status, "error") == 0)
	{
		outcome = TV_OUTCOME_ERROR;
		message = row.last_error ? row.last_error : "the last refresh failed";
	}
	else
		outcome = refresh_as_allowed(id, &row, false, &message);
	/* what a failover may still take back is not handed out as the answer */
	if (outcome == TV_OUTCOME_UNCONFIRMED)
		refresh_failed(id, outcome, message);
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

/*
 * Refreshed less than tokenvault.min_refresh_interval ago, not failed since,
 * and the token valid for as long as access_token() asks: a refresh that
 * left none such does not stand in for the one asked for.
 */
static bool
recently_refreshed(AuthRow *row)
{
	TimestampTz now = GetCurrentTimestamp();

	return row->refreshed && row->failure_count == 0 && strcmp(row->status, "active") == 0 &&
		row->issued_at > now - (TimestampTz) tv_min_refresh_interval * USECS_PER_SEC &&
		valid_long_enough(row, now, tv_min_validity);
}

/*
 * refresh_auth(): refresh now, whatever the token's expiry; the new expiry.
 * An auth refreshed less than tokenvault.min_refresh_interval ago is not
 * refreshed again: that refresh's expiry is the answer.
 */
static TimestampTz
auth_refresh(pg_uuid_t *id, bool *has_expiry)
{
	AuthRow		row = {.want_schedule = true};
	char	   *message;
	TvOutcome	outcome;

	/* what is committed now decides, as in auth_access_token() */
	(void) stored_token(id, &row, GetLatestSnapshot(), 0);
	if (strcmp(require_token_type(id, &row), "oauth2") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("auth %s is not an oauth2 auth and has nothing to refresh", auth_id_string(id))));
	refuse_if_locked_here(id, &row);
	refuse_if_revoked(id, &row);
	if (!recently_refreshed(&row))
	{
		outcome = refresh_as_allowed(id, &row, true, &message);
		if (outcome != TV_OUTCOME_DONE)
			refresh_failed(id, outcome, message);
		(void) stored_token(id, &row, GetLatestSnapshot(), 0);
	}
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
