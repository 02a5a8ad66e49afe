/*
 * webhooks.h: webhook deliveries, signed, sent by the worker
 */
#ifndef TV_WEBHOOKS_H
#define TV_WEBHOOKS_H

#include "postgres.h"

#include "utils/timestamp.h"

#include "http.h"

extern TimestampTz tv_webhooks_send(TvHttpMulti *multi);
extern void tv_webhooks_record(void);

#endif
