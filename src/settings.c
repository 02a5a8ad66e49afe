/*
 * settings.c: tokenvault's settings (GUCs), but for the key ring's own
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "postmaster/interrupt.h"
#include "utils/guc.h"

#include "settings.h"

int			tv_min_validity = 30;
char	   *tv_ca_file = NULL;
int			tv_http_timeout = 10;
int			tv_max_response_size = 1024;
char	   *tv_database = NULL;
int			tv_max_databases = 8;
int			tv_refresh_lead = 60;
int			tv_expiry_notice = 7 * 24 * 3600;
int			tv_max_concurrent_refreshes = 32;
int			tv_event_retention = 7 * 24 * 3600;
static int	tv_webhook_max_age = 3 * 24 * 3600;
static int	tv_webhook_max_backlog = 10000;
static int	tv_webhook_disable_after = 3 * 24 * 3600;
static double tv_notify_max_queue_usage = 0.5;
int			tv_min_refresh_interval = 10;
int			tv_max_refreshes_per_role = 64;
int			tv_max_refreshes_per_database = 128;
int			tv_synchronous_commit = SYNCHRONOUS_COMMIT_REMOTE_FLUSH;

/* Only levels that wait for a synchronous standby to have the commit (durable.c). */
static const struct config_enum_entry durable_levels[] = {
	{"on", SYNCHRONOUS_COMMIT_REMOTE_FLUSH, false},
	{"remote_apply", SYNCHRONOUS_COMMIT_REMOTE_APPLY, false},
	{NULL, 0, false}
};

void
tv_settings_define(void)
{
	/*
	 * Any role may ask for more, but never for more than half a token's
	 * life (auth.c, _refresh_plan): a token just refreshed always satisfies
	 * it, so no setting can have every call send a request.
	 */
	DefineCustomIntVariable("tokenvault.min_validity",
							"How long a token returned by access_token() must stay valid.",
							"At most half the token's lifetime is asked for, whatever the setting.",
							&tv_min_validity,
							30, 0, 24 * 3600,
							PGC_USERSET, GUC_UNIT_S,
							NULL, NULL, NULL);

	/*
	 * The HTTP rules protect secrets on the wire, so only a superuser may
	 * relax them.  (Plain http is a client's or webhook's own setting.)
	 */
	DefineCustomStringVariable("tokenvault.ca_file",
							   "CA certificates to verify providers with, instead of the system's.",
							   NULL,
							   &tv_ca_file,
							   "",
							   PGC_SUSET, 0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("tokenvault.http_timeout",
							"Longest a token request may take, connecting included.",
							NULL,
							&tv_http_timeout,
							10, 1, 300,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("tokenvault.max_response_size",
							"Largest provider response read.",
							NULL,
							&tv_max_response_size,
							1024, 16, 1024 * 1024,
							PGC_SUSET, GUC_UNIT_KB,
							NULL, NULL, NULL);

	/*
	 * The limits below stand between an application and the provider and
	 * the other databases, so only a superuser may change them (for a role:
	 * ALTER ROLE ... SET).
	 */
	DefineCustomIntVariable("tokenvault.min_refresh_interval",
							"How long after an auth's last refresh refresh_auth() returns that refresh's result instead of sending a request.",
							NULL,
							&tv_min_refresh_interval,
							10, 0, 3600,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("tokenvault.max_refreshes_per_role",
							"Token refreshes one role may have under way at once, in all databases.",
							NULL,
							&tv_max_refreshes_per_role,
							64, 1, 1024,
							PGC_SUSET, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("tokenvault.max_refreshes_per_database",
							"Token refreshes callers in one database may have under way at once.",
							NULL,
							&tv_max_refreshes_per_database,
							128, 1, 1024,
							PGC_SUSET, 0,
							NULL, NULL, NULL);

	/*
	 * A refresh's answer is committed at least this synchronously, whatever
	 * a role, a database or a session says: with a synchronous standby a
	 * rotated refresh token is on two servers before it is used.
	 */
	DefineCustomEnumVariable("tokenvault.synchronous_commit",
							 "synchronous_commit at least, for the commits that store what a provider answered.",
							 "on: a synchronous standby has a new refresh token before it is used; "
							 "remote_apply: and standbys read it at once.",
							 &tv_synchronous_commit,
							 SYNCHRONOUS_COMMIT_REMOTE_FLUSH, durable_levels,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	/* without preloading there is no launcher, and no worker */
	if (process_shared_preload_libraries_in_progress)
	{
		DefineCustomStringVariable("tokenvault.database",
								   "The one database tokenvault's workers serve; empty: every database that has the extension.",
								   NULL,
								   &tv_database,
								   "",
								   PGC_SIGHUP, 0,
								   NULL, NULL, NULL);
		DefineCustomIntVariable("tokenvault.max_databases",
								"How many databases have a tokenvault worker at most.",
								"Each takes a background worker slot (max_worker_processes).",
								&tv_max_databases,
								8, 1, 1024,
								PGC_POSTMASTER, 0,
								NULL, NULL, NULL);
	}

	DefineCustomIntVariable("tokenvault.refresh_lead",
							"How long before a token expires the worker refreshes it.",
							NULL,
							&tv_refresh_lead,
							60, 1, 24 * 3600,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("tokenvault.expiry_notice",
							"How long before an auth that cannot be refreshed expires it is announced (auth.expiring).",
							NULL,
							&tv_expiry_notice,
							7 * 24 * 3600, 0, 365 * 24 * 3600,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("tokenvault.max_concurrent_refreshes",
							"Token requests the worker has in flight at once, at most.",
							NULL,
							&tv_max_concurrent_refreshes,
							32, 1, 1024,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("tokenvault.event_retention",
							"How long delivered events are kept.",
							NULL,
							&tv_event_retention,
							7 * 24 * 3600, 0, 3650 * 24 * 3600,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	/*
	 * What a receiver that stops answering may cost: its undelivered events
	 * are dropped past an age or a count, and it is disabled after failing
	 * for so long.  Read by the worker, in SQL (worker.sql).
	 */
	DefineCustomIntVariable("tokenvault.webhook_max_age",
							"How long an event waits for a webhook before it is dropped.",
							NULL,
							&tv_webhook_max_age,
							3 * 24 * 3600, 60, 3650 * 24 * 3600,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("tokenvault.webhook_max_backlog",
							"How many events may wait for one webhook; the oldest beyond are dropped.",
							NULL,
							&tv_webhook_max_backlog,
							10000, 10, 100000000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("tokenvault.webhook_disable_after",
							"How long a webhook may fail every delivery before it is disabled.",
							NULL,
							&tv_webhook_disable_after,
							3 * 24 * 3600, 60, 3650 * 24 * 3600,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	/*
	 * A NOTIFY that does not fit fails the COMMIT of whatever sent it, a
	 * refresh's result included; past this share of the queue events are
	 * recorded without one (listeners catch up from tokenvault.events).
	 */
	DefineCustomRealVariable("tokenvault.notify_max_queue_usage",
							 "Share of the NOTIFY queue past which events are recorded without a NOTIFY.",
							 NULL,
							 &tv_notify_max_queue_usage,
							 0.5, 0.0, 1.0,
							 PGC_SUSET, 0,
							 NULL, NULL, NULL);
}

/* In a background process's loop: read the configuration again if asked (SIGHUP). */
void
tv_reload_if_asked(void)
{
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
}
