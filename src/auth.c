/*
 * auth.c: reading an auth's credential and handing out its token
 *
 * This is the path every access_token() call takes, so it keeps one prepared
 * plan per backend and opens the secret without parsing JSON: secrets are
 * sealed as jsonb's binary form.
 */
#include "postgres.h"

#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "auth.h"
#include "crypto.h"
#include "tokenvault.h"

typedef struct AuthRow
{
	char	   *type;			/* the client's type */
	char	   *status;
	bool		has_expiry;
	TimestampTz expires_at;
	bytea	   *secret;			/* still sealed */
} AuthRow;

static SPIPlanPtr auth_plan = NULL;

/* The associated data that binds a sealed secret to its row: "auth:<uuid>". */
char *
tv_aad_for(const char *table, pg_uuid_t *id)
{
	char	   *uuid = DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(id)));

	return psprintf("%s:%s", table, uuid);
}

static char *
auth_id_string(pg_uuid_t *id)
{
	return DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(id)));
}

/* Fetch the row into the caller's memory context. */
static void
auth_fetch(pg_uuid_t *id, AuthRow *row)
{
	MemoryContext caller = CurrentMemoryContext;
	Datum		arg = UUIDPGetDatum(id);
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;

	SPI_connect();
	if (auth_plan == NULL)
	{
		Oid			argtypes[1] = {UUIDOID};
		SPIPlanPtr	plan;

		plan = SPI_prepare("SELECT c.type, a.status, a.expires_at, a.secret"
						   "  FROM tokenvault.auths a"
						   "  JOIN tokenvault.clients c ON c.id OPERATOR(pg_catalog.=) a.client_id"
						   " WHERE a.id OPERATOR(pg_catalog.=) $1",
						   1, argtypes);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		auth_plan = plan;
	}
	if (SPI_execute_plan(auth_plan, &arg, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read auth");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("auth %s does not exist", auth_id_string(id))));

	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	MemoryContextSwitchTo(caller);
	row->type = TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull));
	row->status = TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull));
	row->expires_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 3, &isnull));
	row->has_expiry = !isnull;
	row->secret = DatumGetByteaPCopy(SPI_getbinval(tup, desc, 4, &isnull));
	SPI_finish();
}

/* A string member of a jsonb object, or NULL. */
static text *
jsonb_string_member(Jsonb *jb, const char *key)
{
	JsonbValue	v;

	if (getKeyJsonValueFromContainer(&jb->root, key, strlen(key), &v) == NULL ||
		v.type != jbvString || v.val.string.len == 0)
		return NULL;
	return cstring_to_text_with_len(v.val.string.val, v.val.string.len);
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
 * The token an application sends: the access token of an oauth2 auth while
 * it stays valid for tokenvault.min_validity, or the key of an api_key auth.
 */
text *
tv_auth_access_token(pg_uuid_t *id)
{
	AuthRow		row;
	Jsonb	   *secret;
	text	   *token;
	char	   *aad;
	bool		oauth2;

	auth_fetch(id, &row);
	oauth2 = strcmp(row.type, "oauth2") == 0;
	if (!oauth2 && strcmp(row.type, "api_key") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("auth %s has no access token", auth_id_string(id)),
				 errdetail("Its client is of type %s.", row.type),
				 errhint("Use tokenvault.http_headers() or tokenvault.credentials() for basic and noauth auths.")));
	if (strcmp(row.status, "revoked") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("auth %s is revoked", auth_id_string(id)),
				 errhint("Authorize it again, or import a new token with tokenvault.update_auth().")));
	if (row.has_expiry &&
		row.expires_at <= GetCurrentTimestamp() + (TimestampTz) tv_min_validity * USECS_PER_SEC)
		no_valid_token(id, &row);

	aad = tv_aad_for("auth", id);
	secret = (Jsonb *) tv_open(TV_SEAL_JSONB, row.secret, aad, strlen(aad));
	token = jsonb_string_member(secret, oauth2 ? "access_token" : "api_key");
	if (token == NULL)
		no_valid_token(id, &row);
	return token;
}
