/*
 * tokenvault.c: module entry point, and _caller()
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "ddl.h"
#include "flight.h"
#include "host_policy.h"
#include "keyring.h"
#include "launcher.h"
#include "settings.h"
#include "worker.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	tv_flight_shmem_request();
	tv_worker_shmem_request();
	tv_launcher_shmem_request();
	tv_keyring_shmem_request();
}

static void
shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	tv_flight_shmem_startup();
	tv_worker_shmem_startup();
	tv_launcher_shmem_startup();
	tv_keyring_shmem_startup();
}

void
_PG_init(void)
{
	tv_keyring_define_settings();
	tv_settings_define();
	tv_host_policy_define_settings();
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
		tv_launcher_register();
		tv_ddl_install();
	}
}

PG_FUNCTION_INFO_V1(tv_caller);

/*
 * _caller() returns name: the role that called, as set by login or SET ROLE.
 * Inside a SECURITY DEFINER function current_user is the definer.
 */
Datum
tv_caller(PG_FUNCTION_ARGS)
{
	PG_RETURN_DATUM(DirectFunctionCall1(namein,
										CStringGetDatum(GetUserNameFromId(GetOuterUserId(), false))));
}
