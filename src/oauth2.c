/*
 * oauth2.c: token requests and what their responses mean
 *
 * One function sends a token request (any grant) to a client's token
 * endpoint and reads the answer as real providers send it: JSON, or a form-
 * encoded body; an "error" even in a 200; the token nested under a path.  It
 * returns a verdict (verdict.h, tokenvault.verdict in SQL): done with the
 * provider's token object, or needs_reauth, retryable or error with the
 * status, the provider's OAuth2 error code, a message and its Retry-After.
 *
 * The client's settings arrive as one JSON object built by SQL
 * (tokenvault._client_config), so this file knows no table.  Nothing secret
 * is ever put into a message: provider text is scrubbed of every secret the
 * request carried before it is quoted.
 */
#include "postgres.h"

#include "common/base64.h"
#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "nodes/pg_list.h"
#include "utils/json.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "http.h"
#include "oauth2.h"

#define MESSAGE_MAX 300			/* how much provider text is quoted */
#define MAX_JSON_DEPTH 64		/* how deeply a provider's JSON answer may nest */

/* A string member of a jsonb object, or NULL. */
static char *
member(JsonbContainer *obj, const char *key)
{
	JsonbValue	v;

	if (obj == NULL || !JsonContainerIsObject(obj) ||
		getKeyJsonValueFromContainer(obj, key, strlen(key), &v) == NULL)
		return NULL;
	if (v.type == jbvString)
		return pnstrdup(v.val.string.val, v.val.string.len);
	if (v.type == jbvNumeric)
		return DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v.val.numeric)));
	if (v.type == jbvBool)
		return pstrdup(v.val.boolean ? "true" : "false");
	return NULL;
}

/* An object member of a jsonb object, or NULL. */
static JsonbContainer *
object_member(JsonbContainer *obj, const char *key)
{
	JsonbValue	v;

	if (obj == NULL || !JsonContainerIsObject(obj) ||
		getKeyJsonValueFromContainer(obj, key, strlen(key), &v) == NULL ||
		v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
		return NULL;
	return v.val.binary.data;
}

/* Each string-valued member of an object, in turn. */
typedef void (*MemberFn) (const char *key, const char *value, void *arg);

static void
each_member(JsonbContainer *obj, MemberFn fn, void *arg)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *key = NULL;

	if (obj == NULL || !JsonContainerIsObject(obj))
		return;
	it = JsonbIteratorInit(obj);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
			key = pnstrdup(v.val.string.val, v.val.string.len);
		else if (tok == WJB_VALUE && key)
		{
			if (v.type == jbvString)
				fn(key, pnstrdup(v.val.string.val, v.val.string.len), arg);
			else if (v.type == jbvNumeric)
				fn(key, DatumGetCString(DirectFunctionCall1(numeric_out,
															NumericGetDatum(v.val.numeric))), arg);
			else if (v.type == jbvBool)
				fn(key, v.val.boolean ? "true" : "false", arg);
		}
	}
}

/* The request body, form-encoded or JSON, and the secrets it carries. */
typedef struct Body
{
	bool		json;
	StringInfoData buf;
	List	   *secrets;
} Body;

static void
body_add(const char *key, const char *value, void *arg)
{
	Body	   *b = (Body *) arg;

	if (b->json)
	{
		appendStringInfoChar(&b->buf, b->buf.len > 1 ? ',' : '{');
		escape_json(&b->buf, key);
		appendStringInfoChar(&b->buf, ':');
		escape_json(&b->buf, value);
	}
	else
	{
		if (b->buf.len > 0)
			appendStringInfoChar(&b->buf, '&');
		appendStringInfo(&b->buf, "%s=%s", tv_url_encode(key), tv_url_encode(value));
	}
}

static void
body_add_secret(Body *b, const char *key, const char *value)
{
	if (value == NULL)
		return;
	body_add(key, value, b);
	b->secrets = lappend(b->secrets, (void *) value);
}

/* Fill "{name}" placeholders of a URL from the auth's own fields. */
static char *
fill_template(const char *url, JsonbContainer *values, char **problem)
{
	StringInfoData out;
	const char *p = url;

	initStringInfo(&out);
	while (*p)
	{
		const char *close;
		char	   *name;
		char	   *value;

		if (*p != '{' || (close = strchr(p, '}')) == NULL)
		{
			appendStringInfoChar(&out, *p++);
			continue;
		}
		name = pnstrdup(p + 1, close - p - 1);
		value = member(values, name);
		if (value == NULL || value[0] == '\0')
		{
			*problem = psprintf("the URL names {%s}, which the auth does not have", name);
			return NULL;
		}
		appendStringInfoString(&out, tv_url_encode(value));
		p = close + 1;
	}
	return out.data;
}

/* Provider text with every secret of the request cut out, and shortened. */
static char *
scrub(const char *text, List *secrets)
{
	char	   *out = pstrdup(text);
	ListCell   *lc;
	char	   *c;

	foreach(lc, secrets)
	{
		const char *s = lfirst(lc);
		size_t		n = strlen(s);
		char	   *hit;

		if (n < 4)
			continue;
		while ((hit = strstr(out, s)) != NULL)
			out = psprintf("%.*s[redacted]%s", (int) (hit - out), out, hit + n);
	}
	/* cut only after the secrets are out, so no part of one is left at the end */
	if (strlen(out) > MESSAGE_MAX)
		out[MESSAGE_MAX] = '\0';
	/* keep the message on one line */
	for (c = out; *c; c++)
		if (*c == '\n' || *c == '\r' || *c == '\t')
			*c = ' ';
	return out;
}

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

/* The token object at the client's token_path ("a.b"), or the top level. */
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
		if (getKeyJsonValueFromContainer(obj, part, strlen(part), &v) == NULL ||
			v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
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

static TvVerdict *
read_response(TvHttpResponse *resp, JsonbContainer *config, List *secrets)
{
	Jsonb	   *doc;
	Jsonb	   *tok;
	char	   *error;
	char	   *description;
	TvVerdict  *done;

	if (resp->failure != TV_HTTP_OK)
		return tv_verdict_failure(resp->failure == TV_HTTP_TOO_LARGE || resp->failure == TV_HTTP_REFUSED ||
							   resp->failure == TV_HTTP_TLS ? TV_OUTCOME_ERROR : TV_OUTCOME_RETRYABLE,
							   0, NULL, resp->error, -1);

	doc = parse_json(&resp->body);
	if (doc == NULL)
		doc = parse_form(&resp->body);

	/* an OAuth2 error, whatever the status (some providers send it with 200) */
	error = doc ? member(&doc->root, "error") : NULL;
	if (error && error[0])
	{
		description = member(&doc->root, "error_description");
		return tv_verdict_failure(error_class(error, resp->status), resp->status, scrub(error, secrets),
							   psprintf("the provider refused the request: %s%s%s%s", scrub(error, secrets),
										description ? ": " : "",
										description ? scrub(description, secrets) : "",
										retry_note(resp->retry_after)),
							   resp->retry_after);
	}
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

	tok = token_object(doc, member(config, "token_path"));
	if (tok == NULL || member(&tok->root, "access_token") == NULL || member(&tok->root, "access_token")[0] == '\0')
		return tv_verdict_failure(TV_OUTCOME_ERROR, resp->status, NULL,
							   member(config, "token_path")
							   ? psprintf("the provider's answer has no access_token under \"%s\"",
										  member(config, "token_path"))
							   : "the provider's answer has no access_token", -1);

	done = palloc0(sizeof(TvVerdict));
	done->outcome = TV_OUTCOME_DONE;
	done->status = resp->status;
	done->retry_after = -1;
	done->token = tok;
	return done;
}

/* "Basic base64(urlencode(id):urlencode(secret))", RFC 6749 2.3.1 */
static char *
basic_credentials(const char *id, const char *secret)
{
	char	   *pair = psprintf("%s:%s", tv_url_encode(id), tv_url_encode(secret));
	int			len = strlen(pair);
	char	   *out = palloc(pg_b64_enc_len(len) + 7);
	int			n;

	memcpy(out, "Basic ", 6);
	n = pg_b64_encode(pair, len, out + 6, pg_b64_enc_len(len));
	out[6 + n] = '\0';
	explicit_bzero(pair, len);
	return out;
}

/* grant parameters that are secrets, so never quoted back from a provider */
static const char *const secret_params[] = {"refresh_token", "code", "code_verifier", "password", "token"};

static bool
setting_is(JsonbContainer *config, const char *key, const char *value)
{
	char	   *v = member(config, key);

	return v != NULL && strcmp(v, value) == 0;
}

/*
 * Build the request: the grant parameters, the extra parameters of this
 * kind of request, and the client's authentication (Basic, or in the body,
 * always so for a public client).  call->secrets gets every secret it
 * carries, for scrubbing what comes back.
 */
static void
build_request(TvTokenCall *call, const char *url, const char *kind, Jsonb *params)
{
	JsonbContainer *config = call->config;
	char	   *client_id = member(config, "client_id");
	char	   *client_secret = member(config, "client_secret");
	char	   *param_secret;
	Body		body = {0};
	bool		in_body;
	int			i;

	body.json = setting_is(config, "body_format", "json");
	initStringInfo(&body.buf);
	each_member(&params->root, body_add, &body);
	for (i = 0; i < lengthof(secret_params); i++)
		if ((param_secret = member(&params->root, secret_params[i])) != NULL)
			body.secrets = lappend(body.secrets, param_secret);
	each_member(object_member(object_member(config, "extra_params"), kind), body_add, &body);

	in_body = client_secret == NULL || setting_is(config, "client_auth", "post");
	if (client_id && in_body)
		body_add("client_id", client_id, &body);
	if (client_secret && in_body)
		body_add_secret(&body, "client_secret", client_secret);
	if (client_secret && !in_body)
	{
		call->req.authorization = basic_credentials(client_id ? client_id : "", client_secret);
		body.secrets = lappend(body.secrets, client_secret);
	}
	if (body.json)
		appendStringInfoString(&body.buf, body.buf.len > 0 ? "}" : "{}");

	call->req.url = url;
	call->req.content_type = body.json ? "application/json" : "application/x-www-form-urlencoded";
	call->req.body = body.buf.data;
	call->req.body_len = body.buf.len;
	call->secrets = body.secrets;
}

/* The request has been sent: its copies of secrets go. */
static void
wipe_request(TvTokenCall *call)
{
	if (call->req.body)
		explicit_bzero((char *) call->req.body, call->req.body_len);
	if (call->req.authorization)
		explicit_bzero((char *) call->req.authorization, strlen(call->req.authorization));
}

/* A URL setting with its {placeholders} filled, or NULL and *problem. */
static char *
request_url(JsonbContainer *config, const char *setting, char **problem)
{
	char	   *url = member(config, setting);

	if (url == NULL)
	{
		*problem = psprintf("the client has no %s", setting);
		return NULL;
	}
	return fill_template(url, object_member(config, "template_values"), problem);
}

/*
 * Prepare a token request of one kind ("token" or "refresh": which URL and
 * extra parameters apply) with these grant parameters.  When it cannot be
 * sent (no URL, a template field missing), call->verdict says why.
 */
void
tv_oauth2_prepare(TvTokenCall *call, Jsonb *config_doc, const char *kind, Jsonb *params)
{
	char	   *problem = NULL;
	char	   *url;

	memset(call, 0, sizeof(*call));
	call->config = &config_doc->root;
	url = request_url(call->config, strcmp(kind, "refresh") == 0 && member(call->config, "refresh_url")
					  ? "refresh_url" : "token_url", &problem);
	if (url == NULL)
		call->verdict = tv_verdict_failure(TV_OUTCOME_ERROR, 0, NULL, problem, -1);
	else
		build_request(call, url, kind, params);
}

/* The verdict on a prepared request's response. */
TvVerdict *
tv_oauth2_verdict(TvTokenCall *call, TvHttpResponse *resp)
{
	wipe_request(call);
	return read_response(resp, call->config, call->secrets);
}

/* Send a token request and judge the answer. */
TvVerdict *
tv_oauth2_token_request(Jsonb *config, const char *kind, Jsonb *params)
{
	TvTokenCall call;
	TvHttpResponse resp;

	tv_oauth2_prepare(&call, config, kind, params);
	if (call.verdict)
		return call.verdict;
	PG_TRY();
	{
		tv_http_perform(&call.req, &resp);
	}
	PG_FINALLY();
	{
		wipe_request(&call);
	}
	PG_END_TRY();
	return tv_oauth2_verdict(&call, &resp);
}

/*
 * Revoke a token at the client's revoke_url (RFC 7009).  The verdict is
 * done for any 2xx; otherwise as for a token request.
 */
TvVerdict *
tv_oauth2_revoke(Jsonb *config_doc, Jsonb *params)
{
	TvTokenCall call = {0};
	char	   *problem = NULL;
	char	   *url;
	TvHttpResponse resp;

	call.config = &config_doc->root;
	url = request_url(call.config, "revoke_url", &problem);
	if (url == NULL)
		return tv_verdict_failure(TV_OUTCOME_ERROR, 0, NULL, problem, -1);
	build_request(&call, url, "revoke", params);
	PG_TRY();
	{
		tv_http_perform(&call.req, &resp);
	}
	PG_FINALLY();
	{
		wipe_request(&call);
	}
	PG_END_TRY();
	if (resp.failure == TV_HTTP_OK && resp.status >= 200 && resp.status < 300)
	{
		TvVerdict  *done = palloc0(sizeof(TvVerdict));

		done->outcome = TV_OUTCOME_DONE;
		done->status = resp.status;
		done->retry_after = -1;
		return done;
	}
	return read_response(&resp, call.config, call.secrets);
}
