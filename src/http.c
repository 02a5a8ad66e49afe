/*
 * http.c: HTTP requests over libcurl, with tokenvault's limits
 *
 * Every request is held to the same rules: https unless
 * tokenvault.allow_insecure_http is on, TLS always verified (against
 * tokenvault.ca_file when set), no redirects followed, the response capped
 * at tokenvault.max_response_size, and tokenvault.http_timeout for the
 * connection and for the whole exchange.  Requests run on a multi handle,
 * many at once if asked, and are waited for on one WaitEventSet holding the
 * process latch, postmaster death and the transfers' sockets: a query
 * cancel, statement_timeout or shutdown is seen at once, mid-transfer.
 *
 * Errors describe what failed (DNS, connect, TLS, timeout, size) and never
 * carry a request body or header: those hold secrets.
 */
#include "postgres.h"

#include <stdint.h>
#include <curl/curl.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/timestamp.h"
#include "utils/memutils.h"

#include "http.h"
#include "tokenvault.h"

static bool curl_ready = false;

void
tv_http_init(void)
{
	if (curl_ready)
		return;
	if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not initialize libcurl")));
	curl_ready = true;
}

/*
 * May this URL be requested?  When not, *why says so.  Only the scheme and
 * the presence of a host are judged here; libcurl enforces the scheme again.
 */
bool
tv_http_url_allowed(const char *url, char **why)
{
	if (pg_strncasecmp(url, "https://", 8) == 0 && url[8] != '\0')
		return true;
	if (pg_strncasecmp(url, "http://", 7) == 0 && url[7] != '\0')
	{
		if (tv_allow_insecure_http)
			return true;
		*why = "plain http is not allowed (tokenvault.allow_insecure_http is off)";
		return false;
	}
	*why = "only https URLs can be requested";
	return false;
}

/* x-www-form-urlencoded, as RFC 6749 wants for form bodies and Basic credentials */
char *
tv_url_encode(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	StringInfoData out;

	initStringInfo(&out);
	for (; *s; s++)
	{
		unsigned char c = (unsigned char) *s;

		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			c == '-' || c == '.' || c == '_' || c == '*')
			appendStringInfoChar(&out, c);
		else if (c == ' ')
			appendStringInfoChar(&out, '+');
		else
		{
			appendStringInfoChar(&out, '%');
			appendStringInfoChar(&out, hex[c >> 4]);
			appendStringInfoChar(&out, hex[c & 15]);
		}
	}
	return out.data;
}

static size_t
on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	TvHttpResponse *resp = (TvHttpResponse *) arg;
	size_t		n = size * nmemb;

	if ((size_t) resp->body.len + n > (size_t) tv_max_response_size * 1024)
	{
		resp->failure = TV_HTTP_TOO_LARGE;
		return 0;				/* makes libcurl stop with CURLE_WRITE_ERROR */
	}
	appendBinaryStringInfo(&resp->body, data, n);
	return n;
}

/* A body no one reads is dropped as it comes, whatever its size. */
static size_t
on_discarded_body(char *data, size_t size, size_t nmemb, void *arg)
{
	return size * nmemb;
}

/*
 * Retry-After in seconds, from either of its forms (RFC 9110 10.2.3):
 * delay-seconds or an HTTP date.  -1 if unreadable; at most a day.
 */
static int
retry_after_seconds(const char *value)
{
	time_t		when;

	if (value[0] >= '0' && value[0] <= '9')
		return Min(atoi(value), 86400);
	when = curl_getdate(value, NULL);
	if (when < 0)
		return -1;
	return Max(0, Min(when - time(NULL), 86400));
}

/* Headers of interest: Retry-After and Content-Type. */
static size_t
on_header(char *data, size_t size, size_t nmemb, void *arg)
{
	TvHttpResponse *resp = (TvHttpResponse *) arg;
	size_t		n = size * nmemb;
	char	   *line = pnstrdup(data, n);
	char	   *value = strchr(line, ':');

	/* a new response (after 100 Continue) starts afresh */
	if (strncmp(line, "HTTP/", 5) == 0)
	{
		resp->retry_after = -1;
		resp->content_type = NULL;
	}
	else if (value)
	{
		*value++ = '\0';
		while (*value == ' ' || *value == '\t')
			value++;
		value[strcspn(value, "\r\n")] = '\0';
		if (pg_strcasecmp(line, "retry-after") == 0)
			resp->retry_after = retry_after_seconds(value);
		else if (pg_strcasecmp(line, "content-type") == 0)
		{
			char	   *p;

			value[strcspn(value, "; ")] = '\0';
			for (p = value; *p; p++)
				*p = pg_tolower((unsigned char) *p);
			/* with the body: a transfer's callbacks run in whatever context is current */
			resp->content_type = MemoryContextStrdup(GetMemoryChunkContext(resp->body.data), value);
		}
	}
	pfree(line);
	return n;
}

#define SETOPT(h, opt, val) \
	do { \
		if (curl_easy_setopt((h), (opt), (val)) != CURLE_OK) \
			elog(ERROR, "could not set libcurl option %s", #opt); \
	} while (0)

#define GETINFO(h, info, out) \
	do { \
		if (curl_easy_getinfo((h), (info), (out)) != CURLE_OK) \
			elog(ERROR, "could not read libcurl's %s", #info); \
	} while (0)

/* Append a header line; on failure the list is kept, to be wiped and freed. */
static void
add_header(struct curl_slist **list, const char *line)
{
	struct curl_slist *longer = curl_slist_append(*list, line);

	if (longer == NULL)
		elog(ERROR, "could not build request headers");
	*list = longer;
}

/* Set up a transfer with tokenvault's rules; headers is where its header list goes. */
static void
configure_handle(CURL *h, const TvHttpRequest *req, TvHttpResponse *resp, struct curl_slist **headers,
				 char *errbuf)
{
	static char user_agent[64];
	ListCell   *lc;

	snprintf(user_agent, sizeof(user_agent), "tokenvault/%s (libcurl)", TOKENVAULT_VERSION);
	SETOPT(h, CURLOPT_URL, req->url);
	SETOPT(h, CURLOPT_PROTOCOLS_STR, tv_allow_insecure_http ? "https,http" : "https");
	SETOPT(h, CURLOPT_FOLLOWLOCATION, 0L);
	SETOPT(h, CURLOPT_SSL_VERIFYPEER, 1L);
	SETOPT(h, CURLOPT_SSL_VERIFYHOST, 2L);
	if (tv_ca_file && tv_ca_file[0])
		SETOPT(h, CURLOPT_CAINFO, tv_ca_file);
	SETOPT(h, CURLOPT_NOSIGNAL, 1L);
	SETOPT(h, CURLOPT_CONNECTTIMEOUT_MS, (long) tv_http_timeout * 1000);
	SETOPT(h, CURLOPT_TIMEOUT_MS, (long) tv_http_timeout * 1000);
	if (!req->discard_body)
		SETOPT(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) tv_max_response_size * 1024);
	SETOPT(h, CURLOPT_USERAGENT, user_agent);
	SETOPT(h, CURLOPT_ERRORBUFFER, errbuf);
	SETOPT(h, CURLOPT_WRITEFUNCTION, req->discard_body ? on_discarded_body : on_body);
	SETOPT(h, CURLOPT_WRITEDATA, resp);
	SETOPT(h, CURLOPT_HEADERFUNCTION, on_header);
	SETOPT(h, CURLOPT_HEADERDATA, resp);
	if (req->body)
	{
		SETOPT(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) req->body_len);
		SETOPT(h, CURLOPT_POSTFIELDS, req->body);
	}
	if (req->method)
		SETOPT(h, CURLOPT_CUSTOMREQUEST, req->method);

	add_header(headers, "Accept: application/json");
	/* no "Expect: 100-continue" round trip before a body */
	add_header(headers, "Expect:");
	if (req->content_type)
		add_header(headers, psprintf("Content-Type: %s", req->content_type));
	foreach(lc, req->headers)
		add_header(headers, (const char *) lfirst(lc));
	if (req->authorization)
	{
		char	   *line = psprintf("Authorization: %s", req->authorization);

		PG_TRY();
		{
			add_header(headers, line);
		}
		PG_FINALLY();
		{
			explicit_bzero(line, strlen(line));
		}
		PG_END_TRY();
	}
	SETOPT(h, CURLOPT_HTTPHEADER, *headers);
}

/* What a failed transfer means, in words a person can act on. */
static void
describe_failure(CURLcode rc, const char *errbuf, TvHttpResponse *resp)
{
	const char *detail = errbuf[0] ? errbuf : curl_easy_strerror(rc);

	switch (rc)
	{
		case CURLE_COULDNT_RESOLVE_HOST:
		case CURLE_COULDNT_RESOLVE_PROXY:
			resp->failure = TV_HTTP_DNS;
			resp->error = psprintf("could not resolve host: %s", detail);
			break;
		case CURLE_COULDNT_CONNECT:
			resp->failure = TV_HTTP_CONNECT;
			resp->error = psprintf("could not connect: %s", detail);
			break;
		case CURLE_OPERATION_TIMEDOUT:
			resp->failure = TV_HTTP_TIMEOUT;
			resp->error = psprintf("timed out after %d s (tokenvault.http_timeout)", tv_http_timeout);
			break;
		case CURLE_SSL_CONNECT_ERROR:
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_SSL_CERTPROBLEM:
		case CURLE_SSL_CIPHER:
		case CURLE_SSL_CACERT_BADFILE:
		case CURLE_SSL_ISSUER_ERROR:
		case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
		case CURLE_SSL_INVALIDCERTSTATUS:
			resp->failure = TV_HTTP_TLS;
			resp->error = psprintf("TLS failed: %s", detail);
			break;
		case CURLE_FILESIZE_EXCEEDED:
			resp->failure = TV_HTTP_TOO_LARGE;
			break;
		case CURLE_WRITE_ERROR:
			if (resp->failure != TV_HTTP_TOO_LARGE)
			{
				resp->failure = TV_HTTP_NETWORK;
				resp->error = psprintf("could not read the response: %s", detail);
			}
			break;
		case CURLE_UNSUPPORTED_PROTOCOL:
			resp->failure = TV_HTTP_REFUSED;
			resp->error = psprintf("URL scheme not allowed: %s", detail);
			break;
		default:
			resp->failure = TV_HTTP_NETWORK;
			resp->error = psprintf("request failed: %s", detail);
			break;
	}
	if (resp->failure == TV_HTTP_TOO_LARGE)
		resp->error = psprintf("response is larger than %d kB (tokenvault.max_response_size)",
							   tv_max_response_size);
}

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
	TimestampTz timer;			/* when libcurl wants its timeout action; 0 = none */
	CURL	   *idle[MAX_IDLE_HANDLES];	/* finished handles, reset, for the next requests */
	int			nidle;
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

/* libcurl's CURLMOPT_TIMERFUNCTION: when to call it back regardless of sockets. */
static int
on_timer(CURLM *multi, long timeout_ms, void *userp)
{
	TvHttpMulti *m = (TvHttpMulti *) userp;

	m->timer = timeout_ms < 0 ? 0 : TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	return 0;
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
	m->multi = curl_multi_init();
	if (m->multi == NULL)
		elog(ERROR, "could not create a libcurl multi handle");
	MULTISETOPT(m->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	MULTISETOPT(m->multi, CURLMOPT_SOCKETDATA, m);
	MULTISETOPT(m->multi, CURLMOPT_TIMERFUNCTION, on_timer);
	MULTISETOPT(m->multi, CURLMOPT_TIMERDATA, m);
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

	memset(resp, 0, sizeof(TvHttpResponse));
	initStringInfo(&resp->body);
	resp->retry_after = -1;
	if (!tv_http_url_allowed(req->url, &why))
	{
		resp->failure = TV_HTTP_REFUSED;
		resp->error = pstrdup(why);
		return false;
	}
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
	/* linked in at once, so that a failure below still releases it */
	t->easy = m->nidle > 0 ? m->idle[--m->nidle] : curl_easy_init();
	if (t->easy == NULL)
		elog(ERROR, "could not create a libcurl handle");
	configure_handle(t->easy, req, resp, &t->headers, t->errbuf);
	SETOPT(t->easy, CURLOPT_PRIVATE, (void *) t);
	if (curl_multi_add_handle(m->multi, t->easy) != CURLM_OK)
	{
		/* not added: nothing for curl_multi_remove_handle to undo */
		elog(ERROR, "could not start a libcurl transfer");
	}
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
			describe_failure(msg->data.result, t->errbuf, t->resp);
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
 * Wait up to timeout_ms for the process latch or for progress of the
 * transfers, and report those that finished.  Returns true if the latch was
 * set (the caller resets it and checks for interrupts).
 */
bool
tv_http_multi_wait(TvHttpMulti *m, long timeout_ms)
{
	WaitEvent	events[16];
	int			nevents;
	int			running;
	int			i;
	bool		latch = false;

	if (m->set == NULL || m->set_stale)
		rebuild_wait_set(m);
	else if (m->set_changed)
		modify_wait_set(m);
	if (m->timer != 0)
	{
		long		secs;
		int			usecs;

		TimestampDifference(GetCurrentTimestamp(), m->timer, &secs, &usecs);
		timeout_ms = Min(timeout_ms, secs * 1000 + (usecs + 999) / 1000);
	}
	nevents = WaitEventSetWait(m->set, timeout_ms, events, lengthof(events), PG_WAIT_EXTENSION);
	for (i = 0; i < nevents; i++)
	{
		int			flags = 0;

		if (events[i].events & WL_LATCH_SET)
		{
			latch = true;
			continue;
		}
		if (events[i].events & WL_SOCKET_READABLE)
			flags |= CURL_CSELECT_IN;
		if (events[i].events & WL_SOCKET_WRITEABLE)
			flags |= CURL_CSELECT_OUT;
		if (curl_multi_socket_action(m->multi, events[i].fd, flags, &running) != CURLM_OK)
			elog(ERROR, "libcurl transfer failed");
	}
	if (m->timer != 0 && GetCurrentTimestamp() >= m->timer)
	{
		m->timer = 0;
		if (curl_multi_socket_action(m->multi, CURL_SOCKET_TIMEOUT, 0, &running) != CURLM_OK)
			elog(ERROR, "libcurl transfer failed");
	}
	collect_finished(m);
	return latch;
}

/* Every transfer dropped, unfinished and unreported, the multi handle closed. */
void
tv_http_multi_destroy(TvHttpMulti *m)
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

/*
 * Send n requests, at most max_parallel at a time, and call done(i) as each
 * finishes (a refused URL at once), checking for interrupts whenever the
 * latch is set.  Only refused URLs, failed transfers and HTTP statuses are
 * reported, in resps[i]; a cancel, or an error raised by done, raises the
 * usual error after every handle is released.
 */
typedef struct ManyArg
{
	TvHttpDone	done;
	void	   *arg;
	TvHttpResponse *resps;
} ManyArg;

static void
many_done(TvHttpResponse *resp, void *arg)
{
	ManyArg    *many = (ManyArg *) arg;

	if (many->done)
		many->done(resp - many->resps, resp, many->arg);
}

/* Top up to max_parallel (a refused request is done at once) and wait, until all are done. */
static void
perform_all(TvHttpMulti *m, const TvHttpRequest *reqs, TvHttpResponse *resps, int n,
			int max_parallel, ManyArg *many)
{
	int			next = 0;

	for (;;)
	{
		for (; next < n && m->active < max_parallel; next++)
			if (!tv_http_multi_add(m, &reqs[next], &resps[next], many_done, many))
				many_done(&resps[next], many);
		if (m->active == 0)
			break;
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		(void) tv_http_multi_wait(m, 1000L);
	}
}

void
tv_http_perform_many(const TvHttpRequest *reqs, TvHttpResponse *resps, int n, int max_parallel,
					 TvHttpDone done, void *arg)
{
	TvHttpMulti *m = tv_http_multi_create();
	ManyArg		many = {done, arg, resps};

	PG_TRY();
	{
		perform_all(m, reqs, resps, n, max_parallel, &many);
	}
	PG_CATCH();
	{
		tv_http_multi_destroy(m);
		PG_RE_THROW();
	}
	PG_END_TRY();
	tv_http_multi_destroy(m);
}

/* Send one request and wait for its response; see tv_http_perform_many. */
void
tv_http_perform(const TvHttpRequest *req, TvHttpResponse *resp)
{
	tv_http_perform_many(req, resp, 1, 1, NULL, NULL);
}
