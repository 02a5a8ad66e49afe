/*
 * refresh.h: one refresh at a time per auth, committed on its own
 */
#ifndef TV_REFRESH_H
#define TV_REFRESH_H

#include "postgres.h"

#include "utils/uuid.h"

#include "verdict.h"

#define TV_REFRESH_MESSAGE_LEN 256

extern void tv_refresh_shmem_request(void);
extern void tv_refresh_shmem_startup(void);
extern TvOutcome tv_refresh_wait(pg_uuid_t *auth_id, bool force, char *message);
extern PGDLLEXPORT void tv_refresher_main(Datum main_arg);

/* For the worker, which is the refresher of its database and more. */
extern bool tv_refresh_attach(void);
extern void tv_refresh_serve(long timeout_ms);
extern bool tv_refresh_busy(void);
extern int	tv_refresh_room(void);
extern int	tv_refresh_file_background(pg_uuid_t *ids, int n);
extern void tv_refresh_stats(uint64 *succeeded, uint64 *failed, double *p50, double *p90, double *p99);
extern struct TvHttpMulti *tv_refresh_multi(void);

/* Shared with the worker. */
extern void tv_reload_if_asked(void);

#endif
