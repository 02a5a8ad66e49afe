/*
 * worker.c: the background worker that keeps one database's tokens alive
 *
 * The launcher (launcher.c) starts one in each database that has the
 * extension, in a slot of shared memory it hands out.  The worker is that
 * database's refresher (flight.c, engine.c): it serves the flights filed by access_token()
 * callers, and files flights of its own for the auths its schedule finds
 * due, so callers and the schedule share one single-flight mechanism.  It
 * also runs the expiry scan and sends webhook deliveries.
 *
 * It owns its event loop: one HTTP handle carries the engine's requests and
 * the webhooks', one wait serves both, and whatever completes is stored or
 * recorded afterwards in the loop, under its error handling, never from
 * inside the wait.
 *
 * It sleeps on its latch until the earliest thing it has to do.  A
 * transaction that makes something due earlier (a new auth, an event for a
 * webhook) wakes it when it commits, through a transaction callback: there
 * is no polling.
 */
#include "postgres.h"

#include <math.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type_d.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "access.h"
#include "checks.h"
#include "engine.h"
#include "flight.h"
#include "http.h"
#include "settings.h"
#include "spi.h"
#include "webhooks.h"
#include "worker.h"

#define CLAIM_RECHECK_MS 10		/* no room for a batch: look again this soon */
#define TICK_MIN_MS 1000		/* the expiry scan runs at most this often */
#define BACKOFF_MIN_MS 1000		/* a step that failed is tried again this much later, */
#define BACKOFF_MAX_MS 60000	/* doubling with each failure in a row up to this */

/* What a database's worker shows of itself, in its slot; the launcher hands the slots out. */
typedef struct WorkerSlot
{
	slock_t		mutex;
	Oid			dbid;			/* InvalidOid: free */
	pid_t		pid;
	Latch	   *latch;
	char		state[32];
	TimestampTz last_loop_at;
	TimestampTz sleeping_until; /* by when the worker will have run every step by itself */
	TimestampTz requested_at;	/* earliest time a committed transaction needs it */
	bool		recheck;		/* DROP EXTENSION committed: look again now */
	bool		gone;			/* left because the extension is not in its database */
	bool		promoted;		/* started after a promotion, as the database's first worker since */
} WorkerSlot;

typedef struct WorkerShared
{
	slock_t		mutex;
	TimestampTz promoted_at;	/* when a worker saw this server leave recovery, or 0 */
	WorkerSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} WorkerShared;

static WorkerShared *workers = NULL;
static WorkerSlot *worker = NULL;	/* the worker's own slot, in a worker */
static char *dbname = NULL;		/* and its database's name */
static bool am_worker = false;

/*
 * A step of the worker's: when it is due next and, after failures in a row,
 * not before when.  Each step backs off on its own, so that one that keeps
 * failing (a webhook trigger that raises) neither spins nor holds up the
 * others.
 */
typedef struct Step
{
	TimestampTz due;
	TimestampTz retry_at;
	int			failures;
} Step;

/* The worker's own schedule. */
typedef struct Schedule
{
	Step		claim;
	Step		tick;
	Step		webhooks;
	Step		checks;
	TimestampTz last_tick;
	bool		started;		/* claims of an earlier worker taken back */
	bool		was_standby;	/* this server was promoted while the worker ran */
	int			lead;			/* tokenvault.refresh_lead the stored schedule was made with */
	TvHttpMulti *multi;			/* the worker's HTTP handle, shared with the engine */
} Schedule;

typedef TimestampTz (*StepFn) (Schedule *s);

static Size
worker_shmem_size(void)
{
	return add_size(offsetof(WorkerShared, slots), mul_size(tv_max_databases, sizeof(WorkerSlot)));
}

void
tv_worker_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(worker_shmem_size()));
}

void
tv_worker_shmem_startup(void)
{
	bool		found;
	int			i;

	workers = ShmemInitStruct("tokenvault workers", worker_shmem_size(), &found);
	if (!found)
	{
		memset(workers, 0, worker_shmem_size());
		SpinLockInit(&workers->mutex);
		for (i = 0; i < tv_max_databases; i++)
			SpinLockInit(&workers->slots[i].mutex);
	}
}

/* The slot of this database's worker, NULL if it has none. */
static WorkerSlot *
slot_of(Oid dbid)
{
	int			i;

	if (workers == NULL)
		return NULL;
	for (i = 0; i < tv_max_databases; i++)
	{
		WorkerSlot *w = &workers->slots[i];
		bool		match;

		SpinLockAcquire(&w->mutex);
		match = w->dbid == dbid;
		SpinLockRelease(&w->mutex);
		if (match)
			return w;
	}
	return NULL;
}

/* ---- for the launcher ---- */

/* A free slot's number, -1 if all are taken. */
int
tv_worker_free_slot(void)
{
	WorkerSlot *w = slot_of(InvalidOid);

	return w ? (int) (w - workers->slots) : -1;
}

/*
 * Start a worker for a database in a free slot; false (and the slot still
 * free) if no background worker slot could be had.
 */
bool
tv_worker_launch(int slot, Oid dbid, const char *dbname, bool promoted, BackgroundWorkerHandle **handle)
{
	WorkerSlot *w = &workers->slots[slot];
	BackgroundWorker bgw = {0};

	SpinLockAcquire(&w->mutex);
	w->dbid = dbid;
	w->pid = 0;
	w->latch = NULL;
	w->gone = w->recheck = false;
	w->promoted = promoted;
	w->requested_at = w->sleeping_until = DT_NOEND;
	strlcpy(w->state, "starting", sizeof(w->state));
	SpinLockRelease(&w->mutex);

	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	/* a standby runs it too; it idles there until promoted */
	bgw.bgw_start_time = BgWorkerStart_ConsistentState;
	/* the launcher restarts it, so that it can tell a crash from a dropped extension */
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "tokenvault");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "tv_worker_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "tokenvault worker for database %s", dbname);
	snprintf(bgw.bgw_type, BGW_MAXLEN, "tokenvault worker");
	bgw.bgw_main_arg = Int32GetDatum(slot);
	bgw.bgw_notify_pid = MyProcPid;
	if (RegisterDynamicBackgroundWorker(&bgw, handle))
		return true;
	tv_worker_release(slot);
	return false;
}

/* The launcher saw this server promoted (a worker that ran through it notes it too). */
void
tv_worker_note_promotion(void)
{
	SpinLockAcquire(&workers->mutex);
	if (workers->promoted_at == 0)
		workers->promoted_at = GetCurrentTimestamp();
	SpinLockRelease(&workers->mutex);
}

/* After its worker stopped: did it leave because the extension is not there? */
bool
tv_worker_left_for_good(int slot)
{
	WorkerSlot *w = &workers->slots[slot];
	bool		gone;

	SpinLockAcquire(&w->mutex);
	gone = w->gone;
	SpinLockRelease(&w->mutex);
	return gone;
}

/* Give a slot back, once its worker has stopped. */
void
tv_worker_release(int slot)
{
	WorkerSlot *w = &workers->slots[slot];

	SpinLockAcquire(&w->mutex);
	w->dbid = InvalidOid;
	w->pid = 0;
	w->latch = NULL;
	strlcpy(w->state, "absent", sizeof(w->state));
	SpinLockRelease(&w->mutex);
}

/* The pid of the worker in a slot, 0 if none runs there. */
pid_t
tv_worker_pid(int slot)
{
	WorkerSlot *w = &workers->slots[slot];
	pid_t		pid;

	SpinLockAcquire(&w->mutex);
	pid = w->pid;
	SpinLockRelease(&w->mutex);
	return pid;
}

/* ---- for statements about a database (ddl.c) ---- */

/*
 * Stop this database's worker at once (a DROP DATABASE is waiting for its
 * connection to go); the launcher holds a new one off meanwhile.
 */
void
tv_worker_terminate(Oid dbid)
{
	WorkerSlot *w = slot_of(dbid);
	pid_t		pid = 0;

	if (w == NULL)
		return;
	SpinLockAcquire(&w->mutex);
	if (w->dbid == dbid)
		pid = w->pid;
	SpinLockRelease(&w->mutex);
	if (pid != 0)
		kill(pid, SIGTERM);
}

/* The extension was dropped in this database: its worker looks now and leaves. */
void
tv_worker_recheck(Oid dbid)
{
	WorkerSlot *w = slot_of(dbid);
	Latch	   *latch = NULL;

	if (w == NULL)
		return;
	SpinLockAcquire(&w->mutex);
	if (w->dbid == dbid)
	{
		w->recheck = true;
		latch = w->latch;
	}
	SpinLockRelease(&w->mutex);
	if (latch)
		SetLatch(latch);
}

static void
set_state(const char *state)
{
	SpinLockAcquire(&worker->mutex);
	strlcpy(worker->state, state, sizeof(worker->state));
	worker->last_loop_at = GetCurrentTimestamp();
	SpinLockRelease(&worker->mutex);
}

/* On the way out: the slot stays this database's until the launcher has seen the worker go. */
static void
worker_detach(int code, Datum arg)
{
	SpinLockAcquire(&worker->mutex);
	worker->pid = 0;
	worker->latch = NULL;
	strlcpy(worker->state, "absent", sizeof(worker->state));
	SpinLockRelease(&worker->mutex);
}

/* ---- waking the worker when a transaction commits ---- */

static TimestampTz wake_at = DT_NOEND;
static bool wake_callback_registered = false;
static TimestampTz own_wake_at = DT_NOEND;	/* the worker's own writes (a new refresh_at) */

static void
wake_at_commit(XactEvent event, void *arg)
{
	Latch	   *latch = NULL;

	WorkerSlot *w;

	if (event == XACT_EVENT_COMMIT && wake_at != DT_NOEND && (w = slot_of(MyDatabaseId)) != NULL)
	{
		SpinLockAcquire(&w->mutex);
		if (w->dbid == MyDatabaseId && wake_at < w->sleeping_until &&
			wake_at < w->requested_at)
		{
			w->requested_at = wake_at;
			latch = w->latch;
		}
		SpinLockRelease(&w->mutex);
		if (latch)
			SetLatch(latch);
	}
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		wake_at = DT_NOEND;
}

/* tokenvault._wake_worker(at): have the worker look at "at", once this transaction commits. */
PG_FUNCTION_INFO_V1(tv_wake_worker);
Datum
tv_wake_worker(PG_FUNCTION_ARGS)
{
	/* without shared memory there is no worker */
	if (workers == NULL || PG_ARGISNULL(0))
		PG_RETURN_VOID();
	/* the worker's own writes need no latch, only a note (kept even if rolled back: harmless) */
	if (am_worker)
	{
		own_wake_at = Min(own_wake_at, PG_GETARG_TIMESTAMPTZ(0));
		PG_RETURN_VOID();
	}
	if (!wake_callback_registered)
	{
		RegisterXactCallback(wake_at_commit, NULL);
		wake_callback_registered = true;
	}
	wake_at = Min(wake_at, PG_GETARG_TIMESTAMPTZ(0));
	PG_RETURN_VOID();
}

/* ---- the worker's steps ---- */

/*
 * Is the extension there to work with?  A yes holds for a second: the
 * worker is woken for every on-demand refresh, and a transaction of its own
 * to look in the catalog each time would add to every one.  (Were the
 * extension dropped meanwhile, the next step fails, is logged, and is
 * tried again later.)
 */
static bool
extension_ready(void)
{
	static TimestampTz seen_at = 0;
	TimestampTz now = GetCurrentTimestamp();
	bool		ready;
	bool		recheck;

	SpinLockAcquire(&worker->mutex);
	recheck = worker->recheck;
	worker->recheck = false;
	SpinLockRelease(&worker->mutex);
	if (!recheck && seen_at != 0 && !TimestampDifferenceExceeds(seen_at, now, 1000))
		return true;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	ready = OidIsValid(get_extension_oid("tokenvault", true));
	CommitTransactionCommand();
	seen_at = ready ? now : 0;
	return ready;
}

/*
 * File flights for the auths that are due, as many as there is room for;
 * the claim moves their refresh_at a lease ahead, so that a crash loses
 * none: they come due again.  Returns when to claim again.
 */
static TimestampTz
claim_due(void)
{
	int			room = tv_flight_room();
	Oid			types[1] = {INT4OID};
	Datum		args[1];
	HeapTuple	row;
	TupleDesc	desc;
	bool		isnull;
	ArrayType  *ids;
	int			n;
	TimestampTz next_at;

	if (room == 0)
		return TimestampTzPlusMilliseconds(GetCurrentTimestamp(), CLAIM_RECHECK_MS);
	args[0] = Int32GetDatum(room);
	tv_spi_begin();
	/* (ids uuid[], next_at timestamptz) */
	row = tv_spi_row("SELECT * FROM tokenvault._worker_claim($1)", 1, types, args, NULL, &desc);
	tv_spi_check_row(desc, "what tokenvault._worker_claim returns", 2, (Oid[]) {UUIDARRAYOID, TIMESTAMPTZOID});
	ids = DatumGetArrayTypePCopy(heap_getattr(row, 1, desc, &isnull));
	next_at = tv_spi_timestamptz(row, desc, 2);
	tv_spi_end();
	n = ArrayGetNItems(ARR_NDIM(ids), ARR_DIMS(ids));
	tv_flight_file_background((pg_uuid_t *) ARR_DATA_PTR(ids), n);
	/* a full claim means more may be due: claim again as soon as there is room */
	if (n >= room)
		return GetCurrentTimestamp();
	return next_at;
}

/* Run a statement whose result the worker does not need. */
static void
run_statement(const char *sql)
{
	TupleDesc	desc;

	tv_spi_begin();
	(void) tv_spi_row(sql, 0, NULL, NULL, NULL, &desc);
	tv_spi_end();
}

/* The claim step: what an earlier worker claimed taken back first, schedules kept to refresh_lead. */
static TimestampTz
claim_step(Schedule *s)
{
	if (!s->started)
	{
		/* take back what a previous worker had claimed, and what it lost */
		run_statement(s->was_standby ? "SELECT tokenvault._worker_start(true)"
					  : "SELECT tokenvault._worker_start(false)");
		s->started = true;
	}
	if (s->lead != tv_refresh_lead)
	{
		/* a changed refresh_lead moves every stored schedule */
		run_statement("SELECT tokenvault._reschedule()");
		s->lead = tv_refresh_lead;
	}
	return claim_due();
}

/* Expiry notices, expired auths, old events, at most every TICK_MIN_MS: returns when next needed. */
static TimestampTz
tick_step(Schedule *s)
{
	TimestampTz now = GetCurrentTimestamp();
	HeapTuple	row;
	TupleDesc	desc;
	TimestampTz next_at;

	if (!TimestampDifferenceExceeds(s->last_tick, now, TICK_MIN_MS))
		return TimestampTzPlusMilliseconds(s->last_tick, TICK_MIN_MS);
	s->last_tick = now;
	tv_spi_begin();
	row = tv_spi_row("SELECT tokenvault._worker_tick()", 0, NULL, NULL, NULL, &desc);
	tv_spi_check_row(desc, "what tokenvault._worker_tick returns", 1, (Oid[]) {TIMESTAMPTZOID});
	next_at = tv_spi_timestamptz(row, desc, 1);
	tv_spi_end();
	return next_at;
}

static TimestampTz
webhooks_step(Schedule *s)
{
	return tv_webhooks_send(s->multi);
}

static TimestampTz
checks_step(Schedule *s)
{
	return tv_checks_send(s->multi);
}

/* What committed transactions asked for since the last look: each step no later than that. */
static void
take_requests(Schedule *s)
{
	TimestampTz req;

	SpinLockAcquire(&worker->mutex);
	req = worker->requested_at;
	worker->requested_at = DT_NOEND;
	SpinLockRelease(&worker->mutex);
	s->claim.due = Min(s->claim.due, req);
	s->tick.due = Min(s->tick.due, req);
	s->webhooks.due = Min(s->webhooks.due, req);
	s->checks.due = Min(s->checks.due, req);
	/* its own writes (new schedules, events) need no expiry scan: that plans itself */
	s->claim.due = Min(s->claim.due, own_wake_at);
	s->webhooks.due = Min(s->webhooks.due, own_wake_at);
	own_wake_at = DT_NOEND;
}

/* When a step runs next by itself: when due, and not before its backoff ends. */
static TimestampTz
step_at(Step *step)
{
	return Max(step->due, step->retry_at);
}

/*
 * Run a step if it is due.  An error is logged whole and fails this step
 * alone, which is tried again after a backoff: BACKOFF_MIN_MS doubling with
 * each failure in a row, up to BACKOFF_MAX_MS.
 */
static void
run_step(Step *step, StepFn fn, Schedule *s, MemoryContext cxt)
{
	if (step_at(step) > GetCurrentTimestamp())
		return;
	PG_TRY();
	{
		step->due = fn(s);
		step->failures = 0;
		step->retry_at = 0;
	}
	PG_CATCH();
	{
		long		backoff_ms = BACKOFF_MAX_MS;

		MemoryContextSwitchTo(cxt);
		(void) tv_log_caught_error("tokenvault worker");
		if (step->failures < 16)
			backoff_ms = Min((long) BACKOFF_MIN_MS << step->failures, BACKOFF_MAX_MS);
		step->failures++;
		step->retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), backoff_ms);
	}
	PG_END_TRY();
}

/* Run the steps that are due, each on its own. */
static void
run_steps(Schedule *s, MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);

	if (s->lead != tv_refresh_lead)
		s->claim.due = 0;
	run_step(&s->claim, claim_step, s, cxt);
	run_step(&s->tick, tick_step, s, cxt);
	run_step(&s->webhooks, webhooks_step, s, cxt);
	run_step(&s->checks, checks_step, s, cxt);
	/* what the steps allocated (ids, timestamps) goes with the round */
	MemoryContextSwitchTo(old);
	MemoryContextReset(cxt);
}

/*
 * How long to sleep: till the first step runs.  What is published is when
 * the last one will have run: the steps run apart, so a request that comes
 * before then wakes the worker even if another step wakes it earlier (an
 * auth due after a webhook's retry but before the next claim).
 */
static long
sleep_ms(Schedule *s)
{
	TimestampTz claim = step_at(&s->claim);
	TimestampTz tick = step_at(&s->tick);
	TimestampTz webhooks = step_at(&s->webhooks);
	TimestampTz checks = step_at(&s->checks);
	TimestampTz until = Min(Min(claim, checks), Min(tick, webhooks));
	long		secs;
	int			usecs;

	SpinLockAcquire(&worker->mutex);
	worker->sleeping_until = Max(Max(claim, checks), Max(tick, webhooks));
	SpinLockRelease(&worker->mutex);
	if (until == DT_NOEND)
		return 3600 * 1000L;
	TimestampDifference(GetCurrentTimestamp(), until, &secs, &usecs);
	return Min(secs * 1000L + (usecs + 999) / 1000, 3600 * 1000L);
}

/* Until the extension is created (or while a standby, or read-only), look again now and then. */
static bool
ready_to_work(Schedule *s)
{
	if (RecoveryInProgress())
	{
		set_state("standby");
		s->was_standby = true;
		return false;
	}
	if (s->was_standby)
	{
		SpinLockAcquire(&workers->mutex);
		if (workers->promoted_at == 0)
			workers->promoted_at = GetCurrentTimestamp();
		SpinLockRelease(&workers->mutex);
	}
	/* a promoted server an HA manager keeps read-only for a moment: waited for, not retried */
	if (DefaultXactReadOnly)
	{
		set_state("read only");
		return false;
	}
	if (!extension_ready())
	{
		/* the launcher starts a worker again when CREATE EXTENSION commits here */
		SpinLockAcquire(&worker->mutex);
		worker->gone = true;
		SpinLockRelease(&worker->mutex);
		ereport(LOG,
				(errmsg("tokenvault worker leaves database \"%s\": the extension is not there", dbname)));
		proc_exit(0);
	}
	return true;
}

void
tv_worker_main(Datum main_arg)
{
	Schedule	s = {0};
	MemoryContext cxt;

	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	worker = &workers->slots[DatumGetInt32(main_arg)];
	BackgroundWorkerInitializeConnectionByOid(worker->dbid, InvalidOid, 0);
	am_worker = true;

	SpinLockAcquire(&worker->mutex);
	worker->pid = MyProcPid;
	worker->latch = MyLatch;
	worker->requested_at = DT_NOEND;
	s.was_standby = worker->promoted;
	SpinLockRelease(&worker->mutex);
	before_shmem_exit(worker_detach, 0);
	set_state("starting");
	pgstat_report_activity(STATE_RUNNING, "tokenvault: starting");
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	dbname = MemoryContextStrdup(TopMemoryContext, get_database_name(MyDatabaseId));
	CommitTransactionCommand();

	/* a refresher started on demand before the worker came up leaves when idle */
	tv_flight_reserve_database();
	while (!tv_flight_attach())
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 100L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	/* one HTTP handle for refreshes and webhooks, waited on in one place */
	MemoryContextSwitchTo(TopMemoryContext);
	s.multi = tv_http_multi_create();
	tv_engine_start(s.multi);
	cxt = AllocSetContextCreate(TopMemoryContext, "tokenvault worker", ALLOCSET_DEFAULT_SIZES);
	s.lead = tv_refresh_lead;
	s.claim.due = s.tick.due = s.webhooks.due = s.checks.due = GetCurrentTimestamp();

	for (;;)
	{
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		tv_reload_if_asked();
		if (!tv_engine_busy() && !ready_to_work(&s))
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 5000L, PG_WAIT_EXTENSION);
			s.claim.due = s.tick.due = s.webhooks.due = s.checks.due = GetCurrentTimestamp();
			continue;
		}
		set_state(tv_engine_busy() ? "working" : "idle");
		/* awake: a commit from now until sleep_ms() publishes a time is a request, whatever it asks */
		SpinLockAcquire(&worker->mutex);
		worker->sleeping_until = DT_NOEND;
		SpinLockRelease(&worker->mutex);
		take_requests(&s);
		run_steps(&s, cxt);
		/* answers that came in while the engine waited (or a refused URL's, at once) */
		tv_webhooks_record();
		tv_checks_record();
		/* the steps' own writes (an event for a webhook) may want a step again soon */
		take_requests(&s);
		tv_engine_serve(sleep_ms(&s));
	}
}

/*
 * tokenvault._promoted_at(): when the worker saw this server promoted, NULL
 * if it did not.  A refresh token refused at the first refresh since may
 * have been replaced on the old primary by a commit that asynchronous
 * replication never brought here.
 */
PG_FUNCTION_INFO_V1(tv_promoted_at);
Datum
tv_promoted_at(PG_FUNCTION_ARGS)
{
	TimestampTz at = 0;

	if (workers != NULL)
	{
		SpinLockAcquire(&workers->mutex);
		at = workers->promoted_at;
		SpinLockRelease(&workers->mutex);
	}
	if (at == 0)
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ(at);
}

/* tokenvault._worker_stats(): what tokenvault.stats shows of the worker and the refreshes. */
PG_FUNCTION_INFO_V1(tv_worker_stats);
Datum
tv_worker_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[9];
	bool		nulls[9] = {0};
	uint64		succeeded;
	uint64		failed;
	uint64		unconfirmed;
	double		pct[3];
	pid_t		pid = 0;
	char		state[32] = "absent";
	TimestampTz last_loop_at = 0;
	WorkerSlot *w;
	int			i;

	/* the stats view's reader: nothing about the cluster where it was not admitted */
	tv_require_admission(TV_LEVEL_APP);

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if ((w = slot_of(MyDatabaseId)) != NULL)
	{
		SpinLockAcquire(&w->mutex);
		if (w->dbid == MyDatabaseId)
		{
			pid = w->pid;
			if (pid != 0)
				strlcpy(state, w->state, sizeof(state));
			last_loop_at = w->last_loop_at;
		}
		SpinLockRelease(&w->mutex);
	}
	tv_flight_stats(&succeeded, &failed, &unconfirmed, &pct[0], &pct[1], &pct[2]);
	values[0] = Int32GetDatum(pid);
	nulls[0] = pid == 0;
	values[1] = CStringGetTextDatum(state);
	values[2] = TimestampTzGetDatum(last_loop_at);
	nulls[2] = last_loop_at == 0;
	values[3] = Int64GetDatum((int64) succeeded);
	values[4] = Int64GetDatum((int64) failed);
	for (i = 0; i < 3; i++)
	{
		values[5 + i] = Float8GetDatum(pct[i]);
		nulls[5 + i] = isnan(pct[i]);
	}
	values[8] = Int64GetDatum((int64) unconfirmed);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
