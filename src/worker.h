/*
 * worker.h: the background worker that keeps tokens alive
 */
#ifndef TV_WORKER_H
#define TV_WORKER_H

#include "postgres.h"

#include "utils/timestamp.h"

extern void tv_worker_shmem_request(void);
extern void tv_worker_shmem_startup(void);
extern void tv_worker_register(void);
extern PGDLLEXPORT void tv_worker_main(Datum main_arg);

#endif
