/*
 * oauth2_response.c: what a provider's answer to a token request means
 *
 * Answers are read as real providers send them: JSON, or a form-encoded
 * body; an "error" even in a 200; the token nested under a path.  The
 * verdict (verdict.h) is built as a value.  Provider text is quoted only
 * when no secret the request carried shows through it (redact.c).
 */
#include "postgres.h"

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "nodes/pg_list.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"

#include "http.h"
#include "jsonb_member.h"
#include "oauth2_response.h"
#include "redact.h"

#define MESSAGE_MAX 300			/* how much provider text is quoted */
#define MAX_JSON_DEPTH 64		/* how deeply a provider's JSON answer may nest */

static Jsonb *
json_to_jsonb(StringInfo json)
{
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(json->data)));
}

/* What an OAuth2 error code means for the auth (RFC 6749 5.2). */
static TvOutcome
error_class(const char *error, long status)
{
	if (strcmp(error, "invalid_grant") == 0 || strcmp(error, "invalid_client") == 0 ||
		strcmp(error, "unauthorized_client") == 0)
		return TV_OUTCOME_NEEDS_REAUTH;
	if (strcmp(error, "temporarily_unavailable") == 0 || strcmp(error, "server_error") == 0 ||
		strcmp(error, "slow_down") == 0 || status == 429 || status >= 500)
		return TV_OUTCOME_RETRYABLE;
	return TV_OUTCOME_ERROR;
}

/*
 * Whether JSON text nests no deeper than max.  PostgreSQL 15's JSON parser
 * recurses once per level and stops at max_stack_depth with an error, which
 * a provider's answer of ten megabytes of "[" would otherwise reach; no
 * token response needs more than a few levels.
 */
static bool
nesting_within(const char *text, int len, int max)
{
	int			depth = 0;
	bool		in_string = false;
	int			i;

	for (i = 0; i < len; i++)
	{
		if (in_string)
		{
			if (text[i] == '\\')
				i++;
			else if (text[i] == '"')
				in_string = false;
		}
		else if (text[i] == '"')
			in_string = true;
		else if (text[i] == '[' || text[i] == '{')
		{
			if (++depth > max)
				return false;
		}
		else if (text[i] == ']' || text[i] == '}')
			depth--;
	}
	return true;
}

/* The body as JSON, if it is valid JSON in the database encoding. */
static Jsonb *
parse_json(StringInfo body)
{
	JsonLexContext *lex;

	if (body->len == 0 || strlen(body->data) != (size_t) body->len ||
		!pg_verifymbstr(body->data, body->len, true) ||
		!nesting_within(body->data, body->len, MAX_JSON_DEPTH))
		return NULL;
	/*
	 * De-escaping strings makes the lexer refuse what jsonb cannot hold
	 * (\u0000, lone surrogates), before jsonb_in would fail on it and quote
	 * the body, token and all, in its error context.
	 */
	lex = makeJsonLexContextCstringLen(body->data, body->len, GetDatabaseEncoding(), true);
	if (pg_parse_json(lex, &nullSemAction) != JSON_SUCCESS)
		return NULL;
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(body->data)));
}

/* A form-encoded body ("a=b&c=d"), as some providers answer, as JSON. */
static Jsonb *
parse_form(StringInfo body)
{
	StringInfoData j;
	char	   *copy = pstrdup(body->data);
	char	   *save = NULL;
	char	   *pair;
	bool		first = true;

	if (strchr(copy, '=') == NULL || strchr(copy, '<') || strchr(copy, '{'))
		return NULL;
	initStringInfo(&j);
	appendStringInfoChar(&j, '{');
	for (pair = strtok_r(copy, "&", &save); pair; pair = strtok_r(NULL, "&", &save))
	{
		char	   *eq = strchr(pair, '=');
		char	   *value;
		StringInfoData dec;

		if (eq == NULL)
			continue;
		*eq = '\0';
		initStringInfo(&dec);
		for (value = eq + 1; *value; value++)
		{
			if (*value == '+')
				appendStringInfoChar(&dec, ' ');
			else if (*value == '%' && isxdigit((unsigned char) value[1]) && isxdigit((unsigned char) value[2]))
			{
				char		hex[3] = {value[1], value[2], 0};

				appendStringInfoChar(&dec, (char) strtol(hex, NULL, 16));
				value += 2;
			}
			else
				appendStringInfoChar(&dec, *value);
		}
		if (!pg_verifymbstr(dec.data, dec.len, true) || !pg_verifymbstr(pair, strlen(pair), true))
			return NULL;
		if (!first)
			appendStringInfoChar(&j, ',');
		first = false;
		escape_json(&j, pair);
		appendStringInfoChar(&j, ':');
		escape_json(&j, dec.data);
	}
	appendStringInfoChar(&j, '}');
	return first ? NULL : json_to_jsonb(&j);
}

/* The token object at the client's token_path ("a.b"), or the top level, as a jsonb of its own. */
static Jsonb *
token_object(Jsonb *doc, const char *path)
{
	JsonbContainer *obj = &doc->root;
	JsonbValue	v;
	char	   *copy;
	char	   *save = NULL;
	char	   *part;

	if (!JsonContainerIsObject(obj))
		return NULL;
	if (path == NULL || path[0] == '\0')
		return doc;
	copy = pstrdup(path);
	for (part = strtok_r(copy, ".", &save); part; part = strtok_r(NULL, ".", &save))
	{
		if (!tv_jsonb_member(obj, part, &v) || v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
			return NULL;
		obj = v.val.binary.data;
	}
	return JsonbValueToJsonb(&v);
}

/* ", retry after N s" when the provider said when */
static const char *
retry_note(int retry_after)
{
	return retry_after >= 0 ? psprintf(", retry after %d s", retry_after) : "";
}

/* Why a 2xx answer could not be read as a token response. */
static const char *
unreadable(TvHttpResponse *resp)
{
	if (resp->body.len == 0)
		return "the provider's answer is empty";
	if (resp->content_type && strstr(resp->content_type, "json"))
		return "the provider's answer is not valid JSON";
	return psprintf("the provider's answer is neither JSON nor form-encoded (content type %s)",
					resp->content_type ? resp->content_type : "none");
}

/*
 * The verdict on a provider's OAuth2 error.  Its error and
 * error_description are quoted only when no secret of the request shows
 * through them; the class is read from the error either way.
 */
static TvVerdict *
refusal(TvHttpResponse *resp, const char *error, const char *description, List *secrets)
{
	char	   *code = tv_redact_quote(error, secrets, MESSAGE_MAX);
	char	   *text = description ? tv_redact_quote(description, secrets, MESSAGE_MAX) : NULL;
	const char *said;

	if (code == NULL)
		said = " (its answer is withheld: it quotes a secret of the request)";
	else if (description && text == NULL)
		said = psprintf(": %s (its error_description is withheld: it quotes a secret of the request)", code);
	else
		said = psprintf(": %s%s%s", code, text ? ": " : "", text ? text : "");
	return tv_verdict_failure(error_class(error, resp->status), resp->status, code,
							  psprintf("the provider refused the request%s%s", said, retry_note(resp->retry_after)),
							  resp->retry_after);
}

/* The verdict on a token request's response, quoting no secret of the request. */
TvVerdict *
tv_oauth2_read_response(TvHttpResponse *resp, JsonbContainer *config, List *secrets)
{
	Jsonb	   *doc;
	Jsonb	   *tok;
	char	   *error;

	if (resp->failure != TV_HTTP_OK)
		return tv_verdict_failure(resp->failure == TV_HTTP_TOO_LARGE || resp->failure == TV_HTTP_REFUSED ||
								  resp->failure == TV_HTTP_TLS ? TV_OUTCOME_ERROR : TV_OUTCOME_RETRYABLE,
							   0, NULL, resp->error, -1);

	doc = parse_json(&resp->body);
	if (doc == NULL)
		doc = parse_form(&resp->body);

	/* an OAuth2 error, whatever the status (some providers send it with 200) */
	error = doc ? tv_jsonb_scalar(&doc->root, "error") : NULL;
	if (error && error[0])
		return refusal(resp, error, tv_jsonb_scalar(&doc->root, "error_description"), secrets);
	if (resp->status == 429 || resp->status >= 500)
		return tv_verdict_failure(TV_OUTCOME_RETRYABLE, resp->status, NULL,
							   psprintf("the provider answered HTTP %ld%s", resp->status,
										retry_note(resp->retry_after)), resp->retry_after);
	if (resp->status >= 300 && resp->status < 400)
		return tv_verdict_failure(TV_OUTCOME_ERROR, resp->status, NULL,
							   psprintf("the provider answered with a redirect (HTTP %ld), which is not followed",
										resp->status), -1);
	if (resp->status < 200 || resp->status >= 300)
		return tv_verdict_failure(TV_OUTCOME_ERROR, resp->status, NULL,
							   psprintf("the provider answered HTTP %ld", resp->status), -1);
	if (doc == NULL)
		return tv_verdict_failure(TV_OUTCOME_ERROR, resp->status, NULL, unreadable(resp), -1);

	tok = token_object(doc, tv_jsonb_scalar(config, "token_path"));
	if (tok == NULL || tv_jsonb_scalar(&tok->root, "access_token") == NULL ||
		tv_jsonb_scalar(&tok->root, "access_token")[0] == '\0')
		return tv_verdict_failure(TV_OUTCOME_ERROR, resp->status, NULL,
							   tv_jsonb_scalar(config, "token_path")
							   ? psprintf("the provider's answer has no access_token under \"%s\"",
										  tv_jsonb_scalar(config, "token_path"))
							   : "the provider's answer has no access_token", -1);

	return tv_verdict_done(resp->status, tok);
}
