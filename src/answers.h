/*
 * answers.h: requests the worker sent on its HTTP handle whose answers are
 * recorded, each in a transaction of its own (webhook deliveries, health
 * checks)
 */
#ifndef TV_ANSWERS_H
#define TV_ANSWERS_H

#include "postgres.h"

#include "http.h"

/* What one request holds; its owner's struct begins with it. */
typedef struct TvAnswers TvAnswers;

typedef struct TvPending
{
	TvHttpRequest req;
	TvHttpResponse resp;
	MemoryContext cxt;			/* everything the request holds, itself included */
	TvAnswers  *owner;
} TvPending;

/* Record one answer (in a transaction of its own: tv_spi_begin/end). */
typedef void (*TvRecordFn) (TvPending *p);
/* Fill a request in (its memory context is current). */
typedef void (*TvBuildFn) (TvPending *p, void *arg);

/* The requests of one kind in flight, and the answers in, in order of arrival. */
struct TvAnswers
{
	const char *name;			/* for the memory context */
	int			max;			/* in flight at once */
	int			in_flight;		/* sent, or answered and not yet recorded */
	int			nanswered;
	TvPending **answered;
	MemoryContext cxt;
	TvRecordFn	record;
};

extern void tv_answers_send(TvAnswers *a, TvHttpMulti *multi, Size size, TvBuildFn build, void *arg);
extern int	tv_answers_room(TvAnswers *a);
extern void tv_answers_record(TvAnswers *a);

#endif
