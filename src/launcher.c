/*
 * launcher.c: a worker for every database that has tokenvault
 *
 * The launcher is the background worker registered at preload.  It connects
 * to no database, so it reads pg_database (a shared catalog) and learns
 * whether a database has the extension by a probe: a short-lived worker
 * connected there that looks in pg_extension and reports.  It keeps one
 * worker (worker.c) running in each database that has it, up to
 * tokenvault.max_databases, only in tokenvault.database when that is set,
 * and starts one again after it stopped for any reason but a dropped
 * extension.
 *
 * It hears of changes as they commit rather than by polling for them: CREATE
 * EXTENSION tokenvault and CREATE DATABASE tell it (ddl.c), a worker whose
 * extension is gone leaves saying so, and a statement that needs a database
 * to itself (DROP DATABASE) stops that database's worker and holds a new one
 * off for a moment.  pg_database is read again every RESCAN_MS all the same:
 * a standby replays new databases without running any statement.
 *
 * The launcher starts on a standby too, so that its workers are there, idle,
 * when it is promoted.
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/extension.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "flight.h"
#include "launcher.h"
#include "settings.h"
#include "worker.h"

#define RESCAN_MS 60000			/* pg_database read again at least this often */
#define RECOVERY_CHECK_MS 1000	/* on a standby, how soon a promotion is seen */
#define REPROBE_MS 600000		/* databases found without the extension are probed again this often */
#define RESTART_MS 5000			/* a worker that stopped is started again this much later */
#define STEP_ASIDE_MS 10000		/* how long DROP DATABASE and its like hold a worker off */
#define MAX_PROBES 2			/* probes at once */
#define MAX_NEWS 32
#define MAX_PAUSES 16
#define MAX_NAMED 20			/* databases named in one log line */

typedef struct Probe
{
	Oid			dbid;			/* InvalidOid: free */
	int			found;			/* -1: no answer yet, 0: no extension, 1: the extension */
} Probe;

typedef struct LauncherShared
{
	slock_t		mutex;
	Latch	   *latch;
	bool		rescan;			/* a database was created */
	int			nnews;			/* databases where CREATE EXTENSION committed */
	Oid			news[MAX_NEWS];
	bool		news_lost;		/* more than MAX_NEWS: probe every database again */
	Oid			paused[MAX_PAUSES];
	TimestampTz paused_until[MAX_PAUSES];
	Probe		probes[MAX_PROBES];
} LauncherShared;

static LauncherShared *launcher = NULL;

/* What the launcher knows of a database (its own memory). */
typedef enum Known
{
	DB_UNKNOWN,
	DB_PROBING,
	DB_ABSENT,					/* no extension */
	DB_PRESENT
} Known;

typedef struct Db
{
	Oid			oid;
	NameData	name;
	Known		known;
	bool		seen;			/* in the last read of pg_database */
	int			slot;			/* its worker's slot, -1 if none runs */
	BackgroundWorkerHandle *worker;
	int			probe;			/* its probe's cell, -1 if none runs */
	BackgroundWorkerHandle *prober;
	TimestampTz not_before;		/* no worker nor probe before then */
	bool		promoted;		/* no worker has run here since this server was promoted */
} Db;

static Db  *dbs = NULL;
static int	ndbs = 0;
static char *left_out = NULL;	/* the databases last logged as left without a worker */

void
tv_launcher_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(LauncherShared)));
}

void
tv_launcher_shmem_startup(void)
{
	bool		found;

	launcher = ShmemInitStruct("tokenvault launcher", sizeof(LauncherShared), &found);
	if (!found)
	{
		memset(launcher, 0, sizeof(LauncherShared));
		SpinLockInit(&launcher->mutex);
	}
}

void
tv_launcher_register(void)
{
	BackgroundWorker w = {0};

	w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	w.bgw_start_time = BgWorkerStart_ConsistentState;
	w.bgw_restart_time = 5;
	snprintf(w.bgw_library_name, BGW_MAXLEN, "tokenvault");
	snprintf(w.bgw_function_name, BGW_MAXLEN, "tv_launcher_main");
	snprintf(w.bgw_name, BGW_MAXLEN, "tokenvault launcher");
	snprintf(w.bgw_type, BGW_MAXLEN, "tokenvault launcher");
	RegisterBackgroundWorker(&w);
}

/* ---- what backends tell the launcher (ddl.c) ---- */

static void
wake_launcher(void)
{
	Latch	   *latch;

	SpinLockAcquire(&launcher->mutex);
	latch = launcher->latch;
	SpinLockRelease(&launcher->mutex);
	if (latch)
		SetLatch(latch);
}

/* CREATE EXTENSION tokenvault committed in this database. */
void
tv_launcher_extension_created(Oid dbid)
{
	if (launcher == NULL)
		return;
	SpinLockAcquire(&launcher->mutex);
	if (launcher->nnews < MAX_NEWS)
		launcher->news[launcher->nnews++] = dbid;
	else
		launcher->news_lost = true;
	SpinLockRelease(&launcher->mutex);
	wake_launcher();
}

/* A database was created (or renamed): read pg_database now. */
void
tv_launcher_rescan(void)
{
	if (launcher == NULL)
		return;
	SpinLockAcquire(&launcher->mutex);
	launcher->rescan = true;
	SpinLockRelease(&launcher->mutex);
	wake_launcher();
}

/*
 * A statement needs this database to itself: its worker stops now, and no
 * worker nor probe starts there for STEP_ASIDE_MS.  If the statement fails,
 * the launcher starts the worker again after that.
 */
void
tv_launcher_step_aside(Oid dbid)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), STEP_ASIDE_MS);
	int			i;
	int			at = -1;

	if (launcher == NULL)
		return;
	SpinLockAcquire(&launcher->mutex);
	for (i = 0; i < MAX_PAUSES; i++)
	{
		if (launcher->paused[i] == dbid)
		{
			at = i;
			break;
		}
		/* a pause that is over, or the one that ends first, makes room */
		if (at < 0 || launcher->paused_until[i] < launcher->paused_until[at])
			at = i;
	}
	launcher->paused[at] = dbid;
	launcher->paused_until[at] = until;
	SpinLockRelease(&launcher->mutex);
	tv_worker_terminate(dbid);
	wake_launcher();
}

static bool
paused(Oid dbid, TimestampTz now, TimestampTz *until)
{
	bool		yes = false;
	int			i;

	SpinLockAcquire(&launcher->mutex);
	for (i = 0; i < MAX_PAUSES; i++)
		if (launcher->paused[i] == dbid && launcher->paused_until[i] > now)
		{
			yes = true;
			*until = launcher->paused_until[i];
		}
	SpinLockRelease(&launcher->mutex);
	return yes;
}

/* ---- the probe ---- */

/* Does the database have the extension?  Answered in the probe's cell. */
void
tv_probe_main(Datum main_arg)
{
	Probe	   *p = &launcher->probes[DatumGetInt32(main_arg)];
	bool		found;

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(p->dbid, InvalidOid, 0);
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	found = OidIsValid(get_extension_oid("tokenvault", true));
	CommitTransactionCommand();
	SpinLockAcquire(&launcher->mutex);
	p->found = found ? 1 : 0;
	SpinLockRelease(&launcher->mutex);
	proc_exit(0);
}

static bool
start_probe(Db *db)
{
	BackgroundWorker bgw = {0};
	int			i;

	for (i = 0; i < MAX_PROBES; i++)
		if (!OidIsValid(launcher->probes[i].dbid))
			break;
	if (i == MAX_PROBES)
		return false;
	SpinLockAcquire(&launcher->mutex);
	launcher->probes[i].dbid = db->oid;
	launcher->probes[i].found = -1;
	SpinLockRelease(&launcher->mutex);
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_ConsistentState;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "tokenvault");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "tv_probe_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "tokenvault probe of database %s", NameStr(db->name));
	snprintf(bgw.bgw_type, BGW_MAXLEN, "tokenvault probe");
	bgw.bgw_main_arg = Int32GetDatum(i);
	bgw.bgw_notify_pid = MyProcPid;
	if (!RegisterDynamicBackgroundWorker(&bgw, &db->prober))
	{
		launcher->probes[i].dbid = InvalidOid;
		return false;
	}
	db->probe = i;
	db->known = DB_PROBING;
	return true;
}

/* ---- the databases ---- */

static Db  *
find_db(Oid oid)
{
	int			i;

	for (i = 0; i < ndbs; i++)
		if (dbs[i].oid == oid)
			return &dbs[i];
	return NULL;
}

/* tokenvault.database naming no database a worker could serve is said once. */
static void
log_missing_database(void)
{
	static char *said = NULL;
	int			i;

	if (tv_database == NULL || tv_database[0] == '\0')
		return;
	for (i = 0; i < ndbs; i++)
		if (dbs[i].seen && strcmp(NameStr(dbs[i].name), tv_database) == 0)
			return;
	if (said != NULL && strcmp(said, tv_database) == 0)
		return;
	ereport(LOG,
			(errmsg("tokenvault.database is \"%s\", which is no database a tokenvault worker can serve", tv_database),
			 errhint("Name a database that exists, is not a template and allows connections, or set it to '' for every database.")));
	if (said)
		pfree(said);
	said = MemoryContextStrdup(TopMemoryContext, tv_database);
}

/*
 * Read pg_database: a database that allows connections and is not a
 * template (a worker connected to a template would make every CREATE
 * DATABASE from it fail) is one to look at.  What is known of the ones seen
 * before is kept; the others are new, not yet probed.
 */
static void
scan_databases(MemoryContext cxt)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	int			i;

	for (i = 0; i < ndbs; i++)
		dbs[i].seen = false;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database d = (Form_pg_database) GETSTRUCT(tup);
		Db		   *db;

		if (!d->datallowconn || d->datistemplate)
			continue;
		if ((db = find_db(d->oid)) == NULL)
		{
			dbs = dbs == NULL ? MemoryContextAlloc(cxt, sizeof(Db)) : repalloc(dbs, (ndbs + 1) * sizeof(Db));
			db = &dbs[ndbs++];
			memset(db, 0, sizeof(Db));
			db->oid = d->oid;
			db->known = DB_UNKNOWN;
			db->slot = db->probe = -1;
		}
		db->name = d->datname;
		db->seen = true;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();
	log_missing_database();
}

/* Forget the databases that are gone, once nothing of ours runs there. */
static void
forget_gone(void)
{
	int			i,
				n = 0;

	for (i = 0; i < ndbs; i++)
		if (dbs[i].seen || dbs[i].slot >= 0 || dbs[i].probe >= 0)
			dbs[n++] = dbs[i];
	ndbs = n;
}

/* What backends told the launcher since it last looked. */
static bool
take_news(void)
{
	Oid			news[MAX_NEWS];
	int			n,
				i;
	bool		lost,
				rescan;

	SpinLockAcquire(&launcher->mutex);
	n = launcher->nnews;
	memcpy(news, launcher->news, n * sizeof(Oid));
	lost = launcher->news_lost;
	rescan = launcher->rescan;
	launcher->nnews = 0;
	launcher->news_lost = launcher->rescan = false;
	SpinLockRelease(&launcher->mutex);
	for (i = 0; i < ndbs; i++)
		if (lost && dbs[i].known == DB_ABSENT)
			dbs[i].known = DB_UNKNOWN;
	for (i = 0; i < n; i++)
	{
		Db		   *db = find_db(news[i]);

		if (db == NULL)
			rescan = true;		/* created since the last read: probed once found */
		else if (db->known != DB_PROBING)
		{
			db->known = DB_PRESENT;
			db->not_before = 0;
		}
	}
	return rescan || lost;
}

static bool
wanted_here(Db *db)
{
	return db->seen && (tv_database == NULL || tv_database[0] == '\0' ||
						strcmp(NameStr(db->name), tv_database) == 0);
}

/* A worker or probe that stopped: what it leaves behind. */
static void
reap(Db *db, TimestampTz now)
{
	pid_t		pid;

	if (db->slot >= 0 && GetBackgroundWorkerPid(db->worker, &pid) == BGWH_STOPPED)
	{
		if (tv_worker_left_for_good(db->slot))
			db->known = DB_ABSENT;
		else
			db->not_before = TimestampTzPlusMilliseconds(now, RESTART_MS);
		tv_worker_release(db->slot);
		pfree(db->worker);
		db->slot = -1;
		/* a worker not coming back: on-demand refreshers serve the database meanwhile */
		if (db->known != DB_PRESENT || !wanted_here(db))
			tv_flight_release_database(db->oid);
	}
	if (db->probe >= 0 && GetBackgroundWorkerPid(db->prober, &pid) == BGWH_STOPPED)
	{
		Probe	   *p = &launcher->probes[db->probe];
		int			found;

		SpinLockAcquire(&launcher->mutex);
		found = p->found;
		p->dbid = InvalidOid;
		SpinLockRelease(&launcher->mutex);
		pfree(db->prober);
		db->probe = -1;
		/* no answer (it could not connect, say): asked again later */
		db->known = found == 1 ? DB_PRESENT : found == 0 ? DB_ABSENT : DB_UNKNOWN;
		if (found < 0)
			db->not_before = TimestampTzPlusMilliseconds(now, RESTART_MS);
	}
}

static void
start_worker(Db *db, TimestampTz now)
{
	int			slot = tv_worker_free_slot();

	if (slot < 0)
		return;
	if (!tv_worker_launch(slot, db->oid, NameStr(db->name), db->promoted, &db->worker))
	{
		ereport(LOG,
				(errmsg("could not start the tokenvault worker for database \"%s\"", NameStr(db->name)),
				 errhint("Raise max_worker_processes.")));
		db->not_before = TimestampTzPlusMilliseconds(now, RESTART_MS);
		return;
	}
	db->slot = slot;
	db->promoted = false;
}

/* Name the databases that have the extension but no worker, when that changes. */
static void
log_left_out(void)
{
	StringInfoData names;
	int			i,
				n = 0;

	initStringInfo(&names);
	for (i = 0; i < ndbs; i++)
		if (dbs[i].known == DB_PRESENT && dbs[i].slot < 0 && wanted_here(&dbs[i]) &&
			tv_worker_free_slot() < 0 && n++ < MAX_NAMED)
			appendStringInfo(&names, "%s\"%s\"", names.len ? ", " : "", NameStr(dbs[i].name));
	if (n > MAX_NAMED)
		appendStringInfo(&names, " and %d more", n - MAX_NAMED);
	if (left_out != NULL && strcmp(left_out, names.data) == 0)
	{
		pfree(names.data);
		return;
	}
	if (names.len > 0)
		ereport(LOG,
				(errmsg("tokenvault.max_databases (%d) reached: no tokenvault worker for %s %s",
						tv_max_databases, strchr(names.data, ',') ? "databases" : "database", names.data),
				 errhint("Raise tokenvault.max_databases (and max_worker_processes) and restart the server.  "
						 "Until then, their tokens are refreshed only when an application asks for one.")));
	if (left_out)
		pfree(left_out);
	left_out = MemoryContextStrdup(TopMemoryContext, names.data);
	pfree(names.data);
}

/*
 * Bring what runs in line with what is wanted; returns when to look again
 * by itself (a restart delay or a pause that ends).
 */
static TimestampTz
reconcile(TimestampTz now)
{
	TimestampTz next = DT_NOEND;
	int			i;

	for (i = 0; i < ndbs; i++)
	{
		Db		   *db = &dbs[i];
		TimestampTz pause_end = 0;
		bool		held;

		reap(db, now);
		held = paused(db->oid, now, &pause_end) || now < db->not_before;
		if (held)
			next = Min(next, Max(db->not_before, pause_end));
		if (db->slot >= 0 && (!wanted_here(db) || db->known == DB_ABSENT))
			TerminateBackgroundWorker(db->worker);
		else if (db->slot < 0 && db->known == DB_PRESENT && wanted_here(db) && !held)
			start_worker(db, now);
		else if (db->known == DB_UNKNOWN && db->probe < 0 && wanted_here(db) && !held)
			start_probe(db);
		if (db->slot < 0 && db->not_before > now)
			next = Min(next, db->not_before);
	}
	forget_gone();
	log_left_out();
	return next;
}

/*
 * Workers a launcher before this one started (it exited on an error) are
 * stopped: their handles went with it.
 */
static void
stop_orphans(void)
{
	int			slot,
				waited;

	for (slot = 0; slot < tv_max_databases; slot++)
	{
		pid_t		pid = tv_worker_pid(slot);

		for (waited = 0; pid != 0 && waited < 100; waited++)
		{
			kill(pid, SIGTERM);
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 100L, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
			pid = tv_worker_pid(slot);
		}
		tv_worker_release(slot);
	}
	SpinLockAcquire(&launcher->mutex);
	memset(launcher->probes, 0, sizeof(launcher->probes));
	SpinLockRelease(&launcher->mutex);
}

/* The databases found without the extension are to be probed again. */
static void
forget_absent(void)
{
	int			i;

	for (i = 0; i < ndbs; i++)
		if (dbs[i].known == DB_ABSENT)
			dbs[i].known = DB_UNKNOWN;
}

/*
 * A standby hears of no CREATE EXTENSION (it replays them), so what it
 * found absent is probed again at each read of pg_database, and at once
 * when it is promoted.  A database's first worker after the promotion is
 * told, as one that ran through it would know: a refresh the old primary
 * had in flight was lost in a failover, not a restart.
 */
static bool
follow_recovery(bool *was_standby)
{
	bool		standby = RecoveryInProgress();
	bool		promoted = *was_standby && !standby;
	int			i;

	if (standby || promoted)
		forget_absent();
	if (promoted)
		for (i = 0; i < ndbs; i++)
			if (dbs[i].slot < 0)
				dbs[i].promoted = true;
	if (promoted)
		tv_worker_note_promotion();
	*was_standby = standby;
	return promoted;
}

void
tv_launcher_main(Datum main_arg)
{
	MemoryContext cxt;
	TimestampTz rescan_at = 0;
	TimestampTz reprobe_at = 0;
	bool		was_standby = RecoveryInProgress();

	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	/* no database: pg_database is a shared catalog */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_activity(STATE_RUNNING, "tokenvault launcher");
	cxt = AllocSetContextCreate(TopMemoryContext, "tokenvault launcher", ALLOCSET_DEFAULT_SIZES);
	stop_orphans();
	SpinLockAcquire(&launcher->mutex);
	launcher->latch = MyLatch;
	SpinLockRelease(&launcher->mutex);

	for (;;)
	{
		TimestampTz now;
		TimestampTz next;
		long		secs;
		int			usecs;

		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			rescan_at = 0;		/* tokenvault.database may name another */
		}
		now = GetCurrentTimestamp();
		if (take_news() || now >= rescan_at || (was_standby && !RecoveryInProgress()))
		{
			scan_databases(cxt);
			(void) follow_recovery(&was_standby);
			rescan_at = TimestampTzPlusMilliseconds(now, RESCAN_MS);
		}
		/*
		 * What no statement announced (a CREATE EXTENSION in a prepared
		 * transaction, one made while tokenvault was not preloaded) is
		 * found all the same, if later.
		 */
		if (now >= reprobe_at)
		{
			forget_absent();
			reprobe_at = TimestampTzPlusMilliseconds(now, REPROBE_MS);
		}
		/* handles and names live in the launcher's own context */
		MemoryContextSwitchTo(cxt);
		next = Min(reconcile(now), rescan_at);
		if (was_standby)
			next = Min(next, TimestampTzPlusMilliseconds(now, RECOVERY_CHECK_MS));
		TimestampDifference(GetCurrentTimestamp(), next, &secs, &usecs);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(secs * 1000L + (usecs + 999) / 1000, 1L), PG_WAIT_EXTENSION);
	}
}
