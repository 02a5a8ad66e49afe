/*
 * engine.h: serving a refresher's flights, many requests at once
 */
#ifndef TV_ENGINE_H
#define TV_ENGINE_H

#include "postgres.h"

#include "http.h"

extern void tv_engine_start(TvHttpMulti *multi);
extern void tv_engine_serve(long timeout_ms);
extern bool tv_engine_busy(void);

#endif
