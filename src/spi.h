/*
 * spi.h: the worker's and refreshers' statements, each in a transaction of its own
 */
#ifndef TV_SPI_H
#define TV_SPI_H

#include "postgres.h"

#include "access/htup.h"
#include "access/tupdesc.h"
#include "utils/elog.h"
#include "utils/timestamp.h"

extern void tv_spi_begin(void);
extern HeapTuple tv_spi_row(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls,
							TupleDesc *desc);
extern void tv_spi_end(void);
extern ErrorData *tv_log_caught_error(const char *who);

extern Oid	tv_type_oid(const char *name);
extern void tv_spi_check_row(TupleDesc desc, const char *what, int natts, const Oid *types);

/* Reading a column of that row, copied into the current memory context. */
extern char *tv_spi_text(HeapTuple row, TupleDesc desc, int attno);
extern TimestampTz tv_spi_timestamptz(HeapTuple row, TupleDesc desc, int attno);

#endif
