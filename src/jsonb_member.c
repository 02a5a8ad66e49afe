/*
 * jsonb_member.c: reading the members of a jsonb object
 *
 * A client's settings (tokenvault._client_config), a request's parameters
 * and a provider's answer are jsonb objects; these are the one way the C
 * side reads their members.  Each takes a container that may be NULL or not
 * an object, and then finds nothing.
 */
#include "postgres.h"

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "jsonb_member.h"

#define MAX_JSON_DEPTH 64		/* how deeply a provider's JSON answer may nest */

/* The member named key, into *v; false if there is none. */
bool
tv_jsonb_member(JsonbContainer *obj, const char *key, JsonbValue *v)
{
	return obj != NULL && JsonContainerIsObject(obj) &&
		getKeyJsonValueFromContainer(obj, key, strlen(key), v) != NULL;
}

/* A string member, or NULL. */
char *
tv_jsonb_string(JsonbContainer *obj, const char *key)
{
	JsonbValue	v;

	if (!tv_jsonb_member(obj, key, &v) || v.type != jbvString)
		return NULL;
	return pnstrdup(v.val.string.val, v.val.string.len);
}

/* A string, number or boolean member as text, or NULL. */
char *
tv_jsonb_scalar(JsonbContainer *obj, const char *key)
{
	JsonbValue	v;

	if (!tv_jsonb_member(obj, key, &v))
		return NULL;
	if (v.type == jbvString)
		return pnstrdup(v.val.string.val, v.val.string.len);
	if (v.type == jbvNumeric)
		return DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v.val.numeric)));
	if (v.type == jbvBool)
		return pstrdup(v.val.boolean ? "true" : "false");
	return NULL;
}

/* An object or array member, or NULL. */
static JsonbContainer *
jsonb_container(JsonbContainer *obj, const char *key)
{
	JsonbValue	v;

	if (!tv_jsonb_member(obj, key, &v) || v.type != jbvBinary)
		return NULL;
	return v.val.binary.data;
}

/* An object member, or NULL. */
JsonbContainer *
tv_jsonb_object(JsonbContainer *obj, const char *key)
{
	JsonbContainer *c = jsonb_container(obj, key);

	return c != NULL && JsonContainerIsObject(c) ? c : NULL;
}

/* The strings of an array member, as a List of char *; NIL if none. */
List *
tv_jsonb_strings(JsonbContainer *obj, const char *key)
{
	JsonbContainer *c = jsonb_container(obj, key);
	List	   *out = NIL;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	if (c == NULL || !JsonContainerIsArray(c))
		return NIL;
	it = JsonbIteratorInit(c);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		if (tok == WJB_ELEM && v.type == jbvString)
			out = lappend(out, pnstrdup(v.val.string.val, v.val.string.len));
	return out;
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

/* A provider's answer as jsonb, if it is valid JSON in the database encoding. */
Jsonb *
tv_jsonb_parse(StringInfo body)
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
