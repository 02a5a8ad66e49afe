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
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "oauth2.h"
#include "refresh.h"
#include "tokenvault.h"

#define MAX_FLIGHTS 1024
#define MAX_REFRESHERS 32		/* databases with a refresher at once */
#define DONE_KEEP_SECS 60		/* a finished flight stays readable this long */
#define REFRESH_BATCH 32			/* flights a refresher serves at once */
#define IDLE_EXIT_SECS 300		/* a refresher with nothing to do gives its slot back */

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
	int			min_validity;
	TimestampTz done_at;
	TvRefreshOutcome outcome;
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

typedef struct RefreshShared
{
	LWLock	   *lock;
	ConditionVariable done;		/* broadcast whenever a flight finishes */
	uint64		next_ticket;
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
 * The flight of this auth, joined or newly queued.  Caller holds the lock
 * exclusively.
 */
static Flight *
join_flight(pg_uuid_t *auth_id, bool force)
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
			f->min_validity = Max(f->min_validity, tv_min_validity);
			return f;
		}
		if (free_slot == NULL &&
			(f->state == FLIGHT_FREE ||
			 (f->state == FLIGHT_DONE &&
			  TimestampDifferenceExceeds(f->done_at, now, DONE_KEEP_SECS * 1000))))
			free_slot = f;
	}
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
	f->min_validity = tv_min_validity;
	return f;
}

static void
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
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start the tokenvault refresher"),
				 errhint("Raise max_worker_processes.")));
	}
}

/*
 * Make sure this database has a refresher and wake it.  Caller holds the
 * lock exclusively; it is released.
 */
static void
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
	if (r->pid == 0 && (!r->starting ||
						TimestampDifferenceExceeds(r->started_at, GetCurrentTimestamp(), 60000)))
	{
		r->starting = true;
		r->started_at = GetCurrentTimestamp();
		start = true;
	}
	if (r->latch)
		SetLatch(r->latch);
	LWLockRelease(shared->lock);
	if (start)
		start_refresher();
}

/*
 * Have this auth refreshed (or found valid) by the refresher and wait for
 * the outcome, at most tokenvault.http_timeout and a margin.  *message gets
 * what went wrong, never a secret.
 */
TvRefreshOutcome
tv_refresh_wait(pg_uuid_t *auth_id, bool force, char *message)
{
	Flight	   *f;
	uint64		ticket;
	TimestampTz deadline;
	TvRefreshOutcome outcome = TV_REFRESH_FAILED;
	bool		done = false;

	if (shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("refreshing a token needs tokenvault in shared_preload_libraries"),
				 errhint("Add tokenvault to shared_preload_libraries and restart the server.")));

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	f = join_flight(auth_id, force);
	ticket = f->ticket;
	wake_refresher();			/* releases the lock */

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
			outcome = TV_REFRESH_DONE;
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
 * One flight of a batch: the flight, its plan, its prepared request.  A
 * batch is planned (a short transaction each), its requests sent at once
 * with no transaction open, and each result applied (a short transaction)
 * as it arrives.
 */
typedef struct Job
{
	Flight		copy;
	Flight	   *slot;
	Jsonb	   *plan;
	TvTokenCall call;
	bool		finished;
} Job;

typedef struct Batch
{
	Job			jobs[REFRESH_BATCH];
	int			njobs;
	int			sending[REFRESH_BATCH];	/* request i is jobs[sending[i]] */
	MemoryContext cxt;
} Batch;


static Refresher *my_slot = NULL;
static Batch batch;

static void finish_flight(Flight *slot, uint64 ticket, TvRefreshOutcome outcome, const char *message);

/*
 * On the way out (shutdown, FATAL), release the waiters of the flights in
 * hand instead of leaving them hanging, and give the slot back.
 */
static void
refresher_detach(int code, Datum arg)
{
	int			i;

	for (i = 0; i < batch.njobs; i++)
		if (!batch.jobs[i].finished)
			finish_flight(batch.jobs[i].slot, batch.jobs[i].copy.ticket, TV_REFRESH_RETRYABLE,
						  "the tokenvault refresher exited");
	batch.njobs = 0;
	if (my_slot == NULL)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	memset(my_slot, 0, sizeof(Refresher));
	LWLockRelease(shared->lock);
	my_slot = NULL;
}

/* Run one statement "SELECT f($1, ...)" returning jsonb, in its own transaction. */
static Jsonb *
call_in_transaction(const char *sql, int nargs, Oid *types, Datum *values, MemoryContext into)
{
	Jsonb	   *result = NULL;
	bool		isnull;

	MemoryContext caller = CurrentMemoryContext;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	if (SPI_execute_with_args(sql, nargs, types, values, NULL, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "tokenvault refresher: \"%s\" failed", sql);
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

static char *
member_text(Jsonb *j, const char *key)
{
	JsonbValue	v;

	if (j == NULL || getKeyJsonValueFromContainer(&j->root, key, strlen(key), &v) == NULL ||
		v.type != jbvString)
		return NULL;
	return pnstrdup(v.val.string.val, v.val.string.len);
}

static Jsonb *
member_object(Jsonb *j, const char *key)
{
	JsonbValue	v;

	if (j == NULL || getKeyJsonValueFromContainer(&j->root, key, strlen(key), &v) == NULL ||
		v.type != jbvBinary)
		return NULL;
	return JsonbValueToJsonb(&v);
}

static void
finish_job(Job *job, TvRefreshOutcome outcome, const char *message)
{
	finish_flight(job->slot, job->copy.ticket, outcome, message);
	job->finished = true;
}

/* An error while serving a job fails that job alone, logged in tokenvault's words. */
static void
fail_job(Job *job, MemoryContext cxt)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	AbortCurrentTransaction();
	MemoryContextSwitchTo(cxt);
	/* the error is tokenvault's own wording, never a secret */
	ereport(LOG, (errmsg("tokenvault refresher: %s", edata->message)));
	finish_job(job, TV_REFRESH_FAILED, edata->message);
}

/* Plan a job; true if it has a request to send, else it is finished. */
static bool
plan_job(Job *job, MemoryContext cxt)
{
	Oid			types[3] = {UUIDOID, BOOLOID, INT4OID};
	Datum		args[3];
	char	   *skip;
	char	   *msg;

	args[0] = UUIDPGetDatum(&job->copy.auth_id);
	args[1] = BoolGetDatum(job->copy.force);
	args[2] = Int32GetDatum(job->copy.min_validity);
	job->plan = call_in_transaction("SELECT tokenvault._refresh_plan($1, $2, $3)", 3, types, args, cxt);
	if ((skip = member_text(job->plan, "skip")) != NULL)
	{
		msg = member_text(job->plan, "message");
		finish_job(job, strcmp(skip, "needs_reauth") == 0 ? TV_REFRESH_NEEDS_REAUTH : TV_REFRESH_DONE,
				   msg ? msg : "");
		return false;
	}
	tv_oauth2_prepare(&job->call, member_object(job->plan, "config"), member_text(job->plan, "kind"),
					  member_object(job->plan, "params"));
	return true;
}

static TvRefreshOutcome
outcome_of(const char *applied)
{
	if (applied == NULL || strcmp(applied, "refreshed") == 0 || strcmp(applied, "stale") == 0)
		return TV_REFRESH_DONE;
	if (strcmp(applied, "needs_reauth") == 0)
		return TV_REFRESH_NEEDS_REAUTH;
	if (strcmp(applied, "retryable") == 0)
		return TV_REFRESH_RETRYABLE;
	return TV_REFRESH_FAILED;
}

/* Store a job's verdict, if the auth's version is unchanged. */
static void
apply_job(Job *job, Jsonb *verdict, MemoryContext cxt)
{
	Oid			types[3] = {UUIDOID, INT8OID, JSONBOID};
	Datum		args[3];
	Jsonb	   *applied;
	char	   *msg;

	args[0] = UUIDPGetDatum(&job->copy.auth_id);
	args[1] = DirectFunctionCall1(numeric_int8,
								  DirectFunctionCall3(numeric_in, CStringGetDatum(member_text(job->plan, "version")),
													  ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)));
	args[2] = JsonbPGetDatum(verdict);
	applied = call_in_transaction("SELECT tokenvault._refresh_apply($1, $2, $3)", 3, types, args, cxt);
	msg = member_text(applied, "message");
	finish_job(job, outcome_of(member_text(applied, "outcome")), msg ? msg : "");
}

/* As each response arrives: its verdict, applied at once. */
static void
on_response(int i, TvHttpResponse *resp, void *arg)
{
	Batch	   *batch = (Batch *) arg;
	Job		   *job = &batch->jobs[batch->sending[i]];

	pgstat_report_activity(STATE_RUNNING, "tokenvault: storing a token");
	PG_TRY();
	{
		apply_job(job, tv_oauth2_verdict(&job->call, resp), batch->cxt);
	}
	PG_CATCH();
	{
		fail_job(job, batch->cxt);
	}
	PG_END_TRY();
}

/* Serve the flights claimed into the batch, all of them finished on return. */
static void
serve_batch(Batch *batch)
{
	TvHttpRequest requests[REFRESH_BATCH];
	TvHttpResponse *responses;
	int			n = 0;
	int			i;

	pgstat_report_activity(STATE_RUNNING, "tokenvault: planning refreshes");
	for (i = 0; i < batch->njobs; i++)
	{
		Job		   *job = &batch->jobs[i];
		volatile bool send = false;

		PG_TRY();
		{
			send = plan_job(job, batch->cxt);
		}
		PG_CATCH();
		{
			fail_job(job, batch->cxt);
		}
		PG_END_TRY();
		if (send && job->call.verdict)
		{
			/* not even sendable (no URL): the verdict says why */
			PG_TRY();
			{
				apply_job(job, job->call.verdict, batch->cxt);
			}
			PG_CATCH();
			{
				fail_job(job, batch->cxt);
			}
			PG_END_TRY();
		}
		else if (send)
		{
			requests[n] = job->call.req;
			batch->sending[n++] = i;
		}
	}
	if (n == 0)
		return;

	pgstat_report_activity(STATE_RUNNING, "tokenvault: token requests");
	responses = palloc(sizeof(TvHttpResponse) * n);
	PG_TRY();
	{
		tv_http_perform_many(requests, responses, n, n, on_response, batch);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(batch->cxt);
		FlushErrorState();
		for (i = 0; i < batch->njobs; i++)
			if (!batch->jobs[i].finished)
				finish_job(&batch->jobs[i], TV_REFRESH_RETRYABLE, "the token request could not be sent");
	}
	PG_END_TRY();
}

/* Claim up to a batch of this database's queued flights. */
static int
claim_flights(Batch *batch)
{
	int			i;

	batch->njobs = 0;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < MAX_FLIGHTS && batch->njobs < REFRESH_BATCH; i++)
	{
		Flight	   *f = &shared->flights[i];

		if (f->state == FLIGHT_QUEUED && f->dbid == MyDatabaseId)
		{
			Job		   *job = &batch->jobs[batch->njobs++];

			memset(job, 0, sizeof(Job));
			f->state = FLIGHT_RUNNING;
			job->copy = *f;
			job->slot = f;
		}
	}
	LWLockRelease(shared->lock);
	return batch->njobs;
}

static void
finish_flight(Flight *slot, uint64 ticket, TvRefreshOutcome outcome, const char *message)
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

static void
reload_if_asked(void)
{
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
}

void
tv_refresher_main(Datum main_arg)
{
	Oid			dbid = DatumGetObjectId(main_arg);
	MemoryContext cxt;
	TimestampTz last_work;

	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dbid, InvalidOid, 0);

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	my_slot = refresher_for(dbid);
	if (my_slot == NULL || (my_slot->pid != 0 && my_slot->pid != MyProcPid))
	{
		/* another refresher serves this database already */
		LWLockRelease(shared->lock);
		proc_exit(0);
	}
	my_slot->pid = MyProcPid;
	my_slot->latch = MyLatch;
	my_slot->starting = false;
	LWLockRelease(shared->lock);
	before_shmem_exit(refresher_detach, 0);

	cxt = AllocSetContextCreate(TopMemoryContext, "tokenvault refresh", ALLOCSET_DEFAULT_SIZES);
	last_work = GetCurrentTimestamp();
	for (;;)
	{
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		reload_if_asked();
		while (claim_flights(&batch) > 0)
		{
			MemoryContextSwitchTo(cxt);
			batch.cxt = cxt;
			serve_batch(&batch);
			batch.njobs = 0;
			MemoryContextReset(cxt);
			CHECK_FOR_INTERRUPTS();
			/* settings changed mid-queue (a CA file, a timeout) apply to the next request */
			reload_if_asked();
			last_work = GetCurrentTimestamp();
		}
		/* an idle refresher would hold a max_worker_processes slot for nothing */
		if (TimestampDifferenceExceeds(last_work, GetCurrentTimestamp(), IDLE_EXIT_SECS * 1000) &&
			leave_if_idle())
			proc_exit(0);
		pgstat_report_activity(STATE_IDLE, NULL);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 60000L, PG_WAIT_EXTENSION);
	}
}
