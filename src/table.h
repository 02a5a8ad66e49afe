/*
 * table.h: tokenvault's tables, opened by name
 */
#ifndef TV_TABLE_H
#define TV_TABLE_H

#include "storage/lockdefs.h"
#include "utils/relcache.h"

extern Relation tv_table_open(const char *name, LOCKMODE lockmode);

#endif
