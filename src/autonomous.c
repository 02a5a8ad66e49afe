/*
 * autonomous.c: a fixed statement committed apart from the caller's transaction
 *
 * An authorization state is single use: once complete_authorization() has
 * taken it, no later call may, whether the code exchange that follows
 * succeeds, fails or is rolled back.  Deleting the state in the caller's
 * transaction is not enough: the exchange's failure (an error, a rollback)
 * brings the row back, and the same state can be tried again.
 *
 * PostgreSQL has no autonomous transactions, so the deletion is run by a
 * short-lived background worker, connected to the caller's database as the
 * caller's current user: it deletes the row, commits, reports how many rows
 * it deleted through a dynamic shared memory segment, and exits.  The caller
 * waits for it (interruptibly) and goes on only if that commit deleted the
 * row.  Two callers with the same state: the second deletion waits for the
 * first's row lock, then finds nothing; exactly one wins.
 *
 * What runs is one of the statements below, chosen by number; no SQL text
 * ever comes from a caller.
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type_d.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "autonomous.h"
#include "spi.h"

#define ARG_MAX 256				/* longer than any state authorize_url() makes */
#define MESSAGE_MAX 256
/* a row lock held longer than this (not by another consumer: they are quick) is an error */
#define LOCK_TIMEOUT "10s"

typedef enum Statement
{
	CONSUME_STATE
} Statement;

/* Each statement takes one text argument; every name is qualified. */
static const char *const statements[] = {
	[CONSUME_STATE] = "DELETE FROM tokenvault.auth_states s WHERE s.state OPERATOR(pg_catalog.=) $1",
};

typedef enum Outcome
{
	OUTCOME_NONE = 0,			/* the worker did not get to report */
	OUTCOME_DONE,				/* committed: processed rows */
	OUTCOME_FAILED				/* rolled back: sqlerrcode, message */
} Outcome;

/* The segment the caller and its worker share. */
typedef struct Apart
{
	Oid			dbid;
	Oid			userid;
	Statement	statement;
	char		arg[ARG_MAX];
	Outcome		outcome;
	uint64		processed;
	int			sqlerrcode;
	char		message[MESSAGE_MAX];
} Apart;

/* ---- the worker ---- */

static uint64
run_statement(Apart *a)
{
	Datum		arg = CStringGetTextDatum(a->arg);
	Oid			argtype = TEXTOID;
	Oid			save_user;
	int			save_sec;
	uint64		processed;

	/* the statement has the caller's rights, no more: it runs as the caller's current user */
	GetUserIdAndSecContext(&save_user, &save_sec);
	SetUserIdAndSecContext(a->userid, save_sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	if (SPI_execute_with_args(statements[a->statement], 1, &argtype, &arg, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "tokenvault: a statement run apart failed");
	processed = SPI_processed;
	SetUserIdAndSecContext(save_user, save_sec);
	return processed;
}

void
tv_autonomous_main(Datum main_arg)
{
	dsm_segment *seg;
	Apart	   *a;
	ErrorData  *edata;
	uint64		processed;

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	/* gone: the caller gave up (an error, a cancel) before this started; nothing is done */
	seg = dsm_attach(DatumGetUInt32(main_arg));
	if (seg == NULL)
		proc_exit(0);
	a = dsm_segment_address(seg);
	/* only a statement of the table above, whatever the segment says */
	if ((int) a->statement < 0 || (int) a->statement >= (int) lengthof(statements))
		proc_exit(1);
	a->arg[ARG_MAX - 1] = '\0';
	BackgroundWorkerInitializeConnectionByOid(a->dbid, InvalidOid, 0);
	SetConfigOption("lock_timeout", LOCK_TIMEOUT, PGC_SUSET, PGC_S_OVERRIDE);
	MemoryContextSwitchTo(TopMemoryContext);

	PG_TRY();
	{
		tv_spi_begin();
		processed = run_statement(a);
		tv_spi_end();
		a->processed = processed;
		pg_write_barrier();
		a->outcome = OUTCOME_DONE;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(TopMemoryContext);
		edata = tv_log_caught_error("tokenvault: a statement run apart");
		a->sqlerrcode = edata->sqlerrcode;
		strlcpy(a->message, edata->message, MESSAGE_MAX);
		pg_write_barrier();
		a->outcome = OUTCOME_FAILED;
	}
	PG_END_TRY();
	dsm_detach(seg);
	proc_exit(0);
}

/* ---- the caller ---- */

static BackgroundWorkerHandle *
start_worker(dsm_segment *seg)
{
	BackgroundWorker worker = {0};
	BackgroundWorkerHandle *handle;

	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "tokenvault");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "tv_autonomous_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "tokenvault state consumer for PID %d", MyProcPid);
	snprintf(worker.bgw_type, BGW_MAXLEN, "tokenvault state consumer");
	worker.bgw_main_arg = UInt32GetDatum(dsm_segment_handle(seg));
	worker.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("no background worker slot is free to consume the authorization state"),
				 errdetail("The state was not used: the same call can be tried again."),
				 errhint("Raise max_worker_processes: complete_authorization() needs a free slot for a moment.")));
	return handle;
}

/*
 * Wait for the worker to end, interruptibly.  A caller cancelled while it
 * waits takes its worker with it: the statement then commits or not, as it
 * happens, and the caller goes no further either way.
 */
static void
wait_for(BackgroundWorkerHandle *handle)
{
	BgwHandleStatus status = BGWH_STOPPED;

	PG_TRY();
	{
		status = WaitForBackgroundWorkerShutdown(handle);
	}
	PG_CATCH();
	{
		TerminateBackgroundWorker(handle);
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (status == BGWH_POSTMASTER_DIED)
		ereport(FATAL,
				(errcode(ERRCODE_ADMIN_SHUTDOWN),
				 errmsg("postmaster exited while tokenvault consumed an authorization state")));
}

/*
 * Run a statement in a worker of its own and return how many rows its
 * committed transaction changed.  Raises the worker's error if it rolled
 * back.
 */
static uint64
run_apart(Statement statement, const char *arg)
{
	dsm_segment *seg;
	Apart	   *a;
	uint64		processed;

	/* a worker never starts on a standby, and could write nothing there */
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot complete an authorization during recovery"),
				 errhint("Call complete_authorization() on the primary.")));
	if (strlen(arg) >= ARG_MAX)
		elog(ERROR, "tokenvault: an argument of %zu bytes is too long to run apart", strlen(arg));

	seg = dsm_create(sizeof(Apart), 0);
	a = dsm_segment_address(seg);
	memset(a, 0, sizeof(Apart));
	a->dbid = MyDatabaseId;
	a->userid = GetUserId();
	a->statement = statement;
	strlcpy(a->arg, arg, ARG_MAX);

	wait_for(start_worker(seg));
	pg_read_barrier();
	if (a->outcome == OUTCOME_FAILED)
		ereport(ERROR,
				(errcode(a->sqlerrcode),
				 errmsg("could not consume the authorization state: %s", a->message),
				 errdetail("The state was not used: the same call can be tried again."),
				 errhint("The server log has the whole error.")));
	if (a->outcome != OUTCOME_DONE)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("the tokenvault state consumer ended without reporting"),
				 errdetail("The state may have been used."),
				 errhint("See the server log; start again with tokenvault.authorize_url().")));
	processed = a->processed;
	dsm_detach(seg);
	return processed;
}

/* Delete the state in the caller's own transaction. */
static uint64
run_here(Statement statement, const char *arg)
{
	Datum		value = CStringGetTextDatum(arg);
	Oid			argtype = TEXTOID;
	uint64		processed;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "tokenvault: could not connect to SPI");
	if (SPI_execute_with_args(statements[statement], 1, &argtype, &value, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "tokenvault: \"%s\" failed", statements[statement]);
	processed = SPI_processed;
	SPI_finish();
	return processed;
}

PG_FUNCTION_INFO_V1(tv_consume_state);

/*
 * _consume_state(state text, made_by xid) returns boolean: whether this call
 * took the state, for good, before anything else happens.  made_by is the
 * xmin of the state's row as the caller read it: a state made in the
 * caller's own transaction (and not yet committed, so no worker could see
 * it) lives and dies with that transaction, and deleting it there is final
 * enough.
 */
Datum
tv_consume_state(PG_FUNCTION_ARGS)
{
	char	   *state = text_to_cstring(PG_GETARG_TEXT_PP(0));
	TransactionId made_by = PG_GETARG_TRANSACTIONID(1);

	if (TransactionIdIsCurrentTransactionId(made_by))
		PG_RETURN_BOOL(run_here(CONSUME_STATE, state) == 1);
	PG_RETURN_BOOL(run_apart(CONSUME_STATE, state) == 1);
}
