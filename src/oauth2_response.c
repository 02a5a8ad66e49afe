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

static Jsonb *
json_to_jsonb(StringInfo json)
{
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(json->data)));
}

/* Whether the array at config's key holds the string value. */
static bool
listed(JsonbContainer *config, const char *key, const char *value)
{
	JsonbValue	list;
	JsonbValue	item;

	if (!tv_jsonb_member(config, key, &list) || list.type != jbvBinary ||
		!JsonContainerIsArray(list.val.binary.data))
		return false;
	item.type = jbvString;
	item.val.string.val = (char *) value;
	item.val.string.len = strlen(value);
	return findJsonbValueFromContainer(list.val.binary.data, JB_FARRAY, &item) != NULL;
}

/*
 * What an OAuth2 error code means for the auth (RFC 6749 5.2), and the
 * provider's own codes for a grant that is gone (the client's reauth_errors).
 */
static TvOutcome
error_class(const char *error, long status, JsonbContainer *config)
{
	if (strcmp(error, "invalid_grant") == 0 || strcmp(error, "invalid_client") == 0 ||
		strcmp(error, "unauthorized_client") == 0 || listed(config, "reauth_errors", error))
		return TV_OUTCOME_NEEDS_REAUTH;
	if (strcmp(error, "temporarily_unavailable") == 0 || strcmp(error, "server_error") == 0 ||
		strcmp(error, "slow_down") == 0 || status == 429 || status >= 500)
		return TV_OUTCOME_RETRYABLE;
	return TV_OUTCOME_ERROR;
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

/* The member at a dotted path ("a.b") of an object, false if there is none. */
static bool
path_member(JsonbContainer *obj, const char *path, JsonbValue *v)
{
	char	   *copy = pstrdup(path);
	char	   *save = NULL;
	char	   *part;

	v->type = jbvBinary;
	v->val.binary.data = obj;
	for (part = strtok_r(copy, ".", &save); part; part = strtok_r(NULL, ".", &save))
	{
		if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data) ||
			!tv_jsonb_member(v->val.binary.data, part, v))
			return false;
	}
	return true;
}

/* The scalar at a dotted path, as text; NULL if there is none. */
static char *
path_scalar(JsonbContainer *obj, const char *path)
{
	JsonbValue	v;
	char	   *dot = strrchr(path, '.');

	if (dot == NULL)
		return tv_jsonb_scalar(obj, path);
	if (!path_member(obj, pnstrdup(path, dot - path), &v) || v.type != jbvBinary ||
		!JsonContainerIsObject(v.val.binary.data))
		return NULL;
	return tv_jsonb_scalar(v.val.binary.data, dot + 1);
}

/* The token object at the client's token_path ("a.b"), or the top level, as a jsonb of its own. */
static Jsonb *
token_object(Jsonb *doc, const char *path)
{
	JsonbValue	v;

	if (!JsonContainerIsObject(&doc->root))
		return NULL;
	if (path == NULL || path[0] == '\0')
		return doc;
	if (path_member(&doc->root, path, &v) && v.type == jbvBinary && JsonContainerIsObject(v.val.binary.data))
		return JsonbValueToJsonb(&v);
	return NULL;
}

/*
 * The request's secrets and the tokens the answer itself carries: an error
 * read from a field the client names is quoted only if it shows none of
 * them (an error_field pointed at access_token must not put the token in
 * last_error and the events).
 */
static List *
answer_secrets(Jsonb *doc, const char *path, List *aliases, List *secrets)
{
	ListCell   *lc;
	static const char *const names[] = {"access_token", "refresh_token", "id_token", NULL};
	JsonbValue	v;
	JsonbContainer *objs[2] = {&doc->root, NULL};
	int			i;
	int			j;

	if (path && path_member(&doc->root, path, &v) && v.type == jbvBinary)
		objs[1] = v.val.binary.data;
	secrets = list_copy(secrets);
	for (i = 0; i < 2; i++)
	{
		char	   *value;

		if (objs[i] == NULL)
			continue;
		for (j = 0; names[j]; j++)
			if ((value = tv_jsonb_scalar(objs[i], names[j])) != NULL && value[0])
				secrets = lappend(secrets, value);
		/* and under the names the provider gives them (field_names) */
		foreach(lc, aliases)
			if ((value = tv_jsonb_scalar(objs[i], (const char *) lfirst(lc))) != NULL && value[0])
				secrets = lappend(secrets, value);
	}
	return secrets;
}

/* A config setting, or its default when the client has none. */
static const char *
setting_or(JsonbContainer *config, const char *key, const char *dflt)
{
	char	   *v = tv_jsonb_scalar(config, key);

	return v && v[0] ? v : dflt;
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
refusal(TvHttpResponse *resp, const char *error, const char *description, List *secrets, JsonbContainer *config)
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
	return tv_verdict_failure(error_class(error, resp->status, config), resp->status, code,
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
	const char *field = setting_or(config, "access_token_field", "access_token");
	const char *path = tv_jsonb_scalar(config, "token_path");

	if (resp->failure != TV_HTTP_OK)
		return tv_verdict_failure(resp->failure == TV_HTTP_TOO_LARGE || resp->failure == TV_HTTP_REFUSED ||
								  resp->failure == TV_HTTP_TLS ? TV_OUTCOME_ERROR : TV_OUTCOME_RETRYABLE,
							   0, NULL, resp->error, -1);

	doc = tv_jsonb_parse(&resp->body);
	if (doc == NULL)
		doc = parse_form(&resp->body);

	/*
	 * An OAuth2 error, whatever the status (some providers send it with
	 * 200), where the client says it sits.  A field the client names is
	 * read only from an answer that is no token: a 2xx with an access token
	 * is a success, whatever such a field says.
	 */
	if (doc && tv_jsonb_scalar(config, "error_field") && resp->status >= 200 && resp->status < 300 &&
		(tok = token_object(doc, path)) != NULL && tv_jsonb_scalar(&tok->root, field) &&
		tv_jsonb_scalar(&tok->root, field)[0])
		error = NULL;
	else
		error = doc ? path_scalar(&doc->root, setting_or(config, "error_field", "error")) : NULL;
	if (error && error[0])
		return refusal(resp, error, path_scalar(&doc->root, setting_or(config, "error_description_field",
																	  "error_description")),
					   answer_secrets(doc, path, tv_jsonb_strings(config, "token_field_names"), secrets), config);
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

	tok = token_object(doc, path);
	if (tok == NULL || tv_jsonb_scalar(&tok->root, field) == NULL || tv_jsonb_scalar(&tok->root, field)[0] == '\0')
		return tv_verdict_failure(TV_OUTCOME_ERROR, resp->status, NULL,
							   path ? psprintf("the provider's answer has no %s under \"%s\"", field, path)
							   : psprintf("the provider's answer has no %s", field), -1);

	return tv_verdict_done(resp->status, tok);
}
