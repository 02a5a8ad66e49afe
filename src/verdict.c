/*
 * verdict.c: what a token request or a refresh came to, in C and in SQL
 *
 * C and SQL share one vocabulary of outcomes: the enum TvOutcome and the SQL
 * enum tokenvault.outcome, label for label.  A verdict crosses to SQL as a
 * tokenvault.verdict row built here, never as printed JSON, and an outcome
 * comes back as the enum's value, matched by its OID.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/typcache.h"

#include "spi.h"
#include "verdict.h"

static const char *const outcome_labels[TV_OUTCOME_SQL_LABELS] = {
	[TV_OUTCOME_DONE] = "done",
	[TV_OUTCOME_NEEDS_REAUTH] = "needs_reauth",
	[TV_OUTCOME_RETRYABLE] = "retryable",
	[TV_OUTCOME_ERROR] = "error",
};

/*
 * The OIDs of the outcome labels, looked up again whenever the type is not
 * the one they were looked up for (the extension dropped and created again).
 */
static Oid *
label_oids(void)
{
	static Oid	type = InvalidOid;
	static Oid	labels[TV_OUTCOME_SQL_LABELS];
	Oid			now = tv_type_oid("outcome");
	int			i;

	if (now != type)
	{
		for (i = 0; i < TV_OUTCOME_SQL_LABELS; i++)
			labels[i] = DatumGetObjectId(DirectFunctionCall2(enum_in, CStringGetDatum(outcome_labels[i]),
															 ObjectIdGetDatum(now)));
		type = now;
	}
	return labels;
}

static Datum
outcome_datum(TvOutcome outcome)
{
	Assert(outcome < TV_OUTCOME_SQL_LABELS);
	return ObjectIdGetDatum(label_oids()[outcome]);
}

TvOutcome
tv_outcome_from_datum(Datum d)
{
	Oid		   *labels = label_oids();
	int			i;

	for (i = 0; i < TV_OUTCOME_SQL_LABELS; i++)
		if (labels[i] == DatumGetObjectId(d))
			return (TvOutcome) i;
	elog(ERROR, "tokenvault.outcome has a label tokenvault does not know");
	return TV_OUTCOME_ERROR;	/* keep compiler quiet */
}

/* the attributes of tokenvault.verdict, in order */
enum
{
	VERDICT_OUTCOME,		/* (0-based: the arrays of heap_form_tuple) */
	VERDICT_STATUS,
	VERDICT_ERROR,
	VERDICT_MESSAGE,
	VERDICT_RETRY_AFTER,
	VERDICT_TOKEN,
	VERDICT_NATTS
};

Datum
tv_verdict_datum(TvVerdict *v)
{
	TupleDesc	desc = lookup_rowtype_tupdesc_copy(tv_type_oid("verdict"), -1);
	Datum		values[VERDICT_NATTS];
	bool		nulls[VERDICT_NATTS] = {0};

	tv_spi_check_row(desc, "type tokenvault.verdict", VERDICT_NATTS,
					 (Oid[]) {tv_type_oid("outcome"), INT4OID, TEXTOID, TEXTOID, INT4OID, JSONBOID});
	values[VERDICT_OUTCOME] = outcome_datum(v->outcome);
	values[VERDICT_STATUS] = Int32GetDatum(v->status);
	values[VERDICT_ERROR] = v->error ? CStringGetTextDatum(v->error) : (Datum) 0;
	nulls[VERDICT_ERROR] = v->error == NULL;
	values[VERDICT_MESSAGE] = v->message ? CStringGetTextDatum(v->message) : (Datum) 0;
	nulls[VERDICT_MESSAGE] = v->message == NULL;
	values[VERDICT_RETRY_AFTER] = Int32GetDatum(v->retry_after);
	nulls[VERDICT_RETRY_AFTER] = v->retry_after < 0;
	values[VERDICT_TOKEN] = JsonbPGetDatum(v->token);
	nulls[VERDICT_TOKEN] = v->token == NULL;
	return HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls));
}

TvVerdict *
tv_verdict_failure(TvOutcome outcome, int status, const char *error, const char *message,
				   int retry_after)
{
	TvVerdict  *v = palloc0(sizeof(TvVerdict));

	v->outcome = outcome;
	v->status = status;
	v->error = error ? pstrdup(error) : NULL;
	v->message = pstrdup(message);
	v->retry_after = retry_after;
	return v;
}

/* A request that got what it asked for: the provider's token object, if any. */
TvVerdict *
tv_verdict_done(int status, Jsonb *token)
{
	TvVerdict  *v = palloc0(sizeof(TvVerdict));

	v->outcome = TV_OUTCOME_DONE;
	v->status = status;
	v->retry_after = -1;
	v->token = token;
	return v;
}
