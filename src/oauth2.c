/*
 * oauth2.c: token and revocation requests
 *
 * One function sends a token request (any grant) to a client's token
 * endpoint, and oauth2_response.c reads the answer into a verdict
 * (verdict.h; tokenvault.verdict in SQL): done with the provider's token
 * object, or needs_reauth, retryable or error with the status, the
 * provider's OAuth2 error code, a message and its Retry-After.
 *
 * The client's settings arrive as one JSON object built by SQL
 * (tokenvault._client_config), so this file knows no table.  Nothing secret
 * is ever put into a message: provider text is scrubbed of every secret the
 * request carried before it is quoted.
 */
#include "postgres.h"

#include "common/base64.h"
#include "fmgr.h"
#include "nodes/pg_list.h"
#include "utils/json.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "http.h"
#include "jsonb_member.h"
#include "keyring.h"
#include "oauth2.h"
#include "oauth2_response.h"
#include "sqlarg.h"
#include "url_template.h"

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

/* parameters that are secrets, so never quoted back from a provider */
static const char *const secret_params[] = {
	"client_secret", "refresh_token", "code", "code_verifier", "password", "token",
	"client_assertion", "assertion", "subject_token", "actor_token", "device_code",
};

static bool
is_secret_param(const char *key)
{
	int			i;

	for (i = 0; i < lengthof(secret_params); i++)
		if (strcmp(key, secret_params[i]) == 0)
			return true;
	return false;
}

/* Add a parameter; a secret one, from the grant or extra_params, is remembered. */
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
	if (is_secret_param(key))
		b->secrets = lappend(b->secrets, (void *) value);
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

static bool
setting_is(JsonbContainer *config, const char *key, const char *value)
{
	char	   *v = tv_jsonb_scalar(config, key);

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
	char	   *client_id = tv_jsonb_scalar(config, "client_id");
	char	   *client_secret = tv_jsonb_scalar(config, "client_secret");
	Body		body = {0};
	bool		in_body;

	body.json = setting_is(config, "body_format", "json");
	initStringInfo(&body.buf);
	each_member(&params->root, body_add, &body);
	each_member(tv_jsonb_object(tv_jsonb_object(config, "extra_params"), kind), body_add, &body);

	in_body = client_secret == NULL || setting_is(config, "client_auth", "post");
	if (client_id && in_body)
		body_add("client_id", client_id, &body);
	if (client_secret && in_body)
		body_add("client_secret", client_secret, &body);
	if (client_secret && !in_body)
	{
		call->req.authorization = basic_credentials(client_id ? client_id : "", client_secret);
		body.secrets = lappend(body.secrets, client_secret);
	}
	if (body.json)
		appendStringInfoString(&body.buf, body.buf.len > 0 ? "}" : "{}");

	call->req.url = url;
	call->req.allow_insecure_http = setting_is(config, "allow_insecure_http", "true");
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

/*
 * A URL setting with its {placeholders} filled from the auth's fields and
 * its host judged against the client's allowed_hosts, now, before the
 * request is built: or NULL and *problem.
 */
static char *
request_url(JsonbContainer *config, const char *setting, char **problem)
{
	char	   *url = tv_jsonb_scalar(config, setting);

	if (url == NULL)
	{
		*problem = psprintf("the client has no %s", setting);
		return NULL;
	}
	return tv_url_fill(setting, url, tv_jsonb_object(config, "template_values"),
					   tv_jsonb_strings(config, "allowed_hosts"), false, problem);
}

/*
 * Prepare a token request of one kind ("token" or "refresh": which URL and
 * extra parameters apply) with these grant parameters.  When it cannot be
 * sent (no URL, a template field missing, a host allowed_hosts does not
 * list), call->verdict says why.
 */
void
tv_oauth2_prepare(TvTokenCall *call, Jsonb *config_doc, const char *kind, Jsonb *params)
{
	char	   *problem = NULL;
	char	   *url;

	/* the answer holds tokens before any of them is sealed */
	tv_forbid_core_dumps();
	memset(call, 0, sizeof(*call));
	call->config = &config_doc->root;
	url = request_url(call->config, strcmp(kind, "refresh") == 0 && tv_jsonb_scalar(call->config, "refresh_url")
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
	return tv_oauth2_read_response(resp, call->config, call->secrets);
}

/* Send a token request and judge the answer. */
static TvVerdict *
oauth2_token_request(Jsonb *config, const char *kind, Jsonb *params)
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
static TvVerdict *
oauth2_revoke(Jsonb *config_doc, Jsonb *params)
{
	TvTokenCall call = {0};
	char	   *problem = NULL;
	char	   *url;
	TvHttpResponse resp;

	tv_forbid_core_dumps();
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
		return tv_verdict_done(resp.status, NULL);
	return tv_oauth2_read_response(&resp, call.config, call.secrets);
}

/* ---- SQL-callable ---- */

PG_FUNCTION_INFO_V1(tv_token_request);
PG_FUNCTION_INFO_V1(tv_revoke_request);

/*
 * _token_request(config jsonb, kind text, params jsonb) returns verdict:
 * send one token request and judge the answer.
 */
Datum
tv_token_request(PG_FUNCTION_ARGS)
{
	tv_require_arg(fcinfo, 0, "client config");
	tv_require_arg(fcinfo, 1, "request kind");
	tv_require_arg(fcinfo, 2, "request parameters");
	PG_RETURN_DATUM(tv_verdict_datum(oauth2_token_request(PG_GETARG_JSONB_P(0),
															 text_to_cstring(PG_GETARG_TEXT_PP(1)),
															 PG_GETARG_JSONB_P(2))));
}

/* _revoke_request(config jsonb, params jsonb) returns verdict: RFC 7009 */
Datum
tv_revoke_request(PG_FUNCTION_ARGS)
{
	tv_require_arg(fcinfo, 0, "client config");
	tv_require_arg(fcinfo, 1, "request parameters");
	PG_RETURN_DATUM(tv_verdict_datum(oauth2_revoke(PG_GETARG_JSONB_P(0), PG_GETARG_JSONB_P(1))));
}
