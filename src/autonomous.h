/*
 * autonomous.h: a fixed statement committed apart from the caller's transaction
 */
#ifndef TV_AUTONOMOUS_H
#define TV_AUTONOMOUS_H

#include "postgres.h"

extern PGDLLEXPORT void tv_autonomous_main(Datum main_arg);

#endif
