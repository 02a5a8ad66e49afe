/*
 * spi.c: the worker's and refreshers' statements, each in a transaction of its own
 *
 * A background process runs one SQL function at a time, in a short
 * transaction of its own, and reads its one row by attribute number:
 *
 *     tv_spi_begin();
 *     row = tv_spi_row("SELECT * FROM tokenvault.f($1)", ...);
 *     ... read (and copy out) the columns ...
 *     tv_spi_end();
 *
 * Between the two the caller's memory context is current, so what it copies
 * outlives the transaction; the row itself does not.  The statements are
 * planned once and kept.  An error ends the transaction through
 * tv_log_caught_error(), in the caller's PG_CATCH.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "spi.h"

#define MAX_PLANS 16
#define MAX_ARGS 8

/*
 * Keyed by the SQL text's address (callers pass string constants) and the
 * argument types: a composite type made anew (the extension dropped and
 * created again) has a new OID, and wants a new plan.
 */
typedef struct KeptPlan
{
	const char *sql;
	int			nargs;
	Oid			types[MAX_ARGS];
	SPIPlanPtr	plan;
} KeptPlan;

static KeptPlan kept_plans[MAX_PLANS];
static MemoryContext caller = NULL;

static SPIPlanPtr
plan_for(const char *sql, int nargs, Oid *types)
{
	KeptPlan   *k = NULL;
	int			i;

	Assert(nargs <= MAX_ARGS);
	for (i = 0; i < MAX_PLANS; i++)
	{
		if (kept_plans[i].sql == sql)
		{
			k = &kept_plans[i];
			break;
		}
		if (k == NULL && kept_plans[i].sql == NULL)
			k = &kept_plans[i];
	}
	if (k == NULL)
		elog(ERROR, "tokenvault: more than %d statements to keep", MAX_PLANS);
	if (k->sql == sql && k->nargs == nargs && memcmp(k->types, types, sizeof(Oid) * nargs) == 0)
		return k->plan;
	if (k->sql == sql)
	{
		/* its slot is free until the new plan is kept: a failure leaves no stale copy */
		k->sql = NULL;
		SPI_freeplan(k->plan);
	}
	k->plan = SPI_prepare(sql, nargs, types);
	if (k->plan == NULL || SPI_keepplan(k->plan) != 0)
		elog(ERROR, "tokenvault: could not plan \"%s\"", sql);
	k->sql = sql;
	k->nargs = nargs;
	memcpy(k->types, types, sizeof(Oid) * nargs);
	return k->plan;
}

void
tv_spi_begin(void)
{
	caller = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "tokenvault: could not connect to SPI");
	MemoryContextSwitchTo(caller);
}

/* The one row a statement returns; nulls as SPI takes them (NULL: none). */
HeapTuple
tv_spi_row(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls, TupleDesc *desc)
{
	if (SPI_execute_plan(plan_for(sql, nargs, types), values, nulls, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "tokenvault: \"%s\" failed", sql);
	MemoryContextSwitchTo(caller);
	*desc = SPI_tuptable->tupdesc;
	return SPI_tuptable->vals[0];
}

void
tv_spi_end(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	/* commit leaves TopMemoryContext current; what follows belongs to the caller */
	MemoryContextSwitchTo(caller);
	pgstat_report_stat(false);
}

/*
 * Refuse a row that is not of the shape the caller reads by attribute
 * number: a library older or newer than the extension's SQL (a backend
 * that loaded it before ALTER EXTENSION UPDATE) must fail, not misread.
 */
void
tv_spi_check_row(TupleDesc desc, const char *what, int natts, const Oid *types)
{
	int			i;

	if (desc->natts != natts)
		i = 0;
	else
		for (i = 0; i < natts; i++)
			if (TupleDescAttr(desc, i)->atttypid != types[i])
				break;
	if (desc->natts != natts || i < natts)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s is not of the shape tokenvault's library reads", what),
				 desc->natts != natts
				 ? errdetail("It has %d columns where the library reads %d.", desc->natts, natts)
				 : errdetail("Its column %d is of type %s where the library reads %s.", i + 1,
							 format_type_be(TupleDescAttr(desc, i)->atttypid), format_type_be(types[i])),
				 errhint("The extension's SQL and its library differ: ALTER EXTENSION tokenvault UPDATE, "
						 "or restart the server after installing a new library.")));
}

/* tokenvault.<name>, a type of the extension's (for a statement's arguments and results) */
Oid
tv_type_oid(const char *name)
{
	Oid			oid = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid, CStringGetDatum(name),
									  ObjectIdGetDatum(get_namespace_oid("tokenvault", false)));

	if (!OidIsValid(oid))
		elog(ERROR, "type tokenvault.%s does not exist", name);
	return oid;
}

char *
tv_spi_text(HeapTuple row, TupleDesc desc, int attno)
{
	bool		isnull;
	Datum		d = heap_getattr(row, attno, desc, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/* DT_NOEND when null: nothing to do before something new comes */
TimestampTz
tv_spi_timestamptz(HeapTuple row, TupleDesc desc, int attno)
{
	bool		isnull;
	Datum		d = heap_getattr(row, attno, desc, &isnull);

	return isnull ? DT_NOEND : DatumGetTimestampTz(d);
}

/*
 * In a PG_CATCH of a background process that carries on: end the failed
 * transaction and log the error at LOG, whole (SQLSTATE, detail, hint,
 * context), its message prefixed with who.  Returns the error as caught,
 * copied into the current memory context, which must be the caller's own.
 * The errors are tokenvault's own wording or the database's, never a secret.
 */
ErrorData *
tv_log_caught_error(const char *who)
{
	MemoryContext cxt = CurrentMemoryContext;
	ErrorData  *edata = CopyErrorData();
	ErrorData	logged;

	FlushErrorState();
	AbortCurrentTransaction();
	MemoryContextSwitchTo(cxt);
	logged = *edata;
	logged.elevel = LOG;
	logged.message = psprintf("%s: %s", who, edata->message);
	ThrowErrorData(&logged);
	return edata;
}
