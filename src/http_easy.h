/*
 * http_easy.h: setting up one libcurl transfer, for the HTTP modules only
 */
#ifndef TV_HTTP_EASY_H
#define TV_HTTP_EASY_H

#include "postgres.h"

#include <curl/curl.h>

#include "http.h"

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

extern void tv_http_configure(CURL *h, const TvHttpRequest *req, TvHttpResponse *resp,
							  struct curl_slist **headers, char *errbuf);
extern void tv_http_describe_failure(CURLcode rc, const char *errbuf, TvHttpResponse *resp);

#endif
