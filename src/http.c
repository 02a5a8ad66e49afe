/*
 * http.c: one HTTP request set up over libcurl, with tokenvault's limits
 *
 * Every request is held to the same rules: https unless the client or
 * webhook allows plain http, TLS always verified (against
 * tokenvault.ca_file when set), every address connected to judged by the
 * host policy (host_policy.c), no proxy, no redirects followed, the response capped
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

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <curl/curl.h>

#include "utils/memutils.h"

#include "host_policy.h"
#include "http.h"
#include "http_easy.h"
#include "settings.h"

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
tv_http_url_allowed(const char *url, bool allow_insecure_http, char **why)
{
	if (pg_strncasecmp(url, "https://", 8) == 0 && url[8] != '\0')
		return true;
	if (pg_strncasecmp(url, "http://", 7) == 0 && url[7] != '\0')
	{
		if (allow_insecure_http)
			return true;
		*why = "plain http is not allowed (the client's or webhook's allow_insecure_http is off)";
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

/* The URL's host as libcurl reads it, brackets of an IPv6 literal taken off. */
static char *
url_host(const char *url)
{
	CURLU	   *u = curl_url();
	char	   *host = NULL;
	char	   *out = pstrdup("");

	if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
		curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK)
	{
		size_t		n = strlen(host);

		out = (host[0] == '[' && n > 1) ? pnstrdup(host + 1, n - 2) : pstrdup(host);
		curl_free(host);
	}
	curl_url_cleanup(u);
	return out;
}

/*
 * libcurl's open-socket callback: every address a transfer would connect
 * to, after DNS, is judged by the host policy, so a name that resolves
 * inward (DNS rebinding included) is refused like the address itself.
 */
static curl_socket_t
open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
	TvHttpResponse *resp = (TvHttpResponse *) arg;
	const void *addr;

	if (a->family == AF_INET)
		addr = &((struct sockaddr_in *) &a->addr)->sin_addr;
	else if (a->family == AF_INET6)
		addr = &((struct sockaddr_in6 *) &a->addr)->sin6_addr;
	else
		return CURL_SOCKET_BAD;
	resp->refused = tv_host_policy_refusal(resp->host, a->family, addr);
	if (resp->refused)
	{
		ereport(LOG,
				(errmsg("tokenvault refused to connect: %s", resp->refused)));
		return CURL_SOCKET_BAD;
	}
	return socket(a->family, a->socktype, a->protocol);
}

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
void
tv_http_configure(CURL *h, const TvHttpRequest *req, TvHttpResponse *resp, struct curl_slist **headers,
				 char *errbuf)
{
	static char user_agent[64];
	ListCell   *lc;

	/* TOKENVAULT_VERSION comes from the Makefile, which reads tokenvault.control */
	snprintf(user_agent, sizeof(user_agent), "tokenvault/%s (libcurl)", TOKENVAULT_VERSION);
	SETOPT(h, CURLOPT_URL, req->url);
	SETOPT(h, CURLOPT_PROTOCOLS_STR, req->allow_insecure_http ? "https,http" : "https");
	SETOPT(h, CURLOPT_FOLLOWLOCATION, 0L);
	/* a proxy would connect for us, to wherever, past the host policy */
	SETOPT(h, CURLOPT_PROXY, "");
	resp->host = url_host(req->url);
	SETOPT(h, CURLOPT_OPENSOCKETFUNCTION, open_socket);
	SETOPT(h, CURLOPT_OPENSOCKETDATA, resp);
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
void
tv_http_describe_failure(CURLcode rc, const char *errbuf, TvHttpResponse *resp)
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
			if (resp->refused)
			{
				resp->failure = TV_HTTP_REFUSED;
				resp->error = psprintf("%s: %s", TV_HOST_POLICY_REFUSED, resp->refused);
				break;
			}
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
