/*
 * events.h: webhook deliveries, signed, sent by the worker
 */
#ifndef TV_EVENTS_H
#define TV_EVENTS_H

#include "postgres.h"

#include "utils/timestamp.h"

#include "http.h"

extern TimestampTz tv_webhooks_send(TvHttpMulti *multi);
extern char *tv_webhook_signature(const char *secret, const char *timestamp, const char *body);

#endif
