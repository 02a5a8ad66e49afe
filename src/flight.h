/*
 * flight.h: one refresh at a time per auth, handed to a refresher through shared memory
 */
#ifndef TV_FLIGHT_H
#define TV_FLIGHT_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "utils/uuid.h"

#include "verdict.h"

#define TV_REFRESH_MESSAGE_LEN 256

/* A flight as a refresher claims it: what to refresh, and its ticket to report under. */
typedef struct TvFlight
{
	pg_uuid_t	auth_id;
	uint64		ticket;			/* tells this flight from a later one of the same auth */
	int			slot;			/* where it is in shared memory */
	bool		force;
	int			min_validity;
} TvFlight;

extern void tv_flight_shmem_request(void);
extern void tv_flight_shmem_startup(void);

/* For backends: have an auth refreshed and wait. */
extern TvOutcome tv_refresh_wait(pg_uuid_t *auth_id, bool force, bool may_file, char *message);

/* For the worker's schedule. */
extern int	tv_flight_room(void);
extern bool tv_flight_worker_waits(void);
extern int	tv_flight_file_background(pg_uuid_t *ids, int n);
extern void tv_flight_reserve_database(void);
extern void tv_flight_release_database(Oid dbid);
extern void tv_flight_stop_refresher(Oid dbid);

/* For a refresher. */
extern bool tv_flight_attach(void);
extern bool tv_flight_leave_if_idle(void);
extern int	tv_flight_claim(TvFlight *claimed, int max);
extern void tv_flight_finish(const TvFlight *f, TvOutcome outcome, const char *message);
extern void tv_flight_count(TvOutcome outcome, double seconds);

extern void tv_flight_count_unconfirmed(void);
extern void tv_flight_stats(uint64 *succeeded, uint64 *failed, uint64 *unconfirmed,
							double *p50, double *p90, double *p99);

#endif
