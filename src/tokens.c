/*
 * tokens.c: reading app-private tokens
 *
 * get_private_token() and list_private_tokens() are the store's hot path: a
 * get is one probe of the primary key and one decryption, close to what
 * reading a plaintext table costs (bench/private_tokens).  The writes, and
 * the user tokens with their grants, stay in SQL.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type_d.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "access.h"
#include "envelope.h"
#include "probe.h"

PG_FUNCTION_INFO_V1(tv_get_private_token);
PG_FUNCTION_INFO_V1(tv_list_private_tokens);

enum
{
	TOKEN_OWNER,				/* regrole: whose */
	TOKEN_OWNER_NAME,			/* its name when the value was sealed */
	TOKEN_RELATED_ID,
	TOKEN_KEY,
	TOKEN_VALUE
};

static TvTable private_tokens = {"private_tokens", {"owner", "owner_name", "related_id", "key", "value"},
{REGROLEOID, NAMEOID, TEXTOID, TEXTOID, BYTEAOID}};

/*
 * Is the row the caller's by name as well as by OID?  An OID outlives its
 * role: after a DROP ROLE, a dump restored where another role has that OID,
 * or OIDs wrapping around, the OID alone would hand the row to a stranger.
 */
static bool
owned_by_caller(HeapTuple tup, TupleDesc desc)
{
	bool		isnull;
	Name		owner = DatumGetName(tv_probe_get(&private_tokens, TOKEN_OWNER_NAME, tup, desc, &isnull));
	char	   *caller = GetUserNameFromId(GetOuterUserId(), false);

	return strcmp(NameStr(*owner), caller) == 0;
}

static text *
open_value(HeapTuple tup, TupleDesc desc)
{
	bool		isnull;
	Name		owner = DatumGetName(tv_probe_get(&private_tokens, TOKEN_OWNER_NAME, tup, desc, &isnull));
	text	   *related_id = DatumGetTextPP(tv_probe_get(&private_tokens, TOKEN_RELATED_ID, tup, desc, &isnull));
	text	   *key = DatumGetTextPP(tv_probe_get(&private_tokens, TOKEN_KEY, tup, desc, &isnull));
	bytea	   *sealed = DatumGetByteaPP(tv_probe_get(&private_tokens, TOKEN_VALUE, tup, desc, &isnull));

	return tv_open_private_value(sealed, NameStr(*owner), related_id, key);
}

static void
text_key(ScanKey k, AttrNumber col, text *value)
{
	ScanKeyEntryInitialize(k, 0, col, BTEqualStrategyNumber, InvalidOid,
						   DEFAULT_COLLATION_OID, F_TEXTEQ, PointerGetDatum(value));
}

/*
 * Scan the calling role's tokens in key order: all of them, of one related
 * id, or the one of a related id and key.  The role is the one outside
 * these SECURITY DEFINER functions.
 */
static SysScanDesc
begin_scan(Relation *rel, text *related_id, text *key)
{
	ScanKeyData keys[3];
	int			nkeys = 0;

	*rel = tv_probe_open(&private_tokens);
	ScanKeyInit(&keys[nkeys++], tv_probe_attnum(&private_tokens, TOKEN_OWNER), BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(GetOuterUserId()));
	if (related_id)
		text_key(&keys[nkeys++], tv_probe_attnum(&private_tokens, TOKEN_RELATED_ID), related_id);
	if (key)
		text_key(&keys[nkeys++], tv_probe_attnum(&private_tokens, TOKEN_KEY), key);
	return systable_beginscan(*rel, RelationGetPrimaryKeyIndex(*rel), true,
							  GetActiveSnapshot(), nkeys, keys);
}

/* get_private_token(related_id text, key text) returns text, NULL if none */
Datum
tv_get_private_token(PG_FUNCTION_ARGS)
{
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tup;
	text	   *value = NULL;

	tv_require_admission(TV_LEVEL_APP);
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("related_id and key must not be null")));
	scan = begin_scan(&rel, PG_GETARG_TEXT_PP(0), PG_GETARG_TEXT_PP(1));
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup) && owned_by_caller(tup, RelationGetDescr(rel)))
		value = open_value(tup, RelationGetDescr(rel));
	systable_endscan(scan);
	tv_probe_close(rel);
	if (value == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(value);
}

/*
 * list_private_tokens(related_id text DEFAULT NULL) returns
 * TABLE (related_id text, key text, value text), in related id and key order
 */
Datum
tv_list_private_tokens(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tup;

	tv_require_admission(TV_LEVEL_APP);
	InitMaterializedSRF(fcinfo, 0);
	scan = begin_scan(&rel, PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0), NULL);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		TupleDesc	desc = RelationGetDescr(rel);
		Datum		values[3];
		bool		nulls[3] = {false, false, false};
		bool		isnull;

		if (!owned_by_caller(tup, desc))
			continue;
		values[0] = tv_probe_get(&private_tokens, TOKEN_RELATED_ID, tup, desc, &isnull);
		values[1] = tv_probe_get(&private_tokens, TOKEN_KEY, tup, desc, &isnull);
		values[2] = PointerGetDatum(open_value(tup, desc));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	systable_endscan(scan);
	tv_probe_close(rel);
	return (Datum) 0;
}
