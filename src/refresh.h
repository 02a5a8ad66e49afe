/*
 * refresh.h: one refresh at a time per auth, committed on its own
 */
#ifndef TV_REFRESH_H
#define TV_REFRESH_H

#include "postgres.h"

#include "utils/uuid.h"

/* What became of a refresh, as the refresher reports it to its waiters. */
typedef enum TvRefreshOutcome
{
	TV_REFRESH_DONE,			/* a new token is stored, or the stored one is valid */
	TV_REFRESH_NEEDS_REAUTH,
	TV_REFRESH_RETRYABLE,
	TV_REFRESH_FAILED
} TvRefreshOutcome;

#define TV_REFRESH_MESSAGE_LEN 256

extern void tv_refresh_shmem_request(void);
extern void tv_refresh_shmem_startup(void);
extern TvRefreshOutcome tv_refresh_wait(pg_uuid_t *auth_id, bool force, char *message);
extern PGDLLEXPORT void tv_refresher_main(Datum main_arg);

#endif
