/*
 * durable.c: committing what a provider answered so that a failover keeps it
 *
 * A provider that rotates refresh tokens spends the old one when it answers:
 * a commit of its answer that a failover loses leaves the new primary with
 * a refresh token the provider has already refused.  So the transactions
 * that mark a refresh as sent and store its answer commit with
 * synchronous_commit no weaker than tokenvault.synchronous_commit, whatever
 * the role, the database or the session asked for (only ever raised for the
 * transaction at hand).  Without a synchronous standby this changes nothing.
 *
 * PostgreSQL's trap: a synchronous-replication wait that is cancelled (a
 * terminate, a shutdown, a cancel) commits locally all the same, with only
 * a WARNING.  tv_durable_confirmed() tells afterwards whether the standbys
 * the commit waited for have the commit record.
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "fmgr.h"
#include "replication/syncrep.h"
#include "replication/walsender.h"
#include "replication/walsender_private.h"
#include "storage/lwlock.h"
#include "utils/guc.h"

#include "durable.h"
#include "settings.h"

/* the synchronous-replication wait mode of the transaction raised here */
static int	wait_mode = SYNC_REP_WAIT_FLUSH;
/* the last commit record before it: a transaction that writes none has nothing to confirm */
static XLogRecPtr commit_before = InvalidXLogRecPtr;

/*
 * Raise synchronous_commit for the current transaction to
 * tokenvault.synchronous_commit, if it is weaker.
 */
void
tv_durable_begin(void)
{
	int			level = Max(synchronous_commit, tv_synchronous_commit);

	if (synchronous_commit < tv_synchronous_commit)
		(void) set_config_option("synchronous_commit",
								 tv_synchronous_commit == SYNCHRONOUS_COMMIT_REMOTE_APPLY ? "remote_apply" : "on",
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0, false);
	wait_mode = level == SYNCHRONOUS_COMMIT_REMOTE_APPLY ? SYNC_REP_WAIT_APPLY : SYNC_REP_WAIT_FLUSH;
	commit_before = XactLastCommitEnd;
}

/*
 * After a commit made under tv_durable_begin(): whether the synchronous
 * standbys have it (true too when there are none to wait for).  False when
 * the wait was cut short and the commit is on this server alone.
 */
bool
tv_durable_confirmed(void)
{
	XLogRecPtr	lsn = XactLastCommitEnd;
	bool		confirmed;

	if (lsn == commit_before || WalSndCtl == NULL || max_wal_senders == 0 || XLogRecPtrIsInvalid(lsn) ||
		SyncRepStandbyNames == NULL || SyncRepStandbyNames[0] == '\0')
		return true;

	/*
	 * How far the synchronous standbys have released waiters.  (Only lsn[]
	 * is read of WalSndCtlData: the flag beside it changed type in a minor
	 * release, while the setting tells the same.)
	 */
	LWLockAcquire(SyncRepLock, LW_SHARED);
	confirmed = WalSndCtl->lsn[wait_mode] >= lsn;
	LWLockRelease(SyncRepLock);
	return confirmed;
}

/*
 * tokenvault._durable_commit(): the same for an SQL transaction that stores
 * a provider's answer (complete_authorization()), till it ends.
 */
PG_FUNCTION_INFO_V1(tv_durable_commit);
Datum
tv_durable_commit(PG_FUNCTION_ARGS)
{
	tv_durable_begin();
	PG_RETURN_VOID();
}
