/*
 * webhooks.c: webhook deliveries, signed, sent by the worker
 *
 * Events themselves are written in SQL (tokenvault._emit: a row in
 * tokenvault.events and a NOTIFY in the same transaction).  Here the worker
 * takes the deliveries that are due, one at a time per auth and webhook so
 * that they arrive in order, and posts each, signed, on the worker's HTTP
 * handle.  An answer only queues when it arrives (inside the worker's wait);
 * the worker then records each in a short transaction of its own, in its
 * own error handling.  The SQL side schedules retries with backoff until a
 * 2xx.
 *
 * The signature is HMAC-SHA256 over "<timestamp>.<body>" with the webhook's
 * secret, so a receiver can reject both forged and replayed deliveries.
 */
#include "postgres.h"

#include <time.h>

#include "access/htup_details.h"
#include "catalog/pg_type_d.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"

#include "answers.h"
#include "crypto.h"
#include "spi.h"
#include "webhooks.h"

#define MAX_DELIVERIES 16		/* webhook requests in flight at once */

typedef struct Delivery
{
	TvPending	pending;		/* first: what answers.c keeps of it */
	int64		id;
} Delivery;

static void record(TvPending *p);

static TvAnswers sent = {.name = "tokenvault webhook", .max = MAX_DELIVERIES, .record = record};

/* Record a delivery's answer; the SQL side marks it delivered or schedules the next try. */
static void
record(TvPending *p)
{
	Delivery   *d = (Delivery *) p;
	Oid			types[3] = {INT8OID, INT4OID, TEXTOID};
	Datum		args[3];
	TvHttpResponse *resp = &p->resp;
	TupleDesc	desc;

	args[0] = Int64GetDatum(d->id);
	args[1] = Int32GetDatum(resp->failure == TV_HTTP_OK ? (int32) resp->status : 0);
	args[2] = CStringGetTextDatum(resp->failure == TV_HTTP_OK ? psprintf("HTTP status %ld", resp->status)
								  : resp->error ? resp->error : "request failed");
	tv_spi_begin();
	(void) tv_spi_row("SELECT tokenvault._webhook_result($1, $2, $3)", 3, types, args, NULL, &desc);
	tv_spi_end();
}

/*
 * Record the answers that are in, each in a transaction of its own.  An
 * error fails that one recording, logged; the delivery is sent again when
 * its claim runs out.
 */
void
tv_webhooks_record(void)
{
	tv_answers_record(&sent);
}

/* the attributes of tokenvault.delivery, in order */
enum
{
	DELIVERY_ID = 1,
	DELIVERY_URL,
	DELIVERY_EVENT,
	DELIVERY_BODY,
	DELIVERY_SECRET,
	DELIVERY_PREVIOUS_SECRET,	/* NULL unless a rotation is under way */
	DELIVERY_ALLOW_INSECURE_HTTP,
	DELIVERY_NATTS = DELIVERY_ALLOW_INSECURE_HTTP
};

/*
 * A claimed delivery's row, read after the claim's transaction with the
 * type's descriptor copied in it.
 */
typedef struct Claimed
{
	HeapTupleData tuple;
	TupleDesc	desc;
} Claimed;

static Datum
delivery_attr(Claimed *c, int attno)
{
	bool		isnull;
	Datum		v = heap_getattr(&c->tuple, attno, c->desc, &isnull);

	if (isnull)
		elog(ERROR, "tokenvault: a webhook delivery lacks attribute %d", attno);
	return v;
}

static char *
delivery_text(Claimed *c, int attno)
{
	return TextDatumGetCString(delivery_attr(c, attno));
}

/* "v1=<hex HMAC-SHA256(secret, timestamp '.' body)>", the secret wiped after */
static char *
signature_of(char *secret, const char *timestamp, const char *body)
{
	char	   *signed_text = psprintf("%s.%s", timestamp, body);
	char	   *signature = psprintf("v1=%s", tv_hmac_sha256_hex(secret, signed_text));

	explicit_bzero(secret, strlen(secret));
	pfree(signed_text);
	return signature;
}

/*
 * The signature header's value: one signature per secret, the newest
 * first, so that during a rotation receivers holding either secret verify.
 */
static char *
signatures_of(Claimed *c, const char *timestamp, const char *body)
{
	bool		isnull;
	char	   *signature = signature_of(delivery_text(c, DELIVERY_SECRET), timestamp, body);
	Datum		previous = heap_getattr(&c->tuple, DELIVERY_PREVIOUS_SECRET, c->desc, &isnull);

	if (isnull)
		return signature;
	return psprintf("%s,%s", signature, signature_of(TextDatumGetCString(previous), timestamp, body));
}

/* Sign a delivery, in its own (current) context. */
static void
make_delivery(TvPending *p, void *arg)
{
	Delivery   *d = (Delivery *) p;
	Claimed    *c = (Claimed *) arg;
	TvHttpRequest *req = &p->req;
	char	   *timestamp = psprintf(INT64_FORMAT, (int64) time(NULL));
	char	   *body = delivery_text(c, DELIVERY_BODY);
	char	   *signature = signatures_of(c, timestamp, body);

	d->id = DatumGetInt64(delivery_attr(c, DELIVERY_ID));
	req->url = delivery_text(c, DELIVERY_URL);
	req->body = body;
	req->body_len = strlen(body);
	req->content_type = "application/json";
	/* a receiver's 2xx is the whole answer: a page it sends along must not fail the delivery */
	req->discard_body = true;
	req->allow_insecure_http = DatumGetBool(delivery_attr(c, DELIVERY_ALLOW_INSECURE_HTTP));
	req->headers = list_make4(psprintf("X-Tokenvault-Event: %s", delivery_text(c, DELIVERY_EVENT)),
								psprintf("X-Tokenvault-Delivery: " INT64_FORMAT, d->id),
								psprintf("X-Tokenvault-Timestamp: %s", timestamp),
								psprintf("X-Tokenvault-Signature: %s", signature));
}

/*
 * Send the deliveries that are due, as many as there is room for.  Returns
 * when deliveries next need the worker (DT_NOEND: not before a new event).
 */
TimestampTz
tv_webhooks_send(TvHttpMulti *multi)
{
	MemoryContext cxt;
	MemoryContext old;
	Oid			types[1] = {INT4OID};
	Datum		args[1];
	HeapTuple	row;
	TupleDesc	desc;
	bool		isnull;
	Datum	   *deliveries;
	int			n;
	int			i;
	TimestampTz next_at;
	Claimed		claimed;

	if (tv_answers_room(&sent) <= 0)
		return TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000);
	cxt = AllocSetContextCreate(CurrentMemoryContext, "tokenvault webhooks", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);
	args[0] = Int32GetDatum(tv_answers_room(&sent));
	tv_spi_begin();
	/* (deliveries tokenvault.delivery[], next_at timestamptz) */
	row = tv_spi_row("SELECT * FROM tokenvault._webhook_claim($1)", 1, types, args, NULL, &desc);
	claimed.desc = lookup_rowtype_tupdesc_copy(tv_type_oid("delivery"), -1);
	tv_spi_check_row(desc, "what tokenvault._webhook_claim returns", 2,
					 (Oid[]) {get_array_type(claimed.desc->tdtypeid), TIMESTAMPTZOID});
	tv_spi_check_row(claimed.desc, "type tokenvault.delivery", DELIVERY_NATTS,
					 (Oid[]) {INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, BOOLOID});
	deconstruct_array(DatumGetArrayTypePCopy(heap_getattr(row, 1, desc, &isnull)),
					  claimed.desc->tdtypeid, -1, false, TYPALIGN_DOUBLE, &deliveries, NULL, &n);
	next_at = tv_spi_timestamptz(row, desc, 2);
	tv_spi_end();
	for (i = 0; i < n; i++)
	{
		HeapTupleHeader h = DatumGetHeapTupleHeader(deliveries[i]);

		claimed.tuple.t_len = HeapTupleHeaderGetDatumLength(h);
		claimed.tuple.t_data = h;
		ItemPointerSetInvalid(&claimed.tuple.t_self);
		claimed.tuple.t_tableOid = InvalidOid;
		MemoryContextSwitchTo(old);
		tv_answers_send(&sent, multi, sizeof(Delivery), make_delivery, &claimed);
		MemoryContextSwitchTo(cxt);
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	return next_at;
}
