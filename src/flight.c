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
 *
 * The table is shared by every database, so what one application does must
 * not fill it: a flight is freed as soon as its last waiter has read its
 * outcome (or gone), and the flights callers file, as opposed to the ones
 * they join, count against their role's and their database's quotas.  A
 * caller refused a flight is told so and hands out a token still valid, if
 * there is one (auth.c).
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
#define MAX_ON_DEMAND 32		/* databases without a worker with a refresher at once */
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
	bool		background;		/* no caller waits: served after callers' */
	bool		scheduled;		/* the worker's schedule wants it, waited for or not */
	Oid			filer;			/* the role of the caller that filed it; InvalidOid: the schedule */
	int			waiters;		/* callers that have not read its outcome yet */
	int			min_validity;
	TvOutcome outcome;
	char		message[TV_REFRESH_MESSAGE_LEN];
} Flight;

/* A caller's place on a flight, given up once (flight_leave). */
typedef struct Waiting
{
	Flight	   *flight;
	uint64		ticket;
	bool		left;
	bool		done;			/* the outcome is read */
	TvOutcome	outcome;
} Waiting;

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
	uint64		unconfirmed;	/* stored, but not confirmed by the synchronous standby */
	uint32		nlatencies;		/* samples taken so far; the ring holds the last ones */
	float4		latency_ms[LATENCY_SAMPLES];
	Flight		flights[MAX_FLIGHTS];
	int			nrefreshers;	/* the workers' databases, and MAX_ON_DEMAND more */
	Refresher	refreshers[FLEXIBLE_ARRAY_MEMBER];
} FlightShared;

static FlightShared *shared = NULL;
static Refresher *my_slot = NULL;

static Size
flight_shmem_size(void)
{
	return add_size(offsetof(FlightShared, refreshers),
					mul_size(tv_max_databases + MAX_ON_DEMAND, sizeof(Refresher)));
}

void
tv_flight_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(flight_shmem_size()));
	RequestNamedLWLockTranche("tokenvault", 1);
}

void
tv_flight_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("tokenvault refresh", flight_shmem_size(), &found);
	if (!found)
	{
		memset(shared, 0, flight_shmem_size());
		shared->nrefreshers = tv_max_databases + MAX_ON_DEMAND;
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

	for (i = 0; i < shared->nrefreshers; i++)
		if (shared->refreshers[i].dbid == dbid)
			return &shared->refreshers[i];
	return NULL;
}

static void
flight_free(Flight *f)
{
	memset(f, 0, sizeof(Flight));
}

/*
 * Whether a new flight is refused, *why saying by which limit: a full
 * table, or a caller's role or database with its quota under way (-1: not
 * a caller's flight).
 */
static bool
refused(bool room, int role_flights, int db_flights, char *why)
{
	if (!room)
		snprintf(why, TV_REFRESH_MESSAGE_LEN, "too many token refreshes under way in the cluster (%d)", MAX_FLIGHTS);
	else if (role_flights >= tv_max_refreshes_per_role)
		snprintf(why, TV_REFRESH_MESSAGE_LEN,
				 "too many token refreshes under way for this role (tokenvault.max_refreshes_per_role is %d)",
				 tv_max_refreshes_per_role);
	else if (db_flights >= tv_max_refreshes_per_database)
		snprintf(why, TV_REFRESH_MESSAGE_LEN,
				 "too many token refreshes under way in this database (tokenvault.max_refreshes_per_database is %d)",
				 tv_max_refreshes_per_database);
	else
		return false;
	return true;
}

/*
 * The flight of this auth, joined or newly queued; NULL if none is under
 * way and none may be filed, *why saying which limit refused it (empty:
 * may_file was false).  Joining costs nothing and is always allowed; a new
 * flight of a caller counts against its role and database.  Caller holds
 * the lock exclusively.
 */
static Flight *
join_flight(pg_uuid_t *auth_id, bool force, bool background, bool may_file, char *why)
{
	Oid			role = background ? InvalidOid : GetOuterUserId();
	Flight	   *free_slot = NULL;
	Flight	   *f;
	int			role_flights = 0;
	int			db_flights = 0;
	int			i;

	for (i = 0; i < MAX_FLIGHTS; i++)
	{
		f = &shared->flights[i];
		if (f->state == FLIGHT_FREE)
		{
			if (free_slot == NULL)
				free_slot = f;
			continue;
		}
		if ((f->state == FLIGHT_QUEUED || f->state == FLIGHT_RUNNING) &&
			f->dbid == MyDatabaseId && memcmp(&f->auth_id, auth_id, sizeof(pg_uuid_t)) == 0)
		{
			f->force |= force;
			f->background &= background;
			f->scheduled |= background;
			f->min_validity = Max(f->min_validity, tv_min_validity);
			return f;
		}
		if (OidIsValid(f->filer))
		{
			role_flights += f->filer == role;
			db_flights += f->dbid == MyDatabaseId;
		}
	}
	why[0] = '\0';
	if (!may_file || refused(free_slot != NULL, background ? -1 : role_flights, background ? -1 : db_flights, why))
		return NULL;
	f = free_slot;
	memset(f, 0, sizeof(Flight));
	f->state = FLIGHT_QUEUED;
	f->dbid = MyDatabaseId;
	f->auth_id = *auth_id;
	f->ticket = shared->next_ticket++;
	f->force = force;
	f->background = background;
	f->scheduled = background;
	f->filer = role;
	f->min_validity = tv_min_validity;
	return f;
}

/*
 * Give up a caller's place on its flight.  The last waiter frees a finished
 * flight, and a queued one that nobody else wants (the schedule did not
 * file it): no request goes out for no one.  A running one is freed when it
 * finishes.  Also on the way out of an error or a FATAL exit, whatever the
 * lock's state then.
 */
static void
flight_leave(Waiting *w)
{
	Flight	   *f = w->flight;

	if (w->left)
		return;
	w->left = true;
	if (LWLockHeldByMe(shared->lock))
		LWLockRelease(shared->lock);
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (f->ticket == w->ticket && --f->waiters == 0 &&
		(f->state == FLIGHT_DONE || (f->state == FLIGHT_QUEUED && !f->scheduled)))
		flight_free(f);
	LWLockRelease(shared->lock);
}

static void
flight_leave_on_exit(int code, Datum arg)
{
	flight_leave((Waiting *) DatumGetPointer(arg));
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

	Latch	   *latch = NULL;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	r = refresher_slot_here();
	if (r != NULL)
	{
		r->reserved = true;
		latch = r->latch;
	}
	LWLockRelease(shared->lock);
	/* a refresher serving the database on demand hands it over as soon as it is idle */
	if (latch)
		SetLatch(latch);
}

/* In a refresher: has the worker reserved its database (and waits for it to leave)? */
bool
tv_flight_worker_waits(void)
{
	bool		reserved;

	LWLockAcquire(shared->lock, LW_SHARED);
	reserved = my_slot != NULL && my_slot->reserved;
	LWLockRelease(shared->lock);
	return reserved;
}

/*
 * A database the worker no longer serves (the extension dropped, or
 * tokenvault.database names another): flights filed there start a refresher
 * on demand again.
 */
void
tv_flight_release_database(Oid dbid)
{
	Refresher  *r;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	r = refresher_for(dbid);
	if (r != NULL && r->reserved)
	{
		r->reserved = false;
		if (r->pid == 0 && !r->starting)
			r->dbid = InvalidOid;
	}
	LWLockRelease(shared->lock);
}

/* DROP DATABASE and its like: this database's refresher started on demand goes now. */
void
tv_flight_stop_refresher(Oid dbid)
{
	Refresher  *r;
	pid_t		pid = 0;

	LWLockAcquire(shared->lock, LW_SHARED);
	r = refresher_for(dbid);
	if (r != NULL && !r->reserved)
		pid = r->pid;
	LWLockRelease(shared->lock);
	if (pid != 0)
		kill(pid, SIGTERM);
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
				 errmsg("too many databases use tokenvault refreshes (%d)", shared->nrefreshers)));
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
 * Wait for a flight's outcome until the deadline (w->done says if it came).
 * The waiter leaves the flight once it has read it.
 */
static void
await_flight(Waiting *w, TimestampTz deadline, char *message)
{
	Flight	   *f = w->flight;

	ConditionVariablePrepareToSleep(&shared->done);
	for (;;)
	{
		LWLockAcquire(shared->lock, LW_SHARED);
		if (f->ticket == w->ticket && f->state == FLIGHT_DONE)
		{
			w->outcome = f->outcome;
			strlcpy(message, f->message, TV_REFRESH_MESSAGE_LEN);
			w->done = true;
		}
		else if (f->ticket != w->ticket)
		{
			/* gone without an outcome for us: the row tells */
			w->outcome = TV_OUTCOME_DONE;
			w->done = true;
		}
		LWLockRelease(shared->lock);
		if (w->done || GetCurrentTimestamp() >= deadline)
			break;
		if (ConditionVariableTimedSleep(&shared->done, 1000, PG_WAIT_EXTENSION))
		{
			/* a second without news: make sure a refresher is there */
			LWLockAcquire(shared->lock, LW_EXCLUSIVE);
			wake_refresher();
		}
	}
	ConditionVariableCancelSleep();
	flight_leave(w);
}

/*
 * Have this auth refreshed (or found valid) by the refresher and wait for
 * the outcome, at most tokenvault.http_timeout and a margin.  *message gets
 * what went wrong, never a secret.  Unless may_file, only a flight already
 * under way is joined.  TV_OUTCOME_NO_FLIGHT: none was joined nor filed,
 * *message saying which limit refused it (empty if none did).
 */
TvOutcome
tv_refresh_wait(pg_uuid_t *auth_id, bool force, bool may_file, char *message)
{
	Waiting		w = {0};
	TimestampTz deadline;

	if (shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("refreshing a token needs tokenvault in shared_preload_libraries"),
				 errhint("Add tokenvault to shared_preload_libraries and restart the server.")));
	/* no refresher runs on a standby, and none could store a token there */
	if (RecoveryInProgress())
		return TV_OUTCOME_IN_RECOVERY;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (refresher_slot_here() == NULL)
	{
		LWLockRelease(shared->lock);
		snprintf(message, TV_REFRESH_MESSAGE_LEN, "too many databases use tokenvault refreshes (%d)",
				 shared->nrefreshers);
		return TV_OUTCOME_NO_FLIGHT;
	}
	w.flight = join_flight(auth_id, force, false, may_file, message);
	if (w.flight == NULL)
	{
		LWLockRelease(shared->lock);
		return TV_OUTCOME_NO_FLIGHT;
	}
	w.flight->waiters++;
	w.ticket = w.flight->ticket;
	if (!wake_refresher())		/* releases the lock */
	{
		/* as when the provider is down: a token still valid is handed out */
		flight_leave(&w);
		strlcpy(message, "no background worker slot is free for a tokenvault refresher (max_worker_processes)",
				TV_REFRESH_MESSAGE_LEN);
		return TV_OUTCOME_RETRYABLE;
	}

	/* the refresher may be slow to start; beyond that, one request's worth */
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), (tv_http_timeout + 15) * 1000L);
	/* a cancel, an error or a FATAL exit while waiting gives the place up too */
	PG_ENSURE_ERROR_CLEANUP(flight_leave_on_exit, PointerGetDatum(&w));
	{
		await_flight(&w, deadline, message);
	}
	PG_END_ENSURE_ERROR_CLEANUP(flight_leave_on_exit, PointerGetDatum(&w));
	if (!w.done)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_EXCEPTION),
				 errmsg("timed out waiting for the refresh of auth %s",
						DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(auth_id)))),
				 errhint("Is the tokenvault refresher running?  See pg_stat_activity.")));
	return w.outcome;
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

/* Report a flight's outcome to its waiters, or free it if none waits. */
void
tv_flight_finish(const TvFlight *f, TvOutcome outcome, const char *message)
{
	Flight	   *slot = &shared->flights[f->slot];

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (slot->ticket == f->ticket && slot->waiters == 0)
		flight_free(slot);
	else if (slot->ticket == f->ticket)
	{
		slot->state = FLIGHT_DONE;
		slot->outcome = outcome;
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

/* Count a refresh stored whose synchronous standby did not confirm it (durable.c). */
void
tv_flight_count_unconfirmed(void)
{
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	shared->unconfirmed++;
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
	char		why[TV_REFRESH_MESSAGE_LEN];

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < n; i++)
	{
		Flight	   *f = join_flight(&ids[i], true, true, true, why);

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
	int			batch = Max(1, Min(tv_max_concurrent_refreshes, (MAX_FLIGHTS - CALLER_RESERVE) / QUEUE_DEPTH));
	int			free_slots = 0;
	int			queued = 0;
	int			room;
	int			i;

	LWLockAcquire(shared->lock, LW_SHARED);
	for (i = 0; i < MAX_FLIGHTS; i++)
	{
		Flight	   *f = &shared->flights[i];

		if (f->state == FLIGHT_FREE)
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
tv_flight_stats(uint64 *succeeded, uint64 *failed, uint64 *unconfirmed, double *p50, double *p90, double *p99)
{
	float4		samples[LATENCY_SAMPLES];
	int			n;

	if (shared == NULL)
	{
		*succeeded = *failed = *unconfirmed = 0;
		*p50 = *p90 = *p99 = get_float8_nan();
		return;
	}
	LWLockAcquire(shared->lock, LW_SHARED);
	*succeeded = shared->succeeded;
	*failed = shared->failed;
	*unconfirmed = shared->unconfirmed;
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
