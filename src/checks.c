/*
 * checks.c: health checks, a cheap request that proves a credential works
 *
 * A client whose provider documents a "who am I" endpoint names it
 * (verify_url); check_auth() sends it at once with the auth's headers, and
 * the worker sends those of clients that ask for it (check_every) on the
 * same HTTP handle as its refreshes and webhooks, at most MAX_CHECKS at a
 * time and none while refreshes fill the flight table.  An answer is judged
 * by its status, and by a boolean field for providers that say "ok": false
 * with a 200; no body is kept, logged or quoted.  What SQL plans and
 * records (sql/checks.sql) it passes as tokenvault.check_request and
 * tokenvault.check_verdict.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type_d.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/typcache.h"
#include "utils/uuid.h"

#include "answers.h"
#include "checks.h"
#include "flight.h"
#include "jsonb_member.h"
#include "spi.h"

#define MAX_CHECKS 8			/* checks in flight at once, per worker */

/* the attributes of tokenvault.check_request, in order */
enum
{
	REQ_AUTH_ID = 1,
	REQ_URL,
	REQ_METHOD,
	REQ_HEADERS,
	REQ_OK_FIELD,				/* NULL when the status says it all */
	REQ_ALLOW_INSECURE_HTTP,
	REQ_NATTS = REQ_ALLOW_INSECURE_HTTP
};

typedef struct Check
{
	TvPending	pending;		/* first: what answers.c keeps of it */
	pg_uuid_t	auth_id;
	char	   *ok_field;
} Check;

typedef struct Verdict
{
	const char *outcome;		/* ok, refused, failed */
	long		status;
	char	   *message;
} Verdict;

static void record(TvPending *p);

static TvAnswers checks = {.name = "tokenvault check", .max = MAX_CHECKS, .record = record};

/*
 * What an answer says of the credential.  401 and 403 are the provider's
 * no; so is a 2xx whose ok field is false.  Anything else that is not a
 * 2xx (a 5xx, a 429, a 404 from a moved endpoint, no answer) is no verdict.
 */
static Verdict
judge(TvHttpResponse *resp, const char *ok_field)
{
	Verdict		v = {"failed", resp->failure == TV_HTTP_OK ? resp->status : 0, NULL};
	Jsonb	   *doc;
	JsonbValue	ok;

	if (resp->failure != TV_HTTP_OK)
		v.message = resp->error ? resp->error : "the request failed";
	else if (resp->status == 401 || resp->status == 403)
	{
		v.outcome = "refused";
		v.message = psprintf("the provider refused the credential (HTTP %ld)", resp->status);
	}
	else if (resp->status < 200 || resp->status >= 300)
		v.message = psprintf("the provider answered HTTP %ld", resp->status);
	else if (ok_field == NULL)
		v.outcome = "ok";
	else if ((doc = tv_jsonb_parse(&resp->body)) == NULL || !tv_jsonb_member(&doc->root, ok_field, &ok) ||
			 ok.type != jbvBool)
		v.message = psprintf("the provider's answer has no true or false \"%s\"", ok_field);
	else if (ok.val.boolean)
		v.outcome = "ok";
	else
	{
		v.outcome = "refused";
		v.message = psprintf("the provider's answer says \"%s\": false", ok_field);
	}
	return v;
}

/* An attribute of a tokenvault.check_request, its descriptor looked up by the caller (in a transaction). */
static Datum
request_attr(HeapTupleHeader row, TupleDesc desc, int attno, bool *isnull)
{
	HeapTupleData tuple;

	tuple.t_len = HeapTupleHeaderGetDatumLength(row);
	tuple.t_data = row;
	ItemPointerSetInvalid(&tuple.t_self);
	tuple.t_tableOid = InvalidOid;
	return heap_getattr(&tuple, attno, desc, isnull);
}

/* A request from a tokenvault.check_request, its headers (credential and all) in the current context. */
static void
make_request(HeapTupleHeader row, TupleDesc desc, TvHttpRequest *req, char **ok_field)
{
	bool		isnull;
	Datum		d;
	Datum	   *lines;
	bool	   *nulls;
	int			n;
	int			i;

	memset(req, 0, sizeof(*req));
	d = request_attr(row, desc, REQ_URL, &isnull);
	if (isnull)
		elog(ERROR, "tokenvault: a check request has no URL");
	req->url = TextDatumGetCString(d);
	d = request_attr(row, desc, REQ_METHOD, &isnull);
	req->method = isnull ? "GET" : TextDatumGetCString(d);
	if (strcmp(req->method, "POST") == 0)
	{
		req->body = "";
		req->body_len = 0;
	}
	d = request_attr(row, desc, REQ_HEADERS, &isnull);
	if (!isnull)
	{
		deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT, &lines, &nulls, &n);
		for (i = 0; i < n; i++)
			if (!nulls[i])
				req->headers = lappend(req->headers, TextDatumGetCString(lines[i]));
	}
	d = request_attr(row, desc, REQ_OK_FIELD, &isnull);
	*ok_field = isnull ? NULL : TextDatumGetCString(d);
	/* the status is the whole answer unless a field of it is to be read */
	req->discard_body = *ok_field == NULL;
	d = request_attr(row, desc, REQ_ALLOW_INSECURE_HTTP, &isnull);
	req->allow_insecure_http = !isnull && DatumGetBool(d);
}

/* The credential in the headers is not left in freed memory. */
static void
wipe_headers(TvHttpRequest *req)
{
	ListCell   *lc;

	foreach(lc, req->headers)
		explicit_bzero(lfirst(lc), strlen(lfirst(lc)));
}

/* tokenvault._verify_request(r tokenvault.check_request) returns tokenvault.check_verdict */
PG_FUNCTION_INFO_V1(tv_verify_request);
Datum
tv_verify_request(PG_FUNCTION_ARGS)
{
	HeapTupleHeader row = PG_GETARG_HEAPTUPLEHEADER(0);
	TvHttpRequest req;
	TvHttpResponse resp;
	char	   *ok_field;
	Verdict		v;
	TupleDesc	desc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "tokenvault: _verify_request must return a composite type");
	make_request(row, lookup_rowtype_tupdesc_copy(HeapTupleHeaderGetTypeId(row), HeapTupleHeaderGetTypMod(row)),
				 &req, &ok_field);
	PG_TRY();
	{
		tv_http_perform(&req, &resp);
	}
	PG_FINALLY();
	{
		wipe_headers(&req);
	}
	PG_END_TRY();
	v = judge(&resp, ok_field);
	values[0] = CStringGetTextDatum(v.outcome);
	values[1] = Int32GetDatum((int32) v.status);
	nulls[2] = v.message == NULL;
	values[2] = v.message ? CStringGetTextDatum(v.message) : (Datum) 0;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/* ---- the worker's checks ---- */

/* Record a check's verdict in a transaction of its own. */
static void
record(TvPending *p)
{
	Check	   *c = (Check *) p;
	Oid			types[4] = {UUIDOID, TEXTOID, INT4OID, TEXTOID};
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	Verdict		v;
	TupleDesc	desc;

	/* the credential in the headers is not left in freed memory (libcurl copied them when it was sent) */
	wipe_headers(&p->req);
	tv_spi_begin();
	/* in the transaction: reading the answer's ok field parses JSON */
	v = judge(&p->resp, c->ok_field);
	args[0] = UUIDPGetDatum(&c->auth_id);
	args[1] = CStringGetTextDatum(v.outcome);
	args[2] = Int32GetDatum((int32) v.status);
	args[3] = v.message ? CStringGetTextDatum(v.message) : (Datum) 0;
	if (v.message == NULL)
		nulls[3] = 'n';
	(void) tv_spi_row("SELECT tokenvault._check_record($1, ROW($2, $3, $4)::tokenvault.check_verdict)",
					  4, types, args, nulls, &desc);
	tv_spi_end();
}

/* Record the verdicts that are in, each on its own; an error fails that one, logged (its claim runs out). */
void
tv_checks_record(void)
{
	tv_answers_record(&checks);
}

/* A claimed check, and its row type's descriptor (looked up in the claim's transaction) */
typedef struct Claimed
{
	HeapTupleHeader row;
	TupleDesc	desc;
} Claimed;

/* Make one claimed check's request (in its own, current, context). */
static void
make_check(TvPending *p, void *arg)
{
	Check	   *c = (Check *) p;
	Claimed    *claimed = (Claimed *) arg;
	bool		isnull;

	memcpy(&c->auth_id, DatumGetUUIDP(request_attr(claimed->row, claimed->desc, REQ_AUTH_ID, &isnull)),
		   sizeof(pg_uuid_t));
	make_request(claimed->row, claimed->desc, &p->req, &c->ok_field);
}

/*
 * Send the checks that are due, as many as there is room for: in the
 * checks' own share, and in the flight table's, so that refreshes come
 * first.  Returns when checks next need the worker.
 */
TimestampTz
tv_checks_send(TvHttpMulti *multi)
{
	int			room = Min(tv_answers_room(&checks), tv_flight_room());
	MemoryContext cxt;
	MemoryContext old;
	Oid			types[1] = {INT4OID};
	Datum		args[1];
	HeapTuple	row;
	TupleDesc	desc;
	bool		isnull;
	Datum	   *requests;
	int			n;
	int			i;
	TimestampTz next_at;
	Oid			request_type;
	TupleDesc	request_desc;

	if (room <= 0)
		return TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000);
	cxt = AllocSetContextCreate(CurrentMemoryContext, "tokenvault check claim", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);
	args[0] = Int32GetDatum(room);
	tv_spi_begin();
	request_type = tv_type_oid("check_request");
	/* read after the claim's transaction: the descriptor is copied in it */
	request_desc = lookup_rowtype_tupdesc_copy(request_type, -1);
	tv_spi_check_row(request_desc, "type tokenvault.check_request", REQ_NATTS,
					 (Oid[]) {UUIDOID, TEXTOID, TEXTOID, TEXTARRAYOID, TEXTOID, BOOLOID});
	/* (requests tokenvault.check_request[], next_at timestamptz) */
	row = tv_spi_row("SELECT * FROM tokenvault._check_claim($1)", 1, types, args, NULL, &desc);
	tv_spi_check_row(desc, "what tokenvault._check_claim returns", 2,
					 (Oid[]) {get_array_type(request_type), TIMESTAMPTZOID});
	deconstruct_array(DatumGetArrayTypePCopy(heap_getattr(row, 1, desc, &isnull)),
					  request_type, -1, false, TYPALIGN_DOUBLE, &requests, NULL, &n);
	next_at = tv_spi_timestamptz(row, desc, 2);
	tv_spi_end();
	for (i = 0; i < n; i++)
	{
		Claimed		claimed = {DatumGetHeapTupleHeader(requests[i]), request_desc};

		MemoryContextSwitchTo(old);
		tv_answers_send(&checks, multi, sizeof(Check), make_check, &claimed);
		MemoryContextSwitchTo(cxt);
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	/*
	 * A full claim means more may be due; checks in flight, that their
	 * verdicts (each setting its auth's next check) are in: look again in a
	 * second either way.
	 */
	if (n >= room || tv_answers_room(&checks) < MAX_CHECKS)
		return Min(next_at, TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000));
	return next_at;
}
