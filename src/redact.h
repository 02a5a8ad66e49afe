/*
 * redact.h: whether a provider's text may be quoted
 */
#ifndef TV_REDACT_H
#define TV_REDACT_H

#include "postgres.h"

#include "nodes/pg_list.h"

extern char *tv_redact_quote(const char *text, List *secrets, int max);

#endif
