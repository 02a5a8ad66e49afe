/*
 * table.c: tokenvault's tables, opened by name
 */
#include "postgres.h"

#include "access/table.h"
#include "catalog/namespace.h"
#include "utils/lsyscache.h"

#include "table.h"

/*
 * Open a table of tokenvault's schema by name, for the hot paths that probe
 * its index directly instead of planning a query.
 */
Relation
tv_table_open(const char *name, LOCKMODE lockmode)
{
	Oid			relid = get_relname_relid(name, get_namespace_oid("tokenvault", false));

	if (!OidIsValid(relid))
		elog(ERROR, "table tokenvault.%s does not exist", name);
	return table_open(relid, lockmode);
}
