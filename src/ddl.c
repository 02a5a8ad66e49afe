/*
 * ddl.c: the statements about databases and the extension the launcher must hear of
 *
 * CREATE EXTENSION tokenvault and CREATE DATABASE tell the launcher when
 * they commit, so that a new database's worker starts within a moment, not
 * at the launcher's next look at pg_database.  DROP EXTENSION tells the
 * database's worker to look, and leave.
 *
 * DROP DATABASE (and a rename, a move to another tablespace, a copy as a
 * template) needs the database to itself: it waits 5 s for other connections
 * to go, then fails.  The database's worker is one, so it is stopped before
 * the statement runs, and held off for a moment (launcher.c); so is a
 * refresher started on demand there.  Only the
 * database's owner (or a superuser) can do so: anyone may type DROP
 * DATABASE, and a role that could stop another database's worker at will
 * could let its tokens expire.
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/acl.h"

#include "ddl.h"
#include "flight.h"
#include "launcher.h"
#include "worker.h"

static ProcessUtility_hook_type prev_process_utility = NULL;

/* What this transaction will tell when it commits. */
static bool extension_created = false;
static bool extension_dropped = false;
static bool databases_changed = false;
static bool callback_registered = false;

static void
tell_at_commit(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT)
	{
		if (extension_created)
			tv_launcher_extension_created(MyDatabaseId);
		if (extension_dropped)
			tv_worker_recheck(MyDatabaseId);
		if (databases_changed)
			tv_launcher_rescan();
	}
	/* a prepared transaction's statements are found by the launcher's next probes instead */
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT || event == XACT_EVENT_PREPARE ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT)
		extension_created = extension_dropped = databases_changed = false;
}

static void
tell_later(bool *what)
{
	if (!callback_registered)
	{
		RegisterXactCallback(tell_at_commit, NULL);
		callback_registered = true;
	}
	*what = true;
}

/* Stop the named database's worker, if the caller may take the database away. */
static void
step_aside(const char *dbname)
{
	Oid			dbid;

	if (dbname == NULL || !OidIsValid(dbid = get_database_oid(dbname, true)))
		return;
	if (!pg_database_ownercheck(dbid, GetUserId()))
		return;
	tv_launcher_step_aside(dbid);
	tv_flight_stop_refresher(dbid);
}

static bool
names_tokenvault(List *objects)
{
	ListCell   *lc;

	foreach(lc, objects)
		if (strcmp(strVal(lfirst(lc)), "tokenvault") == 0)
			return true;
	return false;
}

/* The name a list of options gives one, or NULL. */
static const char *
option(List *options, const char *name)
{
	ListCell   *lc;

	foreach(lc, options)
	{
		DefElem    *d = lfirst_node(DefElem, lc);

		if (strcmp(d->defname, name) == 0 && d->arg != NULL)
			return defGetString(d);
	}
	return NULL;
}

static void
before_statement(Node *stmt)
{
	switch (nodeTag(stmt))
	{
		case T_CreateExtensionStmt:
			if (strcmp(((CreateExtensionStmt *) stmt)->extname, "tokenvault") == 0)
				tell_later(&extension_created);
			break;
		case T_DropStmt:
			if ((((DropStmt *) stmt)->removeType == OBJECT_EXTENSION &&
				 names_tokenvault(((DropStmt *) stmt)->objects)) ||
				((DropStmt *) stmt)->removeType == OBJECT_SCHEMA)
				tell_later(&extension_dropped);
			break;
		case T_DropdbStmt:
			step_aside(((DropdbStmt *) stmt)->dbname);
			tell_later(&databases_changed);
			break;
		case T_RenameStmt:
			if (((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
			{
				step_aside(((RenameStmt *) stmt)->subname);
				tell_later(&databases_changed);
			}
			break;
		case T_AlterDatabaseStmt:
			if (option(((AlterDatabaseStmt *) stmt)->options, "tablespace") != NULL)
				step_aside(((AlterDatabaseStmt *) stmt)->dbname);
			/* ALLOW_CONNECTIONS, IS_TEMPLATE decide whether it gets a worker */
			tell_later(&databases_changed);
			break;
		case T_CreatedbStmt:
			step_aside(option(((CreatedbStmt *) stmt)->options, "template"));
			tell_later(&databases_changed);
			break;
		default:
			break;
	}
}

static void
process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
				ProcessUtilityContext context, ParamListInfo params,
				QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	before_statement(pstmt->utilityStmt);
	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
}

void
tv_ddl_install(void)
{
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = process_utility;
}
