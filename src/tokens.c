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
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "crypto.h"
#include "table.h"

PG_FUNCTION_INFO_V1(tv_get_private_token);
PG_FUNCTION_INFO_V1(tv_list_private_tokens);

/* the columns of tokenvault.private_tokens, in order */
enum
{
	COL_OWNER = 1,				/* regrole: who */
	COL_OWNER_NAME,				/* its name when the value was sealed */
	COL_RELATED_ID,
	COL_KEY,
	COL_VALUE
};

/*
 * Where a value belongs, as its associated data:
 * "private:<bytes of owner>:<owner>:<bytes of related id>:<related id>:<key>",
 * the owner's name as it was when the value was sealed.  The lengths keep one
 * (owner, related id, key) from reading as another; tokenvault._token_aad()
 * writes the same for the values it seals.
 */
static text *
open_value(HeapTuple tup, TupleDesc desc, StringInfo aad)
{
	bool		isnull;
	Name		owner = DatumGetName(heap_getattr(tup, COL_OWNER_NAME, desc, &isnull));
	text	   *related_id = DatumGetTextPP(heap_getattr(tup, COL_RELATED_ID, desc, &isnull));
	text	   *key = DatumGetTextPP(heap_getattr(tup, COL_KEY, desc, &isnull));
	bytea	   *sealed = DatumGetByteaPP(heap_getattr(tup, COL_VALUE, desc, &isnull));

	resetStringInfo(aad);
	appendStringInfo(aad, "private:%zu:%s:%zu:", strlen(NameStr(*owner)), NameStr(*owner),
					 (size_t) VARSIZE_ANY_EXHDR(related_id));
	appendBinaryStringInfo(aad, VARDATA_ANY(related_id), VARSIZE_ANY_EXHDR(related_id));
	appendStringInfoChar(aad, ':');
	appendBinaryStringInfo(aad, VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key));
	return (text *) tv_open(TV_SEAL_TEXT, sealed, aad->data, aad->len);
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

	*rel = tv_table_open("private_tokens", AccessShareLock);
	ScanKeyInit(&keys[nkeys++], COL_OWNER, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(GetOuterUserId()));
	if (related_id)
		text_key(&keys[nkeys++], COL_RELATED_ID, related_id);
	if (key)
		text_key(&keys[nkeys++], COL_KEY, key);
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
	StringInfoData aad;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("related_id and key must not be null")));
	scan = begin_scan(&rel, PG_GETARG_TEXT_PP(0), PG_GETARG_TEXT_PP(1));
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		initStringInfo(&aad);
		value = open_value(tup, RelationGetDescr(rel), &aad);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
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
	StringInfoData aad;

	InitMaterializedSRF(fcinfo, 0);
	scan = begin_scan(&rel, PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0), NULL);
	initStringInfo(&aad);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		TupleDesc	desc = RelationGetDescr(rel);
		Datum		values[3];
		bool		nulls[3] = {false, false, false};
		bool		isnull;

		values[0] = heap_getattr(tup, COL_RELATED_ID, desc, &isnull);
		values[1] = heap_getattr(tup, COL_KEY, desc, &isnull);
		values[2] = PointerGetDatum(open_value(tup, desc, &aad));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return (Datum) 0;
}
