/*
 * launcher.h: a worker for every database that has tokenvault
 */
#ifndef TV_LAUNCHER_H
#define TV_LAUNCHER_H

#include "postgres.h"

extern void tv_launcher_shmem_request(void);
extern void tv_launcher_shmem_startup(void);
extern void tv_launcher_register(void);
extern PGDLLEXPORT void tv_launcher_main(Datum main_arg);
extern PGDLLEXPORT void tv_probe_main(Datum main_arg);

/* What backends tell it, once their statements commit (ddl.c). */
extern void tv_launcher_extension_created(Oid dbid);
extern void tv_launcher_rescan(void);
extern void tv_launcher_step_aside(Oid dbid);

#endif
