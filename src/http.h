/*
 * http.h: HTTP requests over libcurl, with tokenvault's limits
 */
#ifndef TV_HTTP_H
#define TV_HTTP_H

#include "postgres.h"

#include "lib/stringinfo.h"
#include "nodes/pg_list.h"

/* What went wrong below HTTP, if anything: it decides retry or not. */
typedef enum TvHttpFailure
{
	TV_HTTP_OK = 0,				/* an HTTP response arrived (any status) */
	TV_HTTP_DNS,
	TV_HTTP_CONNECT,
	TV_HTTP_TLS,
	TV_HTTP_TIMEOUT,
	TV_HTTP_TOO_LARGE,
	TV_HTTP_NETWORK,			/* the connection broke mid-way */
	TV_HTTP_REFUSED				/* not sent: URL or scheme not allowed */
} TvHttpFailure;

typedef struct TvHttpRequest
{
	const char *method;			/* "POST" when NULL and there is a body */
	const char *url;
	const char *content_type;
	const char *body;
	size_t		body_len;
	const char *authorization;	/* whole Authorization header value, or NULL */
	List	   *headers;		/* more header lines ("Name: value"), or NIL */
	bool		discard_body;	/* the answer's status is all that is wanted */
	bool		allow_insecure_http;	/* the client's or webhook's setting */
} TvHttpRequest;

typedef struct TvHttpResponse
{
	TvHttpFailure failure;
	long		status;
	StringInfoData body;
	char	   *content_type;	/* lower case, parameters stripped; or NULL */
	int			retry_after;	/* seconds from Retry-After, or -1 */
	char	   *error;			/* what failed, for a person; never a secret */
	double		seconds;		/* total time */
	char	   *host;			/* the URL's host, as the host policy judges it */
	char	   *refused;		/* why the host policy refused an address, if it did */
} TvHttpResponse;

extern void tv_http_init(void);
extern bool tv_http_url_allowed(const char *url, bool allow_insecure_http, char **why);
/* Called as a request on a multi handle finishes. */
typedef void (*TvHttpFinished) (TvHttpResponse *resp, void *arg);
typedef struct TvHttpMulti TvHttpMulti;

extern TvHttpMulti *tv_http_multi_create(void);
extern bool tv_http_multi_add(TvHttpMulti *m, const TvHttpRequest *req, TvHttpResponse *resp,
							  TvHttpFinished done, void *arg);
extern int	tv_http_multi_active(TvHttpMulti *m);
extern bool tv_http_multi_wait(TvHttpMulti *m, long timeout_ms);

extern void tv_http_perform(const TvHttpRequest *req, TvHttpResponse *resp);
extern char *tv_url_encode(const char *s);

#endif
