/*
 * refresher.c: the refresher started on demand for a database the worker does not serve
 *
 * flight.c starts one when a backend files a flight in a database with no
 * refresher.  It serves the flights with an engine of its own, and gives
 * its background worker slot back after IDLE_EXIT_SECS without any.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "engine.h"
#include "flight.h"
#include "http.h"
#include "refresher.h"
#include "settings.h"

#define IDLE_EXIT_SECS 300		/* a refresher with nothing to do gives its slot back */

void
tv_refresher_main(Datum main_arg)
{
	Oid			dbid = DatumGetObjectId(main_arg);
	TimestampTz last_work;

	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dbid, InvalidOid, 0);
	if (!tv_flight_attach())
		proc_exit(0);			/* another refresher serves this database already */
	MemoryContextSwitchTo(TopMemoryContext);
	tv_engine_start(tv_http_multi_create());

	last_work = GetCurrentTimestamp();
	for (;;)
	{
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		/* settings changed mid-queue (a CA file, a timeout) apply to the next request */
		tv_reload_if_asked();
		if (tv_engine_busy())
			last_work = GetCurrentTimestamp();
		/*
		 * an idle refresher would hold a max_worker_processes slot for
		 * nothing, and one whose database now has a worker keeps that worker
		 * waiting
		 */
		else if ((tv_flight_worker_waits() ||
				  TimestampDifferenceExceeds(last_work, GetCurrentTimestamp(), IDLE_EXIT_SECS * 1000)) &&
				 tv_flight_leave_if_idle())
			proc_exit(0);
		tv_engine_serve(tv_engine_busy() ? 1000L : 60000L);
	}
}
