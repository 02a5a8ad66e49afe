/*
 * url_template.c: URL settings with {placeholders}, filled under the
 * client's allowed_hosts
 *
 * A token, refresh or revoke URL may name an auth's own fields in braces,
 * for a host per tenant ("https://{tenant}.my.salesforce.com/...").  Those
 * fields are written by every application that may update the auth and by
 * the provider's token responses, and the filled URL receives the client
 * secret and the refresh token: so no field may choose the host.  A value
 * that lands in the host is one label of a-z, 0-9 and -; the host that
 * results must be one the client's allowed_hosts lists, and never an IP
 * address in any of the forms resolvers accept; a value in the path or the
 * query is percent-encoded.  The same function judges a URL when a client
 * is saved, when an auth's fields are stored and before every request.
 *
 * Problems name settings and fields, never a value: a value may be anything
 * an application or a provider wrote.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "jsonb_member.h"
#include "url_template.h"

/* what may stand for one host label: a value, or what "*" matches */
static bool
is_label(const char *s, int len)
{
	int			i;

	if (len <= 0 || len > 63)
		return false;
	for (i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return false;
	return true;
}

/*
 * A label resolvers read as a number: decimal, octal (a leading 0, still
 * digits) or hex (0x...).  getaddrinfo() and libcurl take "2130706433",
 * "0x7f000001", "0177.0.0.1" and "127.1" for addresses: a host whose last
 * label is a number is one.
 */
static bool
is_number_label(const char *s, int len)
{
	int			i = 0;

	if (len >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
	{
		for (i = 2; i < len; i++)
			if (!isxdigit((unsigned char) s[i]))
				return false;
		return true;
	}
	if (len == 0)
		return false;
	for (; i < len; i++)
		if (!isdigit((unsigned char) s[i]))
			return false;
	return true;
}

/* "[::1]", "127.0.0.1", "127.1", "2130706433", "0x7f.1", "127.0.0.1." */
static bool
is_ip_literal(const char *host)
{
	int			len = strlen(host);
	const char *last;

	if (host[0] == '[')
		return true;
	if (len > 0 && host[len - 1] == '.')
		len--;
	for (last = host + len; last > host && last[-1] != '.'; last--)
		;
	return is_number_label(last, host + len - last);
}

/*
 * Why an allowed_hosts entry is no pattern, or NULL: a host name in lower
 * case, its leftmost label possibly "*", which matches exactly one label.
 */
const char *
tv_host_pattern_problem(const char *pattern)
{
	const char *p = pattern;
	const char *dot;

	if (is_ip_literal(pattern))
		return "an IP address is not a host name";
	if (strncmp(p, "*.", 2) == 0)
		p += 2;
	if (*p == '\0' || strcmp(p, "*") == 0)
		return "a pattern needs a host name after \"*.\"";
	if (strlen(p) > 253)
		return "a host name has at most 253 characters";
	for (;; p = dot + 1)
	{
		dot = strchr(p, '.');
		if (!is_label(p, dot ? dot - p : (int) strlen(p)))
			return strchr(p, '*') ? "only a whole leftmost label may be \"*\""
				: "a host name is labels of a-z, 0-9 and - (at most 63 characters each) joined by dots";
		if (dot == NULL)
			break;
	}
	return NULL;
}

static bool
host_matches(const char *host, const char *pattern)
{
	const char *dot;

	if (strncmp(pattern, "*.", 2) != 0)
		return strcmp(host, pattern) == 0;
	dot = strchr(host, '.');
	return dot != NULL && is_label(host, dot - host) && strcmp(dot + 1, pattern + 2) == 0;
}

/* RFC 3986 percent-encoding of all but the unreserved characters */
static void
append_encoded(StringInfo out, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s; s++)
	{
		unsigned char c = (unsigned char) *s;

		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			c == '-' || c == '.' || c == '_' || c == '~')
			appendStringInfoChar(out, c);
		else
		{
			appendStringInfoChar(out, '%');
			appendStringInfoChar(out, hex[c >> 4]);
			appendStringInfoChar(out, hex[c & 15]);
		}
	}
}

static bool
is_field_name(const char *s, int len)
{
	int			i;

	if (len == 0)
		return false;
	for (i = 0; i < len; i++)
		if (!(isalnum((unsigned char) s[i]) || s[i] == '_'))
			return false;
	return true;
}

/* The template's host as filled, in lower case (ASCII: host names are). */
static char *
lower_host(const char *s, int len)
{
	char	   *h = pnstrdup(s, len);
	char	   *c;

	for (c = h; *c; c++)
		*c = pg_ascii_tolower((unsigned char) *c);
	return h;
}

/*
 * Fill the "{field}" placeholders of the URL setting named setting from
 * fields, and judge the result: the URL, or NULL and *problem.
 *
 * With allowed_hosts NIL, a URL without placeholders is taken as it is (a
 * client that declares no hosts keeps its fixed URLs); one with
 * placeholders is refused.  With partial, a field fields lacks is no
 * problem: the values present are judged, and the host only when every
 * value of it is present (a client being saved, an auth's fields being
 * stored); the URL returned then is not to be requested.
 */
char *
tv_url_fill(const char *setting, const char *tmpl, JsonbContainer *fields,
			List *allowed_hosts, bool partial, char **problem)
{
	StringInfoData out;
	const char *sep = strstr(tmpl, "://");
	const char *p;
	int			host_start;
	int			host_end = -1;
	bool		in_authority = true;
	bool		in_port = false;
	bool		has_userinfo = false;
	bool		has_placeholder = false;
	bool		complete = true;
	char	   *host;
	ListCell   *lc;

	if (sep == NULL)
	{
		*problem = psprintf("%s is not an absolute URL", setting);
		return NULL;
	}
	initStringInfo(&out);
	appendBinaryStringInfo(&out, tmpl, sep + 3 - tmpl);
	host_start = out.len;
	for (p = sep + 3; *p;)
	{
		const char *close;
		char	   *name;
		char	   *value;

		if (in_authority && (*p == '/' || *p == '?' || *p == '#'))
		{
			in_authority = false;
			if (!in_port)
				host_end = out.len;
		}
		else if (in_authority && *p == '@')
			has_userinfo = true;
		else if (in_authority && *p == ':' && !in_port)
		{
			in_port = true;
			host_end = out.len;
		}
		if (*p != '{' || (close = strchr(p, '}')) == NULL)
		{
			appendStringInfoChar(&out, *p++);
			continue;
		}
		name = pnstrdup(p + 1, close - p - 1);
		p = close + 1;
		has_placeholder = true;
		if (!is_field_name(name, strlen(name)))
		{
			*problem = psprintf("{%s} in %s is not a field name (letters, digits and _)", name, setting);
			return NULL;
		}
		if (in_authority && in_port)
		{
			*problem = psprintf("%s has {%s} in its port: a field may fill a host label, the path or the query",
								setting, name);
			return NULL;
		}
		value = tv_jsonb_scalar(fields, name);
		if (value == NULL || value[0] == '\0')
		{
			if (partial)
			{
				complete = complete && !in_authority;
				continue;
			}
			*problem = psprintf("%s names {%s}, which the auth does not have", setting, name);
			return NULL;
		}
		if (in_authority && !is_label(value, strlen(value)))
		{
			*problem = psprintf("field \"%s\" cannot fill the host of %s: a value there is one label of a-z, 0-9 and -",
								name, setting);
			return NULL;
		}
		if (!in_authority && (strcmp(value, ".") == 0 || strcmp(value, "..") == 0))
		{
			*problem = psprintf("field \"%s\" cannot fill the path of %s as \".\" or \"..\"", name, setting);
			return NULL;
		}
		if (in_authority)
			appendStringInfoString(&out, value);
		else
			append_encoded(&out, value);
	}
	if (host_end < 0)
		host_end = out.len;

	if (allowed_hosts == NIL)
	{
		if (!has_placeholder)
			return out.data;
		*problem = psprintf("%s names fields in braces, but the client lists no allowed_hosts", setting);
		return NULL;
	}
	if (has_userinfo)
	{
		*problem = psprintf("%s has user information before its host", setting);
		return NULL;
	}
	if (!complete)
		return out.data;
	host = lower_host(out.data + host_start, host_end - host_start);
	if (is_ip_literal(host))
	{
		*problem = psprintf("the host of %s is an IP address, which allowed_hosts never admits", setting);
		return NULL;
	}
	foreach(lc, allowed_hosts)
		if (host_matches(host, (const char *) lfirst(lc)))
			return out.data;
	*problem = psprintf("the host of %s is not one the client's allowed_hosts lists", setting);
	return NULL;
}

/* ---- SQL-callable ---- */

PG_FUNCTION_INFO_V1(tv_url_problem);
PG_FUNCTION_INFO_V1(tv_host_pattern_problem_sql);

static List *
text_array_list(ArrayType *arr)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;
	List	   *out = NIL;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (i = 0; i < n; i++)
		if (!nulls[i])
			out = lappend(out, TextDatumGetCString(elems[i]));
	return out;
}

/*
 * _url_problem(setting text, url text, allowed_hosts text[], fields jsonb)
 * returns text: why the URL, filled from fields (those it lacks do not
 * count), may not be requested; NULL when it may, or when there is no URL.
 */
Datum
tv_url_problem(PG_FUNCTION_ARGS)
{
	char	   *problem = NULL;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	tv_url_fill(text_to_cstring(PG_GETARG_TEXT_PP(0)), text_to_cstring(PG_GETARG_TEXT_PP(1)),
				PG_ARGISNULL(3) ? NULL : &PG_GETARG_JSONB_P(3)->root,
				PG_ARGISNULL(2) ? NIL : text_array_list(PG_GETARG_ARRAYTYPE_P(2)),
				true, &problem);
	if (problem == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(problem));
}

/* _host_pattern_problem(pattern text) returns text: NULL for a good pattern */
Datum
tv_host_pattern_problem_sql(PG_FUNCTION_ARGS)
{
	const char *problem = tv_host_pattern_problem(text_to_cstring(PG_GETARG_TEXT_PP(0)));

	if (problem == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(problem));
}

PG_FUNCTION_INFO_V1(tv_url_fill_sql);

/*
 * _url_fill(setting text, url text, allowed_hosts text[], fields jsonb)
 * returns text: the URL filled from fields, or an error saying why it may
 * not be requested.
 */
Datum
tv_url_fill_sql(PG_FUNCTION_ARGS)
{
	char	   *problem = NULL;
	char	   *url;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	url = tv_url_fill(text_to_cstring(PG_GETARG_TEXT_PP(0)), text_to_cstring(PG_GETARG_TEXT_PP(1)),
					  PG_ARGISNULL(3) ? NULL : &PG_GETARG_JSONB_P(3)->root,
					  PG_ARGISNULL(2) ? NIL : text_array_list(PG_GETARG_ARRAYTYPE_P(2)),
					  false, &problem);
	if (url == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s", problem),
				 errhint("A field that fills a URL may only make a host the client's allowed_hosts lists.")));
	PG_RETURN_TEXT_P(cstring_to_text(url));
}
