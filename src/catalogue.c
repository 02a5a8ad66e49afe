/*
 * catalogue.c: what the provider catalogue (sql/providers.sql) needs of C
 *
 * Only the distance between two keys, for the hint that names the keys
 * closest to an unknown one: PostgreSQL's own Levenshtein distance, as its
 * hints for misspelt column names use.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/varlena.h"

PG_FUNCTION_INFO_V1(tv_edit_distance);

/* _edit_distance(a text, b text) returns integer */
Datum
tv_edit_distance(PG_FUNCTION_ARGS)
{
	text	   *a = PG_GETARG_TEXT_PP(0);
	text	   *b = PG_GETARG_TEXT_PP(1);

	PG_RETURN_INT32(varstr_levenshtein(VARDATA_ANY(a), VARSIZE_ANY_EXHDR(a),
									   VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b), 1, 1, 1, false));
}
