/*
 * probe.h: reading a row of tokenvault's tables by a direct index probe
 */
#ifndef TV_PROBE_H
#define TV_PROBE_H

#include "postgres.h"

#include "access/htup.h"
#include "access/skey.h"
#include "utils/relcache.h"
#include "utils/snapshot.h"
#include "utils/uuid.h"

#define TV_PROBE_MAX_COLUMNS 12

/*
 * A table and the columns a caller reads of it, by name and type.  Their
 * attribute numbers are looked up once per relation (again after it
 * changes), so the hot paths neither hard-code them nor search the
 * descriptor on each call; a column of another type is refused, not misread.
 */
typedef struct TvTable
{
	const char *name;			/* in schema tokenvault */
	const char *columns[TV_PROBE_MAX_COLUMNS];	/* NULL-terminated */
	Oid			types[TV_PROBE_MAX_COLUMNS];	/* what the caller reads each as */
	/* resolved */
	Oid			relid;
	uint64		resolved_at;	/* invalidations seen when resolved */
	AttrNumber	attnums[TV_PROBE_MAX_COLUMNS];
} TvTable;

extern Relation tv_probe_open(TvTable *t);
extern void tv_probe_close(Relation rel);
extern AttrNumber tv_probe_attnum(TvTable *t, int column);
extern Datum tv_probe_get(TvTable *t, int column, HeapTuple tup, TupleDesc desc, bool *isnull);
extern bool tv_probe_by_id(TvTable *t, pg_uuid_t *id, Snapshot snapshot,
						   void (*fill) (TvTable *t, HeapTuple tup, TupleDesc desc, void *arg),
						   void *arg);

#endif
