/*
 * refresh.c: one refresh at a time per auth, committed on its own
 *
 * A backend that needs an auth refreshed does not send the request itself:
 * if it did, the new token (above all a rotated refresh token) would live or
 * die with the caller's transaction, and a rollback would lose the only
 * refresh token the provider still honours.  Instead it files a "flight" in
 * shared memory and waits.  A refresher, one background worker per
 * database, started on demand, takes each flight, reads the auth in a short
 * transaction, sends the request with no transaction open, and applies the
 * result in another short transaction of its own, then wakes the waiters.
 *
 * Single flight: a flight is keyed by database and auth, so every caller
 * that wants the same auth while one is queued or running joins it; exactly
 * one request goes out.
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/float.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "oauth2.h"
#include "refresh.h"
#include "spi.h"
#include "tokenvault.h"
#include "worker.h"

#define MAX_FLIGHTS 1024
#define MAX_REFRESHERS 32		/* databases with a refresher at once */
#define DONE_KEEP_SECS 60		/* a finished flight stays readable this long */
#define MAX_JOBS 1024			/* requests a refresher has in flight, at most */
#define IDLE_EXIT_SECS 300		/* a refresher with nothing to do gives its slot back */
#define QUEUE_DEPTH 4			/* the schedule's flights queued, in max_concurrent_refreshes */
#define CALLER_RESERVE (MAX_FLIGHTS / 4)	/* flight slots the schedule leaves to callers */

typedef enum FlightState
{
	FLIGHT_FREE = 0,
	FLIGHT_QUEUED,
	FLIGHT_RUNNING,
	FLIGHT_DONE
} FlightState;

typedef struct Flight
{
	FlightState state;
	Oid			dbid;
	pg_uuid_t	auth_id;
	uint64		ticket;			/* tells this flight from a later one of the same auth */
	bool		force;
	bool		background;		/* filed by the worker's schedule, served after callers' */
	int			min_validity;
	TimestampTz done_at;
	TvOutcome outcome;
	char		message[TV_REFRESH_MESSAGE_LEN];
} Flight;

typedef struct Refresher
{
	Oid			dbid;
	pid_t		pid;			/* 0 while starting */
	Latch	   *latch;
	bool		starting;
	TimestampTz started_at;
} Refresher;

/* Request latencies and outcomes, for tokenvault.stats. */
#define LATENCY_SAMPLES 1024

typedef struct RefreshShared
{
	LWLock	   *lock;
	ConditionVariable done;		/* broadcast whenever a flight finishes */
	uint64		next_ticket;
	uint64		succeeded;
	uint64		failed;
	uint32		nlatencies;		/* samples taken so far; the ring holds the last ones */
	float4		latency_ms[LATENCY_SAMPLES];
	Refresher	refreshers[MAX_REFRESHERS];
	Flight		flights[MAX_FLIGHTS];
} RefreshShared;

static RefreshShared *shared = NULL;

void
tv_refresh_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(RefreshShared)));
	RequestNamedLWLockTranche("tokenvault", 1);
}

void
tv_refresh_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("tokenvault refresh", sizeof(RefreshShared), &found);
	if (!found)
	{
		memset(shared, 0, sizeof(RefreshShared));
		shared->lock = &(GetNamedLWLockTranche("tokenvault"))->lock;
		ConditionVariableInit(&shared->done);
		shared->next_ticket = 1;
	}
	LWLockRelease(AddinShmemInitLock);
}

static Refresher *
refresher_for(Oid dbid)
{
	int			i;

	for (i = 0; i < MAX_REFRESHERS; i++)
		if (shared->refreshers[i].dbid == dbid)
			return &shared->refreshers[i];
	return NULL;
}

/*
 * May this flight's slot be taken for another?  A finished flight stays
 * readable for a while for its waiters; one of the worker's own that no
 * caller joined has none.
 */
static bool
flight_reusable(Flight *f, TimestampTz now)
{
	return f->state == FLIGHT_FREE ||
		(f->state == FLIGHT_DONE &&
		 (f->background || TimestampDifferenceExceeds(f->done_at, now, DONE_KEEP_SECS * 1000)));
}

/*
 * The flight of this auth, joined or newly queued.  Caller holds the lock
 * exclusively.
 */
static Flight *
join_flight(pg_uuid_t *auth_id, bool force, bool background)
{
	TimestampTz now = GetCurrentTimestamp();
	Flight	   *free_slot = NULL;
	Flight	   *f;
	int			i;

	for (i = 0; i < MAX_FLIGHTS; i++)
	{
		f = &shared->flights[i];
		if ((f->state == FLIGHT_QUEUED || f->state == FLIGHT_RUNNING) &&
			f->dbid == MyDatabaseId && memcmp(&f->auth_id, auth_id, sizeof(pg_uuid_t)) == 0)
		{
			f->force |= force;
			f->background &= background;
			f->min_validity = Max(f->min_validity, tv_min_validity);
			return f;
		}
		if (free_slot == NULL && flight_reusable(f, now))
			free_slot = f;
	}
	if (free_slot == NULL && background)
		return NULL;
	if (free_slot == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many token refreshes under way (%d)", MAX_FLIGHTS),
				 errhint("Try again in a moment.")));
	f = free_slot;
	memset(f, 0, sizeof(Flight));
	f->state = FLIGHT_QUEUED;
	f->dbid = MyDatabaseId;
	f->auth_id = *auth_id;
	f->ticket = shared->next_ticket++;
	f->force = force;
	f->background = background;
	f->min_validity = tv_min_validity;
	return f;
}

/* Start this database's refresher; false (and logged) if it could not start. */
static bool
start_refresher(void)
{
	BackgroundWorker worker = {0};
	BackgroundWorkerHandle *handle;
	pid_t		pid;

	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "tokenvault");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "tv_refresher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "tokenvault refresher for database %u", MyDatabaseId);
	snprintf(worker.bgw_type, BGW_MAXLEN, "tokenvault refresher");
	worker.bgw_main_arg = ObjectIdGetDatum(MyDatabaseId);
	worker.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&worker, &handle) ||
		WaitForBackgroundWorkerStartup(handle, &pid) != BGWH_STARTED)
	{
		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		memset(refresher_for(MyDatabaseId), 0, sizeof(Refresher));
		LWLockRelease(shared->lock);
		ereport(LOG,
				(errmsg("could not start the tokenvault refresher"),
				 errhint("Raise max_worker_processes.")));
		return false;
	}
	return true;
}

/*
 * Make sure this database has a refresher and wake it; false if it has none
 * and none could be started.  Caller holds the lock exclusively; it is
 * released.
 */
static bool
wake_refresher(void)
{
	Refresher  *r = refresher_for(MyDatabaseId);
	bool		start = false;

	if (r == NULL)
	{
		r = refresher_for(InvalidOid);
		if (r == NULL)
		{
			LWLockRelease(shared->lock);
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("too many databases use tokenvault refreshes (%d)", MAX_REFRESHERS)));
		}
		r->dbid = MyDatabaseId;
	}
	/* a refresher that has not come up within a minute is taken for dead */
	if (r->pid == 0 && !tv_worker_serves(MyDatabaseId) && (!r->starting ||
						TimestampDifferenceExceeds(r->started_at, GetCurrentTimestamp(), 60000)))
	{
		r->starting = true;
		r->started_at = GetCurrentTimestamp();
		start = true;
	}
	if (r->latch)
		SetLatch(r->latch);
	LWLockRelease(shared->lock);
	return !start || start_refresher();
}

/*
 * Have this auth refreshed (or found valid) by the refresher and wait for
 * the outcome, at most tokenvault.http_timeout and a margin.  *message gets
 * what went wrong, never a secret.
 */
TvOutcome
tv_refresh_wait(pg_uuid_t *auth_id, bool force, char *message)
{
	Flight	   *f;
	uint64		ticket;
	TimestampTz deadline;
	TvOutcome outcome = TV_OUTCOME_ERROR;
	bool		done = false;

	if (shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("refreshing a token needs tokenvault in shared_preload_libraries"),
				 errhint("Add tokenvault to shared_preload_libraries and restart the server.")));
	/* no refresher runs on a standby, and none could store a token there */
	if (RecoveryInProgress())
		return TV_OUTCOME_IN_RECOVERY;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	f = join_flight(auth_id, force, false);
	ticket = f->ticket;
	if (!wake_refresher())		/* releases the lock */
	{
		/*
		 * As when the provider is down: a token still valid is handed out.
		 * The flight stays queued for the next refresher that starts.
		 */
		strlcpy(message, "no background worker slot is free for a tokenvault refresher (max_worker_processes)",
				TV_REFRESH_MESSAGE_LEN);
		return TV_OUTCOME_RETRYABLE;
	}

	/* the refresher may be slow to start; beyond that, one request's worth */
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), (tv_http_timeout + 15) * 1000L);
	ConditionVariablePrepareToSleep(&shared->done);
	for (;;)
	{
		LWLockAcquire(shared->lock, LW_SHARED);
		if (f->ticket == ticket && f->state == FLIGHT_DONE)
		{
			outcome = f->outcome;
			strlcpy(message, f->message, TV_REFRESH_MESSAGE_LEN);
			done = true;
		}
		else if (f->ticket != ticket)
		{
			/* finished and reused long ago: the row tells */
			outcome = TV_OUTCOME_DONE;
			done = true;
		}
		LWLockRelease(shared->lock);
		if (done || GetCurrentTimestamp() >= deadline)
			break;
		if (ConditionVariableTimedSleep(&shared->done, 1000, PG_WAIT_EXTENSION))
		{
			/* a second without news: make sure a refresher is there */
			LWLockAcquire(shared->lock, LW_EXCLUSIVE);
			wake_refresher();
		}
	}
	ConditionVariableCancelSleep();
	if (!done)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_EXCEPTION),
				 errmsg("timed out waiting for the refresh of auth %s",
						DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(auth_id)))),
				 errhint("Is the tokenvault refresher running?  See pg_stat_activity.")));
	return outcome;
}

/* ---- the refresher ---- */

/*
 * One flight being served: the flight, its plan, its request, its response.
 * A job is planned in a short transaction, its request sent with no
 * transaction open, and its result applied in another short transaction;
 * up to tokenvault.max_concurrent_refreshes requests are in flight at once.
 * When responses arrive, the next flights' requests go out before the
 * responses are stored, so that storing them does not leave the provider
 * idle.
 */
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
	Flight		copy;
	Flight	   *slot;
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

static Refresher *my_slot = NULL;
static Engine *engine = NULL;

static void finish_flight(Flight *slot, uint64 ticket, TvOutcome outcome, const char *message);

static void
count_outcome(TvOutcome outcome, double seconds)
{
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (outcome == TV_OUTCOME_DONE)
		shared->succeeded++;
	else
		shared->failed++;
	if (seconds >= 0)
		shared->latency_ms[shared->nlatencies++ % LATENCY_SAMPLES] = (float4) (seconds * 1000.0);
	LWLockRelease(shared->lock);
}

static void
finish_job(Job *job, TvOutcome outcome, const char *message)
{
	finish_flight(job->slot, job->copy.ticket, outcome, message);
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

	args[0] = UUIDPGetDatum(&job->copy.auth_id);
	args[1] = BoolGetDatum(job->copy.force);
	args[2] = Int32GetDatum(job->copy.min_validity);
	tv_spi_begin();
	row = tv_spi_row("SELECT * FROM tokenvault._refresh_plan($1, $2, $3)", 3, types, args, NULL, &desc);
	if (desc->natts != PLAN_NATTS)
		elog(ERROR, "tokenvault._refresh_plan returned %d columns, not %d", desc->natts, PLAN_NATTS);
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
	return true;
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
	types[3] = tv_type_oid("verdict");
	args[0] = UUIDPGetDatum(&job->copy.auth_id);
	args[1] = Int64GetDatum(job->plan.version);
	args[2] = JsonbPGetDatum(job->plan.keep);
	nulls[2] = job->plan.keep ? ' ' : 'n';
	args[3] = tv_verdict_datum(verdict);
	row = tv_spi_row("SELECT * FROM tokenvault._refresh_apply($1, $2, $3, $4)", 4, types, args, nulls, &desc);
	outcome = tv_outcome_from_datum(heap_getattr(row, 1, desc, &isnull));
	message = tv_spi_text(row, desc, 2);
	tv_spi_end();
	count_outcome(outcome, seconds);
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

/* An error while serving a job fails that job alone, logged in tokenvault's words. */
static void
fail_job(Job *job)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(job->cxt);
	edata = CopyErrorData();
	FlushErrorState();
	AbortCurrentTransaction();
	MemoryContextSwitchTo(job->cxt);
	/* the error is tokenvault's own wording, never a secret */
	ereport(LOG, (errmsg("tokenvault refresher: %s", edata->message)));
	/* a cancel is no fault of the auth's; nor is an error before its plan was read */
	if (job->plan.read && edata->sqlerrcode != ERRCODE_QUERY_CANCELED &&
		record_failure(job, edata->message))
		return;
	count_outcome(TV_OUTCOME_ERROR, -1);
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
	Job		   *claimed[MAX_JOBS];
	int			nclaimed = 0;
	int			pass;
	int			i;
	int			j = 0;

	if (in_flight >= limit || engine->busy >= MAX_JOBS)
		return 0;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (pass = 0; pass < 2; pass++)
		for (i = 0; i < MAX_FLIGHTS && in_flight + nclaimed < limit &&
			 engine->busy + nclaimed < MAX_JOBS; i++)
		{
			Flight	   *f = &shared->flights[i];
			Job		   *job;

			if (f->state != FLIGHT_QUEUED || f->dbid != MyDatabaseId || f->background != (pass == 1))
				continue;
			while (engine->jobs[j].busy)
				j++;
			job = &engine->jobs[j];
			memset(job, 0, sizeof(Job));
			job->busy = true;
			f->state = FLIGHT_RUNNING;
			job->copy = *f;
			job->slot = f;
			claimed[nclaimed++] = job;
			j++;
		}
	LWLockRelease(shared->lock);
	engine->busy += nclaimed;
	if (nclaimed > 0)
		pgstat_report_activity(STATE_RUNNING, "tokenvault: token requests");
	for (i = 0; i < nclaimed; i++)
		start_job(claimed[i]);
	return nclaimed;
}

/*
 * Serve the flights: start what is queued, wait up to timeout_ms for the
 * latch or for responses, send the requests that take the answered ones'
 * places, then store the responses.  The caller resets the latch and
 * checks for interrupts between calls.
 */
void
tv_refresh_serve(long timeout_ms)
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
tv_refresh_busy(void)
{
	return engine != NULL && engine->busy > 0;
}

/* The HTTP handle of the engine, for other requests to share its loop. */
TvHttpMulti *
tv_refresh_multi(void)
{
	return engine->multi;
}

/*
 * On the way out (shutdown, FATAL), release the waiters of the flights in
 * hand instead of leaving them hanging, and give the slot back.  The
 * requests themselves die with the process.
 */
static void
refresher_detach(int code, Datum arg)
{
	int			i;

	if (engine != NULL)
		for (i = 0; i < MAX_JOBS; i++)
			if (engine->jobs[i].busy)
				finish_flight(engine->jobs[i].slot, engine->jobs[i].copy.ticket, TV_OUTCOME_RETRYABLE,
							  "the tokenvault refresher exited");
	engine = NULL;
	if (my_slot == NULL)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	my_slot->pid = 0;
	my_slot->latch = NULL;
	my_slot->starting = false;
	if (!tv_worker_serves(my_slot->dbid))
		my_slot->dbid = InvalidOid;
	LWLockRelease(shared->lock);
	my_slot = NULL;
}

/*
 * Become the refresher of this database: flights filed here come to this
 * process.  False if another one serves it already.
 */
bool
tv_refresh_attach(void)
{
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	my_slot = refresher_for(MyDatabaseId);
	if (my_slot == NULL)
	{
		my_slot = refresher_for(InvalidOid);
		if (my_slot != NULL)
			my_slot->dbid = MyDatabaseId;
	}
	if (my_slot == NULL || (my_slot->pid != 0 && my_slot->pid != MyProcPid))
	{
		my_slot = NULL;
		LWLockRelease(shared->lock);
		return false;
	}
	my_slot->pid = MyProcPid;
	my_slot->latch = MyLatch;
	my_slot->starting = false;
	LWLockRelease(shared->lock);

	engine = MemoryContextAllocZero(TopMemoryContext, sizeof(Engine));
	engine->cxt = AllocSetContextCreate(TopMemoryContext, "tokenvault refresh", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(engine->cxt);
	engine->multi = tv_http_multi_create();
	before_shmem_exit(refresher_detach, 0);
	return true;
}

/*
 * File a flight for each auth the schedule finds due (the worker's own
 * refreshes, served after callers').  Returns how many were filed: as many
 * as there is room for.
 */
int
tv_refresh_file_background(pg_uuid_t *ids, int n)
{
	int			i;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < n; i++)
	{
		Flight	   *f = join_flight(&ids[i], true, true);

		if (f == NULL)
			break;
	}
	LWLockRelease(shared->lock);
	return i;
}

/*
 * How many more flights the schedule should file now: enough to keep
 * max_concurrent_refreshes requests going a few times over (QUEUE_DEPTH),
 * never the last free slots (kept for callers), and none until a round of
 * requests' worth can be filed, so that claims come in batches rather than
 * one by one (a claim holds up the request loop while it runs).
 */
int
tv_refresh_room(void)
{
	TimestampTz now = GetCurrentTimestamp();
	int			batch = Max(1, Min(tv_max_concurrent_refreshes, (MAX_FLIGHTS - CALLER_RESERVE) / QUEUE_DEPTH));
	int			free_slots = 0;
	int			queued = 0;
	int			room;
	int			i;

	LWLockAcquire(shared->lock, LW_SHARED);
	for (i = 0; i < MAX_FLIGHTS; i++)
	{
		Flight	   *f = &shared->flights[i];

		if (flight_reusable(f, now))
			free_slots++;
		else if (f->state == FLIGHT_QUEUED && f->background && f->dbid == MyDatabaseId)
			queued++;
	}
	LWLockRelease(shared->lock);
	room = Min(free_slots - CALLER_RESERVE, QUEUE_DEPTH * tv_max_concurrent_refreshes - queued);
	return room >= batch ? room : 0;
}

/* Counters and latency percentiles (NaN when there is no sample yet) for tokenvault.stats. */
static int
float4_cmp(const void *a, const void *b)
{
	float4		x = *(const float4 *) a;
	float4		y = *(const float4 *) b;

	return (x > y) - (x < y);
}

void
tv_refresh_stats(uint64 *succeeded, uint64 *failed, double *p50, double *p90, double *p99)
{
	float4		samples[LATENCY_SAMPLES];
	int			n;

	if (shared == NULL)
	{
		*succeeded = *failed = 0;
		*p50 = *p90 = *p99 = get_float8_nan();
		return;
	}
	LWLockAcquire(shared->lock, LW_SHARED);
	*succeeded = shared->succeeded;
	*failed = shared->failed;
	n = Min(shared->nlatencies, LATENCY_SAMPLES);
	memcpy(samples, shared->latency_ms, sizeof(float4) * n);
	LWLockRelease(shared->lock);
	if (n == 0)
	{
		*p50 = *p90 = *p99 = get_float8_nan();
		return;
	}
	qsort(samples, n, sizeof(float4), float4_cmp);
	*p50 = samples[(n - 1) * 50 / 100];
	*p90 = samples[(n - 1) * 90 / 100];
	*p99 = samples[(n - 1) * 99 / 100];
}

static void
finish_flight(Flight *slot, uint64 ticket, TvOutcome outcome, const char *message)
{
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (slot->ticket == ticket)
	{
		slot->state = FLIGHT_DONE;
		slot->outcome = outcome;
		slot->done_at = GetCurrentTimestamp();
		strlcpy(slot->message, message, TV_REFRESH_MESSAGE_LEN);
	}
	LWLockRelease(shared->lock);
	ConditionVariableBroadcast(&shared->done);
}

/*
 * Leave if no flight of this database is queued, giving up the slot under
 * the lock so that a flight filed from now on starts a new refresher.
 */
static bool
leave_if_idle(void)
{
	int			i;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < MAX_FLIGHTS; i++)
		if (shared->flights[i].state == FLIGHT_QUEUED && shared->flights[i].dbid == MyDatabaseId)
		{
			LWLockRelease(shared->lock);
			return false;
		}
	memset(my_slot, 0, sizeof(Refresher));
	my_slot = NULL;
	LWLockRelease(shared->lock);
	return true;
}

void
tv_reload_if_asked(void)
{
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
}

/*
 * A refresher started on demand for a database the worker does not serve:
 * serves flights, and leaves after IDLE_EXIT_SECS without any.
 */
void
tv_refresher_main(Datum main_arg)
{
	Oid			dbid = DatumGetObjectId(main_arg);
	TimestampTz last_work;

	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dbid, InvalidOid, 0);
	if (!tv_refresh_attach())
		proc_exit(0);			/* another refresher serves this database already */

	last_work = GetCurrentTimestamp();
	for (;;)
	{
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		/* settings changed mid-queue (a CA file, a timeout) apply to the next request */
		tv_reload_if_asked();
		if (engine->busy > 0)
			last_work = GetCurrentTimestamp();
		/* an idle refresher would hold a max_worker_processes slot for nothing */
		else if (TimestampDifferenceExceeds(last_work, GetCurrentTimestamp(), IDLE_EXIT_SECS * 1000) &&
				 leave_if_idle())
			proc_exit(0);
		tv_refresh_serve(engine->busy > 0 ? 1000L : 60000L);
	}
}
