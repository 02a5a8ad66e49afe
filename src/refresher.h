/*
 * refresher.h: the refresher started on demand for a database the worker does not serve
 */
#ifndef TV_REFRESHER_H
#define TV_REFRESHER_H

#include "postgres.h"

extern PGDLLEXPORT void tv_refresher_main(Datum main_arg);

#endif
