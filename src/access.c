/*
 * access.c: who may use tokenvault in this database, and whose a private
 * client's auths are
 *
 * tokenvault_app and tokenvault_admin are cluster-wide roles: membership
 * alone would reach every database that has the extension.  So a role is
 * also admitted per database (tokenvault.admissions), and every entry point
 * asks here first.  access_token() asks on each call, so the caller's level
 * and the clients' owners are kept per backend, and forgotten when the
 * tables or role memberships change: the tables' statement triggers send a
 * relcache invalidation (tv_table_changed), which every backend receives at
 * the other's commit, and this one at its next command.  What is kept is
 * read with the latest snapshot, not the caller's: a repeatable-read
 * transaction that began before a dismissal would otherwise read the old
 * row after the invalidation, and keep it for good.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "catalog/pg_type_d.h"
#include "commands/dbcommands.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "access.h"
#include "probe.h"

static bool callbacks_registered = false;

/* the level of one role (the outer user), while admissions stay as they are */
static Oid	known_user = InvalidOid;
static TvLevel known_level;

/* client id -> its owner when it is private, while clients stay as they are */
typedef struct ClientOwner
{
	pg_uuid_t	id;
	bool		private;
	NameData	owner;
} ClientOwner;

static HTAB *client_owners = NULL;
static bool client_owners_stale = false;

enum
{
	CLIENT_ID,
	CLIENT_OWNER,
	CLIENT_VISIBILITY
};

enum
{
	ADMISSION_ROLE,
	ADMISSION_LEVEL
};

static TvTable admissions = {"admissions", {"role", "level"}, {REGROLEOID, TEXTOID}};

static TvTable clients = {"clients", {"id", "owner", "visibility"}, {UUIDOID, NAMEOID, TEXTOID}};

/* Invalidation callbacks only mark; what they invalidate is rebuilt on use. */
static void
forget_on_relcache(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == admissions.relid)
		known_user = InvalidOid;
	if (relid == InvalidOid || relid == clients.relid)
		client_owners_stale = true;
}

static void
forget_on_roles(Datum arg, int cacheid, uint32 hashvalue)
{
	known_user = InvalidOid;
}

static void
register_callbacks(void)
{
	if (callbacks_registered)
		return;
	CacheRegisterRelcacheCallback(forget_on_relcache, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, forget_on_roles, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHOID, forget_on_roles, (Datum) 0);
	callbacks_registered = true;
}

/*
 * A role's level: a superuser's is admin; another's the highest of the
 * admissions of roles whose privileges it has.  The table is read directly,
 * as the extension reads it, whoever calls (the policies run as the reader).
 */
static TvLevel
level_of(Oid role)
{
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tup;
	TvLevel		level = TV_LEVEL_NONE;

	if (superuser_arg(role))
		return TV_LEVEL_ADMIN;
	rel = tv_probe_open(&admissions);
	scan = systable_beginscan(rel, InvalidOid, false, GetLatestSnapshot(), 0, NULL);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		isnull;
		Oid			admitted = DatumGetObjectId(tv_probe_get(&admissions, ADMISSION_ROLE, tup,
															RelationGetDescr(rel), &isnull));
		char	   *name = TextDatumGetCString(tv_probe_get(&admissions, ADMISSION_LEVEL, tup,
															RelationGetDescr(rel), &isnull));
		TvLevel		this = strcmp(name, "admin") == 0 ? TV_LEVEL_ADMIN : TV_LEVEL_APP;

		if (this > level && has_privs_of_role(role, admitted))
			level = this;
	}
	systable_endscan(scan);
	tv_probe_close(rel);
	return level;
}

/* Whether the role that called (login or SET ROLE) is admitted at need or above. */
bool
tv_admitted(TvLevel need)
{
	Oid			user = GetOuterUserId();

	register_callbacks();
	if (user != known_user)
	{
		known_level = level_of(user);
		known_user = user;
	}
	return known_level >= need;
}

void
tv_require_admission(TvLevel need)
{
	const char *role;
	const char *db;

	if (tv_admitted(need))
		return;
	role = GetUserNameFromId(GetOuterUserId(), false);
	db = get_database_name(MyDatabaseId);
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("role \"%s\" is not admitted to tokenvault%s in database \"%s\"",
					role, need == TV_LEVEL_ADMIN ? " as an administrator" : "", db),
			 errdetail("Membership in tokenvault_app or tokenvault_admin reaches every database; "
					   "each database admits its roles."),
			 errhint("A superuser admits it in this database: SELECT tokenvault.admit('%s', '%s');",
					 role, need == TV_LEVEL_ADMIN ? "admin" : "app")));
}

static void
fill_client_owner(TvTable *t, HeapTuple tup, TupleDesc desc, void *arg)
{
	ClientOwner *entry = (ClientOwner *) arg;
	bool		isnull;
	char	   *visibility = TextDatumGetCString(tv_probe_get(t, CLIENT_VISIBILITY, tup, desc, &isnull));

	entry->private = strcmp(visibility, "private") == 0;
	namestrcpy(&entry->owner, NameStr(*DatumGetName(tv_probe_get(t, CLIENT_OWNER, tup, desc, &isnull))));
}

/* The client's owner and visibility, or NULL when there is no such client. */
static ClientOwner *
client_owner(pg_uuid_t *client_id)
{
	ClientOwner *entry;
	ClientOwner found;
	bool		present;

	register_callbacks();
	if (client_owners == NULL || client_owners_stale)
	{
		HASHCTL		ctl = {.keysize = sizeof(pg_uuid_t),.entrysize = sizeof(ClientOwner)};

		if (client_owners)
			hash_destroy(client_owners);
		client_owners = hash_create("tokenvault client owners", 64, &ctl, HASH_ELEM | HASH_BLOBS);
		client_owners_stale = false;
	}
	entry = hash_search(client_owners, client_id, HASH_FIND, NULL);
	if (entry)
		return entry;
	if (!tv_probe_by_id(&clients, client_id, GetLatestSnapshot(), fill_client_owner, &found))
		return NULL;
	/* an invalidation while probing (the table changed) would drop the entry */
	if (client_owners_stale)
		return memcpy(palloc(sizeof(found)), &found, sizeof(found));
	entry = hash_search(client_owners, client_id, HASH_ENTER, &present);
	entry->private = found.private;
	entry->owner = found.owner;
	return entry;
}

/*
 * A private client, and every auth of it, is its owner's alone (superusers
 * are members of every role); a client whose owner was dropped, no one's.
 */
static bool
may_use(ClientOwner *c)
{
	Oid			owner;

	if (c == NULL || !c->private)
		return true;
	owner = get_role_oid(NameStr(c->owner), true);
	return OidIsValid(owner) && is_member_of_role(GetOuterUserId(), owner);
}

void
tv_require_client_access(pg_uuid_t *client_id, pg_uuid_t *auth_id)
{
	ClientOwner *c = client_owner(client_id);

	if (may_use(c))
		return;
	if (auth_id)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("auth %s belongs to a client private to role \"%s\"",
						DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(auth_id))),
						NameStr(c->owner)),
				 errhint("Only members of role \"%s\" use the auths of a private client.", NameStr(c->owner))));
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("client %s is private to role \"%s\"",
					DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(client_id))),
					NameStr(c->owner)),
			 errhint("Only members of role \"%s\" use a private client.", NameStr(c->owner))));
}

/* ---- SQL-callable ---- */

PG_FUNCTION_INFO_V1(tv_admit_app);
PG_FUNCTION_INFO_V1(tv_admit_admin);
PG_FUNCTION_INFO_V1(tv_admitted_app);
PG_FUNCTION_INFO_V1(tv_admitted_admin);
PG_FUNCTION_INFO_V1(tv_client_visible);
PG_FUNCTION_INFO_V1(tv_require_client_access_sql);
PG_FUNCTION_INFO_V1(tv_table_changed);

/* _admit_app() returns void: raises unless the caller may use tokenvault here */
Datum
tv_admit_app(PG_FUNCTION_ARGS)
{
	tv_require_admission(TV_LEVEL_APP);
	PG_RETURN_VOID();
}

/* _admit_admin() returns void */
Datum
tv_admit_admin(PG_FUNCTION_ARGS)
{
	tv_require_admission(TV_LEVEL_ADMIN);
	PG_RETURN_VOID();
}

/* _admitted_app() returns boolean: for the row level security policies */
Datum
tv_admitted_app(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(tv_admitted(TV_LEVEL_APP));
}

/* _admitted_admin() returns boolean */
Datum
tv_admitted_admin(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(tv_admitted(TV_LEVEL_ADMIN));
}

/* _client_visible(client_id uuid) returns boolean: shared, or the caller's own */
Datum
tv_client_visible(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(tv_admitted(TV_LEVEL_APP) && may_use(client_owner(PG_GETARG_UUID_P(0))));
}

/* _require_client_access(client_id uuid, auth_id uuid) returns void */
Datum
tv_require_client_access_sql(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		PG_RETURN_VOID();
	tv_require_client_access(PG_GETARG_UUID_P(0), PG_ARGISNULL(1) ? NULL : PG_GETARG_UUID_P(1));
	PG_RETURN_VOID();
}

/* A statement trigger: the table changed, so every backend forgets what it kept of it. */
Datum
tv_table_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "tv_table_changed: not called as a trigger");
	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}
