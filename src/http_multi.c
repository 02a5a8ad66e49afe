/*
 * http_multi.c: HTTP requests in flight on a libcurl multi handle
 *
 * Requests run on a multi handle, many at once if asked, and are waited for
 * on one WaitEventSet holding the process latch, postmaster death and the
 * transfers' sockets: a query cancel, statement_timeout or shutdown is seen
 * at once, mid-transfer.  The process that owns a handle owns its wait.
 */
#include "postgres.h"

#include <curl/curl.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "host_policy.h"
#include "http.h"
#include "http_easy.h"

/* One transfer in flight: its handle, header list, curl's error text, and whom to tell. */
typedef struct Transfer
{
	CURL	   *easy;
	struct curl_slist *headers;
	char		errbuf[CURL_ERROR_SIZE];
	TvHttpResponse *resp;
	TvHttpFinished done;
	void	   *arg;
	MemoryContext cxt;			/* where the response's allocations go */
	struct Transfer *next;		/* in the multi's list */
	struct Transfer *prev;
} Transfer;

#define MAX_IDLE_HANDLES 64		/* easy handles kept for reuse: no malloc churn per request */
#define MAX_WAIT_ROUNDS 64		/* full arrays of ready sockets read in one wait, at most */

/* A socket libcurl asked us to watch, and for what (CURL_POLL_*). */
typedef struct Watched
{
	curl_socket_t fd;
	int			what;
	bool		changed;		/* what changed since the wait set was made */
} Watched;

struct TvHttpMulti
{
	CURLM	   *multi;
	MemoryContext cxt;
	Transfer   *transfers;		/* in flight */
	int			active;
	Watched    *watched;
	int			nwatched;
	int			maxwatched;
	WaitEventSet *set;			/* rebuilt when sockets come or go, modified when their interest changes */
	bool		set_stale;
	bool		set_changed;
	CURL	   *idle[MAX_IDLE_HANDLES];	/* finished handles, reset, for the next requests */
	int			nidle;
	uint64		policy;			/* the host policy's generation its cached connections were judged by */
};

#define MULTISETOPT(m, opt, val) \
	do { \
		if (curl_multi_setopt((m), (opt), (val)) != CURLM_OK) \
			elog(ERROR, "could not set libcurl option %s", #opt); \
	} while (0)

/* libcurl's CURLMOPT_SOCKETFUNCTION: which sockets to wait on, for what. */
static int
on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	TvHttpMulti *m = (TvHttpMulti *) userp;
	int			i;

	for (i = 0; i < m->nwatched; i++)
		if (m->watched[i].fd == fd)
			break;
	if (what == CURL_POLL_REMOVE)
	{
		if (i < m->nwatched)
			m->watched[i] = m->watched[--m->nwatched];
	}
	else if (i < m->nwatched)
	{
		if (m->watched[i].what != what)
		{
			m->watched[i].what = what;
			m->watched[i].changed = true;
			m->set_changed = true;
		}
		return 0;
	}
	else
	{
		/* called from inside libcurl: no ereport here, so grow beforehand */
		if (m->nwatched == m->maxwatched)
			return -1;
		m->watched[m->nwatched].fd = fd;
		m->watched[m->nwatched].changed = false;
		m->watched[m->nwatched++].what = what;
	}
	m->set_stale = true;
	return 0;
}

/* libcurl's multi handle, with no connection yet */
static void
multi_open(TvHttpMulti *m)
{
	m->multi = curl_multi_init();
	if (m->multi == NULL)
		elog(ERROR, "could not create a libcurl multi handle");
	MULTISETOPT(m->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	MULTISETOPT(m->multi, CURLMOPT_SOCKETDATA, m);
	m->policy = tv_host_policy_generation();
}

/*
 * The host policy judges an address as a connection opens; a connection
 * kept for reuse was judged by the allow-list of that moment.  Once the
 * list changed, no such connection carries another request: when nothing
 * is in flight the cache is closed with its handle; until then each new
 * transfer opens a connection of its own.  Returns whether this one must.
 */
static bool
must_connect_afresh(TvHttpMulti *m)
{
	if (m->policy == tv_host_policy_generation())
		return false;
	if (m->active > 0)
		return true;
	curl_multi_cleanup(m->multi);
	m->multi = NULL;
	m->nwatched = 0;
	m->set_stale = true;
	multi_open(m);
	return false;
}

/* A multi handle whose memory (and responses' headers) live in the current context. */
TvHttpMulti *
tv_http_multi_create(void)
{
	TvHttpMulti *m = palloc0(sizeof(TvHttpMulti));

	tv_http_init();
	m->cxt = CurrentMemoryContext;
	m->maxwatched = 16;
	m->watched = palloc(sizeof(Watched) * m->maxwatched);
	multi_open(m);
	return m;
}

int
tv_http_multi_active(TvHttpMulti *m)
{
	return m->active;
}

/* Release a transfer, wiping its headers: the Authorization line is there. */
static void
release(TvHttpMulti *m, Transfer *t)
{
	struct curl_slist *h;

	if (t->easy)
	{
		curl_multi_remove_handle(m->multi, t->easy);
		if (m->nidle < MAX_IDLE_HANDLES)
		{
			/* forgets every option (the body, the header list) but keeps its buffers */
			curl_easy_reset(t->easy);
			m->idle[m->nidle++] = t->easy;
		}
		else
			curl_easy_cleanup(t->easy);
	}
	for (h = t->headers; h; h = h->next)
		explicit_bzero(h->data, strlen(h->data));
	curl_slist_free_all(t->headers);
	if (t->prev)
		t->prev->next = t->next;
	else
		m->transfers = t->next;
	if (t->next)
		t->next->prev = t->prev;
	m->active--;
	pfree(t);
}

/*
 * Start a request; done(resp, arg) is called from tv_http_multi_wait when it
 * finishes.  A URL that may not be requested is not sent: false, with resp
 * saying why, and done is not called.  resp belongs to the caller and lives
 * in the current memory context.
 */
bool
tv_http_multi_add(TvHttpMulti *m, const TvHttpRequest *req, TvHttpResponse *resp,
				  TvHttpFinished done, void *arg)
{
	Transfer   *t;
	char	   *why;
	bool		fresh;

	memset(resp, 0, sizeof(TvHttpResponse));
	initStringInfo(&resp->body);
	resp->retry_after = -1;
	if (!tv_http_url_allowed(req->url, req->allow_insecure_http, &why))
	{
		resp->failure = TV_HTTP_REFUSED;
		resp->error = pstrdup(why);
		return false;
	}
	fresh = must_connect_afresh(m);
	/* room for the sockets of every transfer: a connection each, and one to spare */
	if (m->maxwatched < 2 * (m->active + 1) + 4)
	{
		m->maxwatched = 2 * (m->active + 1) + 4;
		m->watched = repalloc(m->watched, sizeof(Watched) * m->maxwatched);
	}
	t = MemoryContextAllocZero(m->cxt, sizeof(Transfer));
	t->resp = resp;
	t->done = done;
	t->arg = arg;
	t->cxt = CurrentMemoryContext;
	t->next = m->transfers;
	if (m->transfers)
		m->transfers->prev = t;
	m->transfers = t;
	m->active++;
	/* linked in at once, so that a failure below releases it, headers wiped, before it is raised */
	PG_TRY();
	{
		t->easy = m->nidle > 0 ? m->idle[--m->nidle] : curl_easy_init();
		if (t->easy == NULL)
			elog(ERROR, "could not create a libcurl handle");
		tv_http_configure(t->easy, req, resp, &t->headers, t->errbuf);
		if (fresh)
			SETOPT(t->easy, CURLOPT_FRESH_CONNECT, 1L);
		SETOPT(t->easy, CURLOPT_PRIVATE, (void *) t);
		if (curl_multi_add_handle(m->multi, t->easy) != CURLM_OK)
			elog(ERROR, "could not start a libcurl transfer");
	}
	PG_CATCH();
	{
		release(m, t);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return true;
}

/* The transfers that finished: their outcome, their handle released, then done. */
static void
collect_finished(TvHttpMulti *m)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(m->multi, &left)) != NULL)
	{
		void	   *priv;
		Transfer   *t;
		TvHttpResponse *resp;
		TvHttpFinished done;
		void	   *arg;
		MemoryContext old;

		if (msg->msg != CURLMSG_DONE)
			continue;
		GETINFO(msg->easy_handle, CURLINFO_PRIVATE, &priv);
		t = (Transfer *) priv;
		old = MemoryContextSwitchTo(t->cxt);
		if (msg->data.result == CURLE_OK)
			GETINFO(t->easy, CURLINFO_RESPONSE_CODE, &t->resp->status);
		else
			tv_http_describe_failure(msg->data.result, t->errbuf, t->resp);
		GETINFO(t->easy, CURLINFO_TOTAL_TIME, &t->resp->seconds);
		MemoryContextSwitchTo(old);
		resp = t->resp;
		done = t->done;
		arg = t->arg;
		release(m, t);
		if (done)
			done(resp, arg);
	}
}

static uint32
wait_events_of(int what)
{
	uint32		events = 0;

	if (what & CURL_POLL_IN)
		events |= WL_SOCKET_READABLE;
	if (what & CURL_POLL_OUT)
		events |= WL_SOCKET_WRITEABLE;
	return events;
}

/* Sockets whose interest changed: modified in place (their position is index + 2). */
static void
modify_wait_set(TvHttpMulti *m)
{
	int			i;

	for (i = 0; i < m->nwatched; i++)
		if (m->watched[i].changed)
		{
			ModifyWaitEvent(m->set, i + 2, wait_events_of(m->watched[i].what), NULL);
			m->watched[i].changed = false;
		}
	m->set_changed = false;
}

static void
rebuild_wait_set(TvHttpMulti *m)
{
	int			i;

	if (m->set)
		FreeWaitEventSet(m->set);
	m->set = NULL;
	m->set = CreateWaitEventSet(m->cxt, m->nwatched + 2);
	AddWaitEventToSet(m->set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(m->set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (i = 0; i < m->nwatched; i++)
	{
		AddWaitEventToSet(m->set, wait_events_of(m->watched[i].what), m->watched[i].fd, NULL, NULL);
		m->watched[i].changed = false;
	}
	m->set_stale = false;
	m->set_changed = false;
}

/*
 * In how many ms libcurl wants its timeout action (-1: none).  Asked each
 * time rather than kept from CURLMOPT_TIMERFUNCTION: libcurl announces a
 * timer only when it changes, so an action taken a moment before the
 * timer (by the clocks' rounding) that left it pending was never announced
 * again, and transfers it was to start waited for tokenvault.http_timeout.
 */
static long
curl_wants(TvHttpMulti *m)
{
	long		ms = -1;

	if (curl_multi_timeout(m->multi, &ms) != CURLM_OK)
		elog(ERROR, "libcurl transfer failed");
	return ms;
}

/*
 * Wait up to timeout_ms for the process latch or for progress of the
 * transfers, and report those that finished.  Returns true if the latch was
 * set; it is reset, so the caller checks for interrupts and for whatever a
 * latch announces to it before it waits again.
 */
bool
tv_http_multi_wait(TvHttpMulti *m, long timeout_ms)
{
	WaitEvent	events[64];
	long		curl_ms;
	int			nevents;
	int			round;
	int			running;
	int			i;
	bool		latch = false;

	if (m->set == NULL || m->set_stale)
		rebuild_wait_set(m);
	else if (m->set_changed)
		modify_wait_set(m);
	if ((curl_ms = curl_wants(m)) >= 0)
		timeout_ms = Min(timeout_ms, curl_ms);
	/*
	 * Every socket that is ready is served before anything else is done: a
	 * full array means more may be, and is read again without waiting.  A
	 * set latch is returned alone, without a look at the sockets, so it is
	 * reset here (the caller is told, and looks at everything anyway) and
	 * the sockets are looked at too: under a stream of callers' wake-ups
	 * they would otherwise wait their turn.  (Served sixteen at a time, with
	 * plans and stores in between, 16 of 20 000 transfers to a slow provider
	 * at 256 in flight sat unconnected until tokenvault.http_timeout.)
	 */
	for (round = 0; round < MAX_WAIT_ROUNDS; round++)
	{
		bool		again = false;

		nevents = WaitEventSetWait(m->set, round == 0 ? timeout_ms : 0, events, lengthof(events),
								   PG_WAIT_EXTENSION);
		for (i = 0; i < nevents; i++)
		{
			int			flags = 0;

			if (events[i].events & WL_LATCH_SET)
			{
				latch = again = true;
				ResetLatch(MyLatch);
				continue;
			}
			if (events[i].events & WL_SOCKET_READABLE)
				flags |= CURL_CSELECT_IN;
			if (events[i].events & WL_SOCKET_WRITEABLE)
				flags |= CURL_CSELECT_OUT;
			if (curl_multi_socket_action(m->multi, events[i].fd, flags, &running) != CURLM_OK)
				elog(ERROR, "libcurl transfer failed");
		}
		if ((!again && nevents < lengthof(events)) || m->set_stale)
			break;
		if (m->set_changed)
			modify_wait_set(m);
	}
	if (curl_wants(m) == 0 &&
		curl_multi_socket_action(m->multi, CURL_SOCKET_TIMEOUT, 0, &running) != CURLM_OK)
		elog(ERROR, "libcurl transfer failed");
	collect_finished(m);
	return latch;
}

/* Every transfer dropped, unfinished and unreported, the multi handle closed. */
static void
multi_destroy(TvHttpMulti *m)
{
	while (m->transfers)
		release(m, m->transfers);
	while (m->nidle > 0)
		curl_easy_cleanup(m->idle[--m->nidle]);
	if (m->set)
		FreeWaitEventSet(m->set);
	m->set = NULL;
	if (m->multi)
		curl_multi_cleanup(m->multi);
	m->multi = NULL;
}

/* Wait for the transfers in flight, checking for interrupts whenever the latch is set. */
static void
wait_all(TvHttpMulti *m)
{
	while (m->active > 0)
	{
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		(void) tv_http_multi_wait(m, 1000L);
	}
}

/*
 * Send one request and wait for its response (a refused URL is answered at
 * once).  Only a refused URL, a failed transfer or an HTTP status is
 * reported, in resp; a cancel raises the usual error after the handle is
 * released.
 */
void
tv_http_perform(const TvHttpRequest *req, TvHttpResponse *resp)
{
	TvHttpMulti *m = tv_http_multi_create();

	PG_TRY();
	{
		if (tv_http_multi_add(m, req, resp, NULL, NULL))
			wait_all(m);
	}
	PG_CATCH();
	{
		multi_destroy(m);
		PG_RE_THROW();
	}
	PG_END_TRY();
	multi_destroy(m);
}
