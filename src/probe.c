/*
 * probe.c: reading a row of tokenvault's tables by a direct index probe
 *
 * access_token() and get_private_token() are the vault's hot paths: a probe
 * of a primary key costs a fraction of planning and running a query through
 * SPI.  Callers name the columns they read; their attribute numbers are
 * resolved here once per relation, and again when its definition changes
 * (an ALTER EXTENSION UPDATE, the extension dropped and created again).
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "probe.h"

static bool callback_registered = false;
static uint64 invalidations = 1;	/* relcache invalidations seen by this backend */

static void
forget_resolved(Datum arg, Oid relid)
{
	invalidations++;
}

static void
resolve(TvTable *t, Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	int			c;

	for (c = 0; t->columns[c] != NULL; c++)
	{
		int			i;

		t->attnums[c] = InvalidAttrNumber;
		for (i = 0; i < desc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);

			if (!att->attisdropped && strcmp(NameStr(att->attname), t->columns[c]) == 0 &&
				att->atttypid == t->types[c])
				t->attnums[c] = att->attnum;
		}
		if (t->attnums[c] == InvalidAttrNumber)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("table tokenvault.%s has no column \"%s\" of type %s",
							t->name, t->columns[c], format_type_be(t->types[c])),
					 errhint("The extension's SQL and its library differ: ALTER EXTENSION tokenvault UPDATE, "
							 "or restart the server after installing a new library.")));
	}
	t->relid = RelationGetRelid(rel);
	t->resolved_at = invalidations;
}

/* Open the table for reading, its columns resolved. */
Relation
tv_probe_open(TvTable *t)
{
	Oid			relid = get_relname_relid(t->name, get_namespace_oid("tokenvault", false));
	Relation	rel;

	if (!OidIsValid(relid))
		elog(ERROR, "table tokenvault.%s does not exist", t->name);
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(forget_resolved, (Datum) 0);
		callback_registered = true;
	}
	rel = table_open(relid, AccessShareLock);
	/* any invalidation since counts: they are rare, and resolving is cheap */
	if (t->relid != relid || t->resolved_at != invalidations)
		resolve(t, rel);
	return rel;
}

void
tv_probe_close(Relation rel)
{
	table_close(rel, AccessShareLock);
}

AttrNumber
tv_probe_attnum(TvTable *t, int column)
{
	return t->attnums[column];
}

Datum
tv_probe_get(TvTable *t, int column, HeapTuple tup, TupleDesc desc, bool *isnull)
{
	return heap_getattr(tup, t->attnums[column], desc, isnull);
}

/*
 * Look up a row by its uuid primary key "id" (the table's column 0) and hand
 * it to fill() while the table is open.  False when there is no such row.
 */
bool
tv_probe_by_id(TvTable *t, pg_uuid_t *id, Snapshot snapshot,
			   void (*fill) (TvTable *t, HeapTuple tup, TupleDesc desc, void *arg), void *arg)
{
	Relation	rel = tv_probe_open(t);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	bool		found;

	ScanKeyInit(&key, tv_probe_attnum(t, 0), BTEqualStrategyNumber, F_UUID_EQ, UUIDPGetDatum(id));
	scan = systable_beginscan(rel, RelationGetPrimaryKeyIndex(rel), true, snapshot, 1, &key);
	tup = systable_getnext(scan);
	found = HeapTupleIsValid(tup);
	if (found)
		fill(t, tup, RelationGetDescr(rel), arg);
	systable_endscan(scan);
	tv_probe_close(rel);
	return found;
}
