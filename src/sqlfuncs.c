/*
 * sqlfuncs.c: SQL-callable functions
 *
 * Thin wrappers: check the arguments, then call the module that does the
 * work.  The underscore functions are internal; the install script grants
 * them to no one, and only tokenvault's own SECURITY DEFINER functions call
 * them.
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "auth.h"
#include "crypto.h"
#include "keyring.h"
#include "oauth2.h"

PG_FUNCTION_INFO_V1(tv_access_token);
PG_FUNCTION_INFO_V1(tv_key_id);
PG_FUNCTION_INFO_V1(tv_key_ring);
PG_FUNCTION_INFO_V1(tv_add_key_sql);
PG_FUNCTION_INFO_V1(tv_drop_key_sql);
PG_FUNCTION_INFO_V1(tv_caller);
PG_FUNCTION_INFO_V1(tv_token_request);
PG_FUNCTION_INFO_V1(tv_random_token);
PG_FUNCTION_INFO_V1(tv_refresh_auth);
PG_FUNCTION_INFO_V1(tv_revoke_request);

static void
require_arg(FunctionCallInfo fcinfo, int n, const char *what)
{
	if (PG_ARGISNULL(n))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
}

Datum
tv_access_token(PG_FUNCTION_ARGS)
{
	require_arg(fcinfo, 0, "auth id");
	PG_RETURN_TEXT_P(tv_auth_access_token(PG_GETARG_UUID_P(0)));
}

/* _key_id(sealed bytea) returns bigint: the key that sealed it */
Datum
tv_key_id(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(tv_sealed_key_id(PG_GETARG_BYTEA_PP(0)));
}

/* key_ring() returns table (key_id bigint, newest boolean); never key material */
Datum
tv_key_ring(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	uint32	   *ids;
	int			n;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	n = tv_key_ids(&ids);
	for (i = 0; i < n; i++)
	{
		Datum		values[2] = {Int64GetDatum(ids[i]), BoolGetDatum(i == n - 1)};
		bool		nulls[2] = {false, false};

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

Datum
tv_add_key_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(tv_add_key());
}

/* _drop_key(key_id bigint): the SQL wrapper has checked that no secret uses it */
Datum
tv_drop_key_sql(PG_FUNCTION_ARGS)
{
	int64		id = PG_GETARG_INT64(0);

	if (id <= 0 || id > PG_UINT32_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("key id %lld is out of range", (long long) id)));
	tv_drop_key((uint32) id);
	PG_RETURN_VOID();
}

/*
 * _caller() returns name: the role that called, as set by login or SET ROLE.
 * Inside a SECURITY DEFINER function current_user is the definer.
 */
Datum
tv_caller(PG_FUNCTION_ARGS)
{
	PG_RETURN_DATUM(DirectFunctionCall1(namein,
										CStringGetDatum(GetUserNameFromId(GetOuterUserId(), false))));
}

/*
 * _token_request(config jsonb, kind text, params jsonb) returns verdict:
 * send one token request and judge the answer (see oauth2.c).
 */
Datum
tv_token_request(PG_FUNCTION_ARGS)
{
	require_arg(fcinfo, 0, "client config");
	require_arg(fcinfo, 1, "request kind");
	require_arg(fcinfo, 2, "request parameters");
	PG_RETURN_DATUM(tv_verdict_datum(tv_oauth2_token_request(PG_GETARG_JSONB_P(0),
															 text_to_cstring(PG_GETARG_TEXT_PP(1)),
															 PG_GETARG_JSONB_P(2))));
}

/*
 * _random_token(bytes integer) returns text: that many strong random bytes,
 * base64url without padding (a PKCE verifier, an authorization state).
 */
Datum
tv_random_token(PG_FUNCTION_ARGS)
{
	int32		n = PG_GETARG_INT32(0);
	unsigned char buf[96];
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	StringInfoData out;
	int			i;

	if (n < 16 || n > (int32) sizeof(buf))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("random token length must be 16 to %d bytes", (int) sizeof(buf))));
	if (!pg_strong_random(buf, n))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random bytes")));
	initStringInfo(&out);
	/* 6 bits a character, most significant first */
	for (i = 0; i * 6 < n * 8; i++)
	{
		int			bit = i * 6;
		int			byte = bit / 8;
		int			shift = bit % 8;
		int			v = (buf[byte] << 8 | (byte + 1 < n ? buf[byte + 1] : 0)) >> (10 - shift);

		appendStringInfoChar(&out, alphabet[v & 63]);
	}
	explicit_bzero(buf, sizeof(buf));
	PG_RETURN_TEXT_P(cstring_to_text(out.data));
}

/* refresh_auth(auth_id uuid) returns timestamptz */
Datum
tv_refresh_auth(PG_FUNCTION_ARGS)
{
	bool		has_expiry;
	TimestampTz expires_at;

	require_arg(fcinfo, 0, "auth id");
	expires_at = tv_auth_refresh(PG_GETARG_UUID_P(0), &has_expiry);
	if (!has_expiry)
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ(expires_at);
}

/* _revoke_request(config jsonb, params jsonb) returns verdict: RFC 7009 */
Datum
tv_revoke_request(PG_FUNCTION_ARGS)
{
	require_arg(fcinfo, 0, "client config");
	require_arg(fcinfo, 1, "request parameters");
	PG_RETURN_DATUM(tv_verdict_datum(tv_oauth2_revoke(PG_GETARG_JSONB_P(0), PG_GETARG_JSONB_P(1))));
}
