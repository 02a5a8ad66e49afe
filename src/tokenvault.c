/*
 * tokenvault.c: module entry point, settings, and what every module shares
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/guc.h"

#include "keyring.h"
#include "refresh.h"
#include "tokenvault.h"
#include "worker.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

char	   *tv_key_file = NULL;
char	   *tv_key_command = NULL;
int			tv_min_validity = 30;
bool		tv_allow_insecure_http = false;
char	   *tv_ca_file = NULL;
int			tv_http_timeout = 10;
int			tv_max_response_size = 1024;
char	   *tv_database = NULL;
int			tv_refresh_lead = 60;
int			tv_expiry_notice = 7 * 24 * 3600;
int			tv_max_concurrent_refreshes = 32;
int			tv_event_retention = 7 * 24 * 3600;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	tv_refresh_shmem_request();
	tv_worker_shmem_request();
}

static void
shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	tv_refresh_shmem_startup();
	tv_worker_shmem_startup();
}

/* A changed key source must be read again before the next seal or open. */
static void
assign_key_source(const char *newval, void *extra)
{
	tv_keyring_invalidate();
}

void
_PG_init(void)
{
	/*
	 * The key settings are superuser-only: the key command runs as the
	 * server's operating-system user, and the key file is read with its
	 * rights.
	 */
	DefineCustomStringVariable("tokenvault.key_file",
							   "Key ring file; a relative path is relative to the data directory.",
							   "Created with one new key, mode 0600, on first use.",
							   &tv_key_file,
							   "tokenvault.keys",
							   PGC_SUSET, 0,
							   NULL, assign_key_source, NULL);

	DefineCustomStringVariable("tokenvault.key_command",
							   "Shell command that prints the key ring; overrides tokenvault.key_file.",
							   NULL,
							   &tv_key_command,
							   "",
							   PGC_SUSET, 0,
							   NULL, assign_key_source, NULL);

	DefineCustomIntVariable("tokenvault.min_validity",
							"How long a token returned by access_token() must stay valid.",
							NULL,
							&tv_min_validity,
							30, 0, 24 * 3600,
							PGC_USERSET, GUC_UNIT_S,
							NULL, NULL, NULL);

	/*
	 * The HTTP rules protect secrets on the wire, so only a superuser may
	 * relax them.
	 */
	DefineCustomBoolVariable("tokenvault.allow_insecure_http",
							 "Allows token requests over plain http (for tests and private networks).",
							 NULL,
							 &tv_allow_insecure_http,
							 false,
							 PGC_SUSET, 0,
							 NULL, NULL, NULL);

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

	/* only the postmaster may define a postmaster setting; without preloading there is no worker */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomStringVariable("tokenvault.database",
								   "Database the tokenvault worker serves.",
								   NULL,
								   &tv_database,
								   "postgres",
								   PGC_POSTMASTER, 0,
								   NULL, NULL, NULL);

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

	MarkGUCPrefixReserved("tokenvault");

	/*
	 * Refreshes are handed to a refresher through shared memory, which only
	 * a preloaded library can have; without it tokens that are valid are
	 * still served.
	 */
	if (process_shared_preload_libraries_in_progress)
	{
		prev_shmem_request_hook = shmem_request_hook;
		shmem_request_hook = shmem_request;
		prev_shmem_startup_hook = shmem_startup_hook;
		shmem_startup_hook = shmem_startup;
		tv_worker_register();
	}
}
