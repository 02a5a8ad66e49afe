/*
 * flight.c: one refresh at a time per auth, handed to a refresher through shared memory
 *
 * A backend that needs an auth refreshed does not send the request itself:
 * if it did, the new token (above all a rotated refresh token) would live or
 * die with the caller's transaction, and a rollback would lose the only
 * refresh token the provider still honours.  Instead it files a "flight" in
 * shared memory and waits.  A refresher, one process per database (the
 * worker for its own database, elsewhere one started on demand), claims
 * each flight, has it served (engine.c), and reports the outcome here, which
 * wakes the waiters.
 *
 * Single flight: a flight is keyed by database and auth, so every caller
 * that wants the same auth while one is queued or running joins it; exactly
 * one request goes out.
 */
#include "postgres.h"

#include "access/xlog.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/float.h"
#include "utils/timestamp.h"

#include "flight.h"
#include "settings.h"

#define MAX_FLIGHTS 1024
#define MAX_REFRESHERS 32		/* databases with a refresher at once */
#define DONE_KEEP_SECS 60		/* a finished flight stays readable this long */
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
	bool		reserved;		/* the worker's database: none is started on demand */
} Refresher;

/* Request latencies and outcomes, for tokenvault.stats. */
#define LATENCY_SAMPLES 1024

typedef struct FlightShared
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
} FlightShared;

static FlightShared *shared = NULL;
static Refresher *my_slot = NULL;

void
tv_flight_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(FlightShared)));
	RequestNamedLWLockTranche("tokenvault", 1);
}

void
tv_flight_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("tokenvault refresh", sizeof(FlightShared), &found);
	if (!found)
	{
		memset(shared, 0, sizeof(FlightShared));
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

/* This database's refresher slot, taken if it has none; NULL if all are taken.  Lock held. */
static Refresher *
refresher_slot_here(void)
{
	Refresher  *r = refresher_for(MyDatabaseId);

	if (r == NULL && (r = refresher_for(InvalidOid)) != NULL)
		r->dbid = MyDatabaseId;
	return r;
}

/*
 * The worker's database is served by the worker, never by a refresher on
 * demand.  The reservation outlives the worker: it restarts within seconds,
 * and the flights filed meanwhile wait for it.
 */
void
tv_flight_reserve_database(void)
{
	Refresher  *r;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	r = refresher_slot_here();
	if (r != NULL)
		r->reserved = true;
	LWLockRelease(shared->lock);
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
	Refresher  *r = refresher_slot_here();
	bool		start = false;

	if (r == NULL)
	{
		LWLockRelease(shared->lock);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many databases use tokenvault refreshes (%d)", MAX_REFRESHERS)));
	}
	/* a refresher that has not come up within a minute is taken for dead */
	if (r->pid == 0 && !r->reserved && (!r->starting ||
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

/* ---- for the refreshers ---- */

/*
 * On the way out (shutdown, FATAL), give the slot back; a reserved one stays
 * the worker's database's.
 */
static void
refresher_detach(int code, Datum arg)
{
	if (my_slot == NULL)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	my_slot->pid = 0;
	my_slot->latch = NULL;
	my_slot->starting = false;
	if (!my_slot->reserved)
		my_slot->dbid = InvalidOid;
	LWLockRelease(shared->lock);
	my_slot = NULL;
}

/*
 * Become the refresher of this database: flights filed here come to this
 * process.  False if another one serves it already.
 */
bool
tv_flight_attach(void)
{
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	my_slot = refresher_slot_here();
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
	before_shmem_exit(refresher_detach, 0);
	return true;
}

/*
 * Leave if no flight of this database is queued, giving up the slot under
 * the lock so that a flight filed from now on starts a new refresher (or
 * waits for the worker, if it has reserved the database meanwhile).
 */
bool
tv_flight_leave_if_idle(void)
{
	bool		reserved;
	int			i;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < MAX_FLIGHTS; i++)
		if (shared->flights[i].state == FLIGHT_QUEUED && shared->flights[i].dbid == MyDatabaseId)
		{
			LWLockRelease(shared->lock);
			return false;
		}
	reserved = my_slot->reserved;
	memset(my_slot, 0, sizeof(Refresher));
	if (reserved)
	{
		my_slot->dbid = MyDatabaseId;
		my_slot->reserved = true;
	}
	my_slot = NULL;
	LWLockRelease(shared->lock);
	return true;
}

/*
 * Claim up to max of this database's queued flights, callers' flights before
 * the worker's own schedule.  Returns how many.
 */
int
tv_flight_claim(TvFlight *claimed, int max)
{
	int			n = 0;
	int			pass;
	int			i;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (pass = 0; pass < 2; pass++)
		for (i = 0; i < MAX_FLIGHTS && n < max; i++)
		{
			Flight	   *f = &shared->flights[i];

			if (f->state != FLIGHT_QUEUED || f->dbid != MyDatabaseId || f->background != (pass == 1))
				continue;
			f->state = FLIGHT_RUNNING;
			claimed[n].auth_id = f->auth_id;
			claimed[n].ticket = f->ticket;
			claimed[n].slot = i;
			claimed[n].force = f->force;
			claimed[n].min_validity = f->min_validity;
			n++;
		}
	LWLockRelease(shared->lock);
	return n;
}

/* Report a flight's outcome to its waiters (unless it is long gone). */
void
tv_flight_finish(const TvFlight *f, TvOutcome outcome, const char *message)
{
	Flight	   *slot = &shared->flights[f->slot];

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (slot->ticket == f->ticket)
	{
		slot->state = FLIGHT_DONE;
		slot->outcome = outcome;
		slot->done_at = GetCurrentTimestamp();
		strlcpy(slot->message, message, TV_REFRESH_MESSAGE_LEN);
	}
	LWLockRelease(shared->lock);
	ConditionVariableBroadcast(&shared->done);
}

/* Count a request's outcome, and its latency if it was sent (seconds >= 0). */
void
tv_flight_count(TvOutcome outcome, double seconds)
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

/* ---- for the worker's schedule ---- */

/*
 * File a flight for each auth the schedule finds due (the worker's own
 * refreshes, served after callers').  Returns how many were filed: as many
 * as there is room for.
 */
int
tv_flight_file_background(pg_uuid_t *ids, int n)
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
tv_flight_room(void)
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
tv_flight_stats(uint64 *succeeded, uint64 *failed, double *p50, double *p90, double *p99)
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
