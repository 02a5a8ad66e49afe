/*
 * answers.c: requests the worker sent on its HTTP handle whose answers are
 * recorded, each in a transaction of its own
 *
 * An answer only queues when it arrives (inside the worker's wait); the
 * worker records the queue after the wait, each answer in its own error
 * handling, so that one that fails to record (logged; the request goes
 * again when its claim runs out) holds up no other.  Each request lives in
 * a memory context of its own, deleted once its answer is recorded.
 */
#include "postgres.h"

#include "utils/memutils.h"

#include "answers.h"
#include "spi.h"

/* A request of size bytes (a struct that begins with TvPending), in a context of its own. */
static TvPending *
new_request(TvAnswers *a, Size size)
{
	MemoryContext cxt;
	TvPending  *p;

	if (a->cxt == NULL)
	{
		a->cxt = AllocSetContextCreate(TopMemoryContext, "tokenvault answers", ALLOCSET_DEFAULT_SIZES);
		MemoryContextSetIdentifier(a->cxt, a->name);
		a->answered = MemoryContextAllocZero(a->cxt, a->max * sizeof(TvPending *));
	}
	cxt = AllocSetContextCreate(a->cxt, "tokenvault request", ALLOCSET_SMALL_SIZES);
	p = MemoryContextAllocZero(cxt, size);
	p->cxt = cxt;
	p->owner = a;
	return p;
}

static void
on_answer(TvHttpResponse *resp, void *arg)
{
	TvPending  *p = (TvPending *) arg;

	p->owner->answered[p->owner->nanswered++] = p;
}

/*
 * Make a request of size bytes with build (in the request's own context,
 * current while it runs) and put it on the handle.  It counts as in flight
 * from then on; one refused before it went (a URL that may not be
 * requested) queues at once, to be recorded as the failure it is.  An error
 * before that takes the request's memory with it and leaves nothing to
 * wait for (its claim runs out, and it goes again).
 */
void
tv_answers_send(TvAnswers *a, TvHttpMulti *multi, Size size, TvBuildFn build, void *arg)
{
	MemoryContext old = CurrentMemoryContext;
	TvPending  *p = new_request(a, size);
	bool		added;

	MemoryContextSwitchTo(p->cxt);
	PG_TRY();
	{
		build(p, arg);
		added = tv_http_multi_add(multi, &p->req, &p->resp, on_answer, p);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(old);
		MemoryContextDelete(p->cxt);
		PG_RE_THROW();
	}
	PG_END_TRY();
	a->in_flight++;
	if (!added)
		on_answer(&p->resp, p);
	MemoryContextSwitchTo(old);
}

/* How many more requests there is room for. */
int
tv_answers_room(TvAnswers *a)
{
	return a->max - a->in_flight;
}

/* Record one answer in its own error handling; its memory goes after. */
static void
record_one(TvAnswers *a, TvPending *p)
{
	MemoryContext old = MemoryContextSwitchTo(p->cxt);

	PG_TRY();
	{
		a->record(p);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(p->cxt);
		(void) tv_log_caught_error("tokenvault worker");
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	MemoryContextDelete(p->cxt);
	a->in_flight--;
}

/* Record the answers that are in, each in a transaction and an error handling of its own. */
void
tv_answers_record(TvAnswers *a)
{
	int			i;

	for (i = 0; i < a->nanswered; i++)
		record_one(a, a->answered[i]);
	a->nanswered = 0;
}
