/*
 * engine.c: serving a refresher's flights, many requests at once
 *
 * Each flight a refresher claims becomes a job: planned in a short
 * transaction, its request sent with no transaction open, and its result
 * applied in another short transaction; up to
 * tokenvault.max_concurrent_refreshes requests are in flight at once.  When
 * responses arrive, the next flights' requests go out before the responses
 * are stored, so that storing them does not leave the provider idle.
 *
 * The refresher's process owns the HTTP handle and its wait; other requests
 * of the same process (the worker's webhooks) may share it.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type_d.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "durable.h"
#include "engine.h"
#include "flight.h"
#include "oauth2.h"
#include "oauth2_response.h"
#include "settings.h"
#include "spi.h"

#define MAX_JOBS 1024			/* requests a refresher has in flight, at most */

/* tokenvault._refresh_plan's row: tokenvault.refresh_plan, by attribute number */
enum
{
	PLAN_OUTCOME = 1,
	PLAN_MESSAGE,
	PLAN_KIND,
	PLAN_VERSION,
	PLAN_CONFIG,
	PLAN_PARAMS,
	PLAN_KEEP,
	PLAN_NATTS = PLAN_KEEP
};

typedef struct JobPlan
{
	bool		read;			/* the auth was read: a failure from here on is its own */
	int64		version;
	Jsonb	   *keep;			/* what of the credential a new token leaves in place */
} JobPlan;

typedef struct Job
{
	TvFlight	flight;
	JobPlan		plan;
	TvTokenCall call;
	TvHttpResponse resp;
	MemoryContext cxt;			/* everything of this job, gone when it finishes */
	bool		busy;
} Job;

typedef struct Engine
{
	TvHttpMulti *multi;
	MemoryContext cxt;
	int			busy;			/* jobs in hand; those not answered have a request in flight */
	int			nanswered;
	Job		   *answered[MAX_JOBS];	/* jobs whose response waits to be stored, in order of arrival */
	Job			jobs[MAX_JOBS];
} Engine;

static Engine *engine = NULL;

static void
finish_job(Job *job, TvOutcome outcome, const char *message)
{
	tv_flight_finish(&job->flight, outcome, message);
	/* the job's context may be the current one */
	MemoryContextSwitchTo(engine->cxt);
	MemoryContextDelete(job->cxt);
	job->cxt = NULL;
	job->busy = false;
	engine->busy--;
}

static Jsonb *
jsonb_attr(HeapTuple row, TupleDesc desc, int attno)
{
	bool		isnull;
	Datum		d = heap_getattr(row, attno, desc, &isnull);

	return isnull ? NULL : DatumGetJsonbPCopy(d);
}

/* Plan a job; true if it has a request to send, else it is finished. */
static bool
plan_job(Job *job)
{
	Oid			types[3] = {UUIDOID, BOOLOID, INT4OID};
	Datum		args[3];
	HeapTuple	row;
	TupleDesc	desc;
	bool		isnull;
	Datum		outcome;
	char	   *message;

	args[0] = UUIDPGetDatum(&job->flight.auth_id);
	args[1] = BoolGetDatum(job->flight.force);
	args[2] = Int32GetDatum(job->flight.min_validity);
	tv_spi_begin();
	/* a refresh is marked as sent, durably, before it is */
	tv_durable_begin();
	row = tv_spi_row("SELECT * FROM tokenvault._refresh_plan($1, $2, $3)", 3, types, args, NULL, &desc);
	{
		Oid			shape[PLAN_NATTS] = {tv_type_oid("outcome"), TEXTOID, TEXTOID, INT8OID,
		JSONBOID, JSONBOID, JSONBOID};

		tv_spi_check_row(desc, "what tokenvault._refresh_plan returns", PLAN_NATTS, shape);
	}
	outcome = heap_getattr(row, PLAN_OUTCOME, desc, &isnull);
	if (!isnull)
	{
		TvOutcome	skip = tv_outcome_from_datum(outcome);

		message = tv_spi_text(row, desc, PLAN_MESSAGE);
		tv_spi_end();
		finish_job(job, skip, message ? message : "");
		return false;
	}
	job->plan.version = DatumGetInt64(heap_getattr(row, PLAN_VERSION, desc, &isnull));
	job->plan.keep = jsonb_attr(row, desc, PLAN_KEEP);
	tv_oauth2_prepare(&job->call, jsonb_attr(row, desc, PLAN_CONFIG), tv_spi_text(row, desc, PLAN_KIND),
					  jsonb_attr(row, desc, PLAN_PARAMS));
	job->plan.read = true;
	tv_spi_end();
	if (!tv_durable_confirmed())
	{
		/* the wait was cancelled: a failover now could lose the mark, so nothing goes out */
		tv_flight_count(TV_OUTCOME_RETRYABLE, -1);
		finish_job(job, TV_OUTCOME_RETRYABLE,
				   "the refresh was not sent: the synchronous standby did not confirm it was about to be");
		return false;
	}
	return true;
}

/*
 * A refresh stored here whose synchronous standby did not confirm it (the
 * wait was cancelled): a failover now could lose it, so it is logged,
 * counted, and its waiters are not handed the new token as if it were safe.
 */
static TvOutcome
unconfirmed(Job *job, TvOutcome outcome)
{
	tv_flight_count_unconfirmed();
	ereport(LOG,
			(errmsg("tokenvault: the refresh of auth %s is committed on this server only",
					DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&job->flight.auth_id)))),
			 errdetail("The wait for synchronous replication was cancelled before a standby confirmed the commit."),
			 errhint("A failover before the standby catches up restores the refresh token this refresh replaced.")));
	return outcome == TV_OUTCOME_DONE ? TV_OUTCOME_UNCONFIRMED : outcome;
}

/* Store a job's verdict, if the auth's version is unchanged. */
static void
apply_job(Job *job, TvVerdict *verdict, double seconds)
{
	Oid			types[4] = {UUIDOID, INT8OID, JSONBOID, InvalidOid};
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	HeapTuple	row;
	TupleDesc	desc;
	bool		isnull;
	char	   *message;
	TvOutcome	outcome;

	tv_spi_begin();
	tv_durable_begin();
	args[0] = UUIDPGetDatum(&job->flight.auth_id);
	args[1] = Int64GetDatum(job->plan.version);
	args[2] = JsonbPGetDatum(job->plan.keep);
	nulls[2] = job->plan.keep ? ' ' : 'n';
	args[3] = tv_verdict_datum(verdict);
	types[3] = HeapTupleHeaderGetTypeId(DatumGetHeapTupleHeader(args[3]));
	/* (outcome tokenvault.outcome, message text) */
	row = tv_spi_row("SELECT * FROM tokenvault._refresh_apply($1, $2, $3, $4)", 4, types, args, nulls, &desc);
	{
		Oid			shape[2] = {tv_type_oid("outcome"), TEXTOID};

		tv_spi_check_row(desc, "what tokenvault._refresh_apply returns", 2, shape);
	}
	outcome = tv_outcome_from_datum(heap_getattr(row, 1, desc, &isnull));
	message = tv_spi_text(row, desc, 2);
	tv_spi_end();
	tv_flight_count(outcome, seconds);
	if (!tv_durable_confirmed())
	{
		/*
		 * A terminate is what cuts the wait short: its waiters must hear so
		 * before the process goes (a log line checks for interrupts).
		 */
		HOLD_INTERRUPTS();
		finish_job(job, unconfirmed(job, outcome), message ? message : "");
		RESUME_INTERRUPTS();
		return;
	}
	finish_job(job, outcome, message ? message : "");
}

/*
 * Record an unexpected error on the job's auth as a failed refresh, so that
 * it backs off and shows in last_error rather than coming back unseen after
 * its lease.  False if it could not be recorded (the error may lie in the
 * recording itself); the job is finished if it was.
 */
static bool
record_failure(Job *job, const char *message)
{
	volatile bool recorded = false;

	PG_TRY();
	{
		apply_job(job, tv_verdict_failure(TV_OUTCOME_ERROR, 0, NULL, message, -1), -1);
		recorded = true;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(job->cxt);
		FlushErrorState();
		AbortCurrentTransaction();
	}
	PG_END_TRY();
	return recorded;
}

/* An error while serving a job fails that job alone, and is logged whole. */
static void
fail_job(Job *job)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(job->cxt);
	edata = tv_log_caught_error("tokenvault refresher");
	MemoryContextSwitchTo(job->cxt);
	/* a cancel is no fault of the auth's; nor is an error before its plan was read */
	if (job->plan.read && edata->sqlerrcode != ERRCODE_QUERY_CANCELED &&
		record_failure(job, edata->message))
		return;
	tv_flight_count(TV_OUTCOME_ERROR, -1);
	finish_job(job, TV_OUTCOME_ERROR, edata->message);
}

/* A response is in: its request's place is free, the response waits to be stored. */
static void
on_response(TvHttpResponse *resp, void *arg)
{
	engine->answered[engine->nanswered++] = (Job *) arg;
}

/* Store the responses that are in, each in a transaction of its own. */
static void
apply_answered(void)
{
	int			i;

	if (engine->nanswered > 0)
		pgstat_report_activity(STATE_RUNNING, "tokenvault: storing tokens");
	for (i = 0; i < engine->nanswered; i++)
	{
		Job		   *job = engine->answered[i];

		MemoryContextSwitchTo(job->cxt);
		PG_TRY();
		{
			apply_job(job, tv_oauth2_verdict(&job->call, &job->resp), job->resp.seconds);
		}
		PG_CATCH();
		{
			fail_job(job);
		}
		PG_END_TRY();
	}
	engine->nanswered = 0;
	MemoryContextSwitchTo(engine->cxt);
}

/* Plan a claimed job and send its request, or finish it if there is none to send. */
static void
start_job(Job *job)
{
	MemoryContext old;

	job->cxt = AllocSetContextCreate(engine->cxt, "tokenvault refresh job", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(job->cxt);
	PG_TRY();
	{
		if (plan_job(job))
		{
			/* not even sendable (no URL), or a URL that may not be requested: the verdict says why */
			if (job->call.verdict)
				apply_job(job, job->call.verdict, -1);
			else if (!tv_http_multi_add(engine->multi, &job->call.req, &job->resp, on_response, job))
				apply_job(job, tv_oauth2_verdict(&job->call, &job->resp), -1);
		}
	}
	PG_CATCH();
	{
		fail_job(job);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
}

/*
 * Claim this database's queued flights into free jobs, callers' flights
 * before the worker's own schedule, and start them.  Returns how many.
 */
static int
claim_flights(void)
{
	int			limit = Min(tv_max_concurrent_refreshes, MAX_JOBS);
	int			in_flight = engine->busy - engine->nanswered;
	TvFlight	claimed[MAX_JOBS];
	int			nclaimed;
	int			i;
	int			j = 0;

	if (in_flight >= limit || engine->busy >= MAX_JOBS)
		return 0;
	nclaimed = tv_flight_claim(claimed, Min(limit - in_flight, MAX_JOBS - engine->busy));
	if (DefaultXactReadOnly)
	{
		/*
		 * An HA manager holds a promoted server read-only for a moment
		 * (pg_auto_failover until the old primary is demoted): nothing can
		 * be stored, so nothing is sent, and callers hear so at once.
		 */
		for (i = 0; i < nclaimed; i++)
			tv_flight_finish(&claimed[i], TV_OUTCOME_IN_RECOVERY,
							 "the server is read-only (default_transaction_read_only)");
		return 0;
	}
	if (nclaimed > 0)
		pgstat_report_activity(STATE_RUNNING, "tokenvault: token requests");
	for (i = 0; i < nclaimed; i++)
	{
		Job		   *job;

		while (engine->jobs[j].busy)
			j++;
		job = &engine->jobs[j];
		memset(job, 0, sizeof(Job));
		job->busy = true;
		job->flight = claimed[i];
		engine->busy++;
		start_job(job);
	}
	return nclaimed;
}

/*
 * Serve the flights: start what is queued, wait up to timeout_ms for the
 * latch or for responses, send the requests that take the answered ones'
 * places, then store the responses.  The caller resets the latch and
 * checks for interrupts between calls.
 */
void
tv_engine_serve(long timeout_ms)
{
	(void) claim_flights();
	/* webhook deliveries may share the handle: wait on it whenever it has transfers */
	if (engine->busy == 0 && tv_http_multi_active(engine->multi) == 0)
	{
		pgstat_report_activity(STATE_IDLE, NULL);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout_ms, PG_WAIT_EXTENSION);
	}
	else
	{
		(void) tv_http_multi_wait(engine->multi, timeout_ms);
		/* libcurl writes a request only when it is next called: now, not after the storing */
		if (claim_flights() > 0)
			(void) tv_http_multi_wait(engine->multi, 0);
		apply_answered();
	}
}

bool
tv_engine_busy(void)
{
	return engine != NULL && engine->busy > 0;
}

/*
 * On the way out (shutdown, FATAL), release the waiters of the flights in
 * hand instead of leaving them hanging.  The requests themselves die with
 * the process.
 */
static void
engine_stop(int code, Datum arg)
{
	int			i;

	if (engine != NULL)
		for (i = 0; i < MAX_JOBS; i++)
			if (engine->jobs[i].busy)
				tv_flight_finish(&engine->jobs[i].flight, TV_OUTCOME_RETRYABLE,
								 "the tokenvault refresher exited");
	engine = NULL;
}

/* Serve flights on this HTTP handle from now on; call once the process is attached. */
void
tv_engine_start(TvHttpMulti *multi)
{
	engine = MemoryContextAllocZero(TopMemoryContext, sizeof(Engine));
	engine->cxt = AllocSetContextCreate(TopMemoryContext, "tokenvault refresh", ALLOCSET_DEFAULT_SIZES);
	engine->multi = multi;
	MemoryContextSwitchTo(engine->cxt);
	before_shmem_exit(engine_stop, 0);
}
