/*
 * spi_call.c: a statement in a transaction of its own, for the background processes
 *
 * The worker and the refreshers do their work in SQL functions that answer
 * in jsonb, each call committed on its own so that one failure loses only
 * itself.  The statements run over and over, so their plans are kept.
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "spi_call.h"

/* Keyed by the SQL text's address: callers pass string constants. */
#define MAX_PLANS 16

typedef struct KeptPlan
{
	const char *sql;
	SPIPlanPtr	plan;
} KeptPlan;

static KeptPlan kept_plans[MAX_PLANS];

static SPIPlanPtr
plan_for(const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr	plan;
	int			i;

	for (i = 0; i < MAX_PLANS && kept_plans[i].sql != NULL; i++)
		if (kept_plans[i].sql == sql)
			return kept_plans[i].plan;
	plan = SPI_prepare(sql, nargs, types);
	if (plan == NULL)
		elog(ERROR, "tokenvault: could not plan \"%s\"", sql);
	if (i < MAX_PLANS && SPI_keepplan(plan) == 0)
	{
		kept_plans[i].sql = sql;
		kept_plans[i].plan = plan;
	}
	return plan;
}

/* Run one statement "SELECT f($1, ...)" returning jsonb, in its own transaction. */
Jsonb *
tv_call_in_transaction(const char *sql, int nargs, Oid *types, Datum *values, MemoryContext into)
{
	Jsonb	   *result = NULL;
	bool		isnull;

	MemoryContext caller = CurrentMemoryContext;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	if (SPI_execute_plan(plan_for(sql, nargs, types), values, NULL, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "tokenvault: \"%s\" failed", sql);
	{
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
		{
			MemoryContext old = MemoryContextSwitchTo(into);

			result = DatumGetJsonbPCopy(d);
			MemoryContextSwitchTo(old);
		}
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	/* commit leaves TopMemoryContext current; what follows belongs to the caller */
	MemoryContextSwitchTo(caller);
	pgstat_report_stat(false);
	return result;
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
