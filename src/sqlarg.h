/*
 * sqlarg.h: refusing a NULL argument of a SQL-callable function
 */
#ifndef TV_SQLARG_H
#define TV_SQLARG_H

#include "postgres.h"

#include "fmgr.h"

/* For a function that is not STRICT because a NULL must be an error, not a NULL result. */
static inline void
tv_require_arg(FunctionCallInfo fcinfo, int n, const char *what)
{
	if (PG_ARGISNULL(n))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
}

#endif
