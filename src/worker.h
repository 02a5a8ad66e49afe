/*
 * worker.h: the background worker that keeps one database's tokens alive
 */
#ifndef TV_WORKER_H
#define TV_WORKER_H

#include "postgres.h"

#include "postmaster/bgworker.h"

extern void tv_worker_shmem_request(void);
extern void tv_worker_shmem_startup(void);
extern PGDLLEXPORT void tv_worker_main(Datum main_arg);

/* For the launcher, which hands out the workers' slots. */
extern int	tv_worker_free_slot(void);
extern bool tv_worker_launch(int slot, Oid dbid, const char *dbname, bool promoted,
							 BackgroundWorkerHandle **handle);
extern void tv_worker_note_promotion(void);
extern bool tv_worker_left_for_good(int slot);
extern void tv_worker_release(int slot);
extern pid_t tv_worker_pid(int slot);

/* For statements about a database. */
extern void tv_worker_terminate(Oid dbid);
extern void tv_worker_recheck(Oid dbid);

#endif
