/*
 * checks.h: health checks, sent by check_auth() and by the worker
 */
#ifndef TV_CHECKS_H
#define TV_CHECKS_H

#include "postgres.h"

#include "utils/timestamp.h"

#include "http.h"

extern TimestampTz tv_checks_send(TvHttpMulti *multi);
extern void tv_checks_record(void);

#endif
