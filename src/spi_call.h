/*
 * spi_call.h: a statement in a transaction of its own, for the background processes
 */
#ifndef TV_SPI_CALL_H
#define TV_SPI_CALL_H

#include "postgres.h"

#include "utils/elog.h"
#include "utils/jsonb.h"

extern Jsonb *tv_call_in_transaction(const char *sql, int nargs, Oid *types, Datum *values,
									 MemoryContext into);
extern ErrorData *tv_log_caught_error(const char *who);

#endif
